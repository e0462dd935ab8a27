"""Next-item losses of the recommender, chosen by ``trainer.loss``.

A loss draws the negatives it needs before the batch's item vectors are computed (so a training
backbone encodes them too), then scores the user states against the targets:

- ``full``: softmax cross-entropy over every item of the domain (SASRec with CE, RecBole's default);
- ``sampled``: softmax over the batch's targets plus ``trainer.n_negatives`` uniformly drawn items.

A new loss is a class registered here (or in another module of ``crossrec_cli/training``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from crossrec_cli.registry import Registry


class NextItemLoss:
    def negatives(self, n_items: int, n_negatives: int, device: torch.device) -> torch.Tensor | None:
        """Item indices to score besides the targets (None: none needed)."""
        return None

    def __call__(self, model, users: torch.Tensor, items: torch.Tensor, targets: torch.Tensor, n_items: int,
                 negatives: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError


LOSSES: Registry[NextItemLoss] = Registry("next-item loss", "trainer.loss", "crossrec_cli.training")


class FullSoftmax(NextItemLoss):
    def __call__(self, model, users, items, targets, n_items, negatives):
        return F.cross_entropy(model.logits(users, items[:n_items]), targets)


class SampledSoftmax(NextItemLoss):
    def negatives(self, n_items, n_negatives, device):
        return torch.randint(n_items, (n_negatives,), device=device)

    def __call__(self, model, users, items, targets, n_items, negatives):
        cand = torch.unique(torch.cat([targets, negatives]))
        return F.cross_entropy(model.logits(users, items[cand]), torch.searchsorted(cand, targets))


LOSSES.add("full", FullSoftmax())
LOSSES.add("sampled", SampledSoftmax())
