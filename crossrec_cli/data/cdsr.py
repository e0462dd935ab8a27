"""Cross-domain sequential benchmarks with mixed-domain histories, one user per line
(``format: cdsr``; the layout of LLMCDSR's Food-Kitchen and of C2DSR-style releases).

Files in one folder:

- ``items_<S>_*.tsv`` (or ``items_<S>.tsv``) per side ``S`` (``A``, ``B``, ...): a header, then
  ``item_id<TAB>...columns``. Item ids are integers unique over every side: the table that holds
  an id gives its domain (Food-Kitchen: A = 0..8660, B = 8661..36297).
- ``train_*.txt``: ``user<TAB>comma-separated item ids``, oldest first; a line may mix sides
  (the overlapping users). User ids are per file, so the user of ``train_overlap.txt`` line
  ``7`` is ``train_overlap:7`` in both sides' domains (``shared_user_space``).
- ``valid.txt`` / ``test.txt``: further users, never trained on: the mixed history, then the
  target as the LAST id. An example belongs to the side of its target.

One domain per side (``dataset: A`` picks the side). Its items are the side's table; its training
sequences are every training line's items of that side, in line order (a line with one such item
counts for popularity only); a valid / test example's history is the side's items of the line
before the target, so a single-domain model sees what the side alone knows. ``Domain.mixed``
keeps every line as it is, so ``data/context.py`` can give a model the whole mixed history.
``inter_time`` is the position within the line (there are no timestamps). The split is used as
given: filters are an error.

``published_candidates`` rebuilds the benchmark's sampled protocol exactly: 999 negatives per
example from the target's side, drawn without replacement with numpy's legacy generator seeded
42, validation lines first, then test (LLMCDSR ``evaluation.py``).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from crossrec_cli.data.assemble import RawInteractions, RawItems, assemble
from crossrec_cli.data.domain import READERS, Domain, DomainSpec
from crossrec_cli.data.presplit import GivenSplit, reject_filters
from crossrec_cli.data.split import EvalSet
from crossrec_cli.data.table import read_delimited, read_text
from crossrec_cli.errors import CrossrecError

EVAL_FILES = ("valid", "test")


@dataclass
class Line:
    """One user's line: raw user id, then per position the side and the raw item id."""

    user: str
    sides: list[str]
    items: list[str]


@dataclass
class MixedLines:
    """Every line of the benchmark (train, valid, test), shared by the domains of its sides."""

    folder: str
    side: str  # this domain's side
    ranges: dict[str, tuple[int, int] | None] = field(default_factory=dict)  # side -> [lo, hi) of integer ids
    train: list[Line] = field(default_factory=list)
    valid: list[Line] = field(default_factory=list)
    test: list[Line] = field(default_factory=list)

    def by_user(self) -> dict[str, Line]:
        return {ln.user: ln for part in (self.train, self.valid, self.test) for ln in part}


def _item_tables(folder: Path) -> dict[str, Path]:
    """Side -> its item table (``items_<S>_*.tsv`` or ``items_<S>.tsv``)."""
    tables: dict[str, Path] = {}
    for path in sorted(folder.glob("items_*.tsv")):
        side = path.stem.split("_")[1]
        if side in tables:
            raise CrossrecError(str(path), f"a second item table for side {side!r}", f"keep one of it and {tables[side].name}")
        tables[side] = path
    if not tables:
        raise CrossrecError(str(folder), "no item tables", "expected items_<side>_<name>.tsv files (format: cdsr)")
    return tables


def _read_lines(path: Path, prefix: str, side_of: dict[str, str]) -> list[Line]:
    out = []
    for lineno, row in enumerate(read_text(path).splitlines(), start=1):
        if not row.strip():
            continue
        if "\t" not in row:
            raise CrossrecError(str(path), "no tab after the user id", "expected user<TAB>comma-separated item ids", line=lineno)
        user, ids = row.split("\t", 1)
        items = [i.strip() for i in ids.split(",")]
        sides = []
        for col, iid in enumerate(items, start=1):
            side = side_of.get(iid)
            if side is None:
                raise CrossrecError(str(path), f"unknown item id {iid!r} (position {col})", "not in any items_*.tsv table",
                                    line=lineno)
            sides.append(side)
        out.append(Line(f"{prefix}:{user.strip()}", sides, items))
    return out


def read_lines(spec: DomainSpec, folder: Path) -> tuple[dict[str, RawItems], MixedLines]:
    """Every side's items and every line of the folder."""
    if not spec.dataset:
        raise CrossrecError(f"domain.{spec.name}.dataset", "missing side", "format cdsr: dataset: A (the <S> of items_<S>_*.tsv)")
    tables = _item_tables(folder)
    if spec.dataset not in tables:
        raise CrossrecError(f"domain.{spec.name}.dataset", f"no items_{spec.dataset}_*.tsv in {folder}",
                            f"expected one of {sorted(tables)}")
    items: dict[str, RawItems] = {}
    side_of: dict[str, str] = {}
    for side, path in tables.items():
        t = read_delimited(path)
        ids = t.require(spec.item_field, "item id column")
        for iid, line in zip(ids, t.lines):
            if iid in side_of:
                raise CrossrecError(str(path), f"item id {iid!r} is also in side {side_of[iid]}'s table",
                                    "item ids must be unique over every side", line=line)
            side_of[iid] = side
        columns = {c: [html.unescape(v) for v in vals] if c != spec.item_field else vals for c, vals in t.columns.items()}
        items[side] = RawItems(t.path, ids, columns, t.lines)
    mixed = MixedLines(str(folder.resolve()), spec.dataset, {s: _id_range(it.ids) for s, it in items.items()})
    train_files = sorted(folder.glob("train_*.txt"))
    if not train_files:
        raise CrossrecError(str(folder), "no training files", "expected train_*.txt (format: cdsr)")
    for path in train_files:
        mixed.train += _read_lines(path, path.stem, side_of)
    for part in EVAL_FILES:
        path = folder / f"{part}.txt"
        if not path.is_file():
            raise CrossrecError(str(path), "missing split file", "format cdsr needs valid.txt and test.txt")
        setattr(mixed, part, _read_lines(path, part, side_of))
    return items, mixed


def load(spec: DomainSpec) -> Domain:
    reject_filters(spec)
    folder = spec.folder()
    items, mixed = read_lines(spec, folder)
    side = spec.dataset
    raw = RawInteractions(folder / "train", [], [], [], [], None)
    for ln in mixed.train:
        for pos, (s, iid) in enumerate(zip(ln.sides, ln.items)):
            if s == side:
                raw.users.append(ln.user), raw.items.append(iid), raw.lines.append(0), raw.time.append(float(pos))
    domain = assemble(spec, items[side], raw)
    index = {iid: k for k, iid in enumerate(domain.item_ids)}
    users = {u: k for k, u in enumerate(domain.user_ids)}
    user_ids = list(domain.user_ids)
    seqs: dict[int, list[int]] = {}
    for u, i in zip(domain.inter_user.tolist(), domain.inter_item.tolist()):
        seqs.setdefault(u, []).append(i)  # assemble keeps file order: line order within a user

    def evalset(lines: list[Line]) -> EvalSet:
        us, hists, targets = [], [], []
        for ln in lines:
            if ln.sides[-1] != side:
                continue
            if ln.user not in users:
                users[ln.user] = len(user_ids)
                user_ids.append(ln.user)
            us.append(users[ln.user])
            hists.append(np.asarray([index[i] for s, i in zip(ln.sides[:-1], ln.items[:-1]) if s == side], dtype=np.int64))
            targets.append(index[ln.items[-1]])
        return EvalSet(np.asarray(us, dtype=np.int64), hists, np.asarray(targets, dtype=np.int64))

    valid, test = evalset(mixed.valid), evalset(mixed.test)
    train_users = sorted(seqs)
    split = GivenSplit(np.asarray(train_users, dtype=np.int64), [np.asarray(seqs[u], dtype=np.int64) for u in train_users],
                       valid, test, "given")
    return replace(domain, user_ids=user_ids, given_split=split, origin=str(folder), mixed=mixed)


def published_candidates(domain: Domain, n_negatives: int = 999, seed: int = 42) -> dict[int, np.ndarray]:
    """Test user index -> [target, negatives...] of the benchmark's sampled protocol, rebuilt as
    published: ``np.random.seed(seed)``, then per valid line and then per test line (file order,
    every side) ``np.random.choice(list(set(range(lo, hi)) - {target}), n, replace=False)`` over the
    target side's 1-based id range. The list order of a Python set of ints is CPython's (ints hash
    to themselves), so the draw is the published one on CPython. Only this domain's test users
    are returned (validation always ranks the full catalogue)."""
    mixed = domain.mixed
    if mixed is None:
        raise CrossrecError("eval.candidates", f"domain {domain.name!r} has no published candidates",
                            "published candidates come with format: cdsr; pass a candidate FILE instead")
    for side in {ln.sides[-1] for part in EVAL_FILES for ln in getattr(mixed, part)}:
        lo, hi = _range_of(mixed, side)
        if hi - lo - 1 < n_negatives:
            raise CrossrecError("eval.candidates", f"side {side} has {hi - lo} items, too few for {n_negatives} negatives",
                                "published candidates need a side of more items; pass a candidate FILE instead")
    rng = np.random.RandomState(seed)
    index = {iid: k for k, iid in enumerate(domain.item_ids)}
    users = {u: k for k, u in enumerate(domain.user_ids)}
    out: dict[int, np.ndarray] = {}
    for part in EVAL_FILES:
        for ln in getattr(mixed, part):
            lo, hi = _range_of(mixed, ln.sides[-1])
            target = int(ln.items[-1]) + 1
            negs = rng.choice(list(set(range(lo + 1, hi + 1)) - {target}), size=n_negatives, replace=False)
            if part == "test" and ln.sides[-1] == mixed.side:
                out[users[ln.user]] = np.asarray([index[ln.items[-1]]] + [index[str(i - 1)] for i in negs.tolist()],
                                                 dtype=np.int64)
    return out


def _id_range(ids: list[str]) -> tuple[int, int] | None:
    """[lo, hi) when the ids are the integers lo..hi-1 (in any order), else None."""
    try:
        ints = sorted(int(x) for x in ids)
    except ValueError:
        return None
    return (ints[0], ints[-1] + 1) if ints and ints[-1] + 1 - ints[0] == len(ints) else None


def _range_of(mixed: MixedLines, side: str) -> tuple[int, int]:
    found = mixed.ranges.get(side)
    if found is None:
        raise CrossrecError("eval.candidates", f"side {side}'s item ids are not one contiguous range of integers",
                            "published candidates draw from a side's id range; pass a candidate FILE instead")
    return found


READERS.add("cdsr", load)
