"""LoRA, AdaLoRA, Prefix tuning and IA3 through peft (settings and wrapping: peft_methods.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crossrec_cli.adapters.base import ADAPTERS, AdapterFamily
from crossrec_cli.adapters.peft_methods import (
    PEFT_METHODS,
    SETTINGS,
    add_peft,
    apply_peft,
    method_of_peft,
    set_peft_active,
)
from crossrec_cli.errors import CrossrecError

PREFIX_ENCODER = "prefix_encoder.safetensors"
REFIT = "build the model with the adapter config it was trained with"


class Peft(AdapterFamily):
    priority = 10

    def apply(self, model: nn.Module, method: str, hparams: dict[str, Any], total_steps: int | None,
              adapter_name: str) -> nn.Module:
        return apply_peft(model, method, hparams, total_steps, adapter_name)

    def method_of(self, model: nn.Module) -> str | None:
        return method_of_peft(model)

    def mergeable(self, method: str) -> bool:
        return SETTINGS[method].mergeable

    def named_adapters_problem(self, method: str) -> str | None:
        return SETTINGS[method].one_at_a_time

    def names(self, model: Any) -> list[str]:
        return list(model.peft_config)

    def active(self, model: Any) -> str | None:
        return str(model.active_adapter)

    def add(self, model: nn.Module, method: str, name: str, hparams: dict[str, Any], total_steps: int | None) -> None:
        add_peft(model, method, name, hparams, total_steps)

    def set_active(self, model: nn.Module, name: str) -> None:
        set_peft_active(model, name)

    def step_hook(self, model: nn.Module, step: int) -> None:
        SETTINGS[method_of_peft(model)].step(model, step)

    def loss(self, model: nn.Module) -> torch.Tensor | None:
        return SETTINGS[method_of_peft(model)].loss(model)

    def save(self, model: Any, folder: Path) -> list[Path]:
        """peft's own layout: ``adapter_model.safetensors`` + ``adapter_config.json``, named
        adapters in sub-folders (and a projected prefix's MLP, which peft does not keep)."""
        from safetensors.torch import save_file

        model.save_pretrained(str(folder), safe_serialization=True)
        for name, config in model.peft_config.items():
            if _projected(config):  # peft saves the projected prefix only: keep the MLP to resume
                state = {k: v.contiguous() for k, v in model.prompt_encoder[name].state_dict().items()}
                save_file(state, str(_folder_of(folder, name) / PREFIX_ENCODER))
        return [_folder_of(folder, n) / "adapter_model.safetensors" for n in model.peft_config]

    def load(self, model: Any, folder: Path) -> None:
        from peft import get_peft_model_state_dict, set_peft_model_state_dict
        from safetensors.torch import load_file

        for name, config in model.peft_config.items():
            sub = _folder_of(folder, name)
            file = sub / (PREFIX_ENCODER if _projected(config) else "adapter_model.safetensors")
            if not file.is_file():
                raise CrossrecError(str(file), f"no saved weights for adapter {name!r}", "use save_adapter")
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


def _folder_of(folder: Path, name: str) -> Path:
    return folder if name == "default" else folder / name  # peft's save_pretrained layout


def _projected(config: Any) -> bool:
    return bool(getattr(config, "prefix_projection", False))


ADAPTERS.register(*PEFT_METHODS)(Peft())
