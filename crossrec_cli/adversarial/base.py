"""The adversarial-method registry (``none`` needs no module: it adds no loss)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from crossrec_cli.registry import Registry

ExtraLoss = Callable[[Any, str], torch.Tensor]
ADVERSARIAL: Registry[Callable[[Any, list[str], dict[str, Any]], ExtraLoss | None]] = Registry(
    "adversarial method", "adversarial.name", "crossrec_cli.adversarial")
ADVERSARIAL.add("none", lambda model, domains, settings: None)


def build_adversary(name: str, model: Any, domains: list[str], settings: dict[str, Any]) -> ExtraLoss | None:
    """The extra training loss of method ``name`` for a model over ``domains`` (None: no loss)."""
    return ADVERSARIAL.get(name)(model, domains, settings)
