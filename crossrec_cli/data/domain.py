"""The domain data model and its typed, self-validating spec (``conf/domain/<name>.yaml``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from crossrec_cli.errors import CrossrecError

FORMATS = ("recbole", "movielens", "lastfm", "amazon", "instruction")
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

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "domain") -> DomainSpec:
        known = {f.name for f in fields(cls)}
        for key in raw:
            if key not in known:
                raise CrossrecError(
                    f"{where}.{key}", "unknown domain key", f"expected one of {sorted(known)}"
                )
        for key in ("name", "format", "path"):
            if raw.get(key) in (None, "", "???"):
                raise CrossrecError(f"{where}.{key}", "missing required value", "set it in the domain file")
        data = dict(raw)
        fraw = data.pop("filters", None) or {}
        fknown = {f.name for f in fields(FilterSpec)}
        for key in fraw:
            if key not in fknown:
                raise CrossrecError(
                    f"{where}.filters.{key}", "unknown filter key", f"expected one of {sorted(fknown)}"
                )
        spec = cls(**data, filters=FilterSpec(**fraw))
        spec.text_fields = list(spec.text_fields or [])
        if spec.format not in FORMATS:
            raise CrossrecError(f"{where}.format", f"unknown format {spec.format!r}", f"expected one of {list(FORMATS)}")
        if spec.split not in ("auto", "loo", "given"):
            raise CrossrecError(f"{where}.split", f"unknown split {spec.split!r}", "expected auto, loo or given")
        if spec.order not in ("time", "random", "weight"):
            raise CrossrecError(f"{where}.order", f"unknown order {spec.order!r}", "expected time, random or weight")
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


@dataclass
class Domain:
    """Items (index = position in the item file), users and time-ordered interactions.

    ``inter_*`` arrays have one entry per interaction; ``inter_time`` is NaN when the format has
    no timestamps, ``inter_rating`` NaN when it has no ratings.
    """

    name: str
    item_ids: list[str]
    item_text: list[str]
    item_columns: dict[str, list[str]]
    user_ids: list[str]
    inter_user: np.ndarray
    inter_item: np.ndarray
    inter_time: np.ndarray
    inter_rating: np.ndarray
    given_split: Any = None  # crossrec_cli.data.split.Split when the dataset ships its split
    origin: str = ""

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_interactions(self) -> int:
        return int(len(self.inter_user))

    def sha256(self) -> str:
        """Content hash of what the model sees: item ids and texts, interactions in order."""
        h = hashlib.sha256()
        for iid, text in zip(self.item_ids, self.item_text):
            h.update(iid.encode() + b"\x1f" + text.encode() + b"\x1e")
        uid = np.asarray(self.user_ids, dtype=object)[self.inter_user]
        iid = np.asarray(self.item_ids, dtype=object)[self.inter_item]
        h.update("\x1e".join(f"{u}\x1f{i}" for u, i in zip(uid, iid)).encode())
        h.update(np.ascontiguousarray(self.inter_time, dtype=np.float64).tobytes())
        h.update(np.ascontiguousarray(self.inter_rating, dtype=np.float64).tobytes())
        if self.given_split is not None:
            h.update(self.given_split.digest().encode())
        return h.hexdigest()

    def fingerprint(self) -> dict[str, Any]:
        return {
            "users": self.n_users,
            "items": self.n_items,
            "interactions": self.n_interactions,
            "sha256": self.sha256(),
        }


def render_text(columns: dict[str, list[str]], text_fields: list[str], template: str | None, row: int) -> str:
    """Item text from its columns: the template if given, else the non-empty values joined by '. '."""
    values = {f: columns[f][row] for f in text_fields}
    if template:
        return template.format(**values).strip()
    return ". ".join(v for v in values.values() if v).strip()
