"""``rerank=mmr``: maximal marginal relevance (Carbonell & Goldstein, SIGIR 1998): each slot
takes the candidate of the highest (1 - lambda) * relevance - lambda * (its largest cosine
similarity to an item already in the list), item vectors as the similarity space.
"""

from __future__ import annotations

import numpy as np

from crossrec_cli.evaluation.rerankers import RERANKERS, Pool, greedy


@RERANKERS.register("mmr")
def mmr(pool: Pool, k: int) -> np.ndarray:
    vecs = np.asarray(pool.item_vecs, dtype=np.float64)
    vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    cand = vecs[np.maximum(pool.items, 0)]  # (n, P, d)
    nearest = np.full(pool.items.shape, -np.inf)  # max similarity to the list so far

    def penalty(chosen: np.ndarray, step: int) -> np.ndarray:
        if step == 0:
            return np.zeros(pool.items.shape)
        last = vecs[np.maximum(chosen[:, -1], 0)]  # (n, d): the item added at the previous step
        sim = np.einsum("npd,nd->np", cand, last)
        np.maximum(nearest, np.where((chosen[:, -1] >= 0)[:, None], sim, -np.inf), out=nearest)
        return np.where(np.isfinite(nearest), nearest, 0.0)

    return greedy(pool, k, penalty)
