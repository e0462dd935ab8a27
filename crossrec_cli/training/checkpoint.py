"""Atomic, verified checkpoint folders.

A checkpoint is written into a hidden temporary folder, every file fsynced, a ``manifest.json``
with each file's sha256 written last, then the folder is renamed into place: it is visible
only when complete. Loading verifies the manifest; a damaged checkpoint is skipped.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from crossrec_cli.io import atomic_write_text, sha256_file, writing

log = logging.getLogger("crossrec")
MANIFEST = "manifest.json"
STEP_RE = re.compile(r"^step-(\d+)$")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_checkpoint(folder: Path, writers: dict[str, Callable[[str], None]], meta: dict | None = None) -> Path:
    """Write ``writers[name](path)`` for each file, then the manifest, then rename into ``folder``.
    A disk fault is an ``IOFault`` naming the file being written; the temporary folder is removed
    and an older ``folder`` stays as it was."""
    folder = Path(folder)
    tmp = folder.parent / f".tmp-{folder.name}-{uuid.uuid4().hex[:8]}"
    try:
        with writing(folder, "a checkpoint folder"):
            folder.parent.mkdir(parents=True, exist_ok=True)
            tmp.mkdir()
        crash = os.environ.get("CROSSREC_TEST_CRASH_DURING")  # "<folder>:<file>": tests kill us mid-write
        for name, write in writers.items():
            target = tmp / name
            with writing(folder / name, "a checkpoint file"):
                target.parent.mkdir(parents=True, exist_ok=True)
                write(str(target))
            if crash and crash == f"{folder.name}:{name}":
                os.kill(os.getpid(), 9)
        with writing(folder, "a checkpoint folder"):
            files = sorted(p for p in tmp.rglob("*") if p.is_file())
            for p in files:
                with open(p, "rb+") as fh:
                    os.fsync(fh.fileno())
            manifest = {"files": {str(p.relative_to(tmp)): sha256_file(p) for p in files}, "meta": meta or {}}
            atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=1))
            _fsync_dir(tmp)
            if folder.exists():  # replace: move the old one aside first so a crash keeps one of them
                old = folder.parent / f".old-{folder.name}-{uuid.uuid4().hex[:8]}"
                os.replace(folder, old)
                try:
                    os.replace(tmp, folder)
                except BaseException:
                    os.replace(old, folder)  # the old one back: a reader finds a whole one
                    raise
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, folder)
            _fsync_dir(folder.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def verify(folder: Path) -> str | None:
    """None when every file matches the manifest, else what is wrong."""
    mpath = Path(folder) / MANIFEST
    if not mpath.is_file():
        return "no manifest (incomplete checkpoint)"
    try:
        files = json.loads(mpath.read_text())["files"]
    except (ValueError, KeyError):
        return "unreadable manifest"
    for name, digest in files.items():
        p = Path(folder) / name
        if not p.is_file():
            return f"missing {name}"
        if sha256_file(p) != digest:
            return f"checksum mismatch in {name}"
    return None


def meta(folder: Path) -> dict:
    return json.loads((Path(folder) / MANIFEST).read_text()).get("meta", {})


def step_folders(root: Path) -> list[Path]:
    """``root/step-N`` folders, newest (highest N) first."""
    if not Path(root).is_dir():
        return []
    found = [(int(m.group(1)), p) for p in Path(root).iterdir() if p.is_dir() and (m := STEP_RE.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def latest_verified(root: Path) -> Path | None:
    """The newest checkpoint that verifies; older ones are tried in turn with a warning."""
    for p in step_folders(root):
        problem = verify(p)
        if problem is None:
            return p
        log.warning("checkpoint %s is not usable (%s); trying the previous one", p, problem)
    return None


def prune(root: Path, keep_last: int, protect: set[Path] = frozenset()) -> list[Path]:
    """Delete all but the newest ``keep_last`` step folders inside ``root``. Never deletes the
    newest, anything in ``protect`` (the best), or anything outside ``root``."""
    root = Path(root).resolve()
    folders = step_folders(root)
    keep = set(folders[: max(1, keep_last)]) | {Path(p).resolve() for p in protect}
    removed = []
    for p in folders:
        rp = p.resolve()
        if rp in keep or rp.parent != root:
            continue
        shutil.rmtree(rp)
        removed.append(rp)
    return removed
