"""Progress of every phase that takes a while (training epochs and steps, item encoding, ranking,
attributions), one mechanism for all:

- in a terminal, a live rich bar per phase (nested phases share one display), with the log's
  lines printed above the bars, never into them;
- without one (a cluster job, output redirected to a file) or with bars off (``progress=false``),
  a line in the log every ``progress_every`` seconds: ``<phase>: step / total (%), rate, ETA`` and
  the phase's own info (the running loss). The run's log file gets them too.

A command's entry layer sets the two switches once (``configure``); library code opens phases
with ``phase(description, total)`` and calls ``advance``.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rich import get_console
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

log = logging.getLogger("crossrec")


@dataclass
class Settings:
    bars: bool = True  # live bars when stderr is a terminal
    every: float = 30.0  # seconds between progress lines in the log (no terminal or bars off); 0: every step
    console: Console | None = None  # where bars draw (None: rich's default console); tests pass their own
    quiet: bool = False  # no bars, no lines (the other processes of a distributed run: rank 0 shows them)


SETTINGS = Settings()
_live: Progress | None = None
_open = 0
_swapped: list[tuple[logging.StreamHandler, object]] = []


def configure(bars: bool | None = None, every: float | None = None, console: Console | None = None,
              quiet: bool | None = None) -> None:
    if quiet is not None:
        SETTINGS.quiet = bool(quiet)
    if bars is not None:
        SETTINGS.bars = bool(bars)
    if every is not None:
        SETTINGS.every = float(every)
    if console is not None:
        SETTINGS.console = console


def _terminal() -> bool:
    return (SETTINGS.console or get_console()).is_terminal


def _stream_handlers() -> list[logging.StreamHandler]:
    """Handlers that write to the process's console streams (not files): the log lines that would
    otherwise land on a bar's own line."""
    out = []
    for logger in (logging.getLogger(), log):
        for h in logger.handlers:
            if type(h) is logging.StreamHandler and getattr(h, "stream", None) in (sys.stderr, sys.stdout,
                                                                                    sys.__stderr__, sys.__stdout__):
                out.append(h)
    return out


def _start() -> Progress:
    global _live
    _live = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                     TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=SETTINGS.console,
                     transient=False, redirect_stdout=True, redirect_stderr=True)
    handlers, stdout = _stream_handlers(), sys.stdout
    _live.start()  # in a terminal: sys.stdout / sys.stderr now print through the display, above the bars
    for h in handlers:  # a log handler holds the stream it was given: give it the redirected one
        _swapped.append((h, h.stream))
        h.setStream(sys.stdout if h.stream in (stdout, sys.__stdout__) else sys.stderr)
    return _live


def _stop() -> None:
    global _live
    for h, stream in _swapped:
        h.setStream(stream)
    _swapped.clear()
    if _live is not None:
        _live.stop()
    _live = None


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}"


class Phase:
    """One phase's progress: a bar (``task`` set) or timed log lines."""

    def __init__(self, description: str, total: int, task: int | None, quiet: bool, completed: int = 0):
        self.description, self.total, self.task, self.quiet = description, max(0, int(total)), task, quiet
        self.done = self.base = completed  # a resumed phase starts part-way; its rate counts this process's steps
        self.start = self.last = time.monotonic()

    def line(self, info: str = "") -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = (self.done - self.base) / elapsed
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        eta = _clock(left) if left != float("inf") else "?"
        rate_s = f"{rate:.2f}/s" if rate < 100 else f"{rate:.0f}/s"
        return f"{self.description}: {self.done}/{self.total}{pct}, {rate_s}, elapsed {_clock(elapsed)}, ETA {eta}" + (
            f", {info}" if info else "")

    def advance(self, n: int = 1, info: str = "") -> None:
        self.done += n
        if self.quiet:
            return
        if self.task is not None and _live is not None:
            _live.update(self.task, advance=n, info=info)
            return
        now = time.monotonic()
        if now - self.last >= SETTINGS.every:
            self.last = now
            log.info(self.line(info))


@contextmanager
def phase(description: str, total: int, bars: bool | None = None, quiet: bool = False,
          lines: bool = True, completed: int = 0) -> Iterator[Phase]:
    """A phase of ``total`` steps. ``bars``: this phase's own switch (None: ``configure``'s);
    ``quiet``: neither bar nor lines (another process of a distributed run shows them);
    ``lines=False``: a bar in a terminal but no timed log lines (a phase whose steps log their own);
    ``completed``: steps already done (a resumed phase)."""
    global _open
    quiet = quiet or SETTINGS.quiet
    show_bar = not quiet and (SETTINGS.bars if bars is None else bars) and _terminal()
    task = None
    if show_bar:
        live = _live or _start()
        task = live.add_task(description, total=max(total, 0), completed=completed, info="")
    _open += 1
    p = Phase(description, total, task, quiet or (task is None and not lines), completed)
    try:
        yield p
    finally:
        _open -= 1
        if task is not None and _live is not None and _open:
            _live.remove_task(task)
        if not _open and _live is not None:
            _stop()
        if not p.quiet and task is None and p.done > p.base and 0 < SETTINGS.every <= time.monotonic() - p.start:
            log.info(p.line())  # a long phase's last line: where it ended


def chunks(description: str, n: int, size: int) -> Iterator[int]:
    """``range(0, n, size)`` as a phase of ``n`` steps: each chunk's start, counted once it is done."""
    with phase(description, n) as bar:
        for a in range(0, n, size):
            yield a
            bar.advance(min(size, n - a))
