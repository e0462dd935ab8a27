"""Gradient reversal (Ganin & Lempitsky, 2015): identity forward, ``-weight * grad`` backward.

A domain discriminator learns to tell source from target vectors; through the reversal the
encoder below it learns to make them indistinguishable.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from crossrec_cli.adversarial.base import ADVERSARIAL, Adversary, add_aux


class GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: float) -> torch.Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.weight * grad, None


def grad_reverse(x: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """Identity on the way forward; multiplies the gradient by ``-weight`` on the way back."""
    return GradReverse.apply(x, weight)


class DomainDiscriminator(nn.Module):
    """(n, dim) vectors -> (n, n_domains) logits, after a gradient-reversal layer."""

    def __init__(self, dim: int, n_domains: int = 2, hidden: int = 64, weight: float = 0.1):
        super().__init__()
        self.weight = weight
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, n_domains))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(grad_reverse(x, self.weight))


def item_alignment_loss(disc: DomainDiscriminator, vectors: list[torch.Tensor]) -> tuple[torch.Tensor, float]:
    """Cross-entropy of the discriminator over each domain's vectors (label = domain index);
    returns (loss, discriminator accuracy). Domains are balanced by sampling the same count."""
    n = min(len(v) for v in vectors)
    xs, ys = [], []
    for d, v in enumerate(vectors):
        idx = torch.randperm(len(v), device=v.device)[:n]
        xs.append(v[idx])
        ys.append(torch.full((n,), d, dtype=torch.long, device=v.device))
    logits = disc(torch.cat(xs))
    y = torch.cat(ys)
    return F.cross_entropy(logits, y), float((logits.argmax(1) == y).float().mean())


class DomainAdversary(Adversary):
    """DANN on item vectors: a discriminator behind gradient reversal tells the domains' items
    apart; its accuracy per epoch is reported (0.5 for two domains: aligned)."""

    def __init__(self, model: Any, domains: list[str], settings: dict[str, Any]):
        self.device = model.user.pos.weight.device
        add_aux(model, "disc", DomainDiscriminator(model.cfg.dim, len(domains), int(settings["hidden"]),
                                                   float(settings["weight"])))
        self.domains, self.k = domains, int(settings["items_per_domain"])
        self.accuracies: list[float] = []

    def extra_loss(self, m: Any, _domain: str) -> torch.Tensor:
        vecs = []
        for key in self.domains:
            n = m.n_items(key)
            idx = torch.randint(n, (min(self.k, n),), device=self.device)
            items = m.item_matrix(key) if not m.backbone_trains else m.item_matrix(key, idx.unique())
            vecs.append(m.tower_vectors(items)[idx])
        loss, acc = item_alignment_loss(m.aux["disc"], vecs)
        self.accuracies.append(acc)
        return loss

    def epoch_metrics(self) -> dict[str, float]:
        out = {"grl_disc_accuracy": sum(self.accuracies) / len(self.accuracies)} if self.accuracies else {}
        self.accuracies = []
        return out


@ADVERSARIAL.register("grl")
def grl(model: Any, domains: list[str], settings: dict[str, Any]) -> DomainAdversary:
    """``settings``: hidden, weight (the reversal scale), items_per_domain per step."""
    if len(domains) < 2:
        from crossrec_cli.errors import CrossrecError

        raise CrossrecError("adversarial", "grl aligns domains and needs at least two",
                            "train on several domains (domain=[movies,music]) or choose adversarial=fgm / pgd")
    return DomainAdversary(model, domains, settings)
