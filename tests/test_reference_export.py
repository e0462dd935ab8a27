"""scripts/reference_recbole.py: the RecBole export reproduces crossrec's leave-one-out split."""

from __future__ import annotations

import importlib.util
import json
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from crossrec_cli.data import Domain, make_split

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reference_recbole.py"


@pytest.fixture(scope="module")
def ref():
    spec = importlib.util.spec_from_file_location("reference_recbole", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_inter(path: Path) -> dict[str, list[str]]:
    """The .inter file read with plain Python and ordered as RecBole orders it (user, timestamp)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "user_id:token\titem_id:token\ttimestamp:float"
    per_user: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for line in lines[1:]:
        user, item, ts = line.split("\t")
        per_user[user].append((float(ts), item))
    return {u: [i for _, i in sorted(rows)] for u, rows in per_user.items()}


def test_movies_export_matches_split(ref, tmp_path):
    domain, split = ref.load_split("movies", ["+data.overrides.filters.max_users=40"])
    inter = ref.export_atomic(split, domain.n_items, tmp_path / "movies", "movies")
    seqs = read_inter(inter)
    assert len(seqs) == 40 == len(split.test)
    for u, t in zip(split.test.users.tolist(), split.test.targets.tolist()):
        assert seqs[str(u)][-1] == str(t)
    for u, t in zip(split.valid.users.tolist(), split.valid.targets.tolist()):
        assert seqs[str(u)][-2] == str(t)
    items = (tmp_path / "movies" / "movies.item").read_text().splitlines()
    assert items[0] == "item_id:token" and len(items) - 1 == domain.n_items  # the whole catalogue
    check = ref.compare(ref.crossrec_examples(split), ref.recbole_examples(inter), split)
    for part in ("train", "valid", "test"):
        assert check[part]["same"] == check[part]["crossrec"] == check[part]["recbole"]


def tiny_domain(lengths: list[int]) -> Domain:
    """User u has lengths[u] interactions with items u, u+1, ... (times descending in file order)."""
    users = np.concatenate([np.full(n, u) for u, n in enumerate(lengths)])
    items = np.concatenate([np.arange(n) + u for u, n in enumerate(lengths)])
    times = np.concatenate([np.arange(n, 0, -1, dtype=float) for n in lengths])
    n_items = int(items.max()) + 1
    return Domain("tiny", [f"i{i}" for i in range(n_items)], {"text": [""] * n_items}, {}, [f"u{u}" for u in range(len(lengths))],
                  users, items, times, np.full(len(users), np.nan))


def test_short_users_and_truncation(ref, tmp_path):
    split = make_split(tiny_domain([1, 2, 3, 4, 7]))
    inter = ref.export_atomic(split, 10, tmp_path / "tiny", "tiny")
    seqs = read_inter(inter)
    assert seqs["3"] == ["6", "5", "4", "3"]  # crossrec's time order, kept by the timestamps
    check = ref.compare(ref.crossrec_examples(split, 2), ref.recbole_examples(inter, 2), split)
    # users with 1-2 interactions only train in both; the 3-interaction user differs in valid/train only
    assert check["users_with_3_interactions"] == ["2"]
    assert check["test"] == {"crossrec": 3, "recbole": 3, "same": 3, "differ_users": []}
    assert check["valid"] == {"crossrec": 3, "recbole": 2, "same": 2, "differ_users": ["2"]}
    assert check["train"]["recbole"] == check["train"]["crossrec"] + 1 and check["train"]["differ_users"] == ["2"]


def fake_run(tool: str, seed: int, ndcg: float) -> dict:
    metrics = {k: ndcg for k in ("recall@10", "ndcg@10", "recall@50", "ndcg@50")}
    return {"tool": tool, "seed": seed, "valid": metrics, "test": metrics, "seconds_per_epoch": 1.0,
            "best_epoch": 1, "epochs_run": 2, "wall_seconds": 3.0, "run_dir": "x"}


def test_runs_are_kept_across_invocations(ref, tmp_path, monkeypatch):
    """A (tool, seed) in the JSON of the same setup is not run again; a different setup starts
    afresh; each finished run is saved at once; --rerun replaces the kept run."""
    split = make_split(tiny_domain([4, 5, 6]))
    calls: list[tuple[str, int]] = []

    def recbole(name, data_dir, seed, out, overrides, mask_seen):
        calls.append(("recbole", seed))
        return fake_run("recbole", seed, 0.1 + seed) | {"items": 10, "examples": ref.crossrec_examples(split, 50)}

    def crossrec(name, seed, out, overrides, mask_seen):
        calls.append(("crossrec", seed))
        assert (tmp_path / "r.json").is_file()  # RecBole's run of this seed is already saved
        return fake_run("crossrec", seed, 0.2 + seed)

    monkeypatch.setattr(ref, "run_recbole", recbole)
    monkeypatch.setattr(ref, "run_crossrec", crossrec)
    monkeypatch.setattr(ref, "RECORDS", tmp_path / "records")
    out = tmp_path / "r.json"

    def invoke(seeds: list[int], sha: str = "abc", rerun: bool = False) -> dict:
        args = SimpleNamespace(seeds=seeds, skip_recbole=False, skip_crossrec=False, rerun=rerun,
                               exclude_seen=False, crossrec_override=[])
        record = {"domain": "tiny", "dataset": {"sha256": sha}, "exclude_seen": False, "recbole_config": {"a": 1},
                  "crossrec_overrides": ["experiment=sasrec"], "runs": []}
        record["runs"], _ = ref.kept_runs(out, record)
        ref.run_seeds("tiny", 10, split, tmp_path, tmp_path, {}, args, ref.Console(quiet=True), record, out)
        return record

    invoke([0])
    assert calls == [("recbole", 0), ("crossrec", 0)]
    record = invoke([0, 1])
    assert calls[2:] == [("recbole", 1), ("crossrec", 1)]  # seed 0 kept, not run again
    saved = json.loads(out.read_text())
    assert sorted((r["tool"], r["seed"]) for r in saved["runs"]) == [("crossrec", 0), ("crossrec", 1),
                                                                      ("recbole", 0), ("recbole", 1)]
    assert saved["summary"]["recbole"]["test N@10"]["mean"] == pytest.approx(0.6)  # (0.1 + 1.1) / 2
    assert saved["summary"]["gap_test_ndcg@10"] == pytest.approx((0.7 - 0.6) / 0.6)
    assert record["runs"] == saved["runs"]
    out.rename(tmp_path / "moved.json")  # only the committed copy is left: it is read instead
    (tmp_path / "records").mkdir()
    (tmp_path / "moved.json").rename(tmp_path / "records" / "r.json")
    invoke([1])
    assert len(calls) == 4
    invoke([0], rerun=True)
    assert calls[4:] == [("recbole", 0), ("crossrec", 0)]
    assert len(json.loads(out.read_text())["runs"]) == 4
    invoke([0], sha="other")  # other data: nothing kept
    assert calls[6:] == [("recbole", 0), ("crossrec", 0)]
    assert [(r["tool"], r["seed"]) for r in json.loads(out.read_text())["runs"]] == [("recbole", 0), ("crossrec", 0)]


def test_parallel_invocations_keep_each_others_runs(ref, tmp_path, monkeypatch):
    """Two invocations of one domain, one seed each, started together: whichever saves last still
    writes the runs the other saved meanwhile; a JSON of another setup is not merged in."""
    split = make_split(tiny_domain([4, 5, 6]))
    out = tmp_path / "r.json"
    monkeypatch.setattr(ref, "RECORDS", tmp_path / "records")
    monkeypatch.setattr(ref, "run_crossrec", lambda name, seed, *a: fake_run("crossrec", seed, 0.2 + seed))

    def start(seed: int, sha: str = "abc") -> tuple[dict, SimpleNamespace]:
        record = {"domain": "tiny", "dataset": {"sha256": sha}, "exclude_seen": False, "recbole_config": {"a": 1},
                  "crossrec_overrides": ["experiment=sasrec"], "runs": []}
        record["runs"], _ = ref.kept_runs(out, record)  # read when it starts: the other's runs not there yet
        return record, SimpleNamespace(seeds=[seed], skip_recbole=True, skip_crossrec=False, rerun=False,
                                       exclude_seen=False, crossrec_override=[])

    (a, a_args), (b, b_args) = start(1), start(2)
    ref.run_seeds("tiny", 10, split, tmp_path, tmp_path, {}, a_args, ref.Console(quiet=True), a, out)
    ref.run_seeds("tiny", 10, split, tmp_path, tmp_path, {}, b_args, ref.Console(quiet=True), b, out)
    saved = json.loads(out.read_text())
    assert [(r["tool"], r["seed"]) for r in saved["runs"]] == [("crossrec", 1), ("crossrec", 2)]
    assert saved["summary"]["crossrec"]["test N@10"]["mean"] == pytest.approx(1.7)  # (1.2 + 2.2) / 2
    c, c_args = start(3, sha="other")
    ref.run_seeds("tiny", 10, split, tmp_path, tmp_path, {}, c_args, ref.Console(quiet=True), c, out)
    assert [(r["tool"], r["seed"]) for r in json.loads(out.read_text())["runs"]] == [("crossrec", 3)]
