"""Overlapping users: two real domains cut from ml-100k by genre share their user ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, read_metrics, run_cli

from crossrec_cli.data import DomainSpec, load_domain, make_split
from crossrec_cli.data.context import short_history_mask, with_context

BUNDLED = REPO / "crossrec_cli" / "data" / "bundled" / "ml-100k"
ACTION = {"Action", "Adventure", "Sci-Fi", "Thriller", "War", "Crime"}


def write_genre_domains(root: Path) -> Path:
    """ml-100k cut into 'action' and 'other' movies (by genre), same users, same timestamps."""
    items = (BUNDLED / "ml-100k.item").read_text().splitlines()
    inter = (BUNDLED / "ml-100k.inter").read_text().splitlines()
    side = {}
    for row in items[1:]:
        cells = row.split("\t")
        side[cells[0]] = "action" if ACTION & set(cells[3].split()) else "other"
    for name in ("action", "other"):
        data = root / "data" / name
        data.mkdir(parents=True)
        (data / f"{name}.item").write_text("\n".join([items[0]] + [r for r in items[1:] if side[r.split("\t")[0]] == name]) + "\n")
        (data / f"{name}.inter").write_text("\n".join([inter[0]] + [r for r in inter[1:] if side[r.split("\t")[1]] == name]) + "\n")
        (root / "domain").mkdir(exist_ok=True)
        (root / "domain" / f"{name}.yaml").write_text(
            f"name: {name}\nformat: recbole\npath: {data}\ndataset: {name}\n"
            "text_fields: [movie_title, release_year, class]\nshared_user_space: ml-100k-users\n")
    return root


@pytest.fixture(scope="module")
def genre_dir(tmp_path_factory):
    return write_genre_domains(tmp_path_factory.mktemp("genres"))


def _load(root, name):
    spec = DomainSpec.from_dict({"name": name, "format": "recbole", "path": str(root / "data" / name), "dataset": name,
                                 "text_fields": ["movie_title", "release_year", "class"]})
    d = load_domain(spec)
    return d, make_split(d)


def test_merged_histories_are_time_ordered_and_leak_nothing(genre_dir):
    tgt, tsplit = _load(genre_dir, "other")
    src, ssplit = _load(genre_dir, "action")
    ctx, shared = with_context(tgt, tsplit, src, ssplit)
    assert len(shared) > 800  # most ml-100k users rate both kinds of movies
    times_t = {(tgt.user_ids[u], i): t for u, i, t in zip(tgt.inter_user, tgt.inter_item, tgt.inter_time)}
    times_s = {(src.user_ids[u], i): t for u, i, t in zip(src.inter_user, src.inter_item, src.inter_time)}
    src_test = {(src.user_ids[u], int(t)) for u, t in zip(ssplit.test.users, ssplit.test.targets)}
    n = tgt.n_items
    for k in range(0, len(ctx.test), 37):
        uid, hist, target = tgt.user_ids[ctx.test.users[k]], ctx.test.histories[k], int(ctx.test.targets[k])
        t_target = times_t[(uid, target)]
        ts = [times_t[(uid, int(i))] if i < n else times_s[(uid, int(i) - n)] for i in hist]
        assert ts == sorted(ts) and max(ts, default=-1) <= t_target
        assert list(hist[hist < n]) == list(tsplit.test.histories[k])  # the target history is intact
        assert not any((uid, int(i) - n) in src_test for i in hist[hist >= n])  # source test items stay out
    # training sequences still never contain the user's target valid/test items
    for u, seq in zip(ctx.train_users, ctx.train_seqs):
        k = np.flatnonzero(tsplit.test.users == u)
        if len(k):
            assert int(tsplit.test.targets[k[0]]) not in set(seq[seq < n].tolist())


def test_short_history_mask_counts_target_items_only():
    from crossrec_cli.data.split import EvalSet

    ev = EvalSet(np.arange(3), [np.array([0, 1, 12, 13]), np.array([0, 1, 2, 3, 4]), np.array([15])], np.zeros(3, int))
    assert short_history_mask(ev, n_target_items=10, max_items=3).tolist() == [True, False, True]


def test_transfer_reports_context_and_cold_start(genre_dir, tmp_path):
    run_cli("transfer", "experiment=smoke", "source=action", "target=other", f"hydra.searchpath=[file://{genre_dir}]",
            "data.overrides.filters.max_users=150", "overlap.cold_start_max=10", run_dir=tmp_path)
    m = read_metrics(tmp_path)
    t = m["transfer"]
    assert t["with_context"]["shared_users"] > 50
    assert "ndcg@10" in t["with_context"]["test"]["other"]
    cs = t["cold_start"]
    assert cs["max_target_items"] == 10 and cs["examples"] > 0
    assert {"adapted", "control", "with_context"} <= set(cs)
