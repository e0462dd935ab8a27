"""Leave-one-out splitting by time, and the containers every trainer and evaluator reads."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from crossrec_cli.registry import Registry


@dataclass
class EvalSet:
    """Examples to rank: ``histories[i]`` (item indices, oldest first) predicts ``targets[i]``."""

    users: np.ndarray  # (n,) user index
    histories: list[np.ndarray]
    targets: np.ndarray  # (n,) item index

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, mask: np.ndarray) -> EvalSet:
        idx = np.flatnonzero(mask)
        return EvalSet(self.users[idx], [self.histories[i] for i in idx], self.targets[idx])


@dataclass
class Split:
    """Training sequences plus validation and test examples.

    Training example ``(s, p)`` in ``train_pairs`` means: history ``train_seqs[s][:p]`` predicts
    ``train_seqs[s][p]``. No valid or test target is ever inside ``train_seqs``.
    """

    train_users: np.ndarray  # (n_seqs,)
    train_seqs: list[np.ndarray]
    valid: EvalSet
    test: EvalSet
    kind: str  # "leave-one-out" | "given"

    @property
    def train_pairs(self) -> np.ndarray:
        """(n_pairs, 2) int64 of (sequence index, target position)."""
        out = [np.stack([np.full(len(s) - 1, i), np.arange(1, len(s))], 1) for i, s in enumerate(self.train_seqs) if len(s) > 1]
        return np.concatenate(out).astype(np.int64) if out else np.zeros((0, 2), dtype=np.int64)

    def train_item_counts(self, n_items: int) -> np.ndarray:
        """Training interactions per item: each user's longest training sequence, counted once."""
        longest: dict[int, np.ndarray] = {}
        for u, s in zip(self.train_users.tolist(), self.train_seqs):
            if u not in longest or len(s) > len(longest[u]):
                longest[u] = s
        items = np.concatenate(list(longest.values())) if longest else np.zeros(0, dtype=np.int64)
        return np.bincount(items, minlength=n_items)

    def digest(self) -> str:
        h = hashlib.sha256()
        for s in self.train_seqs:
            h.update(s.astype(np.int64).tobytes() + b"|")
        for ev in (self.valid, self.test):
            for u, hist, t in zip(ev.users, ev.histories, ev.targets):
                h.update(f"{u}:{t}:".encode() + hist.astype(np.int64).tobytes())
        return h.hexdigest()


# a domain file's ``order``: (timestamps, weights, seed, n) -> the sort key within a user
ORDERS: Registry[Callable[[np.ndarray, np.ndarray, int, int], np.ndarray]] = Registry("order", "order")
ORDERS.add("time", lambda time, weight, seed, n: np.nan_to_num(time, nan=-np.inf))
ORDERS.add("random", lambda time, weight, seed, n: np.random.default_rng(seed).permutation(n).astype(np.float64))
ORDERS.add("weight", lambda time, weight, seed, n: np.nan_to_num(weight, nan=0.0))


def order_interactions(users: np.ndarray, time: np.ndarray, weight: np.ndarray, order: str, seed: int) -> np.ndarray:
    """Indices that sort interactions by user, then by ``order`` within a user (stable).

    time: by timestamp, ties and missing timestamps in file order; random: a seeded permutation
    (for formats without timestamps); weight: ascending weight/rating, so the heaviest is last.
    """
    n = len(users)
    key = ORDERS.get(order)(time, weight, seed, n)
    return np.lexsort((np.arange(n), key, users))


def make_split(domain, order: str = "time", order_seed: int = 0) -> Split:
    """The dataset's own split when it ships one, else leave-one-out.

    Leave-one-out: per user (ordered by ``order``), last = test, second-last = valid, the rest
    train. Users with fewer than 3 interactions only contribute training sequences.
    """
    if domain.given_split is not None:
        return domain.given_split
    idx = order_interactions(domain.inter_user, domain.inter_time, domain.inter_rating, order, order_seed)
    users, items = domain.inter_user[idx], domain.inter_item[idx]
    bounds = np.flatnonzero(np.diff(users)) + 1
    t_users, t_seqs, v, te = [], [], ([], [], []), ([], [], [])
    for seq_users, seq in zip(np.split(users, bounds), np.split(items, bounds)):
        if len(seq) == 0:
            continue
        u = int(seq_users[0])
        if len(seq) < 3:
            t_users.append(u)
            t_seqs.append(seq.copy())
            continue
        t_users.append(u)
        t_seqs.append(seq[:-2].copy())
        v[0].append(u), v[1].append(seq[:-2].copy()), v[2].append(int(seq[-2]))
        te[0].append(u), te[1].append(seq[:-1].copy()), te[2].append(int(seq[-1]))

    def ev(parts):
        return EvalSet(np.asarray(parts[0], dtype=np.int64), parts[1], np.asarray(parts[2], dtype=np.int64))

    return Split(np.asarray(t_users, dtype=np.int64), t_seqs, ev(v), ev(te), "leave-one-out")


def subsample_training_users(split: Split, fraction: float, seed: int) -> Split:
    """Keep the training sequences of a seeded random ``fraction`` of users (at least one);
    validation and test examples are unchanged, so every user is still evaluated."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return split
    users = np.unique(split.train_users)
    k = max(1, int(round(fraction * len(users))))
    keep = set(np.random.default_rng([seed, 11]).choice(users, size=k, replace=False).tolist())
    idx = [i for i, u in enumerate(split.train_users.tolist()) if u in keep]
    return Split(split.train_users[idx], [split.train_seqs[i] for i in idx], split.valid, split.test,
                 f"{split.kind}, {k}/{len(users)} training users")


def with_every_user(split: Split) -> Split:
    """``eval.test_users=all``: the test examples plus, for each training sequence of two items or
    more, its last item given the items before it. On a user-level split (validation and test
    users never trained on: format cdsr) every user of the domain is then ranked once; for a
    scorer that never read this domain's interactions (the text scorer, a model on a domain it
    never trained on), that is what a zero-shot comparison can rest on: many times the test users'
    examples. Training sequences and validation are unchanged."""
    seqs = [s for s in split.train_seqs if len(s) > 1]
    users = np.asarray([u for u, s in zip(split.train_users.tolist(), split.train_seqs) if len(s) > 1],
                       dtype=split.test.users.dtype)
    test = EvalSet(np.concatenate([split.test.users, users]),
                   list(split.test.histories) + [s[:-1] for s in seqs],
                   np.concatenate([split.test.targets, np.asarray([s[-1] for s in seqs], dtype=split.test.targets.dtype)]))
    return Split(split.train_users, split.train_seqs, split.valid, test,
                 f"{split.kind}, test = test users + every training sequence's last item")
