#!/usr/bin/env python3
"""Few-shot preference grid on the bundled movies (ml-100k ratings -> likes): AUC mean ± std over
seeds for each (model, training examples), plus each model's zero-shot score.

Every cell is what ``crossrec finetune task=preference backbone=B adapter=A task.train_samples=N
task.seeds=[...]`` computes (the same library calls, without Hydra), evaluated on one fixed
random subset of the test examples. Results are appended to a JSON-lines file as they finish, so
an interrupted grid resumes where it stopped.

Usage: python scripts/bench_preference.py [--models minilm-head minilm-lora smollm2-lora]
       [--sizes 16 64 256] [--seeds 0 1 2] [--eval 300] [--threads 1] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]

# model -> backbone, adapter (method, settings), task settings that differ from conf/task/preference.yaml
MODELS = {
    "minilm-head": {"backbone": "minilm", "adapter": ("frozen", {}), "max_history": 10,
                    "train": {"epochs": 3, "min_steps": 60, "batch_size": 8, "lr": 5e-4, "head_lr": 1e-3}},
    "minilm-lora": {"backbone": "minilm", "adapter": ("lora", {"r": 8, "alpha": 16, "dropout": 0.05}),
                    "max_history": 10,
                    "train": {"epochs": 3, "min_steps": 60, "batch_size": 8, "lr": 5e-4, "head_lr": 1e-3}},
    # SmolLM2 costs ~15 ms per token forward+backward on one shared CPU core: a shorter history
    # and one epoch (at least 8 steps) keep the 3-seed grid to about an hour
    "smollm2-lora": {"backbone": "smollm2", "adapter": ("lora", {"r": 8, "alpha": 16, "dropout": 0.05}),
                     "max_history": 5,
                     "train": {"epochs": 1, "min_steps": 8, "batch_size": 8, "lr": 5e-4, "head_lr": 1e-3}},
}


def cli_line(name: str, n: int | None, seeds: list[int], n_eval: int) -> str:
    m = MODELS[name]
    t = m["train"]
    parts = [f"crossrec finetune task=preference backbone={m['backbone']}"]
    parts.append(f"adapter={m['adapter'][0]}" if n else "task.zero_shot=true")
    if n:
        parts.append(f"task.train_samples={n} task.train.epochs={t['epochs']} task.train.min_steps={t['min_steps']}")
    seed_list = ",".join(map(str, seeds))
    parts.append(f"task.max_history={m['max_history']} task.eval_samples={n_eval} task.seeds=[{seed_list}]")
    return " ".join(parts)


def run_cell(name: str, n: int | None, seed: int, n_eval: int, cache: dict) -> dict:
    from crossrec_cli.data import DomainSpec, load_domain
    from crossrec_cli.models.backbone import build_backbone
    from crossrec_cli.tasks.examples import from_ratings, sample
    from crossrec_cli.tasks.preference import ScorerSpec, run_preference
    from crossrec_cli.tasks.train import TrainSettings

    m = MODELS[name]
    key = ("data", m["max_history"])
    if key not in cache:
        spec = DomainSpec.from_dict(yaml.safe_load((REPO / "conf/domain/movies.yaml").read_text()))
        cache[key] = from_ratings(load_domain(spec), max_history=m["max_history"])
    data = cache[key]
    b = yaml.safe_load((REPO / f"conf/backbone/{m['backbone']}.yaml").read_text())
    task = yaml.safe_load((REPO / "conf/task/preference.yaml").read_text())
    base = build_backbone(b["name"], b["path"], b["local"], b["config"], b["kind"], seed)
    spec = ScorerSpec(adapter=m["adapter"][0], adapter_hparams=m["adapter"][1], pooling=b["pooling"],
                      max_length=task["max_length"], history_template=task["history_template"],
                      instruction=task["prompt"]["instruction"], input_template=task["prompt"]["input"],
                      prompt_style=task["prompt"]["style"], answers=tuple(task["answers"]))
    test = sample(data.test, n_eval, 0)  # the same examples for every cell
    train = sample(data.train, n, seed) if n else []
    res = run_preference(base, spec, train, {"test": test}, TrainSettings(seed=seed, **m["train"]), zero_shot=not n)
    return {**res["metrics"]["test"], "model": name if n else f"{m['backbone']} zero-shot", "train_n": n or 0,
            "seed": seed, "seconds": res["seconds"], "trainable": res["trainable"], "scorer": res["scorer"]}


def table(rows: list[dict], models: list[str], sizes: list[int]) -> str:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="movies preference AUC (mean ± std over seeds) · test subset")
    t.add_column("model")
    for n in [0, *sizes]:
        t.add_column("zero-shot" if n == 0 else f"n={n}", justify="right")
    t.add_column("wall s", justify="right")
    for name in models:
        cells, wall = [], 0.0
        for n in [0, *sizes]:
            # zero-shot runs once per backbone and is shown on each of its models' rows
            who = f"{MODELS[name]['backbone']} zero-shot" if n == 0 else name
            aucs = [r["auc"] for r in rows if r["model"] == who and r["train_n"] == n]
            wall += sum(r["seconds"] for r in rows if r["model"] == name and r["train_n"] == n)
            if not aucs:
                cells.append("")
            elif len(aucs) == 1:
                cells.append(f"{aucs[0]:.4f}")
            else:
                cells.append(f"{np.mean(aucs):.4f} ± {np.std(aucs, ddof=1):.4f} ({len(aucs)})")
        t.add_row(name, *cells, f"{wall:.0f}")
    console = Console(width=160)
    with console.capture() as cap:
        console.print(t)
    return cap.get()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--sizes", nargs="*", type=int, default=[16, 64, 256])
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--eval", type=int, default=300, help="test examples (a fixed seed-0 sample)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on shared cores)")
    ap.add_argument("--out", default=str(REPO / "outputs" / "bench_preference.jsonl"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.is_file() else []
    cache: dict = {}
    for name in args.models:
        # zero-shot does not depend on the seed: one run
        for n, seeds in [(0, args.seeds[:1]), *[(n, args.seeds) for n in args.sizes]]:
            for seed in seeds:
                who = name if n else f"{MODELS[name]['backbone']} zero-shot"
                if any(r["model"] == who and r["train_n"] == n and r["seed"] == seed and r.get("eval") == args.eval
                       for r in rows):
                    continue
                start = time.perf_counter()
                row = run_cell(name, n, seed, args.eval, cache) | {"eval": args.eval}
                row["seconds"] = round(time.perf_counter() - start, 1)
                rows.append(row)
                with open(out, "a") as fh:  # one line per finished cell: resumable
                    fh.write(json.dumps(row) + "\n")
                print(f"{row['model']} n={n} seed={seed}: auc {row['auc']:.4f} ({row['seconds']:.0f}s)", flush=True)
    rows = [r for r in rows if r.get("eval") == args.eval]
    print(table(rows, args.models, args.sizes))
    for name in args.models:
        for n in [0, *args.sizes]:
            print(cli_line(name, n, args.seeds, args.eval))


if __name__ == "__main__":
    main()
