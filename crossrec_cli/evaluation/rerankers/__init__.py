"""Recommend-time re-rankers (``rerank=``): reorder the best ``rerank_pool`` candidates of each
user into a top-k list that trades score for another goal, weighted by ``rerank_lambda``
(0 keeps the score order). Each re-ranker is one module of this package registered in
``RERANKERS``; ``none`` (the score order) is registered here.

A re-ranker is a function ``(pool: Pool, k) -> (n, k) item indices`` (-1: empty slot).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from crossrec_cli.registry import Registry


@dataclass
class Pool:
    """The candidates of ``n`` users: ``items`` (n, P) item indices best first (-1: none),
    ``scores`` (n, P) their scores; ``histories`` the users' own items; ``item_vecs`` (N, d) and
    ``counts`` (N,) popularity (interaction counts) of the whole catalogue; ``lam`` the weight of
    the re-ranking goal in [0, 1]."""

    items: np.ndarray
    scores: np.ndarray
    histories: list[np.ndarray]
    item_vecs: np.ndarray
    counts: np.ndarray
    lam: float

    def relevance(self) -> np.ndarray:
        """(n, P) scores min-max scaled to [0, 1] per user, so that lambda weighs the same on
        any score scale (cosine / temperature, dot); empty slots -inf."""
        valid = self.items >= 0
        s = np.where(valid, self.scores, np.nan).astype(np.float64)
        lo, hi = np.nanmin(np.where(valid, s, np.inf), 1, keepdims=True), np.nanmax(np.where(valid, s, -np.inf), 1, keepdims=True)
        rel = (s - lo) / np.where(hi > lo, hi - lo, 1.0)
        return np.where(valid, rel, -np.inf)


Reranker = Callable[[Pool, int], np.ndarray]
RERANKERS: Registry[Reranker] = Registry("re-ranker", "rerank", "crossrec_cli.evaluation.rerankers")


@RERANKERS.register("none")
def score_order(pool: Pool, k: int) -> np.ndarray:
    """The first k candidates: the score order, unchanged."""
    return pool.items[:, :k].copy()


def greedy(pool: Pool, k: int, penalty: Callable[[np.ndarray, int], np.ndarray]) -> np.ndarray:
    """Fill k slots one by one with each user's candidate of the highest
    ``(1 - lam) * relevance - lam * penalty(chosen, step)``; ``penalty`` maps the (n, step) items
    chosen so far to an (n, P) cost of adding each candidate. Ties: the better-scored candidate."""
    rel = pool.relevance()
    n, p = rel.shape
    chosen = np.full((n, k), -1, dtype=np.int64)
    taken = ~np.isfinite(rel)
    rows = np.arange(n)
    for step in range(min(k, p)):
        gain = (1 - pool.lam) * np.where(taken, 0.0, rel) - pool.lam * penalty(chosen[:, :step], step)
        gain[taken] = -np.inf
        best = np.argmax(gain, 1)  # the first maximum: the better-scored of tied candidates
        ok = ~taken[rows, best]
        chosen[ok, step] = pool.items[rows[ok], best[ok]]
        taken[rows[ok], best[ok]] = True
    return chosen


def rerank(name: str, pool: Pool, k: int, chunk: int = 512) -> np.ndarray:
    """(n, k) item indices: re-ranker ``name`` (``RERANKERS``) on ``pool``, ``chunk`` users at a time."""
    fn = RERANKERS.get(name)
    parts = [fn(Pool(pool.items[a:a + chunk], pool.scores[a:a + chunk], pool.histories[a:a + chunk], pool.item_vecs,
                     pool.counts, pool.lam), k) for a in range(0, len(pool.items), chunk)]
    return np.concatenate(parts) if parts else np.zeros((0, k), dtype=np.int64)


def scores_of(pool: Pool, chosen: np.ndarray) -> np.ndarray:
    """(n, k) the original scores of the ``chosen`` items (-inf for an empty slot)."""
    match = (chosen[:, :, None] == pool.items[:, None, :]) & (chosen[:, :, None] >= 0)
    return np.where(match.any(2), np.take_along_axis(pool.scores, match.argmax(2), 1), -np.inf)
