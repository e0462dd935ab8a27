#!/usr/bin/env python3
"""Seconds per training epoch of two source trees, interleaved in one run (A/B).

    git worktree add /tmp/before <commit>
    python scripts/bench_ab.py --before /tmp/before [--rounds 3] [--epochs 3] [-- overrides...]

Each round trains `crossrec finetune` for a few epochs (early stopping off) once with the
package of `--before` and once with this tree's, alternating which goes first, each with
OMP_NUM_THREADS=1, and reads `seconds_per_epoch` from metrics.json. On a shared machine only the
ratio of the two, from the same run, means anything. Default workload: bundled movies, frozen
MiniLM (vectors cached) and the ID-only SASRec.
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
WORKLOADS = {"text": ["domain=movies"], "ids": ["domain=movies", "backbone=none", "model.item_ids=true"]}


def one(tree: Path, args: list[str], epochs: int, out: Path) -> float:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(tree))
    code = "import sys; from crossrec_cli.cli import main; sys.argv[0] = 'crossrec'; main()"
    subprocess.run([sys.executable, "-c", code, "finetune", *args, f"trainer.epochs={epochs}", "trainer.patience=1000",
                    "progress=false", f"hydra.run.dir={out}"], check=True, cwd=tree, env=env, stdout=subprocess.DEVNULL)
    return float(json.loads((out / "metrics.json").read_text())["seconds_per_epoch"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--workloads", default="text,ids")
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    trees = {"before": a.before.resolve(), "after": REPO}
    with tempfile.TemporaryDirectory() as tmp:
        for wl in a.workloads.split(","):
            secs: dict[str, list[float]] = {"before": [], "after": []}
            for r in range(a.rounds):
                for name in (("before", "after") if r % 2 == 0 else ("after", "before")):
                    secs[name].append(one(trees[name], WORKLOADS[wl] + a.overrides, a.epochs, Path(tmp) / f"{wl}-{name}-{r}"))
            b, f = statistics.median(secs["before"]), statistics.median(secs["after"])
            print(f"{wl}: s/epoch before {b:.2f} {[round(x, 2) for x in secs['before']]}  "
                  f"after {f:.2f} {[round(x, 2) for x in secs['after']]}  after/before {f / b:.3f}", flush=True)


if __name__ == "__main__":
    main()
