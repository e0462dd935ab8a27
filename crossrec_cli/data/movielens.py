"""MovieLens raw files: ml-100k (``u.data``, ``u.item``), ml-1m (``ratings.dat``, ``movies.dat``).

The files in the domain folder decide which is read: ``u.data`` -> ml-100k, ``ratings.dat`` ->
ml-1m (ml-10m's ``.dat`` files have the same layout). With both present, ``dataset: ml-100k``
or ``dataset: ml-1m`` chooses.

Item columns, usable in ``text_fields`` / ``text_template``:

- ``item_id``: the movie id
- ``title``: the title as in the file, year included, e.g. ``Toy Story (1995)``
- ``year``: the trailing ``(YYYY)`` of the title, else the release date's year, else ""
- ``genres``: genre names joined by ", " (ml-100k: the set flags of the 19 genre columns, named
  by ``u.genre`` when present, else by the standard ml-100k list)
- ml-100k only: ``release_date`` (e.g. ``01-Jan-1995``), ``video_release_date``, ``imdb_url``

Interactions: user, item, rating (1-5), timestamp (unix seconds). ``u.item`` and ``movies.dat``
are latin-1; ``u.data`` and ``ratings.dat`` ASCII. Not read: ``u.user`` / ``users.dat`` and the
ml-100k cross-validation files (``u1.base`` ...): the split is the protocol's leave-one-out.
Bad rows (field count, number, genre flag, unknown movie id) raise a CrossrecError with file:line.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from crossrec_cli.data.assemble import RawInteractions, RawItems, assemble
from crossrec_cli.data.domain import READERS, Domain, DomainSpec
from crossrec_cli.data.table import read_text
from crossrec_cli.errors import CrossrecError

ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
ML100K_ITEM_COLUMNS = ("item_id", "title", "release_date", "video_release_date", "imdb_url")
NO_SPLIT = "use split: auto or loo (leave-one-out); u1.base ... are not read"
_TITLE_YEAR = re.compile(r"\((\d{4})\)\s*$")
_DATE_YEAR = re.compile(r"(\d{4})\s*$")

Rows = list[tuple[int, list[str]]]


def read_rows(path: Path, sep: str, width: int | None, encoding: str = "utf-8") -> Rows:
    """(1-based line, fields) for every non-blank line of a headerless file.

    Lines are split on ``\\n`` only (latin-1 text may hold U+0085, which ``splitlines`` would
    treat as a line break). ``width``: the exact number of fields every row must have.
    """
    rows: Rows = []
    for lineno, line in enumerate(read_text(path, encoding).split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        cells = line.split(sep)
        if width is not None and len(cells) != width:
            raise CrossrecError(
                str(path),
                f"row has {len(cells)} fields",
                f"expected {width} separated by {sep!r}",
                line=lineno,
            )
        rows.append((lineno, cells))
    if not rows:
        raise CrossrecError(str(path), "file is empty", "expected one row per line", line=1)
    return rows


def number(path: Path, value: str, name: str, line: int, col: int) -> float:
    """``value`` as a finite float, else a CrossrecError at file:line:col."""
    try:
        x = float(value)
    except ValueError:
        x = math.nan
    if not math.isfinite(x):
        raise CrossrecError(
            str(path),
            f"field {name!r} has {value!r}",
            "expected a finite number",
            line=line,
            col=col,
        )
    return x


def year_of(title: str, date: str = "") -> str:
    """The year in a title's trailing ``(YYYY)``, else at the end of ``date``, else ""."""
    m = _TITLE_YEAR.search(title) or _DATE_YEAR.search(date)
    return m.group(1) if m else ""


def read_ratings(path: Path, sep: str) -> RawInteractions:
    """``user sep item sep rating sep timestamp`` rows (``u.data`` / ``ratings.dat``)."""
    users, items, lines, time, rating = [], [], [], [], []
    for line, (user, item, value, stamp) in read_rows(path, sep, 4):
        users.append(user.strip())
        items.append(item.strip())
        rating.append(number(path, value.strip(), "rating", line, 3))
        time.append(number(path, stamp.strip(), "timestamp", line, 4))
        lines.append(line)
    return RawInteractions(path, users, items, lines, time, rating)


def genre_names(folder: Path) -> list[str]:
    """ml-100k genre names in flag order: ``u.genre`` (``name|index`` rows) when present."""
    path = folder / "u.genre"
    if not path.is_file():
        return list(ML100K_GENRES)
    named: dict[int, str] = {}
    for line, cells in read_rows(path, "|", 2, "latin-1"):
        if not cells[1].strip().isdigit() or int(cells[1]) in named:
            raise CrossrecError(
                str(path),
                f"genre index {cells[1]!r} is not new",
                "expected 0, 1, 2 ...",
                line=line,
                col=2,
            )
        idx = int(cells[1])
        named[idx] = cells[0].strip()
    if sorted(named) != list(range(len(named))):
        raise CrossrecError(
            str(path), f"genre indices {sorted(named)} have gaps", "expected 0 .. n-1", line=1
        )
    return [named[i] for i in range(len(named))]


def read_ml100k_items(folder: Path) -> RawItems:
    """``u.item``: id | title | release date | video release date | IMDb URL | genre flags."""
    path = folder / "u.item"
    genres = genre_names(folder)
    cols: dict[str, list[str]] = {c: [] for c in (*ML100K_ITEM_COLUMNS, "year", "genres")}
    lines = []
    for line, cells in read_rows(path, "|", len(ML100K_ITEM_COLUMNS) + len(genres), "latin-1"):
        cells = [c.strip() for c in cells]
        for name, value in zip(ML100K_ITEM_COLUMNS, cells):
            cols[name].append(value)
        flags = cells[len(ML100K_ITEM_COLUMNS) :]
        for ci, flag in enumerate(flags, start=len(ML100K_ITEM_COLUMNS) + 1):
            if flag not in ("0", "1"):
                raise CrossrecError(
                    str(path), f"genre flag {flag!r}", "expected 0 or 1", line=line, col=ci
                )
        cols["year"].append(year_of(cells[1], cells[2]))
        cols["genres"].append(", ".join(g for g, f in zip(genres, flags) if f == "1"))
        lines.append(line)
    return RawItems(path, cols["item_id"], cols, lines)


def read_ml1m_items(folder: Path) -> RawItems:
    """``movies.dat``: ``MovieID::Title::Genres`` with ``|``-separated genres."""
    path = folder / "movies.dat"
    cols: dict[str, list[str]] = {c: [] for c in ("item_id", "title", "year", "genres")}
    lines = []
    for line, (item, title, genres) in read_rows(path, "::", 3, "latin-1"):
        cols["item_id"].append(item.strip())
        cols["title"].append(title.strip())
        cols["year"].append(year_of(title))
        cols["genres"].append(", ".join(g.strip() for g in genres.split("|") if g.strip()))
        lines.append(line)
    return RawItems(path, cols["item_id"], cols, lines)


def release(spec: DomainSpec, folder: Path) -> str:
    """``ml-100k`` or ``ml-1m``, from ``dataset`` or from the files present."""
    found = [
        name
        for name, f in (("ml-100k", "u.data"), ("ml-1m", "ratings.dat"))
        if (folder / f).is_file()
    ]
    if spec.dataset in ("ml-100k", "ml-1m"):
        return spec.dataset
    if len(found) == 1:
        return found[0]
    if not found:
        raise CrossrecError(
            str(folder),
            "no MovieLens ratings file",
            "expected u.data (ml-100k) or ratings.dat (ml-1m)",
        )
    raise CrossrecError(
        str(folder), "both u.data and ratings.dat are present", "set dataset: ml-100k or ml-1m"
    )


def load(spec: DomainSpec) -> Domain:
    """The MovieLens domain in ``spec.folder()``, validated and filtered."""
    folder = spec.folder()
    if spec.split == "given":
        raise CrossrecError(
            f"domain.{spec.name}.split", "MovieLens raw files are not split", NO_SPLIT
        )
    if release(spec, folder) == "ml-100k":
        items, inter = read_ml100k_items(folder), read_ratings(folder / "u.data", "\t")
    else:
        items, inter = read_ml1m_items(folder), read_ratings(folder / "ratings.dat", "::")
    return assemble(spec, items, inter)


READERS.add("movielens", load)
