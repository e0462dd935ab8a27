"""Ranking metrics as small pure functions of the target's 0-based rank, registered in
``RANKING_METRICS`` under the name that prefixes their key (``ndcg`` -> ``ndcg@10``). A new metric
is one function ``(ranks, k) -> float`` registered here or in another module of this package."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from crossrec_cli.registry import Registry

RANKING_METRICS: Registry[Callable[[np.ndarray, int], float]] = Registry(
    "ranking metric", "trainer.monitor", "crossrec_cli.evaluation")


@RANKING_METRICS.register("recall")

def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """Share of examples whose single target is in the top k (= hit rate with one target)."""
    return float(np.mean(ranks < k)) if len(ranks) else 0.0


def ndcg_gains(ranks: np.ndarray, k: int) -> np.ndarray:
    """Each example's NDCG@k: with one relevant item the ideal DCG is 1, so 1 / log2(rank + 2)
    inside the top k, else 0."""
    return np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)


@RANKING_METRICS.register("ndcg")
def ndcg_at_k(ranks: np.ndarray, k: int) -> float:
    """The mean of ``ndcg_gains``."""
    if not len(ranks):
        return 0.0
    return float(np.mean(ndcg_gains(ranks, k)))


@RANKING_METRICS.register("mrr")
def mrr_at_k(ranks: np.ndarray, k: int) -> float:
    """Reciprocal rank, counted as 0 outside the top k."""
    if not len(ranks):
        return 0.0
    return float(np.mean(np.where(ranks < k, 1.0 / (ranks + 1.0), 0.0)))


def rank_metrics(ranks: np.ndarray, topk: list[int]) -> dict[str, float]:
    """``{"<metric>@k"}`` for every registered metric (recall, ndcg, mrr, ...) and every k in
    ``topk``; ranks are 0-based."""
    ranks = np.asarray(ranks)
    metrics = RANKING_METRICS.items()
    return {f"{name}@{k}": fn(ranks, k) for k in topk for name, fn in metrics}
