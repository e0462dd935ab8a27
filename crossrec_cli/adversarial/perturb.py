"""Adversarial training on inputs (Miyato et al. 2017's FGM; Madry et al. 2018's PGD): each
step's loss is computed again with its inputs pushed, within ``epsilon``, in the direction that
raises it most, and the model learns from both losses.

The perturbation enters where the item tower's input is continuous: the backbone's input token
embeddings when the backbone trains, else the item vectors (the fused features the user tower
reads). ``epsilon`` is relative: a fraction of each vector's own L2 norm (a token embedding or
an item vector), so one value means the same on every backbone and model size.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import torch

from crossrec_cli.adversarial.base import Adversary, Closure
from crossrec_cli.errors import CrossrecError


class Slot:
    """A perturbation ``delta`` added to one tensor of the forward pass; made on the first pass
    (zeros, with a gradient) in that tensor's shape, kept for the passes after."""

    def __init__(self) -> None:
        self.delta: torch.Tensor | None = None
        self.ref: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> torch.Tensor:
        if self.delta is None or self.delta.shape != x.shape:
            self.delta = torch.zeros_like(x, requires_grad=True)
            self.ref = x.detach()
        return x + self.delta


@contextmanager
def open_slot(model: Any):
    """Install a Slot on the backbone's input embeddings (training backbone) or on the item
    vectors (``SeqRec.item_perturb``); removed on exit."""
    slot = Slot()
    if model.backbone_trains:
        emb = model.backbone_model.get_input_embeddings()
        handle = emb.register_forward_hook(lambda _m, _i, out: slot.add(out))
        try:
            yield slot
        finally:
            handle.remove()
    else:
        model.item_perturb = lambda _key, x: slot.add(x)
        try:
            yield slot
        finally:
            model.item_perturb = None


def _unit(g: torch.Tensor) -> torch.Tensor:
    return g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class InputAdversary(Adversary):
    """``steps`` ascent steps of size ``alpha`` (each a fraction of the vector's norm), projected
    onto the ball of radius ``epsilon`` x norm; FGM is one step of size ``epsilon``. The step's
    loss is ``clean + weight * adversarial``."""

    def __init__(self, name: str, epsilon: float, steps: int, alpha: float, weight: float):
        for key, value in (("epsilon", epsilon), ("alpha", alpha), ("weight", weight)):
            if not value > 0:
                raise CrossrecError(f"adversarial.{key}", f"expected a positive number, got {value!r}",
                                    "epsilon is a fraction of each vector's norm, e.g. 0.1")
        if steps < 1:
            raise CrossrecError("adversarial.steps", f"expected at least 1, got {steps!r}", "e.g. 3")
        self.name, self.epsilon, self.steps, self.alpha, self.weight = name, epsilon, steps, alpha, weight
        self.gaps: list[float] = []

    def step_loss(self, model: Any, key: str, closure: Closure) -> torch.Tensor:
        with open_slot(model) as slot:
            clean = closure()
            if slot.delta is None:  # nothing continuous was read (cannot happen with an item tower)
                return clean
            loss = clean
            for step in range(self.steps):
                (g,) = torch.autograd.grad(loss, slot.delta, retain_graph=True, allow_unused=True)
                if g is None:
                    break
                scale = slot.ref.norm(dim=-1, keepdim=True)
                delta = slot.delta.detach() + self.alpha * scale * _unit(g)
                excess = (delta.norm(dim=-1, keepdim=True) / (self.epsilon * scale).clamp_min(1e-12)).clamp_min(1.0)
                slot.delta = (delta / excess).requires_grad_(step + 1 < self.steps)
                if step + 1 < self.steps:
                    loss = closure()
            adv = closure()
        self.gaps.append(float(adv.detach() - clean.detach()))
        return clean + self.weight * adv

    def epoch_metrics(self) -> dict[str, float]:
        out = {f"{self.name}_loss_gap": sum(self.gaps) / len(self.gaps)} if self.gaps else {}
        self.gaps = []
        return out
