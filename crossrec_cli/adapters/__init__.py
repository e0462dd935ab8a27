"""How a backbone trains: frozen, full fine-tuning, LoRA / AdaLoRA / Prefix / IA3 (peft), or
crossrec's Houlsby bottleneck adapter — each family a module registered in ``ADAPTERS``
(adapters/base.py).

``apply_adapter`` is the builder an adapter config feeds (``name`` picks the method, the other
keys are its settings). Every other function asks the model which family built it, so a recipe
calls ``adapter_step_hook`` / ``save_adapter`` / ``param_counts`` the same way for every method.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crossrec_cli.adapters.base import ADAPTERS, AdapterFamily
from crossrec_cli.errors import CrossrecError
from crossrec_cli.io import writing

MANIFEST = "crossrec_adapter.json"  # method and adapter names, checked before loading
REFIT = "build the model with the adapter config it was trained with"


def methods() -> list[str]:
    """Every registered method name (frozen, full, lora, adalora, prefix, ia3, adapter, ...)."""
    return ADAPTERS.names()


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
    return ADAPTERS.get(method).apply(model, method, hparams, total_steps, adapter_name)


def _family(model: nn.Module) -> tuple[str, AdapterFamily]:
    families = sorted({id(f): f for _, f in ADAPTERS.items()}.values(), key=lambda f: f.priority)
    for fam in families:
        method = fam.method_of(model)
        if method is not None:
            return method, fam
    raise CrossrecError("adapter", "no adapter family recognises the model", "build it with apply_adapter")


def method_of(model: nn.Module) -> str:
    """The method of a model built by ``apply_adapter`` ('frozen' when nothing trains)."""
    return _family(model)[0]


def adapter_names(model: nn.Module) -> list[str]:
    """The model's adapters in the order they were added ([] for frozen / full)."""
    return _family(model)[1].names(model)


def active_adapter(model: nn.Module) -> str | None:
    return _family(model)[1].active(model)


def add_named_adapter(
    model: nn.Module, method: str, name: str, *, total_steps: int | None = None, **hparams: Any
) -> nn.Module:
    """Add a trainable adapter ``name`` (e.g. one per domain) of the model's method; returns it.

    The active adapter does not change. Every adapter stays trainable, so one optimizer built
    after the last ``add_named_adapter`` covers all domains. Exception: peft trains one AdaLoRA
    adapter at a time, so adding one freezes the earlier ones and the step hook drives the new one.
    """
    have, fam = _family(model)
    if have != method:
        hint = "named adapters take one method for all domains: lora, adalora, prefix, ia3, adapter"
        raise CrossrecError("adapter.name", f"cannot add {method!r} to a {have!r} model", hint)
    if name in fam.names(model):
        raise CrossrecError("adapter_name", f"adapter {name!r} exists already", "pick a new name")
    fam.add(model, method, name, hparams, total_steps)
    return model


def set_active_adapter(model: nn.Module, name: str) -> None:
    """Route the next forward passes through adapter ``name`` (cheap: switch per batch)."""
    _, fam = _family(model)
    names = fam.names(model)
    if name not in names:
        raise CrossrecError("adapter_name", f"no adapter {name!r}", f"have: {names}")
    fam.set_active(model, name)


def adapter_step_hook(model: nn.Module, step: int) -> None:
    """Call after ``optimizer.step()`` and before ``zero_grad()``: AdaLoRA reallocates ranks
    from the gradients; a no-op for every other method."""
    _family(model)[1].step_hook(model, step)


def adapter_loss(model: nn.Module) -> torch.Tensor:
    """Scalar regulariser to add to the training loss (AdaLoRA's orthogonality penalty; else 0)."""
    loss = _family(model)[1].loss(model)
    return loss if loss is not None else torch.zeros((), device=next(model.parameters()).device)


def param_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights count once."""
    unique = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in unique if p.requires_grad), sum(p.numel() for p in unique)


def save_adapter(model: nn.Module, folder: str | Path) -> list[Path]:
    """Write the adapters (not the backbone) as safetensors; returns the weight files written.

    peft methods use peft's own layout (``adapter_model.safetensors`` + ``adapter_config.json``,
    named adapters in sub-folders); the bottleneck adapter writes ``bottleneck.safetensors``.
    frozen / full write only the manifest: the caller saves a fully trained backbone itself.
    Written into a temporary folder and renamed into place (into an existing folder: file by
    file, its other files left alone): a reader finds whole files; a disk fault is an
    ``IOFault`` naming ``folder`` and leaves no temporary folder.
    """
    folder = Path(folder)
    tmp = folder.with_name(f".tmp-{folder.name}-{uuid.uuid4().hex[:8]}")
    method, fam = _family(model)
    manifest = {"method": method, "adapters": fam.names(model), "active": fam.active(model)}
    try:
        with writing(folder, "the adapter export"):
            tmp.mkdir(parents=True)
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            written = fam.save(model, tmp)
            if not folder.exists():
                os.replace(tmp, folder)
            for entry in tmp.iterdir() if tmp.exists() else ():
                target = folder / entry.name
                if target.is_dir():  # a named adapter's sub-folder from an earlier export
                    shutil.rmtree(target)
                os.replace(entry, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [folder / p.relative_to(tmp) for p in written]


def load_adapter_weights(model: nn.Module, folder: str | Path) -> None:
    """Restore what ``save_adapter`` wrote into a model built the same way (method, settings,
    adapter names). Reads safetensors only, never pickles."""
    folder = Path(folder)
    try:
        saved = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        hint = "point at a folder written by save_adapter"
        raise CrossrecError(str(folder / MANIFEST), f"cannot read: {exc}", hint) from None
    method, fam = _family(model)
    names = fam.names(model)
    if saved["method"] not in ("frozen", "full") and [method, names] != [saved["method"], saved["adapters"]]:
        problem = f"saved {saved['method']} adapters {saved['adapters']}, the model has {method} {names}"
        raise CrossrecError(str(folder), problem, REFIT)
    fam.load(model, folder)
