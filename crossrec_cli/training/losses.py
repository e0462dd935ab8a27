"""Next-item losses of the recommender, chosen by ``trainer.loss``.

A loss draws the negatives it needs before the batch's item vectors are computed (so a training
backbone encodes them too), then scores the user states against the targets:

- ``full``: softmax cross-entropy over every item of the domain (SASRec with CE, RecBole's default);
- ``sampled``: softmax over the batch's targets plus ``trainer.n_negatives`` uniformly drawn items;
- ``sampled_logq``: the same candidates, each logit minus the log of how often the item is
  expected among them (logQ correction, Yi et al., RecSys 2019; mixed negatives, Yang et al., WWW
  2020): in-batch candidates are drawn in proportion to popularity, so without the correction the
  softmax learns to push popular items down;
- ``auto``: ``full`` on a catalogue of at most ``trainer.sampled_above`` items, ``sampled_logq``
  above (the full softmax's cost grows with the catalogue, per target).

A new loss is a class registered here (or in another module of ``crossrec_cli/training``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from crossrec_cli.registry import Registry


class NextItemLoss:
    corrects = False  # True: the loss takes ``log_q``, each item's log expected count among the candidates

    def resolve(self, n_items: int, sampled_above: int) -> "NextItemLoss":
        """The loss this one is on a catalogue of ``n_items`` items (``auto`` decides by size)."""
        return self

    def negatives(self, n_items: int, n_negatives: int, device: torch.device) -> torch.Tensor | None:
        """Item indices to score besides the targets (None: none needed)."""
        return None

    def __call__(self, model, users: torch.Tensor, items: torch.Tensor, targets: torch.Tensor, n_items: int,
                 negatives: torch.Tensor | None, log_q: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError


LOSSES: Registry[NextItemLoss] = Registry("next-item loss", "trainer.loss", "crossrec_cli.training")


class LinearCrossEntropy(torch.autograd.Function):
    """Mean softmax cross-entropy of ``users @ items.T`` without the (T, N) logits in memory:
    targets in chunks of ``chunk`` rows, each chunk's gradient (softmax - one-hot) turned into
    the gradients of ``users`` and ``items`` at once. The full-softmax step over a large
    catalogue is 3 products and a softmax; the plain path also writes, zero-fills and re-reads
    (T, N) tensors 4 times (scripts/profile_train.py measures the difference)."""

    @staticmethod
    def forward(ctx, users: torch.Tensor, items: torch.Tensor, targets: torch.Tensor, chunk: int,
                weights: torch.Tensor | None = None) -> torch.Tensor:
        n = len(targets)
        grads = any(ctx.needs_input_grad[:2])
        g_users = torch.empty_like(users) if grads else None
        g_items = torch.zeros_like(items) if grads else None
        total = users.new_zeros((), dtype=torch.float64)
        for a in range(0, n, chunk):
            u, t = users[a : a + chunk], targets[a : a + chunk]
            z = u @ items.T  # (c, N)
            z_t = z.gather(1, t.unsqueeze(1)).squeeze(1)
            top = z.max(1).values
            e = z.sub_(top.unsqueeze(1)).exp_()  # in place: one pass over the scores
            norm = e.sum(1)
            per = top + norm.log() - z_t  # log-sum-exp - target score
            w = None if weights is None else weights[a : a + chunk].to(per.dtype)
            total += (per if w is None else per * w).double().sum()
            if grads:
                scale = 1.0 / (norm * n) if w is None else w / (norm * n)
                p = e.mul_(scale.unsqueeze(1))  # softmax (x weight) / n
                p[torch.arange(len(t), device=p.device), t] -= 1.0 / n if w is None else w / n
                g_users[a : a + chunk] = p @ items
                g_items.addmm_(p.T, u)
        if grads:
            ctx.save_for_backward(g_users, g_items)
        return (total / max(n, 1)).to(users.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        g_users, g_items = ctx.saved_tensors
        return g_users * grad, g_items * grad, None, None, None


def linear_cross_entropy(users: torch.Tensor, items: torch.Tensor, targets: torch.Tensor,
                         max_elements: int = 1 << 22, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``F.cross_entropy(users @ items.T, targets)``; users (T, d), items (N, d), targets (T,).
    ``weights`` (T,): the mean of each target's cross-entropy times its weight. Peak extra memory
    is about ``max_elements`` scores."""
    chunk = max(1, min(len(targets), max_elements // max(1, items.shape[0])))
    with torch.autocast(users.device.type, enabled=False):  # bf16 / fp16 runs: the softmax in float32
        return LinearCrossEntropy.apply(_at_least_float32(users), _at_least_float32(items), targets, chunk, weights)


def _at_least_float32(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


class FullSoftmax(NextItemLoss):
    def __call__(self, model, users, items, targets, n_items, negatives, log_q=None, weights=None):
        u, i = model.logit_vectors(users, items[:n_items])
        return linear_cross_entropy(u, i, targets, weights=weights)


class SampledSoftmax(NextItemLoss):
    def negatives(self, n_items, n_negatives, device):
        return torch.randint(n_items, (n_negatives,), device=device)

    def __call__(self, model, users, items, targets, n_items, negatives, log_q=None, weights=None):
        cand = torch.unique(torch.cat([targets, negatives]))
        logits = model.logits(users, items[cand])
        if log_q is not None:
            logits = logits - log_q[cand]
        if weights is None:
            return F.cross_entropy(logits, torch.searchsorted(cand, targets))
        return (F.cross_entropy(logits, torch.searchsorted(cand, targets), reduction="none") * weights).mean()


class SampledLogQ(SampledSoftmax):
    corrects = True


def expected_log_counts(share: torch.Tensor, in_batch: int, n_negatives: int) -> torch.Tensor:
    """log of the probability that each item is among a step's candidates (a set: each item once):
    ``in_batch`` targets drawn by popularity (``share``: each item's share of the training targets)
    plus ``n_negatives`` uniform draws over the catalogue. For a rare item it is about its expected
    number of draws (``in_batch x share + n_negatives / n``); a popular one is in almost every
    set, and counting its draws instead would push it below where it belongs."""
    missed = in_batch * torch.log1p(-share.double().clamp_max(1 - 1e-12)) + n_negatives * math.log1p(-1.0 / len(share))
    return torch.log(-torch.expm1(missed)).clamp_min(-80.0).to(share.dtype)


SAMPLED_ABOVE = 20000  # loss=auto's default size: the bundled catalogues and Amazon Food train on the full softmax


class Auto(NextItemLoss):
    def resolve(self, n_items, sampled_above):
        return LOSSES.get("sampled_logq" if n_items > sampled_above else "full")


LOSSES.add("full", FullSoftmax())
LOSSES.add("sampled", SampledSoftmax())
LOSSES.add("sampled_logq", SampledLogQ())
LOSSES.add("auto", Auto())
