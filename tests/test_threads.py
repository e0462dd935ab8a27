"""num_threads: auto divides this machine's cores among the runs a launcher runs at once."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from hydra.types import RunMode

from crossrec_cli.cli import concurrent_jobs, run_command
from crossrec_cli.commands import _common
from crossrec_cli.commands._common import set_threads


def _hc(mode, launcher):
    return SimpleNamespace(mode=mode, launcher=launcher)


JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
LOCAL = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
SLURM = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
BASIC = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


@pytest.mark.parametrize("mode,launcher,cores,jobs", [
    (RunMode.RUN, {"_target_": JOBLIB, "n_jobs": 4}, 8, 1),  # a single run: the launcher is not used
    (RunMode.MULTIRUN, {"_target_": BASIC}, 8, 1),  # one job after another
    (RunMode.MULTIRUN, {"_target_": JOBLIB, "n_jobs": 4}, 8, 4),
    (RunMode.MULTIRUN, {"_target_": JOBLIB, "n_jobs": -1}, 8, 8),  # joblib: -1 = one job per core
    (RunMode.MULTIRUN, {"_target_": JOBLIB, "n_jobs": -2}, 8, 7),
    (RunMode.MULTIRUN, {"_target_": LOCAL, "cpus_per_task": None}, 8, 8),  # every job at once
    (RunMode.MULTIRUN, {"_target_": LOCAL, "cpus_per_task": 2}, 8, 4),
    (RunMode.MULTIRUN, {"_target_": SLURM, "cpus_per_task": 2}, 8, 1),  # its own CPUs on a node
])
def test_concurrent_jobs_of_each_launcher(monkeypatch, mode, launcher, cores, jobs):
    monkeypatch.setattr(_common, "cores", lambda: cores)
    assert concurrent_jobs(_hc(mode, launcher)) == jobs


def test_auto_threads_are_cores_over_jobs(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(_common, "cores", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        assert set_threads("auto", 1) == 8 and torch.get_num_threads() == 8
        assert set_threads("auto", 3) == 2 and torch.get_num_threads() == 2
        assert set_threads("auto", 16) == 1  # never 0
        assert set_threads(3, 16) == 3 and torch.get_num_threads() == 3  # a number is taken as it is
        monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the environment's choice stands for auto
        assert set_threads("auto", 1) == 3 and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_num_threads_reaches_the_run_and_its_metrics(tmp_path):
    before = torch.get_num_threads()
    try:
        run_command("evaluate", ["model=popularity", "num_threads=1"], tmp_path)
        assert json.loads((tmp_path / "metrics.json").read_text())["num_threads"] == 1
    finally:
        torch.set_num_threads(before)


def test_bad_num_threads_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_command("evaluate", ["model=popularity", "num_threads=0"], tmp_path)
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: num_threads:") and "auto or a positive integer" in err and "\n" not in err


def test_vector_math_is_warmed_before_the_recipe(monkeypatch, tmp_path):
    # MKL picks each vector-math kernel on its first call; a first call shared by several threads
    # can run a low-accuracy kernel once (numerics.py): every command warms them first
    calls = []
    monkeypatch.setattr(_common, "warm_vector_math", lambda: calls.append(torch.get_num_threads()))
    run_command("evaluate", ["model=popularity", "num_threads=1"], tmp_path)
    assert calls == [1]


def test_warm_up_covers_the_float_unary_ops():
    from crossrec_cli.numerics import VML_OPS, warm_vector_math
    assert {"sqrt", "exp", "log", "tanh", "erf", "rsqrt"} <= set(VML_OPS)  # Adam, softmax, GELU, norms
    assert warm_vector_math() == VML_OPS
    x = torch.full((3,), 0.5, dtype=torch.float64)
    assert all(getattr(torch, op)(x).shape == x.shape for op in VML_OPS)  # each an elementwise torch op
