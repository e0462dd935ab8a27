"""A non-editable install carries its configs: `pip install .` into a fresh venv, then run a
command from another folder (slow: builds a wheel; `pytest -m slow`)."""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import wheel_install


@pytest.mark.slow
def test_a_wheel_install_runs_from_another_folder(tmp_path):
    env_dir = wheel_install(tmp_path)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    proc = subprocess.run([str(env_dir / "bin" / "crossrec"), "finetune", "experiment=smoke", f"hydra.run.dir={run}"],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run / "metrics.json").is_file()
