"""``rerank=calibrated``: a top-k list whose popularity profile matches the user's own history
(Steck, "Calibrated Recommendations", RecSys 2018), with popularity bins as the categories.

Items fall into three bins by their interaction count: head (the 20% most popular items, the
same head as ``popular_share@k``), tail (the 50% least popular) and mid (the rest). p(c|u) is
the share of the user's history in each bin, q(c|list) the share of the list's items; greedily,
each slot takes the candidate of the highest (1 - lambda) * relevance - lambda * KL(p || q~),
q~ = (1 - alpha) q + alpha p with alpha = 0.01 (Steck's smoothing, so KL stays finite).
"""

from __future__ import annotations

import numpy as np

from crossrec_cli.evaluation.rerankers import RERANKERS, Pool, greedy

ALPHA = 0.01
HEAD, TAIL = 0.2, 0.5


def popularity_bins(counts: np.ndarray) -> np.ndarray:
    """(N,) bin per item: 0 head, 1 mid, 2 tail (by rank of ``counts``, ties in item order)."""
    n = len(counts)
    order = np.argsort(-np.asarray(counts), kind="stable")
    bins = np.ones(n, dtype=np.int64)
    bins[order[: max(1, int(round(HEAD * n)))]] = 0
    bins[order[n - int(round(TAIL * n)):]] = 2
    return bins


def profile(histories: list[np.ndarray], bins: np.ndarray) -> np.ndarray:
    """(n, 3) p(c|u): each history's share of items per bin (uniform for an empty history)."""
    out = np.full((len(histories), 3), 1 / 3)
    for i, h in enumerate(histories):
        h = h[h < len(bins)]
        if len(h):
            out[i] = np.bincount(bins[h], minlength=3) / len(h)
    return out


def kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p || (1 - alpha) q + alpha p) over the last axis; 0 * log 0 = 0."""
    q = (1 - ALPHA) * q + ALPHA * p
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p > 0, p * np.log(p / q), 0.0).sum(-1)


@RERANKERS.register("calibrated")
def calibrated(pool: Pool, k: int) -> np.ndarray:
    bins = popularity_bins(pool.counts)
    p = profile(pool.histories, bins)
    cand = bins[np.where(pool.items >= 0, pool.items, 0)]  # (n, P)

    def penalty(chosen: np.ndarray, step: int) -> np.ndarray:
        have = np.stack([((chosen >= 0) & (bins[np.maximum(chosen, 0)] == c)).sum(1) for c in range(3)], 1)
        # KL of the list with each bin added: (n, 3), then per candidate by its bin
        with_bin = np.stack([kl(p, (have + np.eye(3)[c]) / (step + 1)) for c in range(3)], 1)
        return np.take_along_axis(with_bin, cand, 1)

    return greedy(pool, k, penalty)
