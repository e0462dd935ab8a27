"""crossrec recommend: top-k per user, its files, users=, exclude_seen, zero-shot from a trained
run; and the beyond-accuracy figures (coverage, popularity) by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import read_metrics, run_cli, run_inprocess

from crossrec_cli.evaluation.beyond import beyond_accuracy
from crossrec_cli.evaluation.ranking import top_items

SMOKE = ("experiment=smoke",)


def test_top_items_ties_by_item_order_and_exclusion():
    items = torch.tensor([[1.0], [3.0], [3.0], [2.0], [0.5]])
    users = torch.tensor([[1.0], [-1.0]])
    idx, val = top_items(users, items, 3, exclude=[np.array([1]), np.array([], dtype=np.int64)])
    # user 0: scores 1, 3, 3, 2, 0.5 with item 1 excluded -> 2 (3.0), 3 (2.0), 0 (1.0)
    # user 1: scores -1, -3, -3, -2, -0.5 -> 4, 0, 3
    assert idx.tolist() == [[2, 3, 0], [4, 0, 3]] and val[0].tolist() == [3.0, 2.0, 1.0]
    tie, _ = top_items(torch.ones(1, 1), torch.ones(4, 1), 2)
    assert tie.tolist() == [[0, 1]]  # equal scores: the item file's order
    short, sv = top_items(torch.ones(1, 1), torch.ones(3, 1), 3, exclude=[np.array([0, 2])])
    assert short.tolist() == [[1, -1, -1]] and np.isneginf(sv[0, 1:]).all()


def test_beyond_accuracy_by_hand():
    counts = np.array([10, 5, 1, 0, 4])  # item popularity; the 20% most popular (1 of 5): item 0
    top = np.array([[0, 1], [1, -1]])  # user 1 has one empty slot
    got = beyond_accuracy(top, counts, [np.array([2, 4]), np.array([0])], k=2)
    # coverage: items {0, 1} of 5; arp: user 0 (10 + 5) / 2 = 7.5, user 1 5 / 1 -> 6.25
    # history: user 0 (1 + 4) / 2 = 2.5, user 1 10 -> 6.25; lift 1.0; popular share 1 of 3 slots
    assert got == pytest.approx({"coverage@2": 0.4, "arp@2": 6.25, "arp_history": 6.25,
                                 "popularity_lift@2": 1.0, "popular_share@2": 1 / 3})


def test_recommend_popularity_files_users_and_seen(tmp_path):
    run_inprocess("recommend", *SMOKE, "k=5", run_dir=tmp_path)
    m = read_metrics(tmp_path)
    assert m["command"] == "recommend" and m["model"] == "popularity" and m["users"] == 40 and m["k"] == 5
    assert m["exclude_seen"] is True and set(m["beyond_accuracy"]["movies"]) >= {"coverage@5", "arp@5"}
    lines = [json.loads(x) for x in (tmp_path / "recommendations.jsonl").read_text().splitlines()]
    assert len(lines) == 40 and all(len(x["items"]) == 5 for x in lines)
    for x in lines:
        scores = [r["score"] for r in x["items"]]
        assert scores == sorted(scores, reverse=True) and all(r["text"] for r in x["items"])
    tsv = (tmp_path / "recommendations.tsv").read_text().splitlines()
    assert tsv[0] == "user\trank\titem\tscore\ttext" and len(tsv) == 1 + 40 * 5
    # seen items are never recommended (the smoke slice: users' whole histories)
    from crossrec_cli.cli import compose
    from crossrec_cli.commands._common import load_domains

    (spec, dom), = load_domains(compose("recommend", list(SMOKE), tmp_path / "c"))
    seen = {}
    for u, i in zip(dom.inter_user, dom.inter_item):
        seen.setdefault(dom.user_ids[u], set()).add(dom.item_ids[i])
    assert all(not ({r["item"] for r in x["items"]} & seen[x["user"]]) for x in lines)
    # users= as a list and as a file, in the given order
    few = tmp_path / "few"
    (tmp_path / "users.txt").write_text(f"{lines[3]['user']}\n\n{lines[0]['user']}\n")
    run_inprocess("recommend", *SMOKE, f"users={tmp_path / 'users.txt'}", "eval.exclude_seen=false", run_dir=few)
    got = [json.loads(x) for x in (few / "recommendations.jsonl").read_text().splitlines()]
    assert [x["user"] for x in got] == [lines[3]["user"], lines[0]["user"]]
    pop = [r["item"] for r in got[0]["items"]]  # with seen items kept, everyone gets the same list
    assert pop == [r["item"] for r in got[1]["items"]]


def test_recommend_unknown_user_is_one_line(tmp_path):
    (tmp_path / "users.txt").write_text("196\nnobody\n")
    proc = run_cli("recommend", *SMOKE, f"users={tmp_path / 'users.txt'}", run_dir=tmp_path / "r", check=False)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and "users.txt:2" in err[0] and "'nobody'" in err[0]


def test_recommend_zero_shot_from_a_trained_run(tmp_path):
    trained = tmp_path / "ft"
    run_inprocess("finetune", *SMOKE, run_dir=trained)
    out = tmp_path / "rec"
    run_inprocess("recommend", *SMOKE, f"run={trained}", "domain=music", "users=[2,3]", "k=4", run_dir=out)
    m = read_metrics(out)
    assert m["mode"] == "zero-shot" and m["model"] == "seqrec" and m["run"] == str(trained)
    # the zero-shot settings that shaped these lists are on record, as in evaluate's metrics.json
    assert m["zero_shot_prior"] == {"weight": 2.0, "recency": 0.9, "domains": ["music"]}
    assert m["zero_shot_align"] == {"domains": ["music"]}
    got = [json.loads(x) for x in (out / "recommendations.jsonl").read_text().splitlines()]
    assert [x["user"] for x in got] == ["2", "3"] and all(len(x["items"]) == 4 for x in got)
    ids = run_inprocess  # a transductive (item-id) run cannot recommend in a domain it never saw
    idrun = tmp_path / "ids"
    ids("finetune", *SMOKE, "backbone=none", "model.item_ids=true", run_dir=idrun)
    proc = run_cli("recommend", *SMOKE, f"run={idrun}", "domain=music", run_dir=tmp_path / "x", check=False)
    assert proc.returncode == 2 and "transductive" in proc.stderr


# ---- per-group metrics (fairness) -----------------------------------------------------------

def test_group_metrics_by_hand():
    from crossrec_cli.data.groups import user_groups
    from crossrec_cli.evaluation.groups import group_metrics

    attrs = {"age": {"a": "17", "b": "30", "c": "61", "d": ""}, "gender": {"a": "F", "b": "M", "c": "F"}}
    spec = {"age": {"bins": [18, 25, 35]}, "gender": None}
    g = user_groups(["a", "b", "c", "d"], attrs, spec)
    assert g["age"].tolist() == ["<18", "25-34", "35+", ""] and g["gender"].tolist() == ["F", "M", "F", ""]
    # examples: user a rank 0, user c rank 1, user b rank 5, user d rank 0 (no group)
    res = group_metrics(np.array([0, 1, 5, 0]), np.array([0, 2, 1, 3]), g, [2])
    # F = {a: rank 0, c: rank 1}: recall@2 1, ndcg@2 (1 + 1/log2 3) / 2; M = {b: rank 5}: 0
    f_ndcg = (1 + 1 / np.log2(3)) / 2
    assert res["gender"]["F"]["ndcg@2"] == pytest.approx(f_ndcg) and res["gender"]["F"]["examples"] == 2
    assert res["gender"]["M"]["recall@2"] == 0 and res["gender"]["gap"]["ndcg@2"] == pytest.approx(f_ndcg)
    assert set(res["age"]) == {"<18", "25-34", "35+", "gap"}


def test_evaluate_reports_groups_and_beyond_accuracy(tmp_path):
    run_inprocess("evaluate", *SMOKE, run_dir=tmp_path)  # popularity on the movies slice
    m = read_metrics(tmp_path)
    gender = m["groups"]["movies"]["gender"]
    assert set(gender) == {"F", "M", "gap"} and gender["F"]["examples"] + gender["M"]["examples"] == 40
    assert gender["gap"]["ndcg@10"] == pytest.approx(abs(gender["F"]["ndcg@10"] - gender["M"]["ndcg@10"]))
    ba = m["beyond_accuracy"]["movies"]
    assert {"coverage@5", "coverage@10", "arp@10", "popularity_lift@10"} <= set(ba)
    assert ba["popular_share@10"] == 1.0  # popularity only ever recommends the most popular items


def test_user_groups_unknown_column_is_one_line(tmp_path):
    proc = run_cli("evaluate", *SMOKE, "+data.overrides.user_groups={zodiac: null}", run_dir=tmp_path, check=False)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and "user_groups.zodiac" in err[0] and "gender" in err[0]
