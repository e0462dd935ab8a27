"""Houlsby bottleneck adapters (Houlsby et al. 2019), crossrec's own small module.

An adapter ``x + up(act(down(x)))`` follows the output projection of the attention sublayer and
of the feed-forward sublayer of every transformer layer, before the residual + LayerNorm. ``up``
starts at zero, so an adapted model computes exactly what the backbone does until it trains.
AdapterHub is not used because it pins an old transformers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from crossrec_cli.adapters.base import ADAPTERS, AdapterFamily
from crossrec_cli.adapters.peft_methods import RULES as PEFT_RULES
from crossrec_cli.adapters.peft_methods import family, settings_from
from crossrec_cli.errors import CrossrecError

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU}
# Output projections of the attention and feed-forward sublayers, by backbone family.
_AUTO = {  # for BERT: BertSelfOutput.dense and BertOutput.dense
    "bert": r".*\.attention\.output\.dense|.*\.layer\.\d+\.output\.dense",
    "mpnet": r".*\.attention\.attn\.o|.*\.layer\.\d+\.output\.dense",
    "llama": r".*\.self_attn\.o_proj|.*\.mlp\.down_proj",
}
WEIGHTS, CONFIG = "bottleneck.safetensors", "bottleneck.json"


def _is_patterns(v: Any) -> bool:
    return isinstance(v, str) or (
        isinstance(v, list) and bool(v) and all(isinstance(x, str) for x in v)
    )


RULES = PEFT_RULES | {
    "activation": (lambda v: v in ACTIVATIONS, "one of " + ", ".join(ACTIVATIONS)),
    "patterns": (_is_patterns, "'auto', a regex or a list of regexes over module names"),
}


@dataclass(frozen=True)
class BottleneckSettings:
    rules: ClassVar[dict[str, str]] = {"nonlinearity": "activation", "target_modules": "patterns"}
    bottleneck: int = 64
    nonlinearity: str = "gelu"
    train_layernorm: bool = True  # Houlsby et al. train the backbone's LayerNorms with the adapters
    target_modules: Any = "auto"


class BottleneckAdapter(nn.Module):
    """(..., H) -> (..., H): ``x + up(act(down(x)))``, identity at initialisation."""

    def __init__(self, hidden: int, bottleneck: int, nonlinearity: str) -> None:
        super().__init__()
        self.down = nn.Linear(hidden, bottleneck)
        self.act = ACTIVATIONS[nonlinearity]()
        self.up = nn.Linear(bottleneck, hidden)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.size, self.nonlinearity = bottleneck, nonlinearity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.act(self.down(x)))


class AdaptedLinear(nn.Module):
    """A sublayer's output projection followed by the active one of several named adapters."""

    def __init__(self, base: nn.Linear) -> None:
        super().__init__()
        self.base = base
        self.adapters = nn.ModuleDict()
        self.active = ""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapters[self.active](self.base(x))


def adapted_layers(model: nn.Module) -> list[AdaptedLinear]:
    return [m for m in model.modules() if isinstance(m, AdaptedLinear)]


def _targets(model: nn.Module, target_modules: Any) -> list[str]:
    if target_modules == "auto":
        model_type = getattr(getattr(model, "config", None), "model_type", "")
        if family(model_type) not in _AUTO:
            raise CrossrecError(
                "adapter.target_modules",
                f"no automatic adapter places for model type {model_type!r}",
                "give regexes over module names, e.g. ['.*\\.o_proj', '.*\\.down_proj']",
            )
        target_modules = _AUTO[family(model_type)]
    patterns = [target_modules] if isinstance(target_modules, str) else target_modules
    names = [
        n
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear) and any(re.fullmatch(p, n) for p in patterns)
    ]
    if not names:
        raise CrossrecError(
            "adapter.target_modules",
            f"no linear layer matches {patterns}",
            "list the model's module names with model.named_modules()",
        )
    return names


def apply_bottleneck(model: nn.Module, hparams: dict[str, Any], adapter_name: str) -> nn.Module:
    """Insert adapters in place; freeze the backbone except (optionally) its LayerNorms."""
    settings = settings_from(BottleneckSettings, "adapter", hparams, RULES)
    if adapted_layers(model):
        raise CrossrecError(
            "adapter.name",
            "the model already has bottleneck adapters",
            "add more with add_named_adapter",
        )
    for name in _targets(model, settings.target_modules):
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, attr, AdaptedLinear(getattr(parent, attr)))
    model.requires_grad_(False)
    if settings.train_layernorm:
        for m in _norms(model):
            m.requires_grad_(True)
    add_bottleneck(model, adapter_name, settings)
    set_bottleneck_active(model, adapter_name)
    return model


def add_bottleneck(
    model: nn.Module, name: str, settings: BottleneckSettings | dict[str, Any]
) -> None:
    """A new trainable adapter ``name`` in every adapted sublayer (the active one stays)."""
    if isinstance(settings, dict):
        settings = settings_from(BottleneckSettings, "adapter", settings, RULES)
    assert isinstance(settings, BottleneckSettings)
    layers = adapted_layers(model)
    if name in layers[0].adapters:
        raise CrossrecError("adapter_name", f"adapter {name!r} exists already", "pick a new name")
    for layer in layers:
        base = layer.base
        adapter = BottleneckAdapter(base.out_features, settings.bottleneck, settings.nonlinearity)
        layer.adapters[name] = adapter.to(device=base.weight.device, dtype=base.weight.dtype)


def set_bottleneck_active(model: nn.Module, name: str) -> None:
    layers = adapted_layers(model)
    if name not in layers[0].adapters:
        raise CrossrecError(
            "adapter_name", f"no adapter {name!r}", "have: " + ", ".join(layers[0].adapters)
        )
    for layer in layers:
        layer.active = name


def _norms(model: nn.Module) -> list[nn.Module]:
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.LayerNorm) or type(m).__name__.endswith(("LayerNorm", "RMSNorm"))
    ]


def _adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every named adapter and every LayerNorm (they may train with the adapters; a few KB)."""
    norms = {id(p) for m in _norms(model) for p in m.parameters()}
    return {
        n: p.detach().contiguous()
        for n, p in model.named_parameters()
        if ".adapters." in n or id(p) in norms
    }


def save_bottleneck(model: nn.Module, folder: Path) -> Path:
    """Writes bottleneck.safetensors (weights) and bottleneck.json (size, nonlinearity by name)."""
    from safetensors.torch import save_file

    layer = adapted_layers(model)[0]
    shapes = {n: [a.size, a.nonlinearity] for n, a in layer.adapters.items()}
    (folder / CONFIG).write_text(json.dumps({"adapters": shapes}, indent=2) + "\n")
    save_file(_adapter_state(model), str(folder / WEIGHTS))
    return folder / WEIGHTS


def load_bottleneck(model: nn.Module, folder: Path) -> None:
    from safetensors.torch import load_file

    file = folder / WEIGHTS
    if not file.is_file():
        raise CrossrecError(str(file), "no saved bottleneck adapters", "save with save_adapter")
    saved, want = load_file(str(file)), _adapter_state(model)
    bad = sorted(set(want) ^ set(saved))
    bad += [
        f"{k}: shape {tuple(v.shape)}"
        for k, v in saved.items()
        if k in want and v.shape != want[k].shape
    ]
    if bad:
        hint = "build the model with the adapter settings and names it was trained with"
        raise CrossrecError(str(file), f"saved adapters do not fit the model: {bad[0]}", hint)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in saved.items():
            params[k].copy_(v)


class Bottleneck(AdapterFamily):
    """Houlsby adapters inserted in place (``adapter=adapter``)."""

    priority = 20

    def named_adapters_problem(self, method: str) -> str | None:
        return None

    def apply(self, model: nn.Module, method: str, hparams: dict[str, Any], total_steps: int | None,
              adapter_name: str) -> nn.Module:
        return apply_bottleneck(model, hparams, adapter_name)

    def method_of(self, model: nn.Module) -> str | None:
        return "adapter" if adapted_layers(model) else None

    def names(self, model: nn.Module) -> list[str]:
        return list(adapted_layers(model)[0].adapters)

    def active(self, model: nn.Module) -> str | None:
        return adapted_layers(model)[0].active

    def add(self, model: nn.Module, method: str, name: str, hparams: dict[str, Any], total_steps: int | None) -> None:
        add_bottleneck(model, name, hparams)

    def set_active(self, model: nn.Module, name: str) -> None:
        set_bottleneck_active(model, name)

    def save(self, model: nn.Module, folder: Path) -> list[Path]:
        return [save_bottleneck(model, folder)]

    def load(self, model: nn.Module, folder: Path) -> None:
        load_bottleneck(model, folder)


ADAPTERS.register("adapter")(Bottleneck())
