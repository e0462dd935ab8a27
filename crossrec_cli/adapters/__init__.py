"""How a backbone trains: frozen, full fine-tuning, LoRA / AdaLoRA / Prefix / IA3 (peft), or
crossrec's Houlsby bottleneck adapter.

``apply_adapter`` is the builder an adapter config feeds (``name`` picks the method, the other
keys are its settings). Every other function reads the method from the model itself, so a recipe
calls ``adapter_step_hook`` / ``save_adapter`` / ``param_counts`` the same way for every method.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, cast

import torch
from torch import nn

from crossrec_cli.adapters.bottleneck import (
    adapted_layers,
    add_bottleneck,
    apply_bottleneck,
    load_bottleneck,
    save_bottleneck,
    set_bottleneck_active,
)
from crossrec_cli.adapters.peft_methods import (
    PEFT_METHODS,
    adalora_orth_loss,
    adalora_step,
    add_peft,
    apply_peft,
    method_of_peft,
    set_peft_active,
    settings_from,
)
from crossrec_cli.errors import CrossrecError

METHODS = ("frozen", "full", *PEFT_METHODS, "adapter")
MANIFEST = "crossrec_adapter.json"  # method and adapter names, checked before loading
PREFIX_ENCODER = "prefix_encoder.safetensors"
REFIT = "build the model with the adapter config it was trained with"


@dataclass(frozen=True)
class _NoSettings:
    """frozen / full take no settings."""

    rules: ClassVar[dict[str, str]] = {}


def apply_adapter(
    model: nn.Module,
    method: str,
    *,
    total_steps: int | None = None,
    adapter_name: str = "default",
    **hparams: Any,
) -> nn.Module:
    """Prepare ``model`` to train with ``method``; returns the module to train and call.

    frozen: nothing trains (the caller caches item vectors); full: everything trains; lora,
    adalora, prefix, ia3: a peft wrapper around the frozen backbone (AdaLoRA needs
    ``total_steps``); adapter: bottleneck adapters inserted in place, backbone frozen except
    its LayerNorms.
    """
    if method in ("frozen", "full"):
        settings_from(_NoSettings, method, hparams)
        return model.requires_grad_(method == "full")
    if method in PEFT_METHODS:
        return apply_peft(model, method, hparams, total_steps, adapter_name)
    if method == "adapter":
        return apply_bottleneck(model, hparams, adapter_name)
    hint = "expected one of: " + ", ".join(METHODS)
    raise CrossrecError("adapter.name", f"unknown adapter method {method!r}", hint)


def method_of(model: nn.Module) -> str:
    """The method of a model built by ``apply_adapter`` ('frozen' when nothing trains)."""
    peft_method = method_of_peft(model)
    if peft_method:
        return peft_method
    if adapted_layers(model):
        return "adapter"
    return "full" if any(p.requires_grad for p in model.parameters()) else "frozen"


def adapter_names(model: nn.Module) -> list[str]:
    """The model's adapters in the order they were added ([] for frozen / full)."""
    method, peft_model = method_of(model), cast(Any, model)
    if method in PEFT_METHODS:
        return list(peft_model.peft_config)
    return list(adapted_layers(model)[0].adapters) if method == "adapter" else []


def active_adapter(model: nn.Module) -> str | None:
    method, peft_model = method_of(model), cast(Any, model)
    if method in PEFT_METHODS:
        return str(peft_model.active_adapter)
    return adapted_layers(model)[0].active if method == "adapter" else None


def add_named_adapter(
    model: nn.Module, method: str, name: str, *, total_steps: int | None = None, **hparams: Any
) -> nn.Module:
    """Add a trainable adapter ``name`` (e.g. one per domain) of the model's method; returns it.

    The active adapter does not change. Every adapter stays trainable, so one optimizer built
    after the last ``add_named_adapter`` covers all domains. Exception: peft trains one AdaLoRA
    adapter at a time, so adding one freezes the earlier ones and the step hook drives the new one.
    """
    have = method_of(model)
    if have != method or method not in (*PEFT_METHODS, "adapter"):
        hint = "named adapters take one method for all domains: lora, adalora, prefix, ia3, adapter"
        raise CrossrecError("adapter.name", f"cannot add {method!r} to a {have!r} model", hint)
    if name in adapter_names(model):
        raise CrossrecError("adapter_name", f"adapter {name!r} exists already", "pick a new name")
    if method == "adapter":
        add_bottleneck(model, name, hparams)
    else:
        add_peft(model, method, name, hparams, total_steps)
    return model


def set_active_adapter(model: nn.Module, name: str) -> None:
    """Route the next forward passes through adapter ``name`` (cheap: switch per batch)."""
    names = adapter_names(model)
    if name not in names:
        raise CrossrecError("adapter_name", f"no adapter {name!r}", f"have: {names}")
    if method_of(model) == "adapter":
        set_bottleneck_active(model, name)
    else:
        set_peft_active(model, name)


def adapter_step_hook(model: nn.Module, step: int) -> None:
    """Call after ``optimizer.step()`` and before ``zero_grad()``: AdaLoRA reallocates ranks
    from the gradients; a no-op for every other method."""
    if method_of_peft(model) == "adalora":
        adalora_step(model, step)


def adapter_loss(model: nn.Module) -> torch.Tensor:
    """Scalar regulariser to add to the training loss (AdaLoRA's orthogonality penalty; else 0)."""
    if method_of_peft(model) == "adalora":
        return adalora_orth_loss(model)
    return torch.zeros((), device=next(model.parameters()).device)


def param_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights count once."""
    unique = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in unique if p.requires_grad), sum(p.numel() for p in unique)


def save_adapter(model: nn.Module, folder: str | Path) -> list[Path]:
    """Write the adapters (not the backbone) as safetensors; returns the weight files written.

    peft methods use peft's own layout (``adapter_model.safetensors`` + ``adapter_config.json``,
    named adapters in sub-folders); the bottleneck adapter writes ``bottleneck.safetensors``.
    frozen / full write only the manifest: the caller saves a fully trained backbone itself.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    method = method_of(model)
    manifest = {"method": method, "adapters": adapter_names(model), "active": active_adapter(model)}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    if method in PEFT_METHODS:
        return _save_peft(model, folder)
    return [save_bottleneck(model, folder)] if method == "adapter" else []


def load_adapter_weights(model: nn.Module, folder: str | Path) -> None:
    """Restore what ``save_adapter`` wrote into a model built the same way (method, settings,
    adapter names). Reads safetensors only, never pickles."""
    folder = Path(folder)
    try:
        saved = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        hint = "point at a folder written by save_adapter"
        raise CrossrecError(str(folder / MANIFEST), f"cannot read: {exc}", hint) from None
    method, names = method_of(model), adapter_names(model)
    if saved["method"] not in ("frozen", "full") and [method, names] != [
        saved["method"],
        saved["adapters"],
    ]:
        problem = (
            f"saved {saved['method']} adapters {saved['adapters']}, the model has {method} {names}"
        )
        raise CrossrecError(str(folder), problem, REFIT)
    if method in PEFT_METHODS:
        _load_peft(model, folder)
    elif method == "adapter":
        load_bottleneck(model, folder)


def _folder_of(folder: Path, name: str) -> Path:
    return folder if name == "default" else folder / name  # peft's save_pretrained layout


def _projected(config: Any) -> bool:
    return bool(getattr(config, "prefix_projection", False))


def _save_peft(model: Any, folder: Path) -> list[Path]:
    from safetensors.torch import save_file

    model.save_pretrained(str(folder), safe_serialization=True)
    for name, config in model.peft_config.items():
        if _projected(config):  # peft saves the projected prefix only: keep the MLP to resume
            state = {k: v.contiguous() for k, v in model.prompt_encoder[name].state_dict().items()}
            save_file(state, str(_folder_of(folder, name) / PREFIX_ENCODER))
    return [_folder_of(folder, n) / "adapter_model.safetensors" for n in model.peft_config]


def _load_peft(model: Any, folder: Path) -> None:
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file

    for name, config in model.peft_config.items():
        sub = _folder_of(folder, name)
        file = sub / (PREFIX_ENCODER if _projected(config) else "adapter_model.safetensors")
        if not file.is_file():
            raise CrossrecError(
                str(file), f"no saved weights for adapter {name!r}", "use save_adapter"
            )
        weights = load_file(str(file))
        if _projected(config):
            expected = set(model.prompt_encoder[name].state_dict())
        else:
            expected = set(get_peft_model_state_dict(model, adapter_name=name))
            pattern = json.loads((sub / "adapter_config.json").read_text()).get("rank_pattern")
            if pattern:  # AdaLoRA saves only the ranks it kept; resize the model to match
                config.rank_pattern = pattern
        bad = sorted(expected ^ set(weights))
        try:
            if not bad and _projected(config):
                model.prompt_encoder[name].load_state_dict(weights)
            elif not bad:
                set_peft_model_state_dict(model, weights, adapter_name=name)
        except RuntimeError as exc:  # shapes differ
            bad.append(str(exc).strip().splitlines()[-1].strip())
        if bad:
            raise CrossrecError(str(file), f"adapter {name!r} does not fit: {bad[0]}", REFIT)
