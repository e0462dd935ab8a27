"""Top-k indexes (eval.index / eval.faiss): FAISS flat equals exact search, seen items are never
returned and short results are refilled, IVF / HNSW recall on clustered data, and the config's
one-line errors; recommend with eval.index=faiss end to end."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
import torch
from conftest import read_metrics, run_inprocess

from crossrec_cli.errors import CrossrecError
from crossrec_cli.evaluation.index import auto_nlist, build_index
from crossrec_cli.evaluation.ranking import top_items

needs_faiss = pytest.mark.skipif(importlib.util.find_spec("faiss") is None,
                                 reason="faiss-cpu is not installed (pip install crossrec[faiss])")
SMOKE = ("experiment=smoke", "model=text_zeroshot")


def _random(n_items=600, n_users=50, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_items, d, generator=g), torch.randn(n_users, d, generator=g)


def _clustered(n_clusters=20, per=100, d=32, n_users=60, seed=0):
    """Unit item vectors around n_clusters centres; users near a random centre."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(n_clusters, d, generator=g), dim=1)
    items = centres.repeat_interleave(per, 0) + 0.15 * torch.randn(n_clusters * per, d, generator=g)
    users = centres[torch.randint(n_clusters, (n_users,), generator=g)] + 0.15 * torch.randn(n_users, d, generator=g)
    return torch.nn.functional.normalize(items, dim=1), torch.nn.functional.normalize(users, dim=1)


def _recall(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(got, want)]))


def test_exact_is_top_items():
    items, users = _random()
    idx, val = build_index(items, "exact").search(users, 7, user_chunk=9)
    want, wval = top_items(users, items, 7)
    assert (idx == want).all() and np.allclose(val, wval, rtol=0, atol=1e-12)


@needs_faiss
def test_flat_equals_exact_with_seen_items_and_chunks():
    items, users = _random()
    rng = np.random.default_rng(0)
    # seen sets up to 300 items, some of them each user's best ones: the search must reach past them
    exact_best, _ = top_items(users, items, 40)
    seen = [np.concatenate([exact_best[u, : rng.integers(0, 40)], rng.choice(600, rng.integers(0, 260))])
            for u in range(len(users))]
    idx, val = build_index(items, "flat").search(users, 20, seen, user_chunk=7)
    want, wval = top_items(users, items, 20, seen)
    assert (idx == want).all() and np.allclose(val, wval, rtol=0, atol=1e-12)
    assert not any(set(row) & set(s) for row, s in zip(idx, seen))


@needs_faiss
def test_flat_breaks_ties_by_item_order_and_pads_like_top_items():
    items = torch.tensor([[1.0], [3.0], [3.0], [2.0], [0.5]])
    users = torch.tensor([[1.0], [-1.0]])
    flat = build_index(items, "flat")
    idx, val = flat.search(users, 3, [np.array([1]), np.array([], dtype=np.int64)])
    assert idx.tolist() == [[2, 3, 0], [4, 0, 3]] and val[0].tolist() == [3.0, 2.0, 1.0]
    tie, _ = build_index(torch.ones(40, 2), "flat").search(torch.ones(1, 2), 3)
    assert tie.tolist() == [[0, 1, 2]]  # 40 equal scores: the item file's order, as exact search
    short, sv = build_index(torch.ones(3, 1), "flat").search(torch.ones(1, 1), 3, [np.array([0, 2])])
    assert short.tolist() == [[1, -1, -1]] and np.isneginf(sv[0, 1:]).all()
    # float64 vectors that float32 cannot tell apart: FAISS ties them, the float64 rescoring does not
    near = torch.tensor([[1.0, 0.0]] * 5 + [[1.0, 1e-9]], dtype=torch.float64)
    best, _ = build_index(near, "flat").search(torch.ones(1, 2, dtype=torch.float64), 1)
    assert best.tolist() == [[5]] == top_items(torch.ones(1, 2, dtype=torch.float64), near, 1)[0].tolist()


@needs_faiss
@pytest.mark.parametrize("kind, options", [("ivf", {"nlist": 50, "nprobe": 1}), ("hnsw", {"hnsw_m": 2, "ef_search": 1})])
def test_a_search_that_runs_dry_is_refilled_exactly(kind, options):
    """IVF probing 1 of 50 lists (~12 items) cannot give 30 items; every user still gets 30."""
    items, users = _random()
    seen = [np.arange(u, 600, 7) for u in range(len(users))]  # ~86 seen items each
    idx, _ = build_index(items, kind, **options).search(users, 30, seen)
    assert (idx >= 0).all() and not any(set(row) & set(s) for row, s in zip(idx, seen))
    assert all(len(set(row)) == 30 for row in idx)
    if kind == "ivf":  # every user ran dry, so every list is exact search's
        assert (idx == top_items(users, items, 30, seen)[0]).all()


@needs_faiss
@pytest.mark.parametrize("kind, options", [("ivf", {"nlist": 20, "nprobe": 3}), ("hnsw", {"hnsw_m": 16, "ef_search": 64})])
def test_approximate_indexes_find_the_neighbours_on_clustered_data(kind, options):
    items, users = _clustered()
    index = build_index(items, kind, **options)
    idx, val = index.search(users, 10)
    want, _ = top_items(users, items, 10)
    assert _recall(idx, want) >= 0.95
    if kind == "ivf":  # probing every list is exhaustive: exact search's lists
        index.retune(nprobe=20)
        assert (index.search(users, 10)[0] == want).all() and index.settings["nprobe"] == 20
    assert (np.diff(val, axis=1) <= 0).all()  # best first, float64 scores of the returned items
    assert index.describe() == {"index": "faiss", "kind": kind, **index.settings, "items": 2000,
                                "build_s": index.describe()["build_s"]}


@needs_faiss
def test_ivf_settings_and_bad_nlist():
    items, _ = _random(n_items=600)
    assert auto_nlist(600) == 15 and auto_nlist(1_000_000) == 1000 and auto_nlist(10) == 1
    assert build_index(items, "ivf").settings == {"nlist": 15, "nprobe": 15}  # nprobe at most nlist
    with pytest.raises(CrossrecError, match=r"eval.faiss.nlist: 601 lists for 600 items"):
        build_index(items, "ivf", nlist=601)


def test_faiss_missing_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` raises ImportError
    with pytest.raises(CrossrecError) as err:
        build_index(torch.ones(3, 2), "flat")
    assert str(err.value) == ("error: eval.index: faiss is not installed; "
                              "pip install crossrec[faiss] (faiss-cpu), or eval.index=exact")


@pytest.mark.parametrize("command, override, start", [
    ("recommend", "eval.index=approx", "error: eval.index: expected exact or faiss"),
    ("recommend", "eval.faiss.kind=lsh", "error: eval.faiss.kind: expected flat, ivf or hnsw"),
    ("recommend", "eval.faiss.nprobe=0", "error: eval.faiss.nprobe: expected a positive integer"),
    ("recommend", "eval.faiss.nlist=many", "error: eval.faiss.nlist: expected null or a positive integer"),
    ("recommend", "eval.faiss.hnsw_m=1", "error: eval.faiss.hnsw_m: expected an integer >= 2"),
    ("recommend", "+eval.faiss.efsearch=64", "error: eval.faiss.efsearch: unknown key for eval.faiss"),
    ("evaluate", "eval.index=faiss", "error: eval.index: crossrec evaluate ranks exactly: metrics always rank"),
    ("finetune", "eval.index=faiss", "error: eval.index: crossrec finetune ranks exactly: metrics always rank"),
])
def test_bad_index_settings_are_one_line(tmp_path, capsys, command, override, start):
    from crossrec_cli.cli import compose, recipe
    from crossrec_cli.commands._common import run_recipe

    cfg = compose(command, ["experiment=smoke", override], tmp_path)
    with pytest.raises(SystemExit) as stop:  # refused before the recipe starts
        run_recipe(cfg, recipe(command))
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and err[0].startswith(start), err


@needs_faiss
def test_recommend_with_faiss_end_to_end(tmp_path):
    exact = run_inprocess("recommend", *SMOKE, "k=8", run_dir=tmp_path / "exact")
    flat = run_inprocess("recommend", *SMOKE, "k=8", "eval.index=faiss", run_dir=tmp_path / "flat")
    hnsw = run_inprocess("recommend", *SMOKE, "k=8", "eval.index=faiss", "eval.faiss.kind=hnsw",
                         "eval.faiss.ef_search=16", run_dir=tmp_path / "hnsw")
    assert exact["index"] == {"index": "exact"}
    assert flat["index"]["kind"] == "flat" and read_metrics(tmp_path / "flat")["index"]["index"] == "faiss"
    assert hnsw["index"]["kind"] == "hnsw" and hnsw["index"]["ef_search"] == 16

    def lists(name):
        rows = [json.loads(x) for x in (tmp_path / name / "recommendations.jsonl").read_text().splitlines()]
        return {r["user"]: [x["item"] for x in r["items"]] for r in rows}

    want = lists("exact")
    assert len(want) == 40 and all(len(v) == 8 for v in want.values())
    assert lists("flat") == want  # flat FAISS: the exact lists (seen items excluded by default)
    got = lists("hnsw")
    assert _recall(list(got.values()), [want[u] for u in got]) >= 0.9 and all(len(v) == 8 for v in got.values())
