"""Two runs side by side: every run taking all cores vs ``num_threads=auto``, seconds per epoch.

    .venv/bin/python scripts/bench_threads.py [--reps 2] [--epochs 2] [OVERRIDES ...]

Each variant is one joblib sweep of two jobs at once (``crossrec finetune -m
hydra/launcher=joblib hydra.launcher.n_jobs=2 seed=0,1``, default: ID-only SASRec on the bundled
music domain, 17,632 artists) with OMP_NUM_THREADS unset:

  all-cores   num_threads=<cores>: each job takes every core, as torch does by default
  auto        num_threads=auto: cores / 2 jobs each

The variants alternate ``--reps`` times; the script prints each job's seconds per epoch (from
its metrics.json) and the ratio of the means.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sweep(num_threads: str, epochs: int, overrides: list[str]) -> list[dict]:
    out = Path(tempfile.mkdtemp(prefix="bench_threads_"))
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    cmd = [sys.executable, "-m", "crossrec_cli", "finetune", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
           "seed=0,1", f"num_threads={num_threads}", f"trainer.epochs={epochs}", "progress=false",
           f"hydra.sweep.dir={out}", *overrides]
    subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True, text=True)
    return [json.loads(p.read_text()) for p in sorted(out.glob("*/metrics.json"))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("overrides", nargs="*", default=["domain=music", "backbone=none", "model.item_ids=true"])
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    variants = {"all-cores": str(cores), "auto": "auto"}
    seconds: dict[str, list[float]] = {k: [] for k in variants}
    threads: dict[str, set] = {k: set() for k in variants}
    for _ in range(args.reps):
        for name, value in variants.items():
            for rec in sweep(value, args.epochs, args.overrides):
                seconds[name].append(rec["seconds_per_epoch"])
                threads[name].add(rec["num_threads"])
    print(f"crossrec finetune -m hydra/launcher=joblib hydra.launcher.n_jobs=2 seed=0,1 {' '.join(args.overrides)} "
          f"trainer.epochs={args.epochs}; {cores} cores, {args.reps} alternating repetitions")
    print(f"{'variant':<10} {'threads/job':>11} {'s/epoch per job (each run)':<40} {'mean':>7}")
    for name, ts in seconds.items():
        print(f"{name:<10} {','.join(map(str, sorted(threads[name]))):>11} {' '.join(f'{t:.1f}' for t in ts):<40} "
              f"{statistics.mean(ts):>7.1f}")
    print(f"auto / all-cores mean s/epoch: {statistics.mean(seconds['auto']) / statistics.mean(seconds['all-cores']):.2f}")


if __name__ == "__main__":
    main()
