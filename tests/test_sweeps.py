"""Sweeps through Hydra's plugins: submitit's local launcher, joblib, and Optuna's TPE sweeper
optimising the valid metric each job returns; `crossrec report` over the result."""

from __future__ import annotations

import json

import yaml
from conftest import run_cli

SMALL = ("backbone=tiny", "+data.overrides.filters.max_users=40", "+data.overrides.filters.drop_unused_items=true",
         "trainer.epochs=1", "trainer.max_steps_per_epoch=4", "model.dim=32", "model.max_history=20",
         "eval.cache_vectors=false", "progress=false")


def test_submitit_local_and_joblib_launch_each_job(tmp_path):
    for launcher in ("submitit_local", "joblib"):
        sweep = tmp_path / launcher
        run_cli("finetune", "-m", f"hydra/launcher={launcher}", "experiment=smoke", "seed=0,1",
                f"hydra.sweep.dir={sweep}", run_dir=None)
        runs = sorted(p.parent.name for p in sweep.glob("*/metrics.json"))
        assert runs == ["0", "1"], launcher
        assert json.loads((sweep / "1" / "metrics.json").read_text())["seed"] == 1
    rep = run_cli("report", str(tmp_path / "submitit_local"), run_dir=None, env={"COLUMNS": "200"})
    assert "2 runs" in rep.stdout and "(defaults)" in rep.stdout


def test_optuna_best_value_is_the_best_valid_metric(tmp_path):
    sweep = tmp_path / "opt"
    run_cli("finetune", "-m", "experiment=sweep_lora", "hydra.sweeper.n_trials=3", *SMALL,
            f"hydra.sweep.dir={sweep}", run_dir=None)
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    valid = [json.loads(p.read_text())["valid"]["movies"]["ndcg@10"] for p in sweep.glob("*/metrics.json")]
    assert len(valid) == 3 and result["best_value"] == max(valid)
    assert set(result["best_params"]) == {"adapter.r", "trainer.lr", "trainer.backbone_lr", "model.dropout",
                                          "model.item_ids"}
