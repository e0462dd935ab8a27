"""Shared helpers: run the real CLI in a subprocess with outputs in a temp folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "crossrec")


def run_cli(*args: str, run_dir: Path | None = None, check: bool = True, env: dict | None = None,
            timeout: int = 600) -> subprocess.CompletedProcess:
    """``crossrec ARGS`` (with ``hydra.run.dir=run_dir``); fails the test with its output on error."""
    cmd = [CLI, *args] + ([f"hydra.run.dir={run_dir}"] if run_dir is not None else [])
    full_env = {**os.environ, "CROSSREC_CACHE": os.environ.get("CROSSREC_TEST_CACHE", str(REPO / ".cache" / "test")),
                **(env or {})}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=full_env, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def wheel_install(tmp_path: Path) -> Path:
    """``pip install .`` (not editable) into a fresh venv under ``tmp_path`` that reuses this
    environment's dependencies (torch, transformers, ...) instead of downloading them; its folder."""
    import site
    import venv

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    purelib = Path(subprocess.check_output([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                           text=True).strip())
    (purelib / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--no-deps", str(REPO)], check=True)
    where = subprocess.check_output([str(py), "-c", "import crossrec_cli; print(crossrec_cli.__file__)"],
                                    text=True, cwd=tmp_path).strip()
    assert Path(where).is_relative_to(env_dir)  # the installed copy, not the checkout
    return env_dir


def run_inprocess(command: str, *args: str, run_dir: Path) -> dict:
    """``crossrec COMMAND ARGS`` in this process: the same composed config (``cli.compose``) and
    the same recipe, without a new interpreter per run; returns the metrics record."""
    from crossrec_cli.cli import run_command

    os.environ.setdefault("CROSSREC_CACHE", os.environ.get("CROSSREC_TEST_CACHE", str(REPO / ".cache" / "test")))
    return run_command(command, list(args), run_dir)


# how a run was timed, not what it computed: left out when two runs' metrics.json are compared
TIMING = ("seconds_per_epoch", "wall_seconds", "train_seconds", "eval_seconds", "seconds", "num_threads",
          "peak_gpu_memory_mib")


def without_timing(m):
    """A metrics record (or part of one) without its TIMING keys, at every depth."""
    if isinstance(m, dict):
        return {k: without_timing(v) for k, v in m.items() if k not in TIMING}
    if isinstance(m, list):
        return [without_timing(v) for v in m]
    return m


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())
