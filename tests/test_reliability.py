"""Nothing lost: a run directory belongs to one run, and disk, permission and interruption
faults end in one line with nothing half-written (docs/reliability.md lists each fault and the
test here that proves it)."""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import CLI, REPO, read_metrics, run_cli, run_inprocess, without_timing
from omegaconf import OmegaConf

from crossrec_cli import io as crossrec_io
from crossrec_cli.errors import CrossrecError, IOFault
from crossrec_cli.io import io_fault
from crossrec_cli.rundir import LOCK, RunLock, claim
from crossrec_cli.training import checkpoint as ckpt
from crossrec_cli.training.preempt import StopFlag

SMOKE = ("finetune", "experiment=smoke")
TRAIN = (*SMOKE, "trainer.epochs=2", "trainer.checkpoint_every=1", "trainer.keep_last=3")


def _env(**extra: str) -> dict:
    return {**os.environ, "CROSSREC_CACHE": str(REPO / ".cache" / "test"), "OMP_NUM_THREADS": "1", **extra}


def _start(run_dir: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([CLI, *args, f"hydra.run.dir={run_dir}"], cwd=REPO, env=env or _env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_error_line(stderr: str) -> str:
    """The one line a refused or failed command ends with: ``error: ...``, no traceback."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def _no_unfinished_checkpoint(run_dir: Path) -> None:
    """Every checkpoint a reader can see verifies: temporary folders only, never a half one."""
    for folder in [run_dir / "checkpoint", *ckpt.step_folders(run_dir / "checkpoints")]:
        if folder.exists():
            assert ckpt.verify(folder) is None, folder


# --- 1. a run directory belongs to one run ---------------------------------------------------

def test_a_finished_run_is_refused_then_moved_aside_by_overwrite(tmp_path):
    run = tmp_path / "a"
    run_cli(*SMOKE, "seed=1", run_dir=run)
    before = _snapshot(run)
    proc = run_cli(*SMOKE, "seed=2", run_dir=run, check=False)
    line = _one_error_line(proc.stderr)
    assert proc.returncode == 2 and line.startswith(f"error: {run}: already holds a run")
    assert "resume=true" in line and "overwrite=true" in line
    assert _snapshot(run) == before  # byte-identical, .hydra/ and the log included
    run_cli(*SMOKE, "seed=2", "overwrite=true", run_dir=run)
    (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith("a.replaced-")]
    assert _snapshot(aside) == before  # the first run, whole, under its moved-aside name
    assert read_metrics(run)["seed"] == 2 and OmegaConf.load(run / "config.yaml").seed == 2


def test_overwrite_and_resume_together_and_a_bad_overwrite_value_are_refused(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(CrossrecError, match="pass one of resume=true and overwrite=true"):
        claim(run_dir, resume=True, overwrite=True, command="finetune")
    assert claim(run_dir, resume=True, overwrite=False, command="finetune") is None  # resume continues it
    proc = run_cli(*SMOKE, "overwrite=maybe", run_dir=tmp_path / "b", check=False)
    assert proc.returncode == 2 and _one_error_line(proc.stderr).startswith("error: overwrite: expected true or false")


def test_a_sweep_folder_that_holds_runs_is_refused_and_moved_aside(tmp_path):
    sweep = tmp_path / "sweep"
    for job in ("0", "1"):
        (sweep / job).mkdir(parents=True)
        (sweep / job / "metrics.json").write_text("{}")
    with pytest.raises(CrossrecError, match="already holds runs in 0, 1"):
        claim(sweep, resume=False, overwrite=False, command="finetune", sweep=True)
    assert claim(sweep, resume=True, overwrite=False, command="finetune", sweep=True) is None
    aside = claim(sweep, resume=False, overwrite=True, command="finetune", sweep=True)
    assert (aside / "1" / "metrics.json").read_text() == "{}" and list(sweep.iterdir()) == []


def test_an_in_process_run_claims_its_folder_too(tmp_path):
    run_inprocess(*SMOKE, run_dir=tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(SystemExit) as stop:
        run_inprocess(*SMOKE, "seed=5", run_dir=tmp_path)
    assert stop.value.code == 2 and _snapshot(tmp_path) == before and not (tmp_path / LOCK).exists()


def test_a_run_refused_for_its_input_leaves_no_run_behind(tmp_path):
    """evaluate refuses eval.test_users=all for popularity inside the recipe, after config.yaml
    was written: that config goes, so the corrected command runs in the same folder."""
    with pytest.raises(SystemExit) as stop:
        run_inprocess("evaluate", *SMOKE[1:], "model=popularity", "eval.test_users=all", run_dir=tmp_path)
    assert stop.value.code == 2 and not (tmp_path / "config.yaml").exists()
    assert run_inprocess("evaluate", *SMOKE[1:], "model=popularity", run_dir=tmp_path)["model"] == "popularity"


# --- 2. a lock -----------------------------------------------------------------------------

def test_two_runs_started_together_into_one_folder_exactly_one_runs(tmp_path):
    run = tmp_path / "both"
    procs = [_start(run, *SMOKE, f"seed={seed}") for seed in (1, 2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 2], results
    refused = next(err for rc, err in results if rc == 2)
    line = _one_error_line(refused)
    assert "in use by pid" in line or "already holds a run" in line  # (the other may have finished first)
    seed = read_metrics(run)["seed"]
    assert OmegaConf.load(run / "config.yaml").seed == seed and not (run / LOCK).exists()
    assert OmegaConf.load(run / ".hydra" / "config.yaml").seed == seed  # not mixed: one run's files only


def test_a_live_holder_is_named_and_a_stale_lock_is_taken_over(tmp_path, caplog):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                                 "started": "2026-01-01T00:00:00+00:00"}))
        proc = run_cli(*SMOKE, run_dir=tmp_path, check=False)
        line = _one_error_line(proc.stderr)
        assert proc.returncode == 2 and f"in use by pid {holder.pid}" in line and str(tmp_path / LOCK) in line
        assert not (tmp_path / "config.yaml").exists() and not (tmp_path / ".hydra").exists()
    finally:
        holder.kill()
        holder.wait()
    with caplog.at_level(logging.WARNING, logger="crossrec"):  # that process is gone now
        lock = RunLock(tmp_path).acquire()
    assert "no longer running" in caplog.text and json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    assert RunLock(tmp_path).acquire().owned is False  # the same process again: already its lock
    lock.release()
    assert not (tmp_path / LOCK).exists()


def test_a_lock_of_another_host_is_refused(tmp_path):
    (tmp_path / LOCK).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "x"}))
    with pytest.raises(CrossrecError, match="in use by pid 1 on elsewhere"):
        RunLock(tmp_path).acquire()


# --- 3. I/O faults are errors, not tracebacks -------------------------------------------------

@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT])
def test_a_refused_write_is_one_line_and_the_old_file_stays(tmp_path, code):
    path = tmp_path / "metrics.json"
    path.write_text("old")

    def write(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise OSError(code, os.strerror(code))

    with pytest.raises(IOFault) as err:
        crossrec_io.atomic_write(path, write, "the run's metrics")
    assert err.value.one_line().startswith(f"error: {path}: cannot write the run's metrics: ")
    assert err.value.exit_code == 74 and path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_safetensors_io_errors_are_read_from_their_message():
    exc = RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert "no space left" in io_fault(exc, "x", "a checkpoint file").one_line()
    assert io_fault(RuntimeError("shape mismatch"), "x", "y") is None


def _failing_after(monkeypatch, module, calls: int, code: int):
    """``module.save_file`` refuses with ``code`` from its ``calls``-th call on (as the disk would)."""
    real, seen = module.save_file, {"n": 0}

    def save_file(tensors, path, *args, **kwargs):
        seen["n"] += 1
        if seen["n"] >= calls:
            if code == errno.ENOSPC:  # what safetensors really raises
                raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")
            raise OSError(code, os.strerror(code), path)
        return real(tensors, path, *args, **kwargs)

    monkeypatch.setattr(module, "save_file", save_file)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EROFS])
def test_a_checkpoint_write_fault_keeps_the_last_one_and_resume_continues(tmp_path, monkeypatch, capsys, code):
    from crossrec_cli.training import engine

    _failing_after(monkeypatch, engine, 9, code)  # step checkpoints write 4 safetensors: the 3rd fails
    with pytest.raises(SystemExit) as stop:
        run_inprocess(*TRAIN, run_dir=tmp_path)
    line = _one_error_line(capsys.readouterr().err)
    assert stop.value.code == 74 and "cannot write a checkpoint file" in line
    assert line.startswith(f"error: {tmp_path / 'checkpoints' / 'step-3'}/")
    assert [p.name for p in ckpt.step_folders(tmp_path / "checkpoints")] == ["step-2", "step-1"]
    assert not list((tmp_path / "checkpoints").glob(".tmp-*")) and not (tmp_path / LOCK).exists()
    _no_unfinished_checkpoint(tmp_path)
    monkeypatch.undo()
    record = run_inprocess(*TRAIN, "resume=true", run_dir=tmp_path)
    assert record["status"] == "complete"


def test_a_metrics_write_fault_is_one_line_and_writes_no_metrics(tmp_path, monkeypatch, capsys):
    real = crossrec_io.tempfile.mkstemp

    def mkstemp(prefix="", **kwargs):
        if prefix.startswith(".metrics.json"):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(prefix=prefix, **kwargs)

    monkeypatch.setattr(crossrec_io.tempfile, "mkstemp", mkstemp)
    with pytest.raises(SystemExit) as stop:
        run_inprocess(*SMOKE, run_dir=tmp_path)
    line = _one_error_line(capsys.readouterr().err)
    assert stop.value.code == 74
    assert line.startswith(f"error: {tmp_path / 'metrics.json'}: cannot write the run's metrics: permission denied")
    assert not (tmp_path / "metrics.json").exists()


def _small_filesystem(path: Path, size: str, read_only: bool = False) -> None:
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root (the writer-level faults above need none)")


def test_a_full_disk_ends_in_one_line_and_resume_continues_once_space_is_free(tmp_path):
    disk = tmp_path / "disk"
    _small_filesystem(disk, "300k")
    try:
        run = disk / "run"
        proc = run_cli(*TRAIN, run_dir=run, check=False)
        line = _one_error_line(proc.stderr)
        assert proc.returncode == 74 and f"error: {run}/" in line and "no space left on the device" in line
        _no_unfinished_checkpoint(run)
        assert not list(run.rglob(".tmp-*")) and not (run / LOCK).exists() and not (run / "metrics.json").exists()
        if not (run / "checkpoint" / "crossrec.json").exists():  # evaluate never takes an unfinished run
            refused = run_cli("evaluate", f"run={run}", run_dir=tmp_path / "eval", check=False)
            assert refused.returncode == 2 and "error:" in refused.stderr and "Traceback" not in refused.stderr
        subprocess.run(["mount", "-o", "remount,size=50m", str(disk)], check=True)
        run_cli(*TRAIN, "resume=true", run_dir=run)
        assert read_metrics(run)["status"] == "complete"
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_read_only_run_folder_ends_in_one_line(tmp_path):
    disk = tmp_path / "ro"
    _small_filesystem(disk, "1m", read_only=True)
    try:
        proc = run_cli(*SMOKE, run_dir=disk / "run", check=False)
        line = _one_error_line(proc.stderr)
        assert proc.returncode == 74 and line.startswith(f"error: {disk / 'run'}/") and "read-only file system" in line
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_an_adapter_export_that_cannot_be_written_leaves_no_half_folder(tmp_path, monkeypatch):
    import crossrec_cli.adapters as adapters

    class Refused:  # an adapter family whose weights the disk refuses half-way
        def names(self, model):
            return ["default"]

        def active(self, model):
            return "default"

        def save(self, model, folder):
            (folder / "adapter_model.safetensors").write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(adapters, "_family", lambda model: ("lora", Refused()))
    export = tmp_path / "adapter"
    export.mkdir()
    (export / "notes.txt").write_text("kept")
    with pytest.raises(IOFault, match="cannot write the adapter export: no space left"):
        adapters.save_adapter(torch.nn.Linear(1, 1), export)
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"] and [p.name for p in export.iterdir()] == ["notes.txt"]


def test_report_skips_moved_aside_runs_and_says_when_it_cannot_write(tmp_path, capsys):
    from crossrec_cli.commands import report

    for run, ndcg in (("a", 0.5), ("a.replaced-20261207T000000Z", 0.1)):
        (tmp_path / run).mkdir()
        (tmp_path / run / "metrics.json").write_text(json.dumps({"command": "evaluate", "test": {"d": {"ndcg@10": ndcg}}}))
    assert [r["run"] for r in report.collect(tmp_path)] == ["a"]
    real = crossrec_io.tempfile.mkstemp

    def mkstemp(**kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    crossrec_io.tempfile.mkstemp = mkstemp
    try:
        with pytest.raises(SystemExit) as stop:
            report.main([str(tmp_path), "--out", str(tmp_path / "report")])
    finally:
        crossrec_io.tempfile.mkstemp = real
    line = _one_error_line(capsys.readouterr().err)
    assert stop.value.code == 74 and line.startswith(f"error: {tmp_path / 'report' / 'report.csv'}: cannot write")


# --- 4. cache integrity ----------------------------------------------------------------------

def _tiny_backbone():
    from crossrec_cli.models.backbone import build_backbone

    tiny = OmegaConf.to_container(OmegaConf.load(REPO / "crossrec_cli/conf/backbone/tiny.yaml"))
    return build_backbone("tiny", config=tiny["config"], seed=0)


def test_a_changed_cache_entry_is_recomputed_with_a_warning(tmp_path, monkeypatch, caplog):
    from crossrec_cli.models.encode import cached_text_vectors

    monkeypatch.setenv("CROSSREC_CACHE", str(tmp_path))
    bb, texts = _tiny_backbone(), ["a red apple", "a blue whale", "green tea"]
    first = cached_text_vectors(bb, texts, 16, "mean")
    (entry,) = (tmp_path / "vectors").iterdir()
    blob = bytearray(entry.read_bytes())
    blob[-3] ^= 0x40  # one bit inside the tensor data; the header still parses
    entry.write_bytes(bytes(blob))
    with caplog.at_level(logging.WARNING, logger="crossrec"):
        again = cached_text_vectors(bb, texts, 16, "mean")
    assert "checksum mismatch" in caplog.text and torch.equal(again, first)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="crossrec"):
        assert torch.equal(cached_text_vectors(bb, texts, 16, "mean"), first)  # rewritten whole
    assert caplog.text == ""


def test_an_unwritable_cache_folder_means_no_cache_with_a_warning(tmp_path, monkeypatch, caplog):
    from crossrec_cli.models.encode import cached_text_vectors

    monkeypatch.setenv("CROSSREC_CACHE", str(tmp_path))

    def mkstemp(**kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(crossrec_io.tempfile, "mkstemp", mkstemp)
    with caplog.at_level(logging.WARNING, logger="crossrec"):
        vecs = cached_text_vectors(_tiny_backbone(), ["x", "y"], 16, "mean")
    assert vecs.shape[0] == 2 and "going on without the vector cache" in caplog.text
    assert "read-only file system" in caplog.text and list((tmp_path / "vectors").iterdir()) == []


# --- 5. interrupts ---------------------------------------------------------------------------

def test_a_second_ctrl_c_stops_at_once():
    with StopFlag() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(100):  # (Python runs the handler between bytecodes)
            if stop.stop:
                break
            time.sleep(0.01)
        assert stop.signal == signal.SIGINT  # the first: finish the step, write a checkpoint
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)


def test_ctrl_c_checkpoints_says_how_to_resume_and_resume_completes(tmp_path):
    proc = _start(tmp_path, *TRAIN)
    t0 = time.time()
    while not (tmp_path / "checkpoints" / "step-2").is_dir():
        assert proc.poll() is None and time.time() - t0 < 300, proc.stderr.read()[-3000:]
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 75
    err = proc.stderr.read()
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if "continue with" in x]
    assert "stopped by SIGINT after step" in line and line.endswith(f"crossrec finetune resume={tmp_path}")
    _no_unfinished_checkpoint(tmp_path)
    run_cli(*TRAIN, f"resume={tmp_path}")
    assert read_metrics(tmp_path)["status"] == "complete"


# --- 6. SIGKILL at random moments of checkpoint writes --------------------------------------

def test_sigkill_during_checkpoint_writes_20_times_never_trusts_a_half_one(tmp_path):
    """20 kills, each while a random file of a checkpoint is being written (a step checkpoint or
    the best one), each followed by resume=true: no visible checkpoint is ever incomplete, no
    kill loses more than one interval (checkpoint_every=1), and the run ends as one never killed."""
    args = (*SMOKE, "trainer.epochs=4", "trainer.checkpoint_every=1", "trainer.keep_last=2")
    ref = tmp_path / "ref"
    run_cli(*args, run_dir=ref)
    rng = random.Random(int(os.environ.get("CROSSREC_KILL_SEED", "20261207")))
    files = ("model.safetensors", "optimizer.safetensors", "rng.safetensors", "extra.safetensors", "state.json")
    run, step = tmp_path / "run", 1
    for attempt in range(20):
        step += rng.choice((0, 1))
        best = step <= 4 and rng.random() < 0.2  # the best checkpoint is written at the first epoch's end
        target = "checkpoint:model.safetensors" if best else f"step-{step}:{rng.choice(files)}"
        proc = run_cli(*args, *(("resume=true",) if attempt else ()), run_dir=run, check=False,
                       env={"CROSSREC_TEST_CRASH_DURING": target})
        if proc.returncode == 0:  # the run ended before that moment came
            break
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        _no_unfinished_checkpoint(run)
        newest = ckpt.latest_verified(run / "checkpoints")
        if target.startswith("step-") and step > 1:  # at most one interval (one step) lost
            assert newest is not None and int(newest.name.split("-")[1]) >= step - 1, (attempt, target, newest)
    run_cli(*args, "resume=true", run_dir=run)
    assert without_timing(read_metrics(run)) == without_timing(read_metrics(ref))


# --- 7. the table ---------------------------------------------------------------------------

def test_the_reliability_table_names_tests_that_exist():
    text = (REPO / "docs" / "reliability.md").read_text()
    named = set(__import__("re").findall(r"`(test_[a-z0-9_]+)`", text))
    here = {n for n in globals() if n.startswith("test_")}
    assert named and named <= here, named - here
