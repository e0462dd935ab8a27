"""The adapter registry and the interface every adapter family implements.

A family is one way a backbone trains (``plain``: frozen / full; ``peft_family``: LoRA, AdaLoRA,
Prefix, IA3; ``bottleneck``: Houlsby adapters). It registers the method names it builds, and
answers for the models it built: which adapters they hold, how to switch, save and load them.
A new method is one module with one ``AdapterFamily`` subclass registered in ``ADAPTERS``, plus
``conf/adapter/<name>.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from crossrec_cli.errors import CrossrecError
from crossrec_cli.registry import Registry


class AdapterFamily:
    """Defaults: one unnamed adapter, no hooks, nothing to save beside the backbone."""

    priority = 50  # method_of asks families in this order (lower first); plain answers last

    # what a method can do, asked by the recipes instead of comparing method names
    def trains_backbone(self, method: str) -> bool:
        """Whether any backbone parameter trains (False: item vectors can be cached)."""
        return True

    def mergeable(self, method: str) -> bool:
        """Whether the trained method folds into a plain backbone (what ``pretrain`` saves)."""
        return False

    def separate_weights(self, method: str) -> bool:
        """Whether the method's weights live apart from the backbone's (saved in their own folder)."""
        return True

    def named_adapters_problem(self, method: str) -> str | None:
        """Why ``method`` cannot hold one named adapter per domain (None: it can)."""
        return f"adapter={method} has no named adapters"

    def apply(self, model: nn.Module, method: str, hparams: dict[str, Any], total_steps: int | None,
              adapter_name: str) -> nn.Module:
        raise NotImplementedError

    def method_of(self, model: nn.Module) -> str | None:
        """The method when this family built ``model``, else None."""
        raise NotImplementedError

    def names(self, model: nn.Module) -> list[str]:
        return []

    def active(self, model: nn.Module) -> str | None:
        return None

    def add(self, model: nn.Module, method: str, name: str, hparams: dict[str, Any], total_steps: int | None) -> None:
        hint = "named adapters take one method for all domains: lora, adalora, prefix, ia3, adapter"
        raise CrossrecError("adapter.name", f"cannot add {method!r} adapters: the method has no named adapters", hint)

    def set_active(self, model: nn.Module, name: str) -> None:
        pass

    def step_hook(self, model: nn.Module, step: int) -> None:
        """After ``optimizer.step()``, before ``zero_grad()``."""

    def loss(self, model: nn.Module) -> torch.Tensor | None:
        """A regulariser to add to the training loss, or None."""
        return None

    def save(self, model: nn.Module, folder: Path) -> list[Path]:
        return []

    def load(self, model: nn.Module, folder: Path) -> None:
        pass


ADAPTERS: Registry[AdapterFamily] = Registry("adapter method", "adapter.name", "crossrec_cli.adapters")
