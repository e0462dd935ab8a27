#!/usr/bin/env python3
"""The demo behind `make demo`: real MiniLM backbone, real bundled MovieLens-100K data.

Runs three commands through the real CLI (popularity baseline, text zero-shot baseline, the
trained recommender with a frozen MiniLM item tower), then ranks the same three again with
already-seen items removed (`eval.exclude_seen=true`, as papers on general recommenders report;
RecBole keeps them for sequential models, like crossrec's default; the trained model is not retrained, its run is re-evaluated with
`crossrec evaluate run=<run dir>`), and prints all test metrics side by side with a "seen items"
column (kept = crossrec's default, removed). Run directories land in outputs/demo/.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "crossrec")
STAMP = time.strftime("%Y-%m-%d_%H-%M-%S")
EXCLUDE = "eval.exclude_seen=true"
# (key, label, args); "{key}" in an argument is replaced by that earlier run's directory
RUNS = [
    ("pop", "popularity", ["evaluate", "model=popularity", "domain=movies"]),
    ("text", "text zero-shot (MiniLM)", ["evaluate", "model=text_zeroshot", "backbone=minilm", "domain=movies"]),
    ("seqrec", "seqrec, frozen MiniLM", ["finetune", "domain=movies", "backbone=minilm", "adapter=frozen", "progress=false"]),
    ("pop-x", "popularity", ["evaluate", "model=popularity", "domain=movies", EXCLUDE]),
    ("text-x", "text zero-shot (MiniLM)", ["evaluate", "model=text_zeroshot", "backbone=minilm", "domain=movies", EXCLUDE]),
    ("seqrec-x", "seqrec, frozen MiniLM", ["evaluate", "run={seqrec}", "domain=movies", EXCLUDE]),
]


def seen_items(out: Path) -> str:
    """From the run's resolved config: were already-seen items kept in the ranking or removed?"""
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    return "removed" if cfg["eval"]["exclude_seen"] else "kept"


def main() -> None:
    console = Console(width=None if sys.stdout.isatty() else 200)  # full table in logs and CI
    rows, dirs = [], {}
    for i, (key, label, args) in enumerate(RUNS):
        for k, d in dirs.items():
            args = [a.replace("{" + k + "}", str(d)) for a in args]
        out = REPO / "outputs" / "demo" / f"{STAMP}_{i}"
        console.rule(f"[bold]{label}[/]: crossrec {' '.join(args)}")
        t0 = time.perf_counter()
        subprocess.run([CLI, *args, f"hydra.run.dir={out}"], check=True, cwd=REPO)
        metrics = json.loads((out / "metrics.json").read_text())
        if "recency" in metrics:
            norm = f", {metrics['text_norm']}" if metrics.get("text_norm", "none") != "none" else ""
            label = label.replace(")", f", recency {metrics['recency']:g}{norm})")
        if args[0] == "evaluate" and any(a.startswith("run=") for a in args):
            label += " (re-evaluated)"  # the same trained weights, not a second training
        dirs[key] = out
        rows.append((label, metrics, seen_items(out), time.perf_counter() - t0, out))
    table = Table(title="crossrec demo · MovieLens-100K · leave-one-out · full ranking over 1,682 items (test)")
    for col in ("model", "mode", "seen items", "recall@10", "ndcg@10", "mrr@10", "recall@50", "ndcg@50", "seconds",
                "run directory"):
        table.add_column(col, justify="left" if col in ("model", "mode", "seen items", "run directory") else "right")
    for j, (label, m, seen, secs, out) in enumerate(rows):
        if j and seen != rows[j - 1][2]:
            table.add_section()
        t = m["test"]["movies"]
        table.add_row(label, m["mode"], seen,
                      *(f"{t[k]:.4f}" for k in ("recall@10", "ndcg@10", "mrr@10", "recall@50", "ndcg@50")),
                      f"{secs:.0f}", str(out.relative_to(REPO)))
    console.print(table)
    console.print("seen items: kept = crossrec's default (eval.exclude_seen=false), as RecBole ranks for sequential "
                  "models; removed = eval.exclude_seen=true (the test item itself is never removed)")
    fp = rows[0][1]["dataset"]["movies"]
    console.print(f"dataset movies: {fp['users']} users, {fp['items']} items, {fp['interactions']} interactions, "
                  f"sha256 {fp['sha256'][:16]}...")


if __name__ == "__main__":
    main()
