"""Per-item vector files (image, audio or any signal computed elsewhere), declared in the domain
file and read into the item feature ``vectors:<name>`` (one array per item, None when the file
has no row for it)::

    vectors:
      image: {path: clip.npy, ids: clip_ids.txt}      # .npy (n, d) + one item id per line
      audio: {path: audio.safetensors, ids: ids.txt}  # tensor "vectors" (n, d) + the ids file
      meta: {path: meta.tsv}                          # item_id<TAB>v1 v2 ... (no header)
      clip: {path: clip.parquet}                      # first column the item id, then one list
                                                      # column or one numeric column per dimension

Paths are relative to the domain folder (or absolute). Files are read the first time a run uses
the feature (``model.features=[text,vectors:image]``); a malformed row, a wrong count, a
non-finite value or a dimension that changes is a one-line ``path:line`` error.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from crossrec_cli.data.table import read_text
from crossrec_cli.errors import CrossrecError

SUFFIXES = (".npy", ".safetensors", ".tsv", ".txt", ".parquet")


def check_spec(raw: Any, where: str) -> dict[str, dict[str, str]]:
    """The ``vectors:`` key: name -> {path, ids (for .npy / .safetensors)}."""
    if not isinstance(raw, dict) or not raw:
        raise CrossrecError(where, f"expected a mapping name -> {{path: FILE}}, got {raw!r}",
                            "write e.g. vectors: {image: {path: clip.npy, ids: clip_ids.txt}}")
    out = {}
    for name, entry in raw.items():
        key = f"{where}.{name}"
        if not isinstance(name, str) or not name.replace("_", "").isalnum():
            raise CrossrecError(key, "a vector file name must be letters, digits or _", "e.g. image, audio, meta")
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise CrossrecError(key, f"expected {{path: FILE}}, got {entry!r}", "name the vector file")
        unknown = sorted(set(entry) - {"path", "ids"})
        if unknown:
            raise CrossrecError(f"{key}.{unknown[0]}", "unknown key", "expected path and (for .npy / .safetensors) ids")
        suffix = Path(entry["path"]).suffix
        if suffix not in SUFFIXES:
            raise CrossrecError(f"{key}.path", f"unknown vector file type {suffix!r}", f"expected one of {list(SUFFIXES)}")
        if suffix in (".npy", ".safetensors") and not isinstance(entry.get("ids"), str):
            raise CrossrecError(f"{key}.ids", "missing", f"a {suffix} file needs an ids file: one item id per line")
        out[name] = dict(entry)
    return out


def _ids(path: Path) -> list[str]:
    ids = [ln.strip() for ln in read_text(path).splitlines()]
    while ids and not ids[-1]:
        ids.pop()
    for line, value in enumerate(ids, start=1):
        if not value:
            raise CrossrecError(str(path), "empty item id", "one item id per line", line=line)
    return ids


def _check_matrix(mat: np.ndarray, path: Path, ids: list[str], ids_path: Path) -> np.ndarray:
    if mat.ndim != 2:
        raise CrossrecError(str(path), f"expected a 2-d array (items, dim), got shape {mat.shape}", "save one row per item")
    if len(mat) != len(ids):
        raise CrossrecError(str(path), f"{len(mat)} rows but {len(ids)} ids in {ids_path.name}", "one id per row, in row order")
    bad = np.argwhere(~np.isfinite(mat))
    if len(bad):
        raise CrossrecError(str(path), f"row {bad[0][0] + 1} (item {ids[bad[0][0]]!r}) has a non-finite value",
                            "fix or drop that row")
    return mat.astype(np.float32)


def read_vectors(path: Path, ids_path: Path | None) -> dict[str, np.ndarray]:
    """item id -> vector (float32) of one vector file."""
    if not path.is_file():
        raise CrossrecError(str(path), "vector file does not exist", "check vectors: in the domain file")
    if path.suffix in (".npy", ".safetensors"):
        assert ids_path is not None
        ids = _ids(ids_path)
        if path.suffix == ".npy":
            try:
                mat = np.load(path, allow_pickle=False)
            except ValueError as exc:
                raise CrossrecError(str(path), f"cannot read: {exc}", "save a plain numeric array with numpy.save") from None
        else:
            from safetensors.numpy import load_file

            tensors = load_file(str(path))
            if "vectors" not in tensors:
                raise CrossrecError(str(path), f"no tensor named 'vectors' (has {sorted(tensors)})",
                                    "store the (items, dim) matrix as 'vectors'")
            mat = tensors["vectors"]
        mat = _check_matrix(np.asarray(mat), path, ids, ids_path)
        dup = len(set(ids)) != len(ids)
        if dup:
            seen: set[str] = set()
            line = next(i for i, v in enumerate(ids, start=1) if v in seen or seen.add(v))  # type: ignore[func-returns-value]
            raise CrossrecError(str(ids_path), f"item {ids[line - 1]!r} listed twice", "one row per item", line=line)
        return dict(zip(ids, mat))
    if path.suffix == ".parquet":
        return _read_parquet(path)
    out: dict[str, np.ndarray] = {}
    dim = None
    for line, text in enumerate(read_text(path).splitlines(), start=1):
        if not text.strip():
            continue
        cells = text.split("\t")
        if len(cells) != 2 or not cells[0].strip():
            raise CrossrecError(str(path), "expected item_id<TAB>v1 v2 ...", "one item per line", line=line)
        try:
            vec = np.asarray([float(x) for x in cells[1].split()], dtype=np.float32)
        except ValueError:
            raise CrossrecError(str(path), "a value is not a number", "space-separated numbers after the tab", line=line) from None
        if not len(vec) or not np.isfinite(vec).all():
            raise CrossrecError(str(path), "empty or non-finite vector", "finite numbers only", line=line)
        if dim is not None and len(vec) != dim:
            raise CrossrecError(str(path), f"{len(vec)} values, earlier rows have {dim}", "every vector has the same size", line=line)
        dim = len(vec)
        iid = cells[0].strip()
        if iid in out:
            raise CrossrecError(str(path), f"item {iid!r} listed twice", "one row per item", line=line)
        out[iid] = vec
    return out


def _read_parquet(path: Path) -> dict[str, np.ndarray]:
    """Parquet (pyarrow): the first column holds the item ids; the vector is either the one
    remaining list column or the remaining numeric columns, one per dimension. Errors name the
    file, the (1-based) row and the column."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise CrossrecError(str(path), "reading .parquet needs pyarrow", "pip install 'crossrec[parquet]'") from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow's own errors: not a parquet file, corrupt footer, ...
        raise CrossrecError(str(path), f"cannot read: {str(exc).splitlines()[0]}", "write it with pyarrow or pandas") from None
    if table.num_columns < 2:
        raise CrossrecError(str(path), f"{table.num_columns} column(s)", "expected the item id column, then the vector")
    ids = [str(v) for v in table.column(0).to_pylist()]
    rest = table.schema.names[1:]
    try:
        if len(rest) == 1 and str(table.schema.field(1).type).startswith(("list", "large_list", "fixed_size_list")):
            rows = table.column(1).to_pylist()
            if any(r is None for r in rows):
                i = next(k for k, r in enumerate(rows) if r is None)
                raise CrossrecError(str(path), f"row {i + 1} (item {ids[i]!r}): no vector in column {rest[0]!r}",
                                    "fill or drop that row")
            sizes = {len(r) for r in rows}
            if len(sizes) > 1:
                first = len(rows[0])
                i = next(k for k, r in enumerate(rows) if len(r) != first)
                raise CrossrecError(str(path), f"row {i + 1} (item {ids[i]!r}) has {len(rows[i])} values, row 1 has "
                                    f"{first}", "every vector has the same size")
            mat = np.asarray(rows, dtype=np.float32)
        else:
            mat = np.stack([np.asarray(table.column(c).to_numpy(zero_copy_only=False), dtype=np.float32)
                            for c in rest], axis=1)
    except (TypeError, ValueError) as exc:
        raise CrossrecError(str(path), f"a vector value is not a number ({exc})", "numeric columns only") from None
    bad = np.argwhere(~np.isfinite(mat))
    if len(bad):
        raise CrossrecError(str(path), f"row {bad[0][0] + 1} (item {ids[bad[0][0]]!r}) has a non-finite value",
                            "fix or drop that row")
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        i = next(k for k, v in enumerate(ids) if v in seen or seen.add(v))  # type: ignore[func-returns-value]
        raise CrossrecError(str(path), f"row {i + 1}: item {ids[i]!r} listed twice", "one row per item")
    return dict(zip(ids, mat))


def attach_vectors(domain: Any, spec: Any) -> Any:
    """``domain`` with one lazy ``vectors:<name>`` item feature per declared file."""
    raw = getattr(spec, "vectors", None)
    if raw is None:
        return domain
    from crossrec_cli.data.domain import LazyItems

    folder = spec.folder()
    ids = list(domain.item_ids)
    features = dict(domain.item_features)
    for name, entry in check_spec(raw, f"domain.{spec.name}.vectors").items():
        path = folder / entry["path"]
        ids_path = folder / entry["ids"] if entry.get("ids") else None

        def build(path: Path = path, ids_path: Path | None = ids_path) -> list[np.ndarray | None]:
            table = read_vectors(path, ids_path)
            return [table.get(i) for i in ids]

        features[f"vectors:{name}"] = LazyItems(len(ids), build)
    return replace(domain, item_features=features)
