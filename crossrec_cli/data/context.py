"""Cross-domain context for users shared by two domains (``shared_user_space`` in both files).

A target example's input becomes the time-ordered merge of its target history and the same
user's source-domain interactions that happened before the target item. Item ids in merged
histories are global: target items keep 0..N_t-1, source item j becomes N_t + j. Only target
positions are ever training targets; source items are context.
"""

from __future__ import annotations

import numpy as np

from crossrec_cli.data.domain import Domain
from crossrec_cli.data.split import EvalSet, Split


def _times(domain: Domain) -> dict[tuple[str, int], float]:
    """(raw user id, item index) -> earliest timestamp (NaN timestamps become -inf)."""
    out: dict[tuple[str, int], float] = {}
    t = np.nan_to_num(domain.inter_time, nan=-np.inf)
    for u, i, ti in zip(domain.inter_user.tolist(), domain.inter_item.tolist(), t.tolist()):
        key = (domain.user_ids[u], i)
        if key not in out or ti < out[key]:
            out[key] = ti
    return out


def _source_by_user(source: Domain, source_split: Split) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Raw user id -> (source training items, their times), time-ordered. Only the source's
    training items are used, so no source valid/test item leaks into any input."""
    times = _times(source)
    out = {}
    for u, seq in zip(source_split.train_users.tolist(), source_split.train_seqs):
        uid = source.user_ids[u]
        ts = np.asarray([times[(uid, int(i))] for i in seq])
        if uid not in out or len(seq) > len(out[uid][0]):
            out[uid] = (seq, ts)
    return out


def _merge(t_items, t_times, s_items, s_times, before: float, offset: int) -> np.ndarray:
    keep = s_times < before
    items = np.concatenate([s_items[keep] + offset, t_items])
    times = np.concatenate([s_times[keep], t_times])
    flag = np.concatenate([np.zeros(int(keep.sum())), np.ones(len(t_items))])  # ties: source first
    return items[np.lexsort((flag, times))].astype(np.int64)


def with_context(target: Domain, split: Split, source: Domain, source_split: Split) -> tuple[Split, np.ndarray]:
    """The target split with merged histories, and the shared-user count.

    Training sequences, validation and test histories all gain the user's earlier source items.
    """
    offset = target.n_items
    ttimes = _times(target)
    src = _source_by_user(source, source_split)
    empty = (np.zeros(0, dtype=np.int64), np.zeros(0))

    def merged(u: int, hist: np.ndarray, before: float) -> np.ndarray:
        uid = target.user_ids[u]
        s_items, s_times = src.get(uid, empty)
        t_times = np.asarray([ttimes[(uid, int(i))] for i in hist])
        return _merge(hist, t_times, s_items, s_times, before, offset)

    seqs = []
    for u, seq in zip(split.train_users.tolist(), split.train_seqs):
        last = ttimes[(target.user_ids[u], int(seq[-1]))] if len(seq) else -np.inf
        seqs.append(merged(u, seq, last + 1e-9 if np.isfinite(last) else np.inf))

    def ev(e: EvalSet) -> EvalSet:
        hists = [merged(u, h, ttimes[(target.user_ids[u], int(t))]) for u, h, t in zip(e.users.tolist(), e.histories, e.targets.tolist())]
        return EvalSet(e.users, hists, e.targets)

    shared = np.asarray(sorted(set(target.user_ids) & set(src)))
    return Split(split.train_users, seqs, ev(split.valid), ev(split.test), split.kind + " + source context"), shared


def short_history_mask(evalset: EvalSet, n_target_items: int, max_items: int) -> np.ndarray:
    """Examples whose target-domain history has at most ``max_items`` items (cold-start bucket)."""
    return np.asarray([int((h < n_target_items).sum()) <= max_items for h in evalset.histories], dtype=bool)
