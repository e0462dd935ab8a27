"""Cross-domain context for users shared by two domains (``shared_user_space`` in both files).

A target example's input becomes the time-ordered merge of its target history and the same
user's source-domain interactions that happened before the target item. Item ids in merged
histories are global: target items keep 0..N_t-1, source item j becomes N_t + j. Only target
positions are ever training targets; source items are context.

Domains read from one benchmark of mixed-domain lines (``format: cdsr``) carry the lines
themselves (``Domain.mixed``): their merged histories are the published lines, exactly, valid
and test users included (their other-domain items are inputs, never targets).
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
    """The target split with merged histories, and the shared users (raw ids).

    Training sequences, validation and test histories all gain the user's earlier source items.
    """
    if target.mixed is not None and source.mixed is not None and target.mixed.folder == source.mixed.folder:
        return mixed_split(target, split, source)
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


def mixed_split(target: Domain, split: Split, source: Domain) -> tuple[Split, np.ndarray]:
    """``with_context`` for domains of one mixed-line benchmark: every training sequence, valid
    and test history is its user's line restricted to the two domains' sides (the target's own
    items where they were, the source's as context), the example's target last and left out."""
    lines = target.mixed.by_user()
    tside, sside = target.mixed.side, source.mixed.side
    index = {tside: {iid: k for k, iid in enumerate(target.item_ids)},
             sside: {iid: target.n_items + k for k, iid in enumerate(source.item_ids)}}

    def merged(u: int, own: np.ndarray, end: int | None = None) -> np.ndarray:
        line = lines[target.user_ids[u]]
        pairs = [(s, i) for s, i in zip(line.sides[:end], line.items[:end]) if s in index]
        out = np.asarray([index[s][i] for s, i in pairs], dtype=np.int64)
        if not np.array_equal(out[out < target.n_items], own):  # the split's own items, as the line has them
            raise ValueError(f"user {target.user_ids[u]!r}: the split's history is not the line's {tside} items")
        return out

    seqs = [merged(u, seq) for u, seq in zip(split.train_users.tolist(), split.train_seqs)]

    def ev(e: EvalSet) -> EvalSet:
        return EvalSet(e.users, [merged(u, h, -1) for u, h in zip(e.users.tolist(), e.histories)], e.targets)

    shared = {target.user_ids[u] for part in (split.train_users, split.valid.users, split.test.users)
              for u in part.tolist() if (lines[target.user_ids[u]].sides.count(sside) > 0)}
    return (Split(split.train_users, seqs, ev(split.valid), ev(split.test), split.kind + " + source context"),
            np.asarray(sorted(shared)))


def composite_key(target: str, source: str) -> str:
    """The model's catalogue key of ``target``'s examples read with ``source``'s items as context."""
    return f"{target}+{source}"


def context_of(key: str) -> str:
    """The context domain of a composite key (``composite_key``'s ``source``)."""
    return key.split("+", 1)[1]


def context_pairs(spaces: dict[str, str | None]) -> dict[str, str]:
    """Domain -> the one other domain of ``spaces`` (name -> ``shared_user_space``) sharing its
    users: the context each domain's histories gain under ``mixed_history=true``."""
    from crossrec_cli.errors import CrossrecError

    out = {}
    for name, space in spaces.items():
        partners = [n for n, s in spaces.items() if n != name and space and s == space]
        if len(partners) != 1:
            found = f"{len(partners)} ({', '.join(partners)})" if partners else "none"
            raise CrossrecError("mixed_history", f"domain {name!r} needs exactly one other domain of the run with its "
                                f"shared_user_space ({space!r}); found {found}",
                                "run the two domains that share users together: domain=[a,b] with one shared_user_space")
        out[name] = partners[0]
    return out


def mixed_histories(domains: dict[str, Domain], spaces: dict[str, str | None], splits: dict[str, Split],
                    targets: list[str] | None = None) -> tuple[dict[str, Split], dict[str, str], dict[str, dict]]:
    """``mixed_history=true``: each domain of ``targets`` (default: all) with the other domain of
    its shared user space as context (``with_context``), the composite key the model knows it by
    (``<target>+<source>``) and, per domain, what metrics.json records: the context domain and
    how many examples of each part have context items in their input."""
    pairs = {t: s for t, s in context_pairs(spaces).items() if targets is None or t in targets}
    mixed, record = {}, {}
    for t, src in pairs.items():
        mixed[t], shared = with_context(domains[t], splits[t], domains[src], splits[src])
        n_t = domains[t].n_items
        record[t] = {"context": src, "shared_users": int(len(shared)),
                     "examples_with_context": {p: int(sum(bool((h >= n_t).any()) for h in getattr(mixed[t], p).histories))
                                               for p in ("valid", "test")}}
    return mixed, {t: composite_key(t, s) for t, s in pairs.items()}, record
