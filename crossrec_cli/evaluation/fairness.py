"""How much a user vector gives away: a linear probe per user attribute (``user_groups``).

For each column of the domain's ``user_groups`` a logistic regression (scikit-learn, on
standardised vectors) learns the attribute from probe-training users' final user vectors and is
scored on held-out users by ROC AUC: 0.5 is chance, 1.0 an attribute read off perfectly. With
more than two groups the AUC is the macro one-vs-rest mean over the groups.

Which users, and which vectors (no user is on both sides of the probe):

- a user's *final* vector is the user tower's state after the user's whole training sequence
  (the longest one when a user has several);
- when the test users never trained (a user-level split), the probe trains on every training
  user and is scored on the test users, each read through the history of their test example;
- otherwise (leave-one-out: every test user also trained) a seeded share ``test_share`` of the
  training users is held out for scoring and the probe trains on the others.

Users without a value for a column are left out of it, and so are held-out users whose group
no probe-training user has.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from crossrec_cli.data.split import EvalSet, Split

log = logging.getLogger("crossrec")


def macro_ovr_auc(labels: np.ndarray, proba: np.ndarray, classes: list[str]) -> float | None:
    """ROC AUC of ``proba`` (n, C) for ``labels`` (n,): two classes -> the AUC of the second
    class's column; more -> the mean over classes of each column's one-vs-rest AUC (classes
    without both positives and negatives among ``labels`` left out). None: nothing scorable."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels, dtype=object)
    if len(classes) == 2:
        pos = labels == classes[1]
        return float(roc_auc_score(pos, proba[:, 1])) if 0 < pos.sum() < len(pos) else None
    aucs = [float(roc_auc_score(labels == c, proba[:, j])) for j, c in enumerate(classes)
            if 0 < (labels == c).sum() < len(labels)]
    return float(np.mean(aucs)) if aucs else None


def probe_auc(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
              seed: int = 0) -> dict[str, Any]:
    """Fit a logistic regression on ``train_x`` (n, d) / ``train_y`` (n,) labels, score it on
    ``test_x`` (m, d) / ``test_y`` (m,): ``{"leakage_auc", "chance": 0.5, "users_train",
    "users_test"}`` (``leakage_auc`` None with a ``reason`` when the attribute cannot be probed)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_y, test_y = np.asarray(train_y, dtype=object), np.asarray(test_y, dtype=object)
    classes = sorted(set(train_y.tolist()))
    keep = np.isin(test_y, classes)
    test_x, test_y = test_x[keep], test_y[keep]
    out: dict[str, Any] = {"leakage_auc": None, "chance": 0.5, "users_train": int(len(train_y)),
                           "users_test": int(len(test_y))}
    if len(classes) < 2:
        return out | {"reason": f"probe-training users hold {len(classes)} group(s)"}
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    probe.fit(np.asarray(train_x, dtype=np.float64), train_y)
    order = [list(probe.classes_).index(c) for c in classes]
    proba = probe.predict_proba(np.asarray(test_x, dtype=np.float64))[:, order] if len(test_y) else np.zeros((0, len(classes)))
    auc = macro_ovr_auc(test_y, proba, classes)
    if auc is None:
        return out | {"reason": "held-out users do not hold two groups"}
    return out | {"leakage_auc": auc}


def probe_users(split: Split, test_share: float, seed: int) -> tuple[EvalSet, EvalSet]:
    """(probe-training users, held-out users), each an EvalSet whose ``histories`` are the
    histories the user vectors are read from (targets unused: -1). See the module docstring."""
    longest: dict[int, np.ndarray] = {}
    for u, s in zip(split.train_users.tolist(), split.train_seqs):
        if len(s) and (u not in longest or len(s) > len(longest[u])):
            longest[u] = s

    def evalset(users: list[int], hists: list[np.ndarray]) -> EvalSet:
        return EvalSet(np.asarray(users, dtype=np.int64), hists, np.full(len(users), -1, dtype=np.int64))

    train_users = sorted(longest)
    test_first: dict[int, np.ndarray] = {}
    for u, h in zip(split.test.users.tolist(), split.test.histories):
        if len(h):
            test_first.setdefault(u, h)
    if test_first and not set(test_first) & set(longest):  # a user-level split
        held = sorted(test_first)
        return (evalset(train_users, [longest[u] for u in train_users]),
                evalset(held, [test_first[u] for u in held]))
    perm = np.random.default_rng([seed, 33]).permutation(len(train_users))
    n_held = int(round(test_share * len(train_users)))
    held = sorted(train_users[i] for i in perm[:n_held])
    fit = sorted(train_users[i] for i in perm[n_held:])
    return evalset(fit, [longest[u] for u in fit]), evalset(held, [longest[u] for u in held])


def attribute_leakage(user_vectors, split: Split, groups: dict[str, np.ndarray], seed: int = 0,
                      test_share: float = 0.3) -> dict[str, dict[str, Any]]:
    """``{column: probe_auc(...)}`` for each column of ``groups`` (column -> (n_users,) label per
    user index, "" for none). ``user_vectors(evalset) -> (n, dim)`` is the run's user tower."""
    fit, held = probe_users(split, test_share, seed)
    x_fit = _numpy(user_vectors(fit)) if len(fit) else np.zeros((0, 1))
    x_held = _numpy(user_vectors(held)) if len(held) else np.zeros((0, 1))
    out = {}
    for column, labels in groups.items():
        y_fit, y_held = labels[fit.users], labels[held.users]
        a, b = y_fit != "", y_held != ""
        out[column] = probe_auc(x_fit[a], y_fit[a], x_held[b], y_held[b], seed)
        log.info("fairness: %s leakage AUC %s (%d probe-training / %d held-out users)", column,
                 "n/a" if out[column]["leakage_auc"] is None else f"{out[column]['leakage_auc']:.3f}",
                 out[column]["users_train"], out[column]["users_test"])
    return out


def _numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


# -- a protected attribute in training (adversarial=fair, fairness.reweight) --------------------

def training_labels(split: Split, labels: np.ndarray, seed: int = 0, test_share: float = 0.3) -> np.ndarray:
    """``labels`` (a group per user index, "" for none) with every user the probe scores blanked:
    what training may read of the attribute, so that the leakage the probe reports is measured on
    users whose attribute no training step saw (the same seeded draw as ``attribute_leakage``)."""
    _, held = probe_users(split, test_share, seed)
    out = np.asarray(labels, dtype=object).copy()
    out[held.users] = ""
    return out


def group_weights(groups: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """A loss weight per training window for ``fairness.reweight=group``: ``groups`` (the window's
    user's group, "" for none), ``targets`` (its number of targets). A target of a user of group g
    weighs T / (G x T_g), T the labelled targets, G the groups, T_g group g's: every group's
    targets weigh T / G in total and the mean weight of a labelled target is 1. Users without a
    group keep weight 1."""
    groups, targets = np.asarray(groups, dtype=object), np.asarray(targets, dtype=np.float64)
    out = np.ones(len(groups), dtype=np.float64)
    labelled = groups != ""
    names = sorted(set(groups[labelled].tolist()))
    total = targets[labelled].sum()
    for g in names:
        sel = groups == g
        out[sel] = total / (len(names) * targets[sel].sum())
    return out


# fairness.reweight: name -> per-window weights (None: every target weighs 1)
REWEIGHTS = {"none": None, "group": group_weights}
