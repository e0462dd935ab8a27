"""Recommend-time re-rankers (evaluation/rerankers/): the score order, calibration to the user's
popularity profile and MMR by hand; ``crossrec recommend rerank=...`` honours and refuses."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli, run_inprocess

from crossrec_cli.evaluation.rerankers import RERANKERS, Pool, rerank, scores_of
from crossrec_cli.evaluation.rerankers.calibrated import kl, popularity_bins, profile


def _pool(lam: float, counts=None, vecs=None, histories=None) -> Pool:
    items = np.array([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]])
    scores = np.linspace(1.0, 0.1, 10)[None]
    counts = np.arange(10, 0, -1) if counts is None else counts  # item 0 most popular
    vecs = np.eye(10) if vecs is None else vecs
    return Pool(items, scores, histories or [np.array([7, 8, 9])], vecs, counts, lam)


def test_registered_and_lambda_zero_keeps_the_score_order():
    assert {"none", "calibrated", "mmr"} <= set(RERANKERS.names())
    for name in ("none", "calibrated", "mmr"):
        assert rerank(name, _pool(0.0), 4).tolist() == [[0, 1, 2, 3]], name


def test_popularity_bins_and_profile_by_hand():
    bins = popularity_bins(np.arange(10, 0, -1))  # 10 items: head 2, tail 5, mid 3
    assert bins.tolist() == [0, 0, 1, 1, 1, 2, 2, 2, 2, 2]
    assert profile([np.array([0, 5, 6, 7]), np.array([], dtype=np.int64)], bins).tolist() == [[0.25, 0, 0.75], [1 / 3] * 3]
    p, q = np.array([0.5, 0.5, 0.0]), np.array([1.0, 0.0, 0.0])
    q_s = 0.99 * q + 0.01 * p  # Steck's smoothing
    assert kl(p, q) == pytest.approx(0.5 * np.log(0.5 / q_s[0]) + 0.5 * np.log(0.5 / q_s[1]))


def test_calibrated_matches_the_history_profile():
    # the history is all tail (items 7-9): at lambda 1 the list is the best-scored tail items
    assert rerank("calibrated", _pool(1.0), 3).tolist() == [[5, 6, 7]]
    # a history of 1 head + 1 tail item, k = 2: one of each, each the best-scored of its bin
    assert rerank("calibrated", _pool(1.0, histories=[np.array([1, 9])]), 2).tolist() == [[0, 5]]


def test_mmr_by_hand():
    vecs = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    pool = Pool(np.array([[0, 1, 2]]), np.array([[0.9, 0.8, 0.1]]), [np.array([], dtype=np.int64)], vecs,
                np.ones(3), 0.5)
    # relevance 1, 0.875, 0; after item 0: item 1 = 0.5 * 0.875 - 0.5 * 1 < item 2 = 0 - 0
    chosen = rerank("mmr", pool, 2)
    assert chosen.tolist() == [[0, 2]] and scores_of(pool, chosen).tolist() == [[0.9, 0.1]]
    pool.lam = 0.1  # 0.9 * 0.875 - 0.1 > 0: relevance wins
    assert rerank("mmr", pool, 2).tolist() == [[0, 1]]


def test_empty_slots_stay_empty():
    pool = Pool(np.array([[3, -1, -1]]), np.array([[0.5, -np.inf, -np.inf]]), [np.array([0])], np.eye(4), np.ones(4), 0.5)
    for name in ("calibrated", "mmr"):
        assert rerank(name, pool, 2).tolist() == [[3, -1]], name


def test_recommend_rerank_lowers_the_popular_share(tmp_path):
    smoke = ("experiment=smoke", "model=popularity")
    plain = run_inprocess("recommend", *smoke, run_dir=tmp_path / "plain")
    cal = run_inprocess("recommend", *smoke, "rerank=calibrated", "rerank_lambda=1.0", "rerank_pool=400", run_dir=tmp_path / "cal")
    assert plain["rerank"] == {"name": "none"} and cal["rerank"] == {"name": "calibrated", "pool": 400, "lambda": 1.0}
    share = "popular_share@10"
    assert plain["beyond_accuracy"]["movies"][share] == 1.0
    # a pool of 400 reaches past the head (the 20% most popular items): the lists take the histories' mix
    assert cal["beyond_accuracy"]["movies"][share] < 0.8, cal["beyond_accuracy"]


@pytest.mark.parametrize("args, key", [(("rerank=fair",), "rerank"), (("rerank=mmr", "rerank_pool=5"), "rerank_pool"),
                                       (("rerank=mmr", "rerank_lambda=2"), "rerank_lambda"),
                                       (("rerank_lambda=0.3",), "rerank_lambda"), (("rerank_pool=50",), "rerank_pool")])
def test_recommend_rerank_refusals_are_one_line(tmp_path, args, key):
    proc = run_cli("recommend", "experiment=smoke", *args, run_dir=tmp_path, check=False)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and key in err[0]


def test_fairness_doc_table_is_the_committed_record_rendered(tmp_path):
    import importlib.util
    import json
    import shutil
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("rerank_tradeoff", repo / "scripts" / "rerank_tradeoff.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    record = json.loads(script.RECORD.read_text())
    doc = tmp_path / "fairness.md"
    shutil.copy(script.DOC, doc)
    script.write_doc(record, doc)
    assert doc.read_text() == script.DOC.read_text()
    assert f"{script.BEGIN}\n{script.render(record)}{script.END}" in script.DOC.read_text()
    assert record["train_command"].startswith("crossrec finetune ")
    none = record["rows"][0]
    assert none["rerank"] == "none" and none["ndcg@10"] == pytest.approx(record["run_test_ndcg@10"], abs=1e-9)


def test_recommend_reranks_a_trained_runs_lists(tmp_path):
    run_inprocess("finetune", "experiment=smoke", run_dir=tmp_path / "run")
    args = ("experiment=smoke", f"run={tmp_path / 'run'}", "k=5")
    plain = run_inprocess("recommend", *args, run_dir=tmp_path / "plain")
    mmr = run_inprocess("recommend", *args, "rerank=mmr", "rerank_lambda=0", run_dir=tmp_path / "mmr")
    assert mmr["rerank"] == {"name": "mmr", "pool": 100, "lambda": 0.0}
    lists = [(tmp_path / d / "recommendations.jsonl").read_text() for d in ("plain", "mmr")]
    assert lists[0] == lists[1] and plain["beyond_accuracy"] == mmr["beyond_accuracy"]  # lambda 0: the score order
