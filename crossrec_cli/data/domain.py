"""The domain data model and its typed, self-validating spec (``conf/domain/<name>.yaml``)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import numpy as np

from crossrec_cli.errors import CrossrecError, either
from crossrec_cli.data.groups import check_groups
from crossrec_cli.data.split import ORDERS
from crossrec_cli.registry import Registry

# format name -> ``load(spec) -> Domain``; each reader module registers itself, so a new format is
# one module in crossrec_cli/data/ (``READERS.add("myformat", load)``) and nothing else
READERS: Registry = Registry("dataset format", "format", "crossrec_cli.data")
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class FilterSpec:
    """Which interactions and items a domain keeps (applied in this order)."""

    min_rating: float | None = None  # keep interactions with rating >= this (positives)
    user_core: int = 0  # iterative k-core: users with >= user_core interactions ...
    item_core: int = 0  # ... and items with >= item_core interactions
    max_users: int | None = None  # first N users in file order (small slices for smoke tests)
    drop_unused_items: bool = False  # drop catalogue items with no kept interaction


@dataclass
class DomainSpec:
    """One domain file. Unknown keys are an error naming the key."""

    name: str
    format: str
    path: str
    dataset: str | None = None  # file stem for RecBole atomic files
    text_fields: list[str] = field(default_factory=list)
    text_template: str | None = None  # e.g. "{movie_title} ({release_year})"; default joins fields
    user_field: str = "user_id"
    item_field: str = "item_id"
    time_field: str = "timestamp"
    rating_field: str = "rating"
    split: str = "auto"  # auto: given split files when present, else leave-one-out | loo | given
    order: str = "time"  # time | random | weight (for formats without timestamps)
    order_seed: int = 0
    filters: FilterSpec = field(default_factory=FilterSpec)
    shared_user_space: str | None = None  # domains with the same value share user ids
    label_field: str | None = None  # item column used by task=classification
    description: str = ""
    kg: Any = None  # a knowledge graph: {layout: kgcn | recbole, triples: FILE, links: FILE} (data/kg.py)
    vectors: Any = None  # per-item vector files: {name: {path: FILE, ids: FILE}} (data/vectors.py)
    tags: Any = None  # Last.fm tag text: {max_tags: 10, min_users: 5} (data/tags.py)
    labels: Any = None  # item labels voted from tags: {column, classes, vote, tie, ...} (data/tags.py)
    user_groups: Any = None  # per-group test metrics: {column: null | {bins: [...]}} (evaluation/groups.py)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "domain") -> DomainSpec:
        data = _typed_fields(cls, raw, where, "unknown domain key", required=("name", "format", "path"))
        kg = data.pop("kg", None)
        if kg is not None:
            from crossrec_cli.data.kg import KgSpec

            KgSpec.from_dict(kg, f"{where}.kg")  # checked now, read with the data
        vectors = data.pop("vectors", None)
        if vectors is not None:
            from crossrec_cli.data.vectors import check_spec

            check_spec(vectors, f"{where}.vectors")
        for key in ("tags", "labels"):
            if data.get(key) is not None:
                from crossrec_cli.data import tags

                if data.get("format") != "lastfm":
                    raise CrossrecError(f"{where}.{key}", f"format {data.get('format')!r} has no tag files",
                                        "tags and labels are read from Last.fm tag files (format: lastfm)")
                (tags.TagSpec if key == "tags" else tags.LabelRule).from_dict(data[key], f"{where}.{key}")
        if data.get("user_groups") is not None:
            check_groups(data["user_groups"], f"{where}.user_groups")
        fraw = data.pop("filters", None)
        if fraw is None:
            fraw = {}
        elif not isinstance(fraw, dict):
            raise CrossrecError(f"{where}.filters", f"expected a mapping, got {fraw!r}",
                                "write e.g. filters: {min_rating: 4, user_core: 5}")
        filters = FilterSpec(**_typed_fields(FilterSpec, fraw, f"{where}.filters", "unknown filter key"))
        for key in ("user_core", "item_core", "max_users"):
            value = getattr(filters, key)
            if value is not None and value < (1 if key == "max_users" else 0):
                raise CrossrecError(f"{where}.filters.{key}", f"expected a count, got {value!r}",
                                    "use a non-negative integer (max_users: at least 1)")
        spec = cls(**data, filters=filters, kg=kg, vectors=vectors)
        spec.text_fields = list(spec.text_fields or [])
        if spec.format not in READERS:
            raise CrossrecError(f"{where}.format", f"unknown format {spec.format!r}", f"expected one of {READERS.names()}")
        if spec.split not in ("auto", "loo", "given"):
            raise CrossrecError(f"{where}.split", f"unknown split {spec.split!r}", "expected auto, loo or given")
        if spec.order not in ORDERS.names():
            raise CrossrecError(f"{where}.order", f"unknown order {spec.order!r}", f"expected {either(ORDERS.names())}")
        return spec

    def folder(self) -> Path:
        """Resolve ``path``: absolute or ``~``; ``bundled:NAME`` for data shipped in the package;
        otherwise relative to the working directory, then to the repository root."""
        if self.path.startswith("bundled:"):
            p = BUNDLED_DIR / self.path.split(":", 1)[1]
        else:
            p = Path(self.path).expanduser()
            if not p.is_absolute():
                cand = [Path.cwd() / p, REPO_ROOT / p]
                p = next((c for c in cand if c.exists()), cand[0])
        if not p.is_dir():
            raise CrossrecError(
                str(p), "domain folder does not exist", f"check 'path' in the domain file of {self.name!r}"
            )
        return p


def _type_name(tp: Any) -> str:
    args = [a for a in get_args(tp) if a is not type(None)]
    if get_origin(tp) is list:
        return "a list of strings"  # the only list field (text_fields)
    if len(args) == 1:  # X | None
        return f"{_type_name(args[0])} or null"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(tp, str(tp))


def _fits(value: Any, tp: Any) -> bool:
    """Whether a YAML value has the field type ``tp`` (str, int, float, bool, list[str], X | None)."""
    args = get_args(tp)
    if type(None) in args:
        return value is None or _fits(value, next(a for a in args if a is not type(None)))
    if get_origin(tp) is list:
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _typed_fields(
    cls: type, raw: dict[str, Any], where: str, unknown: str, required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``raw`` checked against the dataclass ``cls``: an unknown key, a missing ``required`` value or
    a value of the wrong type is a CrossrecError naming ``<where>.<key>``. Nested dataclasses and
    null lists are left to the caller; numbers for float fields become floats."""
    hints = get_type_hints(cls)
    for key in raw:
        if key not in hints:
            raise CrossrecError(f"{where}.{key}", unknown, f"expected one of {sorted(hints)}")
    for key in required:
        if raw.get(key) in (None, "", "???"):
            raise CrossrecError(f"{where}.{key}", "missing required value", "set it in the domain file")
    for key, value in raw.items():
        tp = hints[key]
        if is_dataclass(tp) or tp is Any or (get_origin(tp) is list and value is None):
            continue
        if not _fits(value, tp):
            if get_origin(tp) is list:  # a string would be read as its characters
                hint = f"write a list: {key}: [{value}]" if isinstance(value, str) else "quote each item"
            elif tp is str or str in get_args(tp):
                hint = "quote the value to make it a string"
            else:
                hint = "fix the value in the domain file"
            raise CrossrecError(f"{where}.{key}", f"expected {_type_name(tp)}, got {value!r}", hint)
    return {k: float(v) if hints[k] in (float, float | None) and v is not None else v for k, v in raw.items()}


@dataclass
class Domain:
    """Items (index = position in the item file), users and time-ordered interactions.

    ``item_features`` holds what the item tower reads, by feature name ("text": the rendered
    item texts; later a knowledge-graph entity, external vectors), each a list or array with one
    entry per item: filtering and fingerprints handle every entry alike, and each model item
    feature reads its own. ``item_columns`` are the item file's raw columns (as strings).
    ``inter_*`` arrays have one entry per interaction; ``inter_time`` is NaN when the format has
    no timestamps, ``inter_rating`` NaN when it has no ratings.
    """

    name: str
    item_ids: list[str]
    item_features: dict[str, Any]
    item_columns: dict[str, list[str]]
    user_ids: list[str]
    inter_user: np.ndarray
    inter_item: np.ndarray
    inter_time: np.ndarray
    inter_rating: np.ndarray
    given_split: Any = None  # crossrec_cli.data.split.Split when the dataset ships its split
    origin: str = ""
    user_attributes: dict[str, dict[str, str]] = field(default_factory=dict)  # column -> {user id: value}
    mixed: Any = None  # every user's mixed-domain history as published (format: cdsr, data/cdsr.py)

    @property
    def item_text(self) -> list[str]:
        return self.item_features["text"]

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_interactions(self) -> int:
        return len(self.inter_user)

    def sha256(self, features: tuple[str, ...] | list[str] = ()) -> str:
        """Content hash of what the model sees: item ids and texts, interactions in order, then
        each item feature of ``features`` the domain has, by name (``()``: texts only, the hash
        a domain always had; a run that reads its knowledge graph hashes ``("kg",)`` too)."""
        h = hashlib.sha256()
        for iid, text in zip(self.item_ids, self.item_features.get("text", [""] * self.n_items)):
            h.update(iid.encode() + b"\x1f" + text.encode() + b"\x1e")
        uid = np.asarray(self.user_ids, dtype=object)[self.inter_user]
        iid = np.asarray(self.item_ids, dtype=object)[self.inter_item]
        h.update("\x1e".join(f"{u}\x1f{i}" for u, i in zip(uid, iid)).encode())
        h.update(np.ascontiguousarray(self.inter_time, dtype=np.float64).tobytes())
        h.update(np.ascontiguousarray(self.inter_rating, dtype=np.float64).tobytes())
        if self.given_split is not None:
            h.update(self.given_split.digest().encode())
        for name in sorted(k for k in set(features) & set(self.item_features) if k != "text"):
            h.update(b"\x1d" + name.encode() + b"\x1f" + _feature_bytes(self.item_features[name]))
        return h.hexdigest()

    def fingerprint(self, features: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
        return {
            "users": self.n_users,
            "items": self.n_items,
            "interactions": self.n_interactions,
            "sha256": self.sha256(features),
        }


class LazyItems(Sequence):
    """A per-item feature read only when something uses it (a knowledge graph costs a second to
    read; runs without the feature never pay). ``build()`` returns the list, one entry per item."""

    def __init__(self, n: int, build: Callable[[], list[Any]]):
        self._n, self._build, self._items = n, build, None

    def _get(self) -> list[Any]:
        if self._items is None:
            self._items = self._build()
            if len(self._items) != self._n:
                raise ValueError(f"lazy item feature built {len(self._items)} entries for {self._n} items")
        return self._items

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: Any) -> Any:
        return self._get()[i]


def _feature_bytes(values: Any) -> bytes:
    """Stable bytes of one item feature: an array's dtype, shape and data, else each entry's repr."""
    if isinstance(values, np.ndarray):
        arr = np.ascontiguousarray(values)
        return f"{arr.dtype.str}{arr.shape}".encode() + arr.tobytes()
    return b"\x1e".join(_entry_bytes(v) for v in values)


def _entry_bytes(value: Any) -> bytes:
    if isinstance(value, np.ndarray):  # repr would elide long arrays
        return _feature_bytes(value)
    return repr(value).encode()


def take_items(values: Any, keep: np.ndarray) -> Any:
    """The entries of one per-item list or array where the boolean ``keep`` is set."""
    if isinstance(values, np.ndarray):
        return values[keep]
    return [v for v, k in zip(values, keep) if k]


def render_text(columns: dict[str, list[str]], text_fields: list[str], template: str | None, row: int) -> str:
    """Item text from its columns: the template if given, else the non-empty values joined by '. '."""
    values = {f: columns[f][row] for f in text_fields}
    if template:
        return template.format(**values).strip()
    return ". ".join(v for v in values.values() if v).strip()
