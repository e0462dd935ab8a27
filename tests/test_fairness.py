"""The user-vector probe (evaluation/fairness.py): a planted attribute is found, noise reads as
chance, the macro one-vs-rest AUC by hand, and finetune writes the fairness block."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import read_metrics, run_inprocess

from crossrec_cli.data.split import EvalSet, Split
from crossrec_cli.evaluation.fairness import attribute_leakage, macro_ovr_auc, probe_auc, probe_users


def _planted(n: int, rng: np.random.Generator, signal: float) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 16))
    x[:, 3] += signal * (2 * y - 1)  # the attribute along one direction
    return x, np.where(y == 1, "F", "M").astype(object)


def test_probe_finds_a_linear_direction():
    rng = np.random.default_rng(0)
    x, y = _planted(400, rng, 4.0)
    got = probe_auc(x[:300], y[:300], x[300:], y[300:])
    assert got["leakage_auc"] > 0.98 and got["chance"] == 0.5
    assert got["users_train"] == 300 and got["users_test"] == 100


def test_probe_reads_chance_on_noise_and_shuffled_labels():
    rng = np.random.default_rng(1)
    x, _ = _planted(2000, rng, 0.0)
    y = rng.permutation(np.array(["F", "M"] * 1000, dtype=object))
    assert probe_auc(x[:1500], y[:1500], x[1500:], y[1500:])["leakage_auc"] == pytest.approx(0.5, abs=0.06)
    x, y = _planted(2000, rng, 4.0)
    shuffled = rng.permutation(y)
    assert probe_auc(x[:1500], shuffled[:1500], x[1500:], shuffled[1500:])["leakage_auc"] == pytest.approx(0.5, abs=0.06)


def test_macro_ovr_auc_by_hand():
    labels = np.array(["a", "a", "b", "c"], dtype=object)
    proba = np.array([[0.6, 0.3, 0.1],
                      [0.2, 0.5, 0.3],
                      [0.4, 0.4, 0.2],
                      [0.1, 0.2, 0.7]])
    # a vs rest: positives 0.6, 0.2 against negatives 0.4, 0.1 -> pairs won 1, 1, 0, 1 -> 3/4
    # b vs rest: positive 0.4 against 0.3, 0.5, 0.2 -> 2/3; c vs rest: 0.7 above all -> 1
    assert macro_ovr_auc(labels, proba, ["a", "b", "c"]) == pytest.approx((3 / 4 + 2 / 3 + 1) / 3)
    # two classes: the second class's column, F < M in sorted order
    two = macro_ovr_auc(np.array(["F", "M", "M"], dtype=object), np.array([[0.8, 0.2], [0.3, 0.7], [0.9, 0.1]]), ["F", "M"])
    assert two == pytest.approx(0.5)  # M scores 0.7, 0.1 against F's 0.2: one pair of two won
    assert macro_ovr_auc(np.array(["F", "F"], dtype=object), np.ones((2, 2)) / 2, ["F", "M"]) is None


def _split(n_users: int) -> Split:
    seqs = [np.array([u % 7, 7 + u % 5, 12]) for u in range(n_users)]
    ev = EvalSet(np.arange(n_users), [s for s in seqs], np.zeros(n_users, dtype=np.int64))
    return Split(np.arange(n_users), seqs, ev, ev, "leave-one-out")


def test_probe_users_never_overlap_and_are_seeded():
    fit, held = probe_users(_split(50), 0.3, seed=4)
    assert not set(fit.users.tolist()) & set(held.users.tolist()) and len(held) == 15 and len(fit) == 35
    assert probe_users(_split(50), 0.3, seed=4)[1].users.tolist() == held.users.tolist()
    assert probe_users(_split(50), 0.3, seed=5)[1].users.tolist() != held.users.tolist()
    # a user-level split: the test users are held out as they are, read through their test history
    split = _split(10)
    test = EvalSet(np.arange(10, 14), [np.array([1, 2])] * 4, np.zeros(4, dtype=np.int64))
    fit, held = probe_users(Split(split.train_users, split.train_seqs, split.valid, test, "given"), 0.3, 0)
    assert fit.users.tolist() == list(range(10)) and held.users.tolist() == [10, 11, 12, 13]


def test_attribute_leakage_through_a_user_tower():
    n = 1000
    rng = np.random.default_rng(2)
    gender = np.where(rng.random(n) < 0.5, "F", "M").astype(object)
    gender[:5] = ""  # no value: left out
    planted = np.where(gender == "F", 3.0, -3.0)

    def tower(ev: EvalSet) -> np.ndarray:  # the user's vector carries the attribute on one axis
        x = rng.normal(size=(len(ev), 8))
        x[:, 0] += planted[ev.users]
        return x

    got = attribute_leakage(tower, _split(n), {"gender": gender, "noise": rng.permutation(gender)}, seed=0)
    assert got["gender"]["leakage_auc"] > 0.95 and got["gender"]["users_train"] + got["gender"]["users_test"] == 995
    assert abs(got["noise"]["leakage_auc"] - 0.5) < 0.1


def test_finetune_writes_the_fairness_block(tmp_path):
    run_inprocess("finetune", "experiment=smoke", run_dir=tmp_path)
    block = read_metrics(tmp_path)["fairness"]["movies"]
    assert set(block) == set(read_metrics(tmp_path)["groups"]["movies"])  # every user_groups column
    for column, probe in block.items():
        assert probe["chance"] == 0.5 and probe["users_train"] > probe["users_test"] > 0, column
        assert probe["leakage_auc"] is None or 0.0 <= probe["leakage_auc"] <= 1.0
    assert block["gender"]["leakage_auc"] is not None
