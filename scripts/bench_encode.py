"""Item-encoding throughput: bare transformers vs crossrec's encoding under each backbone.runtime.

    .venv/bin/python scripts/bench_encode.py [--domain movies] [--n 1024] [--threads 1] [--repeats 3]
    .venv/bin/python scripts/bench_encode.py --domain path/to/kitchen.yaml --data /your/copy/of/the/data
    .venv/bin/python scripts/bench_encode.py --recall outputs/finetune/<run> [--recall-domain music]

Every path encodes the same first N item texts of the domain (``--domain``: movies, music, or a
domain file; ``--data``: the folder its ``path`` names) with the provisioned all-MiniLM-L6-v2
folder, mean pooling, at most 64 tokens, batches of 128, on the CPU, in this one process:

  bare       AutoTokenizer + AutoModel on the same folder, batches in file order, no crossrec code
  torch      crossrec_cli.models.encode.encode_texts, backbone.runtime=torch (length-sorted batches)
  onnx       the same with backbone.runtime=onnx (onnxruntime, the traced float32 graph)
  onnx_int8  the same with backbone.runtime=onnx_int8 (int8 linear layers)

The paths take turns: each of ``--repeats`` rounds runs every path once, in a rotated order, so a
change in the machine's load falls on all of them; items/s is the best round, "x bare" the median
of the rounds' ratios. Agreement is with bare's vectors: cosine, and the share of each item's ten
nearest items (cosine) that the path's vectors also put in its ten.

``--recall RUN``: the trained run's test metrics with the item vectors of each runtime
(``crossrec evaluate run=RUN backbone.runtime=...``, in-process, run folders under --out).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNTIMES = ("torch", "onnx", "onnx_int8")


def item_texts(domain: str, n: int, data: str | None = None) -> list[str]:
    """The first n item texts of ``domain`` (a bundled domain's name or a domain file; repeated
    if n exceeds the catalogue); ``data`` replaces the domain file's ``path``."""
    import yaml

    from crossrec_cli.data import DomainSpec, load_domain

    file = Path(domain) if domain.endswith(".yaml") else REPO / "crossrec_cli" / "conf" / "domain" / f"{domain}.yaml"
    raw = yaml.safe_load(file.read_text())
    if data:
        raw["path"] = data
    texts = load_domain(DomainSpec.from_dict(raw, where=str(file))).item_text
    return [texts[i % len(texts)] for i in range(n)]


def bare_encoder(model_dir: str, batch_size: int, max_length: int):
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()

    @torch.inference_mode()
    def run(texts: list[str]):
        out = []
        for a in range(0, len(texts), batch_size):
            enc = tokenizer(texts[a : a + batch_size], padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append((hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0))
        return torch.cat(out)

    return run


def crossrec_encoder(model_dir: str, runtime: str, batch_size: int, max_length: int):
    from crossrec_cli.models.backbone import build_backbone
    from crossrec_cli.models.encode import encode_texts

    backbone = build_backbone("minilm", path=model_dir, runtime=runtime)
    return lambda texts: encode_texts(backbone, texts, max_length=max_length, pooling="mean", batch_size=batch_size)


def neighbour_overlap(ref, got, k: int = 10) -> float:
    """Mean share of each item's k nearest items (cosine, itself left out) under ``ref`` that ``got`` keeps."""
    import torch
    import torch.nn.functional as F

    def top(v):
        v = F.normalize(v.double(), dim=-1)
        sims = v @ v.T
        sims.fill_diagonal_(-2.0)
        return sims.topk(k, dim=1).indices

    a, b = top(ref), top(got)
    return float(torch.tensor([len(set(x.tolist()) & set(y.tolist())) / k for x, y in zip(a, b)]).mean())


def throughput(args: argparse.Namespace) -> None:
    import torch
    import torch.nn.functional as F
    import onnxruntime
    import transformers

    torch.set_num_threads(args.threads)
    texts = item_texts(args.domain, args.n, args.data)
    paths, load = {}, {}
    for name in ("bare", *RUNTIMES):
        t0 = time.perf_counter()
        paths[name] = (bare_encoder(args.model_dir, args.batch_size, args.max_length) if name == "bare"
                       else crossrec_encoder(args.model_dir, name, args.batch_size, args.max_length))
        paths[name](texts[: args.batch_size])  # warm-up: lazy init, the graph traced / quantised when not cached
        load[name] = time.perf_counter() - t0
    seconds = {name: [] for name in paths}
    vecs = {}
    names = list(paths)
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.perf_counter()
            vecs[name] = paths[name](texts).float()
            seconds[name].append(time.perf_counter() - t0)
    lengths = [len(t) for t in texts]
    print(f"all-MiniLM-L6-v2 at {args.model_dir}")
    print(f"{len(texts)} item texts of {args.domain} ({statistics.mean(lengths):.0f} characters on average), batch "
          f"{args.batch_size}, max {args.max_length} tokens, mean pooling, {args.repeats} interleaved rounds; "
          f"torch {torch.__version__} ({torch.get_num_threads()} thread{'s' * (torch.get_num_threads() > 1)}), "
          f"onnxruntime {onnxruntime.__version__} (as many threads), transformers {transformers.__version__}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    print()
    print(f"{'path':<10} {'items/s':>8} {'x bare':>7} {'x torch':>8} {'setup s':>8} {'min cos':>9} {'mean cos':>9} "
          f"{'10-NN kept':>11}")
    for name in paths:
        ratio = statistics.median(b / s for b, s in zip(seconds["bare"], seconds[name]))
        vs_torch = statistics.median(t / s for t, s in zip(seconds["torch"], seconds[name]))
        cos = F.cosine_similarity(vecs[name], vecs["bare"], dim=-1)
        print(f"{name:<10} {len(texts) / min(seconds[name]):>8.1f} {ratio:>6.2f}x {vs_torch:>7.2f}x {load[name]:>8.1f} "
              f"{cos.min():>9.6f} {cos.mean():>9.6f} {neighbour_overlap(vecs['bare'], vecs[name]):>11.4f}")


def recall(args: argparse.Namespace) -> None:
    from crossrec_cli.cli import run_command

    extra = [f"domain={args.recall_domain}"] if args.recall_domain else []
    rows = []
    for runtime in RUNTIMES:
        t0 = time.perf_counter()
        record = run_command("evaluate", [f"run={args.recall}", f"backbone.runtime={runtime}", f"num_threads={args.threads}",
                                          "device=cpu", "overwrite=true", *extra], Path(args.out) / runtime)
        rows.append((runtime, record, time.perf_counter() - t0))
    print()
    print(f"test metrics of {args.recall} with the item vectors of each runtime (crossrec evaluate run=... "
          f"backbone.runtime=...)")
    print(f"{'runtime':<10} {'domain':<10} {'users':>6} {'recall@10':>10} {'ndcg@10':>9} {'vs torch':>9} {'s':>6}")
    base = rows[0][1]["test"]
    for runtime, record, secs in rows:
        for domain, m in record["test"].items():
            diff = m["recall@10"] - base[domain]["recall@10"]
            users = m.get("examples", "")
            print(f"{runtime:<10} {domain:<10} {users!s:>6} {m['recall@10']:>10.4f} {m['ndcg@10']:>9.4f} {diff:>+9.4f} "
                  f"{secs:>6.0f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--domain", default="movies", help="movies, music or a domain file (default movies)")
    p.add_argument("--data", default=None, help="the data folder of a domain file (replaces its path)")
    p.add_argument("--n", type=int, default=1024, help="item texts to encode (default 1024)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=1, help="torch and onnxruntime intra-op threads (default 1)")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--model-dir", default=str(REPO / "models" / "all-MiniLM-L6-v2"))
    p.add_argument("--recall", default=None, help="a trained run: its test metrics under each runtime, not throughput")
    p.add_argument("--recall-domain", default=None, help="with --recall: the domain to evaluate (default the run's)")
    p.add_argument("--out", default=str(REPO / "outputs" / "bench_encode"), help="with --recall: where the runs go")
    args = p.parse_args()
    if not Path(args.model_dir, "config.json").is_file():
        sys.exit(f"error: {args.model_dir}: no provisioned model; run `make install` or pass --model-dir")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    (recall if args.recall else throughput)(args)


if __name__ == "__main__":
    main()
