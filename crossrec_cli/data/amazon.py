"""Amazon review data (the 2014, 2018 and 2023 releases): reviews plus item metadata.

Files, in the domain folder, for ``dataset: X`` (``.jsonl.gz``, ``.jsonl``, ``.json.gz`` or
``.json`` each; the first name that exists wins):

- reviews: ``X`` itself, else ``X_5`` (2018 5-core), ``reviews_X_5`` / ``reviews_X`` (2014)
- metadata: ``meta_X`` (``X`` without a ``reviews_`` prefix or ``_5`` suffix)

Without ``dataset`` the folder must hold exactly one ``meta_*`` file, which names ``X``.
A file is JSON lines (one object per line, "loose JSON") or one JSON array, plain or gzip. A line
that is not JSON is read as a Python literal with ``ast.literal_eval`` (the 2014 metadata uses
single quotes); nothing is ever ``eval``-ed. Line numbers in errors count lines of the
decompressed text.

Fields by release (``*_field`` keys of the domain spec are not used):

- reviews: user ``reviewerID`` | ``user_id``; item ``parent_asin`` (2023, the key of its
  metadata) | ``asin``; rating ``overall`` | ``rating``; time ``unixReviewTime`` (seconds) |
  ``timestamp`` (2023, milliseconds; stored in seconds). Missing rating / time -> NaN.
- item columns (all text): ``item_id``; ``title``; ``brand`` (``brand``, 2023 ``store``);
  ``categories`` (2014 ``categories`` list of lists, 2018 ``category``, 2023 ``main_category`` +
  ``categories``; flattened, de-duplicated, joined by ", "); ``description`` (string or list,
  joined by spaces); ``features`` (2018 ``feature``, 2023 ``features``). HTML tags and entities
  are removed.

Which items and reviews are kept (each drop is counted in the log, none is an error):

- the catalogue is the reviewed items, in metadata-file order; metadata of items nobody
  reviewed is skipped (a category's metadata can hold millions of items);
- a reviewed item without metadata, or whose ``text_fields`` are all empty, has no text for a
  language model: it is dropped with its reviews;
- a review repeated exactly (same user, item and time; the 2018 files hold such copies) is kept
  once; repeated metadata records of an item: the first is kept.
"""

from __future__ import annotations

import ast
import bisect
import gzip
import html
import json
import logging
import math
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from crossrec_cli.data.assemble import RawInteractions, RawItems, assemble
from crossrec_cli.data.domain import READERS, Domain, DomainSpec
from crossrec_cli.errors import CrossrecError

log = logging.getLogger("crossrec")

EXTS = (".jsonl.gz", ".jsonl", ".json.gz", ".json")
ITEM_COLUMNS = ("item_id", "title", "brand", "categories", "description", "features")
USER_KEYS = ("reviewerID", "user_id")
ITEM_KEYS = ("parent_asin", "asin")
RATING_KEYS = (("overall", 1.0), ("rating", 1.0))
TIME_KEYS = (("unixReviewTime", 1.0), ("timestamp", 1e-3))
_TAG = re.compile(r"<[^>]*>")
_WS = re.compile(r"\s*")


def _bad(path: Path | str, problem: str, hint: str, line: int | None = None) -> CrossrecError:
    return CrossrecError(str(path), problem, hint, line=line)


def _first(folder: Path, names: list[str], what: str) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise _bad(folder, f"no Amazon {what} file", f"looked for {', '.join(names[:4])} ...")


def find_files(spec: DomainSpec, folder: Path) -> tuple[Path, Path]:
    """(reviews file, metadata file) of the domain."""
    stem = spec.dataset
    if not stem:
        metas = sorted(
            p.name for p in folder.iterdir() if p.name.startswith("meta_") and p.name.endswith(EXTS)
        )
        if len(metas) != 1:
            where, problem = f"domain.{spec.name}.dataset", f"{len(metas)} meta_* files in {folder}"
            raise _bad(where, problem, "set dataset: <reviews file stem>")
        stem = metas[0][len("meta_") :]
    stem = next((stem[: -len(e)] for e in EXTS if stem.endswith(e)), stem)
    base = re.sub(r"_5$", "", stem.removeprefix("reviews_"))
    reviews = [stem + e for e in EXTS]
    if stem == base:
        reviews += [
            p + e for p in (f"{base}_5", f"reviews_{base}_5", f"reviews_{base}") for e in EXTS
        ]
    meta = [f"meta_{base}{e}" for e in EXTS]
    return _first(folder, reviews, "reviews"), _first(folder, meta, "metadata")


def _decode(path: Path, raw: bytes, first_line: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = first_line + raw[: exc.start].count(b"\n")
        problem = f"byte 0x{raw[exc.start]:02x} is not valid utf-8"
        raise _bad(path, problem, "save the file as UTF-8", line) from None


def parse_object(path: Path, text: str, line: int) -> dict[str, Any]:
    """One record: JSON, else a Python literal (2014 metadata); a dict or a CrossrecError."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        try:
            obj = ast.literal_eval(text)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise CrossrecError(
                str(path),
                f"not valid JSON: {exc.msg}",
                "expected one JSON object per line",
                line=line,
                col=exc.colno,
            ) from None
    return _object(path, obj, line)


def _object(path: Path, obj: Any, line: int) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _bad(path, f"record is a {type(obj).__name__}", "expected a JSON object", line)
    return obj


def _array(path: Path, text: str, first_line: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """Objects of a JSON array with the line each starts on."""
    breaks = [i for i, ch in enumerate(text) if ch == "\n"]

    def line_at(pos: int) -> int:
        return first_line + bisect.bisect_left(breaks, pos)

    decoder, pos = json.JSONDecoder(), _WS.match(text, text.index("[") + 1).end()
    while pos < len(text) and text[pos] != "]":
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise _bad(
                path, f"not valid JSON: {exc.msg}", "fix the array", line_at(exc.pos)
            ) from None
        yield line_at(pos), _object(path, obj, line_at(pos))
        pos = _WS.match(text, end).end()
        if pos < len(text) and text[pos] == ",":
            pos = _WS.match(text, pos + 1).end()
        elif pos >= len(text) or text[pos] != "]":
            raise _bad(path, "expected ',' or ']' after a record", "fix the array", line_at(pos))
    if pos >= len(text) or text[pos + 1 :].strip():
        raise _bad(path, "JSON array not closed or text after it", "fix the array", line_at(pos))


def _records(path: Path, fh: BinaryIO) -> Iterator[tuple[int, dict[str, Any]]]:
    first = True
    for lineno, raw in enumerate(fh, start=1):
        if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raise _bad(path, "file starts with a UTF-8 byte-order mark", "save it without BOM", 1)
        text = _decode(path, raw, lineno).strip()
        if not text:
            continue
        if first and text.startswith("["):  # the whole file is one JSON array
            yield from _array(path, text + "\n" + _decode(path, fh.read(), lineno + 1), lineno)
            return
        first = False
        yield lineno, parse_object(path, text, lineno)


def read_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, object) for every record of a JSON-lines file or a JSON array, plain or gzip."""
    try:
        with gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb") as fh:
            yield from _records(path, fh)
    except (OSError, EOFError, zlib.error) as exc:
        raise _bad(path, f"cannot read the file: {exc}", "expected complete (gzip) JSON") from None


def _id(rec: dict[str, Any], keys: tuple[str, ...], path: Path, line: int) -> str:
    for key in keys:
        value = rec.get(key)
        if isinstance(value, (str, int)) and str(value).strip():
            return str(value).strip()
    raise _bad(path, f"record has no id in {list(keys)}", "is it an Amazon reviews file?", line)


def _number(
    rec: dict[str, Any], keys: tuple[tuple[str, float], ...], path: Path, line: int
) -> float:
    for key, scale in keys:
        if rec.get(key) is not None:
            try:
                x = float(rec[key]) * scale
            except (TypeError, ValueError):
                x = math.nan
            if isinstance(rec[key], bool) or not math.isfinite(x):
                raise _bad(path, f"field {key!r} has {rec[key]!r}", "expected a number", line)
            return x
    return math.nan


def read_reviews(path: Path) -> RawInteractions:
    """Reviews as interactions; an exact repeat (user, item, time) is kept once."""
    rows: dict[tuple[str, str, float], tuple[int, float]] = {}  # insertion-ordered
    repeats = 0
    for line, rec in read_records(path):
        user, item = _id(rec, USER_KEYS, path, line), _id(rec, ITEM_KEYS, path, line)
        key = (user, item, _number(rec, TIME_KEYS, path, line))
        rating = _number(rec, RATING_KEYS, path, line)
        if key in rows:
            repeats += 1
            continue
        rows[key] = (line, rating)
    if not rows:
        raise _bad(path, "file holds no reviews", "expected one review object per line", 1)
    if repeats:
        log.info(
            "%s: %d exact repeats of a review (same user, item, time) kept once", path.name, repeats
        )
    users, items, time = (list(v) for v in zip(*rows))
    lines, rating = (list(v) for v in zip(*rows.values()))
    return RawInteractions(path, users, items, lines, time, rating)


def _strings(value: Any) -> Iterator[str]:
    """Every string inside nested lists (numbers as text; dicts skipped)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield str(value)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def clean(text: str) -> str:
    """Text without HTML tags / entities and with single spaces."""
    return " ".join(html.unescape(_TAG.sub(" ", text)).split())


def item_row(rec: dict[str, Any]) -> dict[str, str]:
    """The normalised text columns of one metadata record (any release)."""
    cats = [
        clean(c)
        for c in _strings([rec.get("main_category"), rec.get("categories"), rec.get("category")])
    ]
    return {
        "title": clean(" ".join(_strings(rec.get("title")))),
        "brand": clean(" ".join(_strings(rec.get("brand") or rec.get("store")))),
        "categories": ", ".join(dict.fromkeys(c for c in cats if c)),
        "description": clean(" ".join(_strings(rec.get("description")))),
        "features": clean(" ".join(_strings([rec.get("feature"), rec.get("features")]))),
    }


def read_meta(path: Path, wanted: set[str]) -> RawItems:
    """Metadata of the ``wanted`` items, in file order; the first record of an item wins."""
    cols: dict[str, list[str]] = {c: [] for c in ITEM_COLUMNS}
    lines: list[int] = []
    seen: set[str] = set()
    for line, rec in read_records(path):
        iid = _id(rec, ITEM_KEYS, path, line)
        if iid not in wanted or iid in seen:
            continue
        seen.add(iid)
        cols["item_id"].append(iid)
        for name, value in item_row(rec).items():
            cols[name].append(value)
        lines.append(line)
    return RawItems(path, cols["item_id"], cols, lines)


def with_text(spec: DomainSpec, items: RawItems) -> RawItems:
    """Items with a non-empty value in a text field (default: every column but the id)."""
    fields = spec.text_fields or [c for c in ITEM_COLUMNS if c != "item_id"]
    for f in fields:
        if f not in items.columns:
            where, hint = f"domain.{spec.name}.text_fields", f"columns are {list(ITEM_COLUMNS)}"
            raise _bad(where, f"{f!r} is not an Amazon item column", hint)
    keep = [i for i in range(len(items.ids)) if any(items.columns[f][i] for f in fields)]
    cols = {c: [v[i] for i in keep] for c, v in items.columns.items()}
    return RawItems(items.path, cols["item_id"], cols, [items.lines[i] for i in keep])


def keep_items(inter: RawInteractions, ids: set[str]) -> RawInteractions:
    """Only the reviews of items in ``ids``."""
    rows = [k for k, item in enumerate(inter.items) if item in ids]
    cols = (inter.users, inter.items, inter.lines, inter.time or [], inter.rating or [])
    return RawInteractions(inter.path, *([col[k] for k in rows] for col in cols))


def load(spec: DomainSpec) -> Domain:
    """The Amazon domain: reviewed items that have text, their reviews, then the spec's filters."""
    if spec.split == "given":
        raise _bad(
            f"domain.{spec.name}.split", "Amazon reviews have no split files", "use auto or loo"
        )
    reviews_path, meta_path = find_files(spec, spec.folder())
    inter = read_reviews(reviews_path)
    reviewed = set(inter.items)
    meta = read_meta(meta_path, reviewed)
    items = with_text(spec, meta)
    kept = keep_items(inter, set(items.ids))
    no_meta, no_text = len(reviewed) - len(meta.ids), len(meta.ids) - len(items.ids)
    if no_meta or no_text:
        n, gone = len(inter.items), len(inter.items) - len(kept.items)
        msg = (
            "%s: dropped %d reviewed items without metadata and %d without text (%d of %d reviews)"
        )
        log.info(msg, spec.name, no_meta, no_text, gone, n)
    if not items.ids:
        hint = f"check that {meta_path.name} belongs to {reviews_path.name}"
        raise _bad(meta_path, "no reviewed item has metadata with text", hint)
    return assemble(spec, items, kept)


READERS.add("amazon", load)
