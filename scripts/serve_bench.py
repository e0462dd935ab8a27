#!/usr/bin/env python3
"""Latency and throughput of `crossrec serve` over a real HTTP client (httpx), with the real MiniLM.

`run`: trains a short frozen-MiniLM run on the bundled movies (a few epochs: this measures serving,
not accuracy), exports it with music as a zero-shot domain and the int8 encoder (`crossrec export
domain=[movies,music] quantize=int8`), starts `crossrec serve` in its own process on a free port
and measures, for each domain, closed-loop clients at concurrency 1, 8 and 32: p50 / p95 / p99
latency and requests/s of POST /recommend with id-only histories (the newest 20 items of real
users) and with the same histories plus two new texts; then POST /items in batches of 64 (items/s).
The int8 encoder's recall@10 against float32 and both encoders' items/s come from the export's
checks. Everything lands in docs/deploy-records/serve_bench.json (with the machine, the threads
and the load average), then `table`.

`table`: renders that record into docs/deploy.md, between its serve_bench markers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "crossrec")
RECORD = REPO / "docs" / "deploy-records" / "serve_bench.json"
DOCS = REPO / "docs" / "deploy.md"
BEGIN, END = "<!-- serve_bench:begin (scripts/serve_bench.py table) -->", "<!-- serve_bench:end -->"
CONCURRENCY = (1, 8, 32)
KINDS = {"ids": "ids only", "texts": "ids + 2 new texts"}


def crossrec(*args: str, env: dict) -> None:
    proc = subprocess.run([CLI, *args], cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"crossrec {' '.join(args)} failed:\n{proc.stderr[-3000:]}")


def histories(domain: str, n: int, rng: random.Random) -> tuple[list[list[str]], list[str]]:
    """``n`` real users' newest 20 items (ids, oldest first) and the domain's item texts."""
    from crossrec_cli.cli import compose
    from crossrec_cli.commands._common import load_domains
    from crossrec_cli.commands.recommend import histories as whole

    (spec, dom), = load_domains(compose("recommend", [f"domain={domain}"], "/tmp"))
    ev = whole(dom, spec.order, spec.order_seed)
    rows = [[dom.item_ids[i] for i in h[-20:]] for h in ev.histories]
    return rng.sample(rows, min(n, len(rows))), list(dom.item_text)


async def load(url: str, bodies: list[dict], concurrency: int) -> dict:
    """Closed loop: ``concurrency`` clients send ``bodies`` one after another; latency in ms."""
    import httpx

    queue = list(reversed(bodies))
    times: list[float] = []
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=concurrency)) as client:
        async def worker() -> None:
            while queue:
                body = queue.pop()
                start = time.perf_counter()
                got = await client.post(url, json=body)
                times.append((time.perf_counter() - start) * 1000)
                if got.status_code != 200:
                    raise SystemExit(f"{url}: {got.status_code} {got.text}")

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    p50, p95, p99 = np.percentile(times, [50, 95, 99])
    return {"requests": len(times), "p50_ms": round(p50, 1), "p95_ms": round(p95, 1), "p99_ms": round(p99, 1),
            "req_per_s": round(len(times) / wall, 1)}


def start_server(run: Path, out: Path, env: dict) -> tuple[subprocess.Popen, str]:
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out.parent.mkdir(parents=True, exist_ok=True)
    log = open(out.parent / "serve.out", "w")  # the server's own output, for when it stops
    proc = subprocess.Popen([CLI, "serve", f"run={run}", f"port={port}", "num_threads=1", "limits.items=1000",
                             f"hydra.run.dir={out}"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            sys.exit(f"crossrec serve stopped: {Path(log.name).read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.terminate()
    sys.exit("crossrec serve did not answer in 5 minutes")


def run(args: argparse.Namespace) -> None:
    rng = random.Random(0)
    out = Path(args.out).resolve()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ft, ex = out / "finetune", out / "export"
    load_before = os.getloadavg()
    if not (ft / "checkpoint").is_dir():
        crossrec("finetune", "domain=movies", "backbone=minilm", "adapter=frozen", f"trainer.epochs={args.epochs}",
                 "progress=false", "num_threads=1", f"hydra.run.dir={ft}", env=env)
    if not (ex / "metrics.json").is_file():
        crossrec("export", f"run={ft}", "domain=[movies,music]", "quantize=int8", "num_threads=1", "overwrite=true",
                 f"hydra.run.dir={ex}", env=env)
    export = json.loads((ex / "metrics.json").read_text())
    proc, url = start_server(ex, out / "serve", env)
    record: dict = {"recommend": {}, "items": {}}
    try:
        for domain in ("movies", "music"):
            hist, texts = histories(domain, args.requests, rng)
            new = [{"text": f"{rng.choice(texts)} (new edition {n})"} for n in range(2 * len(hist))]
            bodies = {"ids": [{"domain": domain, "history": h, "k": 10} for h in hist],
                      "texts": [{"domain": domain, "history": h + new[2 * n:2 * n + 2], "k": 10}
                                for n, h in enumerate(hist)]}
            record["recommend"][domain] = {}
            for kind, reqs in bodies.items():
                asyncio.run(load(f"{url}/recommend", reqs[:8], 1))  # warm-up
                record["recommend"][domain][kind] = {str(c): asyncio.run(load(f"{url}/recommend", reqs, c))
                                                     for c in CONCURRENCY}
                print(domain, kind, record["recommend"][domain][kind], flush=True)
            batches = [{"domain": domain, "items": [{"item": f"bench-{b}-{i}", "text": f"{rng.choice(texts)} ({b}.{i})"}
                                                    for i in range(args.batch)]} for b in range(args.batches)]
            took = asyncio.run(load(f"{url}/items", batches, 1))
            record["items"][domain] = {"batch": args.batch, "batches": args.batches, "p50_ms": took["p50_ms"],
                                       "items_per_s": round(took["req_per_s"] * args.batch, 1)}
            print(domain, "items", record["items"][domain], flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    import onnxruntime
    import torch

    record.update({
        "int8": export["quantize"]["int8"], "parity": export["parity"],
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "server_threads": 1, "client": "httpx.AsyncClient, same machine",
                    "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        "setup": {"backbone": "minilm (all-MiniLM-L6-v2, frozen)", "trained_on": "movies", "epochs": args.epochs,
                  "requests_per_cell": args.requests, "history": "newest 20 items of a real user", "k": 10},
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
    })
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    RECORD.write_text(json.dumps(record, indent=1) + "\n")
    table(args)


def rendered(rec: dict) -> list[str]:
    lines = ["| domain | history | concurrency | p50 ms | p95 ms | p99 ms | requests/s |", "|---|---|---:|---:|---:|---:|---:|"]
    for domain, kinds in rec["recommend"].items():
        label = f"{domain} ({'zero-shot' if domain != rec['setup']['trained_on'] else 'trained'})"
        for kind, levels in kinds.items():
            for c, m in levels.items():
                lines.append(f"| {label} | {KINDS[kind]} | {c} | {m['p50_ms']} | {m['p95_ms']} | {m['p99_ms']} | "
                             f"{m['req_per_s']} |")
    lines += ["", "| domain | POST /items batch | p50 ms a batch | items/s |", "|---|---:|---:|---:|"]
    lines += [f"| {d} | {m['batch']} | {m['p50_ms']} | {m['items_per_s']} |" for d, m in rec["items"].items()]
    lines += ["", "| domain | int8 recall@10 vs float32 | float32 encoder items/s | int8 encoder items/s | speed-up |",
              "|---|---:|---:|---:|---:|"]
    lines += [f"| {d} | {m['recall@10_vs_float32']} | {m['items_per_s']['float32']} | {m['items_per_s']['int8']} | "
              f"{m['speedup']}x |" for d, m in rec["int8"].items()]
    mach = rec["machine"]
    lines += ["", f"{rec['date']}, {mach['cores']} CPU cores ({mach['cpu']}), server with {mach['server_threads']} "
              f"onnxruntime thread, client {mach['client']}; load average {mach['load_average_before'][0]} before, "
              f"{mach['load_average_after'][0]} after (the machine was shared); torch {rec['versions']['torch']}, "
              f"onnxruntime {rec['versions']['onnxruntime']}; {rec['setup']['requests_per_cell']} requests a cell, "
              f"histories: {rec['setup']['history']}, k={rec['setup']['k']}."]
    lines += ["", "| domain | test users | onnxruntime vs PyTorch, largest score difference | the same, items re-encoded "
              "from text (ONNX encoder) | largest score |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {d} | {m['users']} | {m['max_score_diff']:.1e} | {m.get('max_score_diff_encoded', float('nan')):.1e} | "
              f"{m['max_abs_score']:.1f} |" for d, m in rec["parity"].items()]
    return lines


def table(args: argparse.Namespace) -> None:
    rec = json.loads(RECORD.read_text())
    text = DOCS.read_text()
    if BEGIN not in text or END not in text:
        sys.exit(f"{DOCS} has no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    DOCS.write_text(head + BEGIN + "\n" + "\n".join(rendered(rec)) + "\n" + END + rest.split(END, 1)[1])
    print("\n".join(rendered(rec)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", default=str(REPO / "outputs" / "serve_bench"), help="run directories (kept, reused)")
    r.add_argument("--epochs", type=int, default=3)
    r.add_argument("--requests", type=int, default=200, help="requests per (domain, history, concurrency)")
    r.add_argument("--batch", type=int, default=64)
    r.add_argument("--batches", type=int, default=8)
    sub.add_parser("table")
    args = p.parse_args()
    run(args) if args.cmd == "run" else table(args)


if __name__ == "__main__":
    main()
