#!/usr/bin/env python3
"""The demo behind `make demo`: real MiniLM backbone, real bundled MovieLens-100K data.

Runs three commands through the real CLI (popularity baseline, text zero-shot baseline, the
trained recommender with a frozen MiniLM item tower), then prints their test metrics side by
side. Run directories land in outputs/demo/.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "crossrec")
STAMP = time.strftime("%Y-%m-%d_%H-%M-%S")
RUNS = [
    ("popularity", ["evaluate", "model=popularity", "domain=movies"]),
    ("text zero-shot (MiniLM)", ["evaluate", "model=text_zeroshot", "backbone=minilm", "domain=movies"]),
    ("seqrec, frozen MiniLM", ["finetune", "domain=movies", "backbone=minilm", "adapter=frozen", "progress=false"]),
]


def main() -> None:
    console = Console(width=None if sys.stdout.isatty() else 160)  # full table in logs and CI
    rows = []
    for i, (label, args) in enumerate(RUNS):
        out = REPO / "outputs" / "demo" / f"{STAMP}_{i}"
        console.rule(f"[bold]{label}[/]: crossrec {' '.join(args)}")
        t0 = time.perf_counter()
        subprocess.run([CLI, *args, f"hydra.run.dir={out}"], check=True, cwd=REPO)
        metrics = json.loads((out / "metrics.json").read_text())
        rows.append((label, metrics, time.perf_counter() - t0, out))
    table = Table(title="crossrec demo · MovieLens-100K · leave-one-out · full ranking over 1,682 items (test)")
    for col in ("model", "mode", "recall@10", "ndcg@10", "mrr@10", "recall@50", "ndcg@50", "seconds", "run directory"):
        table.add_column(col, justify="left" if col in ("model", "mode", "run directory") else "right")
    for label, m, secs, out in rows:
        t = m["test"]["movies"]
        table.add_row(label, m["mode"], *(f"{t[k]:.4f}" for k in ("recall@10", "ndcg@10", "mrr@10", "recall@50", "ndcg@50")),
                      f"{secs:.0f}", str(out.relative_to(REPO)))
    console.print(table)
    fp = rows[0][1]["dataset"]["movies"]
    console.print(f"dataset movies: {fp['users']} users, {fp['items']} items, {fp['interactions']} interactions, "
                  f"sha256 {fp['sha256'][:16]}...")


if __name__ == "__main__":
    main()
