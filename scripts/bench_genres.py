#!/usr/bin/env python3
"""Music genre classification on the bundled Last.fm artists (labels voted from tags, see
crossrec_cli/conf/domain/music.yaml): test accuracy and macro-F1, mean ± std over seeds, for each
classifier and training-set size, on one stratified split.

Every cell is one CLI command, printed before it runs, e.g.::

    crossrec finetune task=classification domain=music task.classifier=lm backbone=minilm \\
        adapter=lora task.train_samples=256 task.seeds=[0,1,2] hydra.run.dir=outputs/genres/lora-256

A finished cell (its metrics.json exists) is not run again, so the grid resumes after an
interruption. Each command runs with OMP_NUM_THREADS=1; ``--jobs 2`` runs two at once.

Usage: python scripts/bench_genres.py run [--models majority,tfidf_lr,...] [--sizes all,256,64]
                                          [--seeds 0,1,2] [--jobs 1]
       python scripts/bench_genres.py table [--out outputs/genres/table.md]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "outputs" / "genres"
CLI = [str(Path(sys.executable).parent / "crossrec")]

# model -> (label, overrides). Training the whole language model on every artist costs ~5 minutes
# an epoch on one CPU core: those cells train 3 epochs (the few-shot ones keep the task's 10).
MODELS = {
    "majority": ("majority class", ["task.classifier=majority", "backbone=none"]),
    "tfidf_lr": ("TF-IDF + logistic regression", ["task.classifier=tfidf_lr", "backbone=none"]),
    "zero_shot": ("zero-shot MiniLM (cosine to \"<genre> music\")", ["task.classifier=zero_shot", "backbone=minilm"]),
    "frozen": ("frozen MiniLM + head", ["backbone=minilm", "adapter=frozen"]),
    "lora": ("MiniLM + LoRA", ["backbone=minilm", "adapter=lora"]),
    "full": ("MiniLM, full fine-tuning", ["backbone=minilm", "adapter=full"]),
}
LONG = {"lora", "full"}


def cell(model: str, size: str, seeds: str) -> tuple[Path, list[str]]:
    args = ["finetune", "task=classification", "domain=music", *MODELS[model][1], f"task.seeds=[{seeds}]"]
    if size != "all":
        args.append(f"task.train_samples={size}")
    elif model in LONG:
        args.append("task.train.epochs=3")
    run = OUT / f"{model}-{size}"
    return run, [*args, f"hydra.run.dir={run}"]


def run_cell(model: str, size: str, seeds: str) -> None:
    run, args = cell(model, size, seeds)
    if (run / "metrics.json").is_file():
        print(f"done already: {run}", flush=True)
        return
    print("crossrec " + " ".join(args), flush=True)
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    again = ["overwrite=true"] if (run / "config.yaml").is_file() else []  # an interrupted cell starts again
    proc = subprocess.run([*CLI, *args, *again], cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode:
        print(f"FAILED ({proc.returncode}): {run}\n{proc.stderr[-2000:]}", flush=True)


def table(models: list[str], sizes: list[str]) -> str:
    def fmt(m: dict, key: str) -> str:
        return f"{m[key]:.4f}" + (f" ± {m[key + '_std']:.4f}" if key + "_std" in m else "")

    lines = ["| classifier | " + " | ".join(f"{s} examples: accuracy | macro-F1" for s in sizes) + " | s (all) |",
             "|---|" + "---|---|" * len(sizes) + "---|"]
    info = None
    for model in models:
        cells, secs = [], "–"
        for size in sizes:
            path = OUT / f"{model}-{size}" / "metrics.json"
            if not path.is_file():
                cells += ["–", "–"]
                continue
            rec = json.loads(path.read_text())
            m = rec["test"]["music"]
            cells += [fmt(m, "accuracy"), fmt(m, "macro_f1")]
            info = info or rec["dataset"]["music"]
            if size == "all":
                secs = f"{sum(r['seconds'] for r in rec['per_seed']) / len(rec['per_seed']):.0f}"
        lines.append(f"| {MODELS[model][0]} | " + " | ".join(cells) + f" | {secs} |")
    if info:
        lines.append("")
        lines.append(f"{len(info['labels'])} genres; items train / valid / test {info['items']}; "
                     f"data sha256 `{info['sha256'][:16]}`. Seconds: mean per seed, training and scoring.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["run", "table"])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--sizes", default="all,256,64")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    models, sizes = a.models.split(","), a.sizes.split(",")
    if a.action == "run":
        todo = [(m, s) for m in models for s in sizes]
        with ThreadPoolExecutor(a.jobs) as pool:
            list(pool.map(lambda ms: run_cell(*ms, a.seeds), todo))
    text = table(models, sizes)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
