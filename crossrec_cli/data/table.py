"""Strict readers for delimited text files with a header line.

Every problem is a CrossrecError naming the file, line and column, never a traceback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from crossrec_cli.errors import CrossrecError

ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")


class Column(list[str]):
    """A column's cells (strings); ``col`` is its 1-based position in the file, so that a check
    made later (an empty id in ``assemble``) can still name the column."""

    def __init__(self, cells: list[str] | None = None, col: int | None = None) -> None:
        super().__init__(cells or [])
        self.col = col


@dataclass
class Table:
    """Columns of raw strings; ``lines[i]`` is the 1-based file line of row ``i``."""

    path: Path
    names: list[str]
    types: list[str]
    columns: dict[str, list[str]]
    lines: list[int]

    def __len__(self) -> int:
        return len(self.lines)

    def require(self, name: str, what: str = "column") -> list[str]:
        if name not in self.columns:
            raise CrossrecError(
                str(self.path), f"missing {what} {name!r}", f"header has {self.names}", line=1
            )
        return self.columns[name]

    def floats(self, name: str, allow_empty: bool = False) -> list[float]:
        """Parse a column as floats; NaN / inf and (unless allowed) empty cells are errors."""
        col = self.require(name)
        out = []
        ci = self.names.index(name) + 1
        for value, line in zip(col, self.lines):
            if value == "" and allow_empty:
                out.append(math.nan)
                continue
            try:
                x = float(value)
            except ValueError:
                raise CrossrecError(
                    str(self.path), f"field {name!r} has {value!r}", "expected a number", line=line, col=ci
                ) from None
            if not math.isfinite(x):
                raise CrossrecError(
                    str(self.path), f"field {name!r} has {value!r}", "expected a finite number", line=line, col=ci
                )
            out.append(x)
        return out


def read_text(path: Path, encoding: str = "utf-8") -> str:
    if not path.is_file():
        raise CrossrecError(str(path), "file does not exist", "check the domain's path and dataset stem")
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raise CrossrecError(str(path), "file starts with a UTF-8 byte-order mark", "save it as UTF-8 without BOM", line=1)
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise CrossrecError(
            str(path), f"byte 0x{raw[exc.start]:02x} is not valid {encoding}", f"save the file as {encoding}",
            line=line, col=col,
        ) from None


def read_delimited(path: Path, sep: str = "\t", typed: bool = False, encoding: str = "utf-8") -> Table:
    """Read a header + rows file. ``typed``: headers are RecBole ``name:type``."""
    text = read_text(path, encoding)
    rows = text.splitlines()
    if not text.strip():
        raise CrossrecError(str(path), "file is empty", "expected a header line and rows", line=1)
    if not rows[0].strip():
        raise CrossrecError(str(path), "first line is blank", "expected the header on line 1", line=1)
    header = rows[0].split(sep)
    if len(header) == 1 and sep == "\t" and ("," in rows[0] or ";" in rows[0]):
        raise CrossrecError(
            str(path), "header has one column but contains ',' or ';'", "columns must be tab-separated", line=1
        )
    names, types = [], []
    for ci, cell in enumerate(header, start=1):
        cell = cell.strip()
        if typed:
            if ":" not in cell:
                raise CrossrecError(
                    str(path), f"header field {cell!r} has no type", "expected name:type, e.g. item_id:token",
                    line=1, col=ci,
                )
            name, typ = cell.rsplit(":", 1)
            if typ not in ATOMIC_TYPES:
                raise CrossrecError(
                    str(path), f"header field {cell!r} has unknown type {typ!r}", f"expected one of {list(ATOMIC_TYPES)}",
                    line=1, col=ci,
                )
        else:
            name, typ = cell, "token"
        if not name:
            raise CrossrecError(str(path), "empty header field", "every column needs a name", line=1, col=ci)
        if name in names:
            raise CrossrecError(str(path), f"duplicate header field {name!r}", "column names must be unique", line=1, col=ci)
        names.append(name)
        types.append(typ)
    columns: dict[str, list[str]] = {n: Column(col=ci) for ci, n in enumerate(names, start=1)}
    lines: list[int] = []
    width = len(names)
    for lineno, row in enumerate(rows[1:], start=2):
        if not row.strip():
            continue
        cells = row.split(sep)
        if len(cells) != width:
            raise CrossrecError(
                str(path), f"row has {len(cells)} fields", f"expected {width} ({sep!r}-separated) like the header",
                line=lineno,
            )
        for name, cell in zip(names, cells):
            columns[name].append(cell.strip())
        lines.append(lineno)
    if not lines:
        raise CrossrecError(str(path), "file has a header but no rows", "expected at least one row", line=1)
    return Table(path, names, types, columns, lines)
