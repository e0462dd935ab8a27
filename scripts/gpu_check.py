"""What scripts/gpu_check.sh prints after the gpu tests: one table of GPU figures.

    .venv/bin/python scripts/gpu_check.py [--encode 16384] [--users 50000] [--skip-lora]

Rows (each on cuda:0, peak memory = torch.cuda.max_memory_allocated during the row):
  encode      crossrec's encode_texts with the real all-MiniLM-L6-v2 over the bundled movies +
              music item texts (repeated to --encode), fp32 and under bf16 autocast: items/s
  smoke       `crossrec finetune experiment=smoke device=cuda trainer.precision=P`: s/epoch
  frozen      `crossrec finetune domain=music device=cuda trainer.epochs=1` (frozen MiniLM, tag
              text, full softmax over 17,632 artists): s/epoch, per precision
  lora        `crossrec finetune domain=movies adapter=lora device=cuda trainer.epochs=1`: s/epoch
  ranking     full_ranks of --users users x 17,632 items, float32 on the GPU vs float64 on the
              CPU: users/s, and whether the ranks are identical
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def peak_mib() -> float:
    return torch.cuda.max_memory_allocated() / 2**20


def reset() -> None:
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


def texts(n: int) -> list[str]:
    from crossrec_cli.cli import compose
    from crossrec_cli.commands._common import load_domains

    out: list[str] = []
    for name in ("movies", "music"):
        cfg = compose("evaluate", [f"domain={name}"], tempfile.mkdtemp())
        out += load_domains(cfg)[0][1].item_text
    return [out[i % len(out)] for i in range(n)]


def encode_rows(n: int) -> list[tuple]:
    from crossrec_cli.models.backbone import build_backbone
    from crossrec_cli.models.encode import encode_texts

    bb = build_backbone("minilm", "sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2")
    bb.model.to("cuda")
    items = texts(n)
    encode_texts(bb, items[:256])  # warm-up
    rows = []
    for precision, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        reset()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            encode_texts(bb, items, batch_size=256)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        rows.append(("encode", precision, f"{n:,} texts", f"{n / dt:,.0f} items/s", f"{peak_mib():,.0f}"))
    return rows


def finetune_row(label: str, overrides: list[str], precision: str) -> tuple:
    from crossrec_cli.cli import run_command

    reset()
    rec = run_command("finetune", [*overrides, "device=cuda", f"trainer.precision={precision}", "progress=false"],
                      tempfile.mkdtemp())
    test = next(iter(rec["test"].values()))
    return (label, precision, " ".join(overrides), f"{rec['seconds_per_epoch']:.1f} s/epoch",
            f"{peak_mib():,.0f}", f"test ndcg@10 {test['ndcg@10']:.4f}")


def ranking_row(n_users: int) -> tuple:
    from crossrec_cli.evaluation.ranking import full_ranks

    g = torch.Generator().manual_seed(0)
    items = torch.randn(17632, 64, generator=g)
    users = torch.randn(n_users, 64, generator=g)
    targets = np.random.default_rng(0).integers(0, 17632, n_users)
    t0 = time.perf_counter()
    cpu = full_ranks(users, items, targets, score_dtype="float64")
    t_cpu = time.perf_counter() - t0
    full_ranks(users[:512], items, targets[:512], device="cuda")  # warm-up
    reset()
    t0 = time.perf_counter()
    gpu = full_ranks(users, items, targets, score_dtype="float32", device="cuda")
    t_gpu = time.perf_counter() - t0
    same = "identical ranks" if np.array_equal(cpu, gpu) else f"{int((cpu != gpu).sum())} ranks differ"
    return ("ranking", "fp32", f"{n_users:,} users x 17,632 items",
            f"{n_users / t_gpu:,.0f} users/s (CPU float64 {n_users / t_cpu:,.0f})", f"{peak_mib():,.0f}", same)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encode", type=int, default=16384)
    ap.add_argument("--users", type=int, default=50000)
    ap.add_argument("--skip-lora", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("error: no CUDA device visible to torch")
    rows = encode_rows(args.encode)
    for p in ("fp32", "bf16", "fp16"):
        rows.append(finetune_row("smoke", ["experiment=smoke"], p))
    for p in ("fp32", "bf16"):
        rows.append(finetune_row("frozen", ["domain=music", "trainer.epochs=1"], p))
    if not args.skip_lora:
        for p in ("fp32", "bf16"):
            rows.append(finetune_row("lora", ["domain=movies", "adapter=lora", "trainer.epochs=1"], p))
    rows.append(ranking_row(args.users))
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"crossrec GPU check · {torch.cuda.get_device_name(0)} · torch {torch.__version__}")
    for col in ("row", "precision", "what", "speed", "peak GPU MiB", "result"):
        table.add_column(col)
    for r in rows:
        table.add_row(*[str(x) for x in r], *([""] * (6 - len(r))))
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
