"""A non-editable install carries its configs: `pip install .` into a fresh venv, then run a
command from another folder (slow: builds a wheel; `pytest -m slow`)."""

from __future__ import annotations

import os
import site
import subprocess
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_wheel_install_runs_from_another_folder(tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    # reuse this environment's dependencies (torch, transformers, ...) instead of downloading them
    purelib = Path(subprocess.check_output([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                           text=True).strip())
    (purelib / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--no-deps", str(REPO)], check=True)
    where = subprocess.check_output([str(py), "-c", "import crossrec_cli; print(crossrec_cli.__file__)"],
                                    text=True, cwd=tmp_path).strip()
    assert Path(where).is_relative_to(env_dir)  # the installed copy, not the checkout
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    proc = subprocess.run([str(env_dir / "bin" / "crossrec"), "finetune", "experiment=smoke", f"hydra.run.dir={run}"],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run / "metrics.json").is_file()
