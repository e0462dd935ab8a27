"""RecBole / UniSRec pre-split benchmark files, used as given (never re-split).

Files: ``<stem>.train.inter``, ``<stem>.valid.inter``, ``<stem>.test.inter`` (RecBole typed
headers), and the items from ``<stem>.item``, else ``<stem>.text`` (UniSRec:
``item_id:token text:token_seq``). The items are the item file's rows, in its order.

Two forms, told apart by a ``<item_field>_list:token_seq`` column (``item_id_list``):

- interaction rows (``user_id item_id [timestamp] [rating]``): the train rows are the training
  interactions, one time-ordered sequence per user (``order`` of the spec); a valid row's
  history is that user's training sequence; a test row's history is the training sequence
  followed by the user's valid items.
- sequential rows (``user_id item_id_list item_id``, the UniSRec / RecBole benchmark files):
  each row is one (history, target) example; valid and test rows are evaluation examples
  exactly as written. Each train row contributes exactly one training pair: a row whose history
  ends the user's previous row's ``history + [target]`` (UniSRec writes one row per prefix)
  extends that training sequence by its target; any other row starts a new training sequence
  ``history + [target]``. ``GivenSplit.starts`` marks the first given target of each sequence,
  so ``train_pairs`` holds one pair per train row. For UniSRec files every start is 1 and the
  sequences are the users' training sequences, so trainers that use every position of
  ``train_seqs`` see the same pairs. (A chained history can be longer than the file's, which
  UniSRec truncates to 50 items; trainers cut histories to their own maximum length.)

``Domain.inter_*`` holds the training interactions only, so that nothing computed from the
domain can see a valid or test target. Interaction form: the train rows. Sequential form: each
user's longest training sequence (for UniSRec files: the chain of all the user's train rows),
or, for a user without train rows (a 3-item user in UniSRec files), the history of the user's
first valid (else test) row; no timestamps, in user order.
A user who appears only in valid / test rows is still a user (with an empty training history).

Filters would change a split that is used as given, so any filter set is an error.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from crossrec_cli.data.assemble import RawInteractions, RawItems, assemble
from crossrec_cli.data.domain import Domain, DomainSpec, FilterSpec
from crossrec_cli.data.split import EvalSet, Split, order_interactions
from crossrec_cli.data.table import Table, read_delimited
from crossrec_cli.errors import CrossrecError

PARTS = ("train", "valid", "test")


@dataclass
class GivenSplit(Split):
    """A split read from files. ``starts[s]``: the first target position of ``train_seqs[s]``
    (the positions before it are given history only); None: every position from 1."""

    starts: list[int] | None = None

    @property
    def train_pairs(self) -> np.ndarray:
        """(n_pairs, 2) int64 of (sequence index, target position)."""
        if self.starts is None:
            return super().train_pairs
        pairs = [
            (s, p)
            for s, (seq, first) in enumerate(zip(self.train_seqs, self.starts))
            for p in range(max(first, 1), len(seq))
        ]
        return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)

    def digest(self) -> str:
        return super().digest() + ("" if self.starts is None else f"/starts{self.starts}")


def reject_filters(spec: DomainSpec) -> None:
    """A CrossrecError naming the first filter that differs from its default."""
    default = FilterSpec()
    for f in fields(FilterSpec):
        if getattr(spec.filters, f.name) != getattr(default, f.name):
            raise CrossrecError(
                f"domain.{spec.name}.filters.{f.name}",
                "filters cannot be applied to a given split",
                "remove the filter: the split files are used as they are",
            )


def read_items(spec: DomainSpec, folder: Path, stem: str) -> RawItems:
    """Items of ``<stem>.item``, else of ``<stem>.text``."""
    path = next(
        (p for p in (folder / f"{stem}.item", folder / f"{stem}.text") if p.is_file()), None
    )
    if path is None:
        raise CrossrecError(
            str(folder / f"{stem}.item"), "no item file", f"expected {stem}.item or {stem}.text"
        )
    table = read_delimited(path, typed=True)
    return RawItems(
        path, table.require(spec.item_field, "item id column"), table.columns, table.lines
    )


def _known(t: Table, ids: list[str], line: int, known: set[str], col: int) -> None:
    """Check here (not in ``assemble``) so that the error names the valid / test file."""
    for iid in ids:
        if iid not in known:
            raise CrossrecError(
                str(t.path), f"unknown item id {iid!r}", "not in the item file", line=line, col=col
            )


def _with_tables(
    spec: DomainSpec,
    tables: dict[str, Table],
    parts: list[int],
    raw: RawInteractions,
    known: set[str],
) -> None:
    """Append every row of the three tables (interaction form) to ``raw``."""
    for k, part in enumerate(PARTS):
        t = tables[part]
        col = t.require(spec.item_field)
        for iid, line in zip(col, t.lines):
            _known(t, [iid], line, known, t.names.index(spec.item_field) + 1)
        raw.users += t.require(spec.user_field)
        raw.items += col
        raw.lines += t.lines
        parts += [k] * len(t)
        n = len(t)
        for attr, name in (("time", spec.time_field), ("rating", spec.rating_field)):
            values = t.floats(name) if name in t.columns else [np.nan] * n
            getattr(raw, attr).extend(values)


def interaction_split(domain: Domain, parts: np.ndarray, spec: DomainSpec) -> GivenSplit:
    """Training sequences from the train rows; valid/test histories from the earlier parts."""
    idx = order_interactions(
        domain.inter_user, domain.inter_time, domain.inter_rating, spec.order, spec.order_seed
    )
    seqs: list[dict[int, list[int]]] = [defaultdict(list) for _ in PARTS]
    for k in idx:
        seqs[parts[k]][int(domain.inter_user[k])].append(int(domain.inter_item[k]))
    train, valid = seqs[0], seqs[1]

    def evalset(part: int, history) -> EvalSet:
        rows = np.flatnonzero(parts == part)
        users = domain.inter_user[rows]
        hists = [np.asarray(history(int(u)), dtype=np.int64) for u in users]
        return EvalSet(users.astype(np.int64), hists, domain.inter_item[rows].astype(np.int64))

    users = sorted(train)
    return GivenSplit(
        np.asarray(users, dtype=np.int64),
        [np.asarray(train[u], dtype=np.int64) for u in users],
        evalset(1, lambda u: train.get(u, [])),
        evalset(2, lambda u: train.get(u, []) + valid.get(u, [])),
        "given",
    )


def _sequence_rows(
    spec: DomainSpec, tables: dict[str, Table], raw: RawInteractions, known: set[str]
) -> list[tuple[int, int, int]]:
    """Append every (history..., target) reference to ``raw``; return (part, start, end) per row."""
    list_field = f"{spec.item_field}_list"
    rows = []
    for k, part in enumerate(PARTS):
        t = tables[part]
        users, hists, targets = (
            t.require(n) for n in (spec.user_field, list_field, spec.item_field)
        )
        cols = (t.names.index(list_field) + 1, t.names.index(spec.item_field) + 1)
        for user, hist, target, line in zip(users, hists, targets, t.lines):
            _known(t, hist.split(), line, known, cols[0])
            _known(t, [target], line, known, cols[1])
            refs = hist.split() + [target]
            rows.append((k, len(raw.items), len(raw.items) + len(refs)))
            raw.items += refs
            raw.users += [user] * len(refs)
            raw.lines += [line] * len(refs)
    return rows


def _train_sequences(
    rows: list[tuple[int, int, int]], items: np.ndarray, users: np.ndarray
) -> tuple[list[int], list[list[int]], list[int]]:
    """Train rows chained into sequences: (user, sequence, first target position) of each."""
    train_users: list[int] = []
    seqs: list[list[int]] = []
    starts: list[int] = []
    last: dict[int, int] = {}  # user -> the user's latest sequence
    for part, start, end in rows:
        if part != 0:
            continue
        u, hist, target = int(users[start]), items[start : end - 1].tolist(), int(items[end - 1])
        s = last.get(u)
        if s is not None and hist and seqs[s][-len(hist) :] == hist:  # the user's next prefix
            seqs[s].append(target)
            continue
        last[u] = len(seqs)
        train_users.append(u)
        seqs.append(hist + [target])
        starts.append(len(hist))
    return train_users, seqs, starts


def _training_interactions(
    split: Split, rows: list[tuple[int, int, int]], items: np.ndarray, users: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(users, items) of the training interactions: each user's longest training sequence, else
    the history of the user's first valid (else test) row."""
    longest: dict[int, np.ndarray] = {}
    for u, seq in zip(split.train_users.tolist(), split.train_seqs):
        if u not in longest or len(seq) > len(longest[u]):
            longest[u] = seq
    for part, start, end in rows:
        if part and int(users[start]) not in longest:
            longest[int(users[start])] = items[start : end - 1]
    order = sorted(longest)
    inter_users = [np.full(len(longest[u]), u, dtype=np.int64) for u in order]
    inter_items = [np.asarray(longest[u], dtype=np.int64) for u in order]
    return np.concatenate(inter_users), np.concatenate(inter_items)


def sequence_split(
    domain: Domain, rows: list[tuple[int, int, int]]
) -> tuple[GivenSplit, np.ndarray, np.ndarray]:
    """The rows as given, and (users, items) of the training interactions."""
    items, users = domain.inter_item.astype(np.int64), domain.inter_user.astype(np.int64)
    train_users, seqs, starts = _train_sequences(rows, items, users)

    def evalset(part: int) -> EvalSet:
        spans = [(start, end) for p, start, end in rows if p == part]
        hists = [items[start : end - 1].copy() for start, end in spans]
        return EvalSet(users[[s for s, _ in spans]], hists, items[[e - 1 for _, e in spans]])

    split = GivenSplit(
        np.asarray(train_users, dtype=np.int64),
        [np.asarray(s, dtype=np.int64) for s in seqs],
        evalset(1),
        evalset(2),
        "given",
        starts=starts,
    )
    return split, *_training_interactions(split, rows, items, users)


def load_presplit(spec: DomainSpec, folder: Path, stem: str) -> Domain:
    """The domain of the split files, with ``given_split`` holding their split as written."""
    reject_filters(spec)
    tables = {part: read_delimited(folder / f"{stem}.{part}.inter", typed=True) for part in PARTS}
    list_field = f"{spec.item_field}_list"
    sequential = list_field in tables["train"].columns
    for t in tables.values():
        if (list_field in t.columns) != sequential:
            raise CrossrecError(
                str(t.path),
                f"{'no' if sequential else 'a'} {list_field!r} column unlike the train file",
                "the three split files must have the same form",
                line=1,
            )
    items = read_items(spec, folder, stem)
    raw = RawInteractions(tables["train"].path, [], [], [], [], [])
    if sequential:
        rows = _sequence_rows(spec, tables, raw, set(items.ids))
        raw.time, raw.rating = None, None
        full = assemble(spec, items, raw)
        split, inter_users, inter_items = sequence_split(full, rows)
        nan = np.full(len(inter_users), np.nan)
        inter = (inter_users, inter_items, nan, nan.copy())
    else:
        parts: list[int] = []
        _with_tables(spec, tables, parts, raw, set(items.ids))
        full = assemble(spec, items, raw)
        split = interaction_split(full, np.asarray(parts), spec)
        keep = np.asarray(parts) == 0
        inter = (
            full.inter_user[keep],
            full.inter_item[keep],
            full.inter_time[keep],
            full.inter_rating[keep],
        )
    return replace(full, inter_user=inter[0], inter_item=inter[1], inter_time=inter[2], inter_rating=inter[3],
                   given_split=split, origin=str(folder))
