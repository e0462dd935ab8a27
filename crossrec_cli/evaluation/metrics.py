"""Ranking metrics as small pure functions of the target's 0-based rank."""

from __future__ import annotations

import numpy as np


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """Share of examples whose single target is in the top k (= hit rate with one target)."""
    return float(np.mean(ranks < k)) if len(ranks) else 0.0


def ndcg_at_k(ranks: np.ndarray, k: int) -> float:
    """With one relevant item the ideal DCG is 1, so NDCG = 1 / log2(rank + 2) inside the top k."""
    if not len(ranks):
        return 0.0
    return float(np.mean(np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)))


def mrr_at_k(ranks: np.ndarray, k: int) -> float:
    """Reciprocal rank, counted as 0 outside the top k."""
    if not len(ranks):
        return 0.0
    return float(np.mean(np.where(ranks < k, 1.0 / (ranks + 1.0), 0.0)))


def rank_metrics(ranks: np.ndarray, topk: list[int]) -> dict[str, float]:
    """``{"recall@k", "ndcg@k", "mrr@k"}`` for every k in ``topk``; ranks are 0-based."""
    ranks = np.asarray(ranks)
    out: dict[str, float] = {}
    for k in topk:
        out[f"recall@{k}"] = recall_at_k(ranks, k)
        out[f"ndcg@{k}"] = ndcg_at_k(ranks, k)
        out[f"mrr@{k}"] = mrr_at_k(ranks, k)
    return out
