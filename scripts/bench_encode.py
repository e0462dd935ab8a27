"""Item-encoding throughput: crossrec's text-baseline path vs a bare transformers forward pass.

    .venv/bin/python scripts/bench_encode.py [--n 1024] [--batch-size 128] [--threads N]

Both paths encode the same first N ml-100k item texts (as the `movies` domain renders them) with
the provisioned all-MiniLM-L6-v2 folder, mean pooling, at most 64 tokens, on the CPU:

  crossrec   crossrec_cli.models.encode.encode_texts (what `model=text_zeroshot` runs)
  bare       AutoTokenizer + AutoModel on the same folder, batches in file order, no crossrec code

Each path runs in its own child process so that its peak RSS (resource.getrusage) is its own.
The children also save their vectors, and the parent reports how closely they agree.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def item_texts(n: int) -> list[str]:
    """The first n item texts of the `movies` domain (repeated if n exceeds the catalogue)."""
    import yaml

    from crossrec_cli.data import DomainSpec, load_domain

    spec = DomainSpec.from_dict(
        yaml.safe_load((REPO / "crossrec_cli" / "conf" / "domain" / "movies.yaml").read_text()), where="movies"
    )
    texts = load_domain(spec).item_text
    return [texts[i % len(texts)] for i in range(n)]


def peak_rss_mib() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return kb / 1024 / (1024 if sys.platform == "darwin" else 1)


def encode_crossrec(model_dir: str, texts: list[str], batch_size: int, max_length: int):
    from crossrec_cli.models.backbone import build_backbone
    from crossrec_cli.models.encode import encode_texts

    backbone = build_backbone("minilm", path=model_dir)

    def run(batch: list[str]):
        return encode_texts(
            backbone, batch, max_length=max_length, pooling="mean", batch_size=batch_size
        )

    return run


def encode_bare(model_dir: str, texts: list[str], batch_size: int, max_length: int):
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()

    @torch.inference_mode()
    def run(batch_texts: list[str]):
        out = []
        for a in range(0, len(batch_texts), batch_size):
            enc = tokenizer(
                batch_texts[a : a + batch_size],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append((hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0))
        return torch.cat(out)

    return run


def child(args: argparse.Namespace) -> None:
    """Time one path; print one JSON line."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    texts = item_texts(args.n)
    build = encode_crossrec if args.only == "crossrec" else encode_bare
    t0 = time.perf_counter()
    run = build(args.model_dir, texts, args.batch_size, args.max_length)
    load_s = time.perf_counter() - t0
    run(texts[: args.batch_size])  # warm-up: first-call allocations, lazy init
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        vecs = run(texts)
        times.append(time.perf_counter() - t0)
    torch.save(vecs.float(), args.save)
    best = min(times)
    print(
        json.dumps(
            {
                "path": args.only,
                "items": len(texts),
                "best_s": best,
                "items_per_s": len(texts) / best,
                "median_s": sorted(times)[len(times) // 2],
                "load_s": load_s,
                "peak_rss_mib": peak_rss_mib(),
                "threads": torch.get_num_threads(),
                "interop_threads": torch.get_num_interop_threads(),
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1024, help="item texts to encode (default 1024)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument(
        "--threads", type=int, default=0, help="torch intra-op threads (default: torch's own)"
    )
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument(
        "--repeats", type=int, default=3, help="timed passes per path; the best is reported"
    )
    p.add_argument("--model-dir", default=str(REPO / "models" / "all-MiniLM-L6-v2"))
    p.add_argument("--only", choices=["crossrec", "bare"], help=argparse.SUPPRESS)
    p.add_argument("--save", help=argparse.SUPPRESS)
    args = p.parse_args()
    if not Path(args.model_dir, "config.json").is_file():
        sys.exit(
            f"error: {args.model_dir}: no provisioned model; run `make install` or pass --model-dir"
        )
    if args.only:
        return child(args)

    import torch
    import transformers

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in ("crossrec", "bare"):
            cmd = [
                sys.executable,
                __file__,
                "--only",
                path,
                "--save",
                f"{tmp}/{path}.pt",
                "--n",
                str(args.n),
                "--batch-size",
                str(args.batch_size),
                "--threads",
                str(args.threads),
                "--max-length",
                str(args.max_length),
                "--repeats",
                str(args.repeats),
                "--model-dir",
                args.model_dir,
            ]
            out = subprocess.run(
                cmd,
                check=False,
                capture_output=True,
                text=True,
                env=dict(os.environ, TOKENIZERS_PARALLELISM="false"),
            )
            if out.returncode != 0:
                sys.exit(f"error: {path} run failed:\n{out.stderr}")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        a, b = torch.load(f"{tmp}/crossrec.pt", weights_only=True), torch.load(f"{tmp}/bare.pt", weights_only=True)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)

    print(f"all-MiniLM-L6-v2 at {args.model_dir}")
    print(
        f"{args.n} ml-100k item texts, batch {args.batch_size}, max {args.max_length} tokens, mean pooling, "
        f"best of {args.repeats}; torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end"
    )
    print()
    print(
        f"{'path':<9} {'items/s':>9} {'best s':>8} {'median s':>9} {'load s':>7} {'peak RSS MiB':>13} {'threads':>8}"
    )
    for r in rows:
        print(
            f"{r['path']:<9} {r['items_per_s']:>9.1f} {r['best_s']:>8.3f} {r['median_s']:>9.3f} {r['load_s']:>7.2f} "
            f"{r['peak_rss_mib']:>13.0f} {r['threads']:>4}/{r['interop_threads']:<3}"
        )
    print()
    print(
        f"crossrec / bare throughput: {rows[0]['items_per_s'] / rows[1]['items_per_s']:.2f}x; "
        f"vectors agree: min cosine {cos.min():.6f}, max |diff| {(a - b).abs().max():.2e}"
    )


if __name__ == "__main__":
    main()
