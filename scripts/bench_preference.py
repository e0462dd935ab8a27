#!/usr/bin/env python3
"""Few-shot preference grid on the bundled movies (ml-100k ratings -> likes): test AUC mean ± std
over seeds for each (model, training examples), next to the zero-shot scorer of its backbone.

Every cell is what ``crossrec finetune task=preference backbone=B adapter=A task.train_samples=N
task.seeds=[S] task.eval_samples=E`` computes: the config is crossrec_cli/conf/task/preference.yaml,
crossrec_cli/conf/backbone/B.yaml and conf/adapter/A.yaml, run through the recipe's own helpers
(crossrec_cli.commands.tasks) without Hydra. Valid and test AUC are both kept (tune on valid).
Finished cells are appended to a JSON-lines cache, keyed by the config they ran with, so an
interrupted grid resumes where it stopped and a changed config reruns.

Usage: python scripts/bench_preference.py [--models minilm-head minilm-lora] [--sizes 16 64 256]
       [--seeds 0 1 2] [--eval 300] [--threads 1] [--cache FILE] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]

# model -> backbone, adapter, task overrides (dotlist) on top of crossrec_cli/conf/task/preference.yaml
MODELS = {
    "minilm-head": {"backbone": "minilm", "adapter": "frozen", "task": []},
    "minilm-lora": {"backbone": "minilm", "adapter": "lora", "task": []},
    # SmolLM2 (make provision-smollm2) costs ~15 ms per token forward+backward on one shared CPU
    # core: a shorter history and one epoch (at least 8 steps) keep a 3-seed grid to about an hour
    "smollm2-lora": {"backbone": "smollm2", "adapter": "lora",
                     "task": ["task.max_history=5", "task.train.epochs=1", "task.train.min_steps=8"]},
}


def compose(name: str, n: int, n_eval: int):
    """The finetune config of one cell (task, backbone, adapter), as the CLI would compose it."""
    m = MODELS[name]
    load = lambda group, file: yaml.safe_load((REPO / "crossrec_cli" / "conf" / group / f"{file}.yaml").read_text())  # noqa: E731
    adapter = load("adapter", m["adapter"] if n else "frozen")  # zero-shot: one run per backbone
    cfg = OmegaConf.create({"task": load("task", "preference"), "backbone": load("backbone", m["backbone"]),
                            "adapter": adapter, "seed": 0, "device": "cpu"})
    dots = [*m["task"], f"task.eval_samples={n_eval}", f"task.zero_shot={str(n == 0).lower()}"]
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist(dots))


def cli_line(name: str, n: int, seeds: list[int], n_eval: int) -> str:
    m = MODELS[name]
    parts = [f"crossrec finetune task=preference backbone={m['backbone']}"]
    parts.append(f"adapter={m['adapter']} task.train_samples={n}" if n else "task.zero_shot=true")
    parts += [*m["task"], f"task.eval_samples={n_eval}", "task.seeds=[" + ",".join(map(str, seeds)) + "]"]
    return " ".join(parts)


def fingerprint(cfg) -> str:
    return hashlib.sha256(json.dumps(OmegaConf.to_container(cfg), sort_keys=True).encode()).hexdigest()[:12]


def run_cell(name: str, n: int, seed: int, cfg, cache: dict) -> dict:
    from crossrec_cli.commands._common import seed_everything
    from crossrec_cli.commands.tasks import backbone_for, eval_sets, examples_of, scorer_spec, train_settings
    from crossrec_cli.data import DomainSpec, load_domain
    from crossrec_cli.tasks.examples import sample
    from crossrec_cli.tasks.preference import run_preference

    key = ("data", cfg.task.max_history)
    if key not in cache:
        spec = DomainSpec.from_dict(yaml.safe_load((REPO / "crossrec_cli/conf/domain/movies.yaml").read_text()))
        cache[key] = examples_of(cfg, spec, load_domain(spec))
    data = cache[key]
    seed_everything(seed)
    base = backbone_for(cfg, seed)
    train = sample(data.train, n, seed) if n else []
    res = run_preference(base, scorer_spec(cfg, base.kind, "cpu"), train, eval_sets(cfg, data),
                         train_settings(cfg, seed), zero_shot=not n)
    m = res["metrics"]
    return {"model": name if n else f"{MODELS[name]['backbone']} zero-shot", "train_n": n, "seed": seed,
            "auc": m["test"]["auc"], "valid_auc": m["valid"]["auc"], "logloss": m["test"]["logloss"],
            "accuracy": m["test"]["accuracy"], "n_test": m["test"]["n"], "scorer": res["scorer"],
            "trainable": res["trainable"], "seconds": res["seconds"]}


def cells(rows: list[dict], name: str, n: int, metric: str) -> list[float]:
    who = f"{MODELS[name]['backbone']} zero-shot" if n == 0 else name
    return [r[metric] for r in rows if r["model"] == who and r["train_n"] == n]


def fmt(vals: list[float]) -> str:
    if not vals:
        return ""
    if len(vals) == 1:
        return f"{vals[0]:.4f}"
    return f"{np.mean(vals):.4f} ± {np.std(vals, ddof=1):.4f} ({len(vals)})"


def table(rows: list[dict], models: list[str], sizes: list[int], metric: str, title: str) -> str:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    t.add_column("model")
    for n in [0, *sizes]:
        t.add_column("zero-shot" if n == 0 else f"n={n}", justify="right")
    t.add_column("seconds", justify="right")  # trained cells, training + scoring
    for name in models:
        wall = sum(sum(cells(rows, name, n, "seconds")) for n in sizes)
        t.add_row(name, *[fmt(cells(rows, name, n, metric)) for n in [0, *sizes]], f"{wall:.0f}")
    console = Console(width=160)
    with console.capture() as cap:
        console.print(t)
    return cap.get()


def summary(rows: list[dict], models: list[str], sizes: list[int]) -> list[dict]:
    out = []
    for name in models:
        for n in [0, *sizes]:
            test, valid = cells(rows, name, n, "auc"), cells(rows, name, n, "valid_auc")
            if test:
                out.append({"model": name, "train_n": n, "runs": len(test), "auc": float(np.mean(test)),
                            "auc_std": float(np.std(test, ddof=1)) if len(test) > 1 else 0.0,
                            "valid_auc": float(np.mean(valid))})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["minilm-head", "minilm-lora"], choices=list(MODELS))
    ap.add_argument("--sizes", nargs="*", type=int, default=[16, 64, 256])
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--eval", type=int, default=300, help="valid / test examples (task.eval_samples: a fixed sample)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on shared cores)")
    ap.add_argument("--cache", default=str(REPO / "outputs" / "bench_preference.jsonl"),
                    help="JSON lines, one per finished cell; reused when the config matches")
    ap.add_argument("--out", default=None, help="write the rows and the per-(model, size) summary as JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cache_file = Path(args.cache)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    done = [json.loads(line) for line in cache_file.read_text().splitlines()] if cache_file.is_file() else []
    rows, data_cache = [], {}
    for name in args.models:
        # zero-shot does not depend on the seed: one run per backbone
        for n, seeds in [(0, args.seeds[:1]), *[(n, args.seeds) for n in args.sizes]]:
            for seed in seeds:
                cfg = compose(name, n, args.eval)
                fp = fingerprint(cfg)
                who = name if n else f"{MODELS[name]['backbone']} zero-shot"
                same = [r for r in rows + done if r["model"] == who and r["train_n"] == n and r["seed"] == seed
                        and r.get("config") == fp]
                if same:  # already in this table, or finished by an earlier run with the same config
                    rows += [] if any(r is same[0] for r in rows) else same[:1]
                    continue
                start = time.perf_counter()
                row = run_cell(name, n, seed, cfg, data_cache) | {"config": fp, "eval": args.eval}
                row["wall_s"] = round(time.perf_counter() - start, 1)
                rows.append(row)
                with open(cache_file, "a") as fh:  # one line per finished cell: resumable
                    fh.write(json.dumps(row) + "\n")
                print(f"{who} n={n} seed={seed}: test auc {row['auc']:.4f} valid auc {row['valid_auc']:.4f} "
                      f"({row['wall_s']:.0f}s)", flush=True)
    print(table(rows, args.models, args.sizes, "auc", f"movies preference: test AUC (mean ± std over seeds), "
                                                       f"{args.eval} fixed test examples"))
    print(table(rows, args.models, args.sizes, "valid_auc", "valid AUC (the split to tune on)"))
    for line in dict.fromkeys(cli_line(name, n, args.seeds, args.eval) for name in args.models
                              for n in [0, *args.sizes]):
        print(line)
    if args.out:
        Path(args.out).write_text(json.dumps({"eval": args.eval, "seeds": args.seeds, "rows": rows,
                                              "summary": summary(rows, args.models, args.sizes)}, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
