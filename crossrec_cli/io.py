"""Atomic file writes: write to a temporary name in the same folder, fsync, rename. A write
that the disk refuses (no space, no permission, read-only, quota) is an ``IOFault`` naming the
path and what was being written, never a traceback, and leaves no temporary file behind."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from crossrec_cli.errors import CrossrecError, IOFault

# errno -> (what the disk said, what to do about it)
_FULL = "free space (or raise the quota) and run the command again; a training run continues from its last " \
        "complete checkpoint with resume=true"
_DENIED = "make it writable or choose another folder (hydra.run.dir=...)"
IO_FAULTS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on the device", _FULL),
    errno.EDQUOT: ("disk quota exceeded", _FULL),
    errno.EFBIG: ("file too large for the filesystem", _FULL),
    errno.EACCES: ("permission denied", _DENIED),
    errno.EPERM: ("operation not permitted", _DENIED),
    errno.EROFS: ("read-only file system", "choose a folder on a writable filesystem (hydra.run.dir=...)"),
    errno.EIO: ("input/output error", "check the disk, then run the command again"),
}


def io_errno(exc: BaseException) -> int | None:
    """The errno of a disk fault: an OSError's, or the one inside the message of a library that
    reports I/O errors as text (safetensors: ``I/O error: No space left on device (os error 28)``)."""
    if isinstance(exc, OSError) and exc.errno in IO_FAULTS:
        return exc.errno
    found = re.search(r"os error (\d+)", str(exc))
    return int(found.group(1)) if found and int(found.group(1)) in IO_FAULTS else None


def io_fault(exc: BaseException, path: str | Path, what: str) -> IOFault | None:
    """``exc`` as one line naming ``path`` and ``what`` was being written; None when ``exc`` is
    not a disk fault."""
    code = io_errno(exc)
    if code is None:
        return None
    problem, hint = IO_FAULTS[code]
    return IOFault(str(path), f"cannot write {what}: {problem}", hint)


@contextlib.contextmanager
def writing(path: str | Path, what: str) -> Iterator[None]:
    """Turn a disk fault inside the block into an ``IOFault`` naming ``path`` and ``what``."""
    try:
        yield
    except CrossrecError:
        raise
    except Exception as exc:
        fault = io_fault(exc, path, what)
        if fault is None:
            raise
        raise fault from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[str], None], what: str | None = None) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` only when it succeeded: a reader
    finds the old file or the whole new one. A disk fault is an ``IOFault`` (``what``: the
    kind of file, for its message; default the file's name)."""
    path = Path(path)
    with writing(path, what or path.name):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            write(tmp)
            with open(tmp, "rb+") as fh:
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes, what: str | None = None) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), what)


def atomic_write_text(path: str | Path, text: str, what: str | None = None) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), what)


def atomic_write_json(path: str | Path, obj: Any, what: str | None = None) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n", what)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_safetensors(path: str | Path) -> dict:
    """Tensors of a safetensors file (never a pickle); a damaged or foreign file is a
    CrossrecError naming it, not a traceback."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CrossrecError(str(path), f"not a readable safetensors file: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                            "re-run the command that wrote it") from None
