"""Ranking metrics against numbers worked out by hand (ranks are 0-based: rank 0 = top item)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from crossrec_cli.evaluation.metrics import mrr_at_k, ndcg_at_k, rank_metrics, recall_at_k

# Five examples; their targets were ranked 1st, 3rd, 10th, 11th and 61st.
RANKS = np.array([0, 2, 9, 10, 60])


def test_recall_at_10_by_hand():
    # in the top 10 (rank < 10): ranks 0, 2, 9 -> 3 of 5; rank 10 is the 11th item, outside.
    assert recall_at_k(RANKS, 10) == pytest.approx(3 / 5)


def test_ndcg_at_10_by_hand():
    # one relevant item, so IDCG = 1 and DCG = 1 / log2(rank + 2) inside the top 10:
    #   rank 0 -> 1/log2(2) = 1
    #   rank 2 -> 1/log2(4) = 0.5
    #   rank 9 -> 1/log2(11) = 0.289064...
    #   ranks 10, 60 -> 0
    expected = (1 + 1 / math.log2(4) + 1 / math.log2(11)) / 5
    assert expected == pytest.approx(0.357813, abs=1e-6)
    assert ndcg_at_k(RANKS, 10) == pytest.approx(expected)


def test_mrr_at_10_by_hand():
    # reciprocal of the 1-based position inside the top 10: 1/1, 1/3, 1/10, then 0, 0
    expected = (1 + 1 / 3 + 1 / 10) / 5
    assert expected == pytest.approx(0.286667, abs=1e-6)
    assert mrr_at_k(RANKS, 10) == pytest.approx(expected)


def test_k_1_counts_only_the_top_item():
    # only rank 0 counts; at the top every metric gives it 1: 1/5 each
    assert recall_at_k(RANKS, 1) == pytest.approx(1 / 5)
    assert ndcg_at_k(RANKS, 1) == pytest.approx(1 / 5)
    assert mrr_at_k(RANKS, 1) == pytest.approx(1 / 5)


def test_k_61_counts_everything():
    # rank 60 is the 61st item, so with k = 61 all five are in
    assert recall_at_k(RANKS, 61) == pytest.approx(1.0)
    ndcg = (1 + 1 / math.log2(4) + 1 / math.log2(11) + 1 / math.log2(12) + 1 / math.log2(62)) / 5
    assert ndcg_at_k(RANKS, 61) == pytest.approx(ndcg)
    mrr = (1 + 1 / 3 + 1 / 10 + 1 / 11 + 1 / 61) / 5
    assert mrr_at_k(RANKS, 61) == pytest.approx(mrr)
    # one position short, rank 60 drops out of all three
    assert recall_at_k(RANKS, 60) == pytest.approx(4 / 5)
    assert mrr_at_k(RANKS, 60) == pytest.approx(mrr - 1 / 61 / 5)


def test_single_example_at_rank_1():
    # second place: recall 1, ndcg 1/log2(3) = 0.6309..., mrr 1/2
    r = np.array([1])
    assert recall_at_k(r, 5) == 1.0
    assert ndcg_at_k(r, 5) == pytest.approx(1 / math.log2(3))
    assert mrr_at_k(r, 5) == pytest.approx(0.5)


def test_empty_input_is_zero_not_nan():
    empty = np.array([], dtype=np.int64)
    assert recall_at_k(empty, 10) == 0.0
    assert ndcg_at_k(empty, 10) == 0.0
    assert mrr_at_k(empty, 10) == 0.0


def test_rank_metrics_keys_and_values():
    out = rank_metrics([0, 2, 9, 10, 60], [1, 10])  # a plain list is accepted
    assert list(out) == ["recall@1", "ndcg@1", "mrr@1", "recall@10", "ndcg@10", "mrr@10"]
    assert out["recall@10"] == pytest.approx(3 / 5)
    assert out["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(11)) / 5)
    assert out["mrr@10"] == pytest.approx((1 + 1 / 3 + 1 / 10) / 5)
    assert all(isinstance(v, float) for v in out.values())  # json-serialisable, not np.float64


def test_ordering_mrr_le_ndcg_le_recall():
    # per example 1/(r+1) <= 1/log2(r+2) <= 1 for every r >= 0, so the means keep that order
    ranks = np.random.default_rng(0).integers(0, 200, size=500)
    for k in (1, 5, 20, 100, 500):
        assert mrr_at_k(ranks, k) <= ndcg_at_k(ranks, k) + 1e-12
        assert ndcg_at_k(ranks, k) <= recall_at_k(ranks, k) + 1e-12
