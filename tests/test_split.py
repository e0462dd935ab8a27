"""Leave-one-out on the real bundled data, checked against the raw files read with plain Python.

Also: the popularity baseline run through the CLI, with one metric recomputed independently.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from crossrec_cli.data import Domain, DomainSpec, load_domain, make_split

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "crossrec_cli" / "conf" / "domain"
ML = REPO / "crossrec_cli" / "data" / "bundled" / "ml-100k"
CROSSREC = Path(sys.executable).parent / "crossrec"


def domain_from_conf(name: str) -> tuple[DomainSpec, Domain]:
    spec = DomainSpec.from_dict(yaml.safe_load((CONF / f"{name}.yaml").read_text()), where=name)
    return spec, load_domain(spec)


def raw_ml100k() -> dict[str, list[tuple[int, int, str]]]:
    """user id -> (timestamp, file position, item id), sorted: by time, ties in file order."""
    per_user: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    lines = (ML / "ml-100k.inter").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "user_id:token\titem_id:token\trating:float\ttimestamp:float"
    for pos, line in enumerate(lines[1:]):
        user, item, _rating, ts = line.split("\t")
        per_user[user].append((int(ts), pos, item))
    return {u: sorted(rows) for u, rows in per_user.items()}


def raw_ml100k_sequences() -> dict[str, list[str]]:
    return {u: [item for _, _, item in rows] for u, rows in raw_ml100k().items()}


@pytest.fixture(scope="module")
def movies():
    spec, domain = domain_from_conf("movies")
    return domain, make_split(domain, spec.order, spec.order_seed)


@pytest.fixture(scope="module")
def music():
    spec, domain = domain_from_conf("music")
    assert spec.order == "random"
    return spec, domain


def test_ml100k_is_complete(movies):
    domain, split = movies
    assert (domain.n_users, domain.n_items, domain.n_interactions) == (943, 1682, 100_000)
    assert split.kind == "leave-one-out"
    assert len(split.valid) == len(split.test) == 943  # every ml-100k user has >= 20 ratings


def test_leave_one_out_by_time_matches_raw_file(movies):
    domain, split = movies
    rows = raw_ml100k()
    raw = {u: [item for _, _, item in r] for u, r in rows.items()}
    ids = np.asarray(domain.item_ids, dtype=object)
    uid = domain.user_ids
    seqs = {uid[u]: list(ids[s]) for u, s in zip(split.train_users, split.train_seqs)}
    valid = {
        uid[u]: (list(ids[h]), ids[t])
        for u, h, t in zip(split.valid.users, split.valid.histories, split.valid.targets)
    }
    test = {
        uid[u]: (list(ids[h]), ids[t])
        for u, h, t in zip(split.test.users, split.test.histories, split.test.targets)
    }
    assert set(seqs) == set(valid) == set(test) == set(raw)
    ties = 0
    for user, items in raw.items():
        assert test[user][1] == items[-1], user  # test target: last by timestamp
        assert valid[user][1] == items[-2], user  # valid target: second last
        assert seqs[user] == items[:-2], user  # train: everything before, in time order
        assert valid[user][0] == items[:-2], user  # valid history = train
        assert test[user][0] == items[:-2] + [items[-2]], user  # test history = train + valid item
        # no leakage: neither held-out item is in the training sequence (ml-100k has no repeats)
        assert len(set(items)) == len(items)
        assert items[-1] not in seqs[user] and items[-2] not in seqs[user]
        ties += rows[user][-1][0] == rows[user][-2][0]
    # 415 users rated their last two movies in the same second: file order decides, as documented
    assert ties == 415


def test_users_with_fewer_than_3_interactions_only_train(movies):
    # real ml-100k users, cut down to 1 or 2 (earliest) interactions for every third user
    domain, _ = movies
    order = np.lexsort((np.arange(domain.n_interactions), domain.inter_time, domain.inter_user))
    position = np.empty_like(order)
    for u in range(domain.n_users):
        rows = order[domain.inter_user[order] == u]
        position[rows] = np.arange(len(rows))
    cut = (domain.inter_user % 3 == 0) & (position >= 1 + domain.inter_user % 2)
    keep = ~cut
    small = replace(domain, name="movies-cut", inter_user=domain.inter_user[keep], inter_item=domain.inter_item[keep],
                    inter_time=domain.inter_time[keep], inter_rating=domain.inter_rating[keep])
    split = make_split(small, "time")
    short = set(range(0, domain.n_users, 3))
    assert short.isdisjoint(split.valid.users.tolist()) and short.isdisjoint(
        split.test.users.tolist()
    )
    assert set(split.test.users.tolist()) == set(range(domain.n_users)) - short
    seqs = dict(zip(split.train_users.tolist(), split.train_seqs))
    for u in short:  # their whole (1 or 2 item) sequence is training data
        expected = domain.inter_item[order[domain.inter_user[order] == u]][: 1 + u % 2]
        assert seqs[u].tolist() == expected.tolist()


def test_lastfm_short_users_only_in_train(music):
    spec, domain = music
    split = make_split(domain, spec.order, spec.order_seed)
    counts = np.bincount(domain.inter_user, minlength=domain.n_users)
    short = set(np.flatnonzero(counts < 3).tolist())
    assert len(short) == 9  # real hetrec2011 users with 1 or 2 artists
    assert short.isdisjoint(split.test.users.tolist()) and short.isdisjoint(
        split.valid.users.tolist()
    )
    assert len(split.test) == domain.n_users - 9
    seqs = dict(zip(split.train_users.tolist(), split.train_seqs))
    assert all(len(seqs[u]) == counts[u] for u in short)


def test_lastfm_random_order_is_seeded(music):
    spec, domain = music
    a = make_split(domain, "random", spec.order_seed)
    b = make_split(domain, "random", spec.order_seed)
    c = make_split(domain, "random", spec.order_seed + 1)
    assert a.digest() == b.digest()
    assert a.digest() != c.digest()
    changed = np.mean(a.test.targets != c.test.targets)
    assert changed > 0.9  # another seed holds out another artist for almost every user
    # whatever the order, a user's train + valid + test items are exactly that user's artists
    users = {int(u): [] for u in range(domain.n_users)}
    for u, i in zip(domain.inter_user.tolist(), domain.inter_item.tolist()):
        users[u].append(i)
    seqs = dict(zip(a.train_users.tolist(), a.train_seqs))
    for u, v, t in zip(a.test.users.tolist(), a.valid.targets.tolist(), a.test.targets.tolist()):
        assert sorted(seqs[u].tolist() + [v, t]) == sorted(users[u])
    # and the order really is shuffled: the file lists each user's artists by id
    last_in_file = {u: items[-1] for u, items in users.items()}
    assert (
        np.mean(
            [t != last_in_file[u] for u, t in zip(a.test.users.tolist(), a.test.targets.tolist())]
        )
        > 0.9
    )


# ----- popularity through the CLI, one metric recomputed with plain numpy ------------------------


def independent_popularity_metrics(k: int) -> dict[str, float]:
    """Popularity leave-one-out Recall/NDCG@k on ml-100k without any crossrec code."""
    item_ids = [line.split("\t")[0] for line in (ML / "ml-100k.item").read_text().splitlines()[1:]]
    index = {iid: j for j, iid in enumerate(item_ids)}  # item-file order breaks ties
    seqs = raw_ml100k_sequences()
    counts = np.zeros(len(item_ids), dtype=np.int64)
    for items in seqs.values():
        for iid in items[:-2]:  # training part only: the two held-out items are not counted
            counts[index[iid]] += 1
    out = {}
    for split, pos in (("valid", -2), ("test", -1)):
        ranks = []
        for items in seqs.values():
            t = index[items[pos]]
            better = (counts > counts[t]) | ((counts == counts[t]) & (np.arange(len(counts)) < t))
            ranks.append(int(better.sum()))
        ranks = np.asarray(ranks)
        out[f"{split}.recall@{k}"] = float(np.mean(ranks < k))
        out[f"{split}.ndcg@{k}"] = float(
            np.mean([1 / math.log2(r + 2) if r < k else 0.0 for r in ranks])
        )
    return out


def test_popularity_cli_matches_independent_numpy(tmp_path):
    env = dict(os.environ, CROSSREC_CACHE=str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [
            str(CROSSREC),
            "evaluate",
            "model=popularity",
            "domain=movies",
            f"hydra.run.dir={run_dir}",
        ],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["model"] == "popularity" and record["protocol"] == "full"
    assert record["dataset"]["movies"]["interactions"] == 100_000
    assert record["dataset"]["movies"]["split"] == "leave-one-out"
    expected = independent_popularity_metrics(10)
    for key, value in expected.items():
        split, metric = key.split(".")
        assert record[split]["movies"][metric] == pytest.approx(value, abs=1e-12), key
    assert record["test"]["movies"]["examples"] == 943


def test_every_user_adds_each_training_sequences_last_item():
    """eval.test_users=all (with_every_user): the test examples, then one example per training
    sequence of two items or more (its last item given the ones before); nothing else changes."""
    from crossrec_cli.data import EvalSet, Split, with_every_user

    test = EvalSet(np.array([9]), [np.array([1, 2])], np.array([3]))
    valid = EvalSet(np.array([8]), [np.array([4])], np.array([5]))
    split = Split(np.array([0, 1, 2]), [np.array([6, 7, 1]), np.array([2]), np.array([3, 4])], valid, test, "given")
    got = with_every_user(split)
    assert got.test.users.tolist() == [9, 0, 2] and got.test.targets.tolist() == [3, 1, 4]
    assert [h.tolist() for h in got.test.histories] == [[1, 2], [6, 7], [3]]
    assert got.valid is valid and got.train_seqs is split.train_seqs and got.kind.startswith("given, test = ")
