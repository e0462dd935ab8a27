"""A run directory belongs to one run.

- ``RunLock``: ``<run dir>/.lock`` (pid, host, start time) is taken atomically (a complete file is
  hard-linked into place, so a reader never finds half of one) and released at exit. A second
  process on the same folder is refused naming the holder; a lock whose process is gone (same
  host) is taken over with a warning. The same process may take it again (the command line takes
  it before Hydra writes ``.hydra/``, the recipe again).
- ``claim``: a folder that already holds a run (config, metrics or checkpoints) is refused
  unless the command continues it (``resume``) or replaces it (``overwrite``: the old run is
  moved aside to ``<dir>.replaced-<UTC time>``, never deleted).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import socket
import uuid
from datetime import datetime, timezone
from pathlib import Path

from crossrec_cli.errors import CrossrecError
from crossrec_cli.io import writing

log = logging.getLogger("crossrec")
LOCK = ".lock"
# what shows that a folder holds a run (Hydra's .hydra/ and log file do not: Hydra writes them first)
RUN_FILES = ("config.yaml", "metrics.json", "checkpoints", "checkpoint")
REPLACED = ".replaced-"


def run_files(folder: Path) -> list[str]:
    """The entries of ``folder`` that show it holds a run."""
    return [n for n in RUN_FILES if (Path(folder) / n).exists()]


def sweep_runs(folder: Path) -> list[str]:
    """The sub-folders of a sweep folder that hold a run (Hydra's job sub-directories)."""
    if not Path(folder).is_dir():
        return []
    return sorted(p.name for p in Path(folder).iterdir() if p.is_dir() and run_files(p))


def _utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def move_aside(folder: Path) -> Path:
    """Move everything in ``folder`` but its lock to a new ``<folder>.replaced-<UTC time>``."""
    folder = Path(folder)
    dest = folder.with_name(f"{folder.name}{REPLACED}{_utc()}")
    n = 1
    while dest.exists():  # two replacements in one second
        n += 1
        dest = folder.with_name(f"{folder.name}{REPLACED}{_utc()}-{n}")
    with writing(dest, "the replaced run's folder"):
        dest.mkdir(parents=True)
        for entry in sorted(folder.iterdir()):
            if entry.name != LOCK:
                os.rename(entry, dest / entry.name)
    return dest


def claim(folder: Path, resume: bool, overwrite: bool, command: str, sweep: bool = False) -> Path | None:
    """Refuse ``folder`` when it holds a run, unless ``resume`` (continue it) or ``overwrite``
    (move it aside: returns where to). ``sweep``: a multirun's folder, whose job sub-folders
    hold the runs. Call it while holding the folder's ``RunLock``."""
    if resume and overwrite:
        raise CrossrecError("overwrite", "overwrite=true replaces the run that resume continues",
                            "pass one of resume=true and overwrite=true")
    held = sweep_runs(folder) if sweep else run_files(folder)
    if not held or resume:
        return None
    if overwrite:
        dest = move_aside(folder)
        log.warning("overwrite=true: the run that was in %s is now in %s", folder, dest)
        return dest
    what = f"runs in {', '.join(held[:3])}{' ...' if len(held) > 3 else ''}" if sweep else f"a run ({', '.join(held)})"
    raise CrossrecError(str(folder), f"already holds {what}; crossrec {command} never writes over a run",
                        f"pass resume=true to continue it, or overwrite=true to move it aside to "
                        f"{Path(folder).name}{REPLACED}<UTC time>, or choose another hydra.run.dir")


def _proc_start(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks since boot (Linux; None elsewhere): tells a
    live holder from a new process that reused its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]  # field 22 of proc(5), counted after the name


def _alive(holder: dict) -> bool:
    pid = int(holder.get("pid", 0))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        pass
    start = _proc_start(pid)
    return not (start and holder.get("proc_start") and start != holder["proc_start"])


class RunLock:
    """``<folder>/.lock`` for the life of a run."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self.owned = False

    def _read(self) -> dict | None:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # unreadable: a lock nobody can prove alive
        return data if isinstance(data, dict) else {}

    def _link(self) -> bool:
        """Put a complete lock file into place unless one exists; True when this process did."""
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "proc_start": _proc_start(os.getpid())}
        tmp = self.folder / f".lock.{os.getpid()}.{uuid.uuid4().hex[:6]}"
        with writing(self.path, "the run directory's lock"):
            self.folder.mkdir(parents=True, exist_ok=True)
            try:
                tmp.write_text(json.dumps(me) + "\n")
                os.link(tmp, self.path)  # atomic, and fails when a lock is there
            except FileExistsError:
                return False
            finally:
                with contextlib.suppress(OSError):
                    tmp.unlink()
        return True

    def acquire(self) -> RunLock:
        """Take the lock (or find this process already holds it); refuse a live holder."""
        for _ in range(5):
            if self._link():
                self.owned = True
                atexit.register(self.release)
                return self
            holder = self._read()
            if holder is None:  # released meanwhile
                continue
            same_host = holder.get("host") == socket.gethostname()
            if same_host and holder.get("pid") == os.getpid():
                return self  # this process holds it already (the command line took it)
            if holder and (not same_host or _alive(holder)):  # (an unreadable lock proves no one alive)
                where = f" on {holder.get('host')}" if not same_host else ""
                raise CrossrecError(str(self.path), f"run directory in use by pid {holder.get('pid')}{where} since "
                                    f"{holder.get('started')}", "wait for that run to end, or choose another "
                                    f"hydra.run.dir{'; delete the lock if that run is gone' if not same_host else ''}")
            stale = self.path.with_name(f"{LOCK}.stale-{uuid.uuid4().hex[:6]}")
            try:
                os.rename(self.path, stale)  # one process wins the take-over
            except FileNotFoundError:
                continue
            log.warning("%s: taking over the lock of pid %s (started %s), which is no longer running",
                        self.path, holder.get("pid"), holder.get("started"))
            with contextlib.suppress(OSError):
                stale.unlink()
        raise CrossrecError(str(self.path), "could not take the run directory's lock", "try again")

    def release(self) -> None:
        if not self.owned:
            return
        self.owned = False
        holder = self._read()
        if holder and holder.get("pid") == os.getpid():
            with contextlib.suppress(OSError):
                self.path.unlink()
