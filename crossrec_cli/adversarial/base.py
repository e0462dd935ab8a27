"""The adversarial-method registry and what a method may add to a training step.

A builder ``(model, domains, settings) -> Adversary | None`` is registered under
``adversarial.name`` (``none`` needs no module: it adds nothing). An ``Adversary`` may add a loss
to every step (``extra_loss``: domain-adversarial alignment), recompute the step's loss on
perturbed inputs (``step_loss``: FGM / PGD adversarial training) and report per-epoch figures
(``epoch_metrics``, e.g. the domain discriminator's accuracy). ``Stack`` runs several
(``adversarial.name=[grl,fgm]``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from crossrec_cli.registry import Registry

Closure = Callable[[], torch.Tensor]


class Adversary:
    def see_batch(self, key: str, windows: np.ndarray) -> None:
        """The step's rows, before its losses: indices into domain ``key``'s training windows
        (training/batches.windows); e.g. whose user each row is."""

    def extra_loss(self, model: Any, key: str) -> torch.Tensor | None:
        """Added to the step's loss (None: nothing)."""
        return None

    def step_loss(self, model: Any, key: str, closure: Closure) -> torch.Tensor:
        """The step's training loss; ``closure()`` computes the clean next-item loss."""
        return closure()

    def epoch_metrics(self) -> dict[str, float]:
        """Figures of the epoch that just ended (then reset), logged with the epoch's record."""
        return {}


class Stack(Adversary):
    """Several methods at once: every extra loss is added; step losses nest (the first method's
    perturbed loss is computed with the next method's closure)."""

    def __init__(self, parts: list[Adversary]):
        self.parts = parts

    def extra_loss(self, model: Any, key: str) -> torch.Tensor | None:
        losses = [x for x in (p.extra_loss(model, key) for p in self.parts) if x is not None]
        return sum(losses[1:], losses[0]) if losses else None

    def see_batch(self, key: str, windows: np.ndarray) -> None:
        for p in self.parts:
            p.see_batch(key, windows)

    def step_loss(self, model: Any, key: str, closure: Closure) -> torch.Tensor:
        for p in reversed(self.parts):
            closure = (lambda p=p, c=closure: p.step_loss(model, key, c))
        return closure()

    def epoch_metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for p in self.parts:
            out |= p.epoch_metrics()
        return out


def add_aux(model: Any, name: str, module: torch.nn.Module) -> torch.nn.Module:
    """Put what a method trains under ``model.aux[name]`` (created when missing, so stacked
    methods keep each other's), on the model's device; the optimiser and checkpoints carry it."""
    if getattr(model, "aux", None) is None:
        model.aux = torch.nn.ModuleDict()
    model.aux[name] = module.to(model.user.pos.weight.device)
    return model.aux[name]


ADVERSARIAL: Registry[Callable[[Any, list[str], dict[str, Any]], Adversary | None]] = Registry(
    "adversarial method", "adversarial.name", "crossrec_cli.adversarial")
ADVERSARIAL.add("none", lambda model, domains, settings: None)


def build_adversary(name: str | list[str], model: Any, domains: list[str], settings: dict[str, Any]) -> Adversary | None:
    """The adversary of method ``name`` (or of each name of a list, stacked) for a model over
    ``domains``; ``settings`` are the method's config keys (for a list: ``{name: {key: value}}``)."""
    if isinstance(name, (list, tuple)):
        parts = [ADVERSARIAL.get(str(n))(model, domains, settings.get(str(n), {})) for n in name]
        parts = [p for p in parts if p is not None]
        return Stack(parts) if parts else None
    return ADVERSARIAL.get(name)(model, domains, settings)
