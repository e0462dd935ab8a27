"""crossrec_cli/progress.py: one progress mechanism. Without a terminal a phase writes timed lines
(step / total, rate, ETA) to the log; in a terminal it draws live bars and the log's lines print
above them, not on the bar's own line."""

from __future__ import annotations

import io
import logging
import re
import sys

import pytest
from rich.console import Console

from crossrec_cli import progress


@pytest.fixture
def settings():
    saved = progress.Settings(**vars(progress.SETTINGS))
    yield progress.SETTINGS
    progress.SETTINGS.__dict__.update(vars(saved))


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "crossrec"]


def test_without_a_terminal_a_phase_logs_step_total_rate_and_eta(settings, caplog):
    progress.configure(bars=True, every=0, console=Console(file=io.StringIO(), force_terminal=False))
    with caplog.at_level(logging.INFO, logger="crossrec"):
        with progress.phase("encode item texts", 4) as bar:
            bar.advance(1)
            bar.advance(3, info="loss 1.2345")
    got = _lines(caplog)
    assert len(got) == 2, got
    assert re.fullmatch(r"encode item texts: 1/4 \(25%\), [0-9.]+/s, elapsed 0:00:00, ETA 0:00:0\d", got[0]), got[0]
    assert got[1].startswith("encode item texts: 4/4 (100%)") and got[1].endswith(", ETA 0:00:00, loss 1.2345")


def test_lines_come_every_progress_every_seconds_not_every_step(settings, caplog, monkeypatch):
    now = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    progress.configure(every=25, console=Console(file=io.StringIO(), force_terminal=False))
    with caplog.at_level(logging.INFO, logger="crossrec"):
        with progress.phase("rank users", 10) as bar:  # starts at t=0
            for t in range(10, 70, 10):  # steps at t=10, 20, ..., 60: lines at t=30 and t=60
                now[0] = float(t)
                bar.advance(1)
            now[0] = 70.0
    got = _lines(caplog)
    assert got == ["rank users: 3/10 (30%), 0.10/s, elapsed 0:00:30, ETA 0:01:10",
                   "rank users: 6/10 (60%), 0.10/s, elapsed 0:01:00, ETA 0:00:40",
                   "rank users: 6/10 (60%), 0.09/s, elapsed 0:01:10, ETA 0:00:47"], got  # + where it ended


def test_bars_off_in_a_terminal_log_lines_and_quiet_phases_write_nothing(settings, caplog):
    out = io.StringIO()
    progress.configure(bars=False, every=0, console=Console(file=out, force_terminal=True))
    with caplog.at_level(logging.INFO, logger="crossrec"):
        with progress.phase("train epoch 1", 2) as bar:
            bar.advance(2)
        with progress.phase("train epoch 2", 2, quiet=True) as bar:  # another process of a distributed run
            bar.advance(2)
    assert [g.split(",")[0] for g in _lines(caplog)] == ["train epoch 1: 2/2 (100%)"]
    assert out.getvalue() == ""  # no bar drawn


def test_in_a_terminal_log_lines_print_above_the_bars(settings):
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system=None)
    progress.configure(bars=True, every=0, console=console)
    logger = logging.getLogger("crossrec")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[crossrec][INFO] - %(message)s"))
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with progress.phase("train epochs", 3, lines=False) as epochs:
            with progress.phase("train epoch 1", 5) as bar:
                bar.advance(5, info="loss 2.0")
            logger.info("epoch 1 loss 2.0000 valid ndcg@10 0.1000")
            epochs.advance(1)
        assert handler.stream is sys.stderr  # given back its own stream when the bars end
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "\n", out.getvalue())  # cursor moves: line breaks
    lines = [line for line in text.splitlines() if line.strip()]
    logged = [line for line in lines if "epoch 1 loss 2.0000" in line]
    assert logged and all(line.startswith("[crossrec][INFO]") for line in logged), lines  # its own line
    assert any(line.startswith("train epochs") and "1/3" in line for line in lines), lines  # the bar


def test_a_task_training_without_a_terminal_logs_progress_before_it_ends(tmp_path):
    """A task training (classification, tiny backbone) with its output in a pipe, as on a cluster:
    its log holds step lines with rate and ETA written before the run's last line."""
    from tests.conftest import run_cli

    run = tmp_path / "run"
    run_cli("finetune", "experiment=smoke", "task=classification", "task.train.epochs=1", "progress_every=0",
            run_dir=run)
    log = (run / "finetune.log").read_text().splitlines()
    steps = [i for i, line in enumerate(log) if re.search(r"task epoch 1: \d+/\d+ \(\d+%\), .*/s, elapsed .*, ETA ", line)]
    assert steps, log[-20:]
    assert steps[0] < len(log) - 1  # written while it ran, not only at the end


def test_a_quiet_process_shows_nothing(settings, caplog):
    """configure(quiet=True): the other processes of a distributed run (run_recipe sets it off rank 0)."""
    out = io.StringIO()
    progress.configure(bars=True, every=0, console=Console(file=out, force_terminal=True), quiet=True)
    with caplog.at_level(logging.INFO, logger="crossrec"):
        with progress.phase("encode item texts", 2) as bar:
            bar.advance(2)
    assert _lines(caplog) == [] and out.getvalue() == ""
