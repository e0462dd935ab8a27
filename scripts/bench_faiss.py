"""Top-k retrieval for large catalogues: exact search vs FAISS flat / IVF / HNSW.

    OMP_NUM_THREADS=1 .venv/bin/python -m scripts.bench_faiss [--sizes 10000 100000 1000000]
        [--queries 1000] [--k 100] [--noise 0.25] [--exact-queries 200] [--model-dir DIR]

Item vectors are real all-MiniLM-L6-v2 vectors (mean pooling, 64 tokens, L2-normalised: cosine
scoring) of the bundled `movies` and `music` item texts, encoded once and cached in
outputs/bench_faiss/item_vectors.npy. A catalogue of N items is the real vectors (shuffled), and
beyond their count, copies with Gaussian noise (``--noise``: the noise's norm relative to the unit
vector) re-normalised. Queries are user-like: the normalised mean of 10 items drawn from the 200
nearest neighbours of a random real item (a user with a coherent taste).

For each size and index the table shows build seconds, queries/s of ``index.search`` as
``crossrec recommend`` runs it (FAISS candidates, float64 rescoring; no seen items) and recall@K of
its top-K against the exact float64 top-K. Rows:

  exact      crossrec's exact path (``top_items``: float64 scores, a full sort per user), the
             default of ``crossrec recommend``; above 100k items on ``--exact-queries`` queries
  brute      float64 brute force with ``torch.topk``, item chunks of 65,536: the ground truth
  flat ivf hnsw  ``crossrec_cli.evaluation.index`` with its default settings (as ``eval.faiss``),
             ivf / hnsw then searched again with a larger ``--nprobe`` / ``--ef-search``

Run with ``OMP_NUM_THREADS=1`` for single-thread figures (FAISS and torch both read it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "outputs" / "bench_faiss" / "item_vectors.npy"


def item_texts() -> list[str]:
    """Every item text of the bundled `movies` and `music` domains, as the domains render them."""
    import yaml

    from crossrec_cli.data import DomainSpec, load_domain

    texts: list[str] = []
    for name in ("movies", "music"):
        raw = yaml.safe_load((REPO / "crossrec_cli" / "conf" / "domain" / f"{name}.yaml").read_text())
        texts += load_domain(DomainSpec.from_dict(raw, where=name)).item_text
    return texts


def item_vectors(model_dir: str) -> np.ndarray:
    """(n, 384) float32 unit vectors of the real item texts; encoded once, then read from CACHE."""
    if CACHE.is_file():
        return np.load(CACHE)
    from crossrec_cli.models.backbone import build_backbone
    from crossrec_cli.models.encode import encode_texts

    texts = item_texts()
    t0 = time.perf_counter()
    vecs = encode_texts(build_backbone("minilm", path=model_dir), texts, max_length=64, pooling="mean").numpy()
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    print(f"encoded {len(texts)} item texts in {time.perf_counter() - t0:.0f} s -> {CACHE}", file=sys.stderr)
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    np.save(CACHE, vecs.astype(np.float32))
    return np.load(CACHE)


def catalogue(base: np.ndarray, n: int, noise: float, seed: int = 0) -> np.ndarray:
    """(n, d) float32 unit vectors: the real vectors shuffled, then perturbed copies of them."""
    rng = np.random.default_rng(seed)
    real = base[rng.permutation(len(base))]
    if n <= len(real):
        return np.ascontiguousarray(real[:n])
    out = np.empty((n, base.shape[1]), dtype=np.float32)
    out[: len(real)] = real
    for a in range(len(real), n, 65536):
        b = min(n, a + 65536)
        x = real[np.arange(a, b) % len(real)] + rng.standard_normal((b - a, base.shape[1]), dtype=np.float32) * (
            noise / np.sqrt(base.shape[1]))
        out[a:b] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def user_queries(base: np.ndarray, n: int, seed: int = 1, pool: int = 200, history: int = 10) -> np.ndarray:
    """(n, d) float32: each the normalised mean of ``history`` of the ``pool`` nearest real items
    to a random real item."""
    rng = np.random.default_rng(seed)
    seeds = base[rng.choice(len(base), n, replace=False)]
    near = np.argpartition(-(seeds @ base.T), pool, axis=1)[:, :pool]
    pick = np.take_along_axis(near, np.stack([rng.choice(pool, history, replace=False) for _ in range(n)]), 1)
    q = base[pick].mean(1)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def brute_topk(users, items, k: int, chunk: int = 65536) -> np.ndarray:
    """(n, k) exact float64 top-k indices, best first: torch.topk per item chunk, then merged."""
    import torch

    u = users.to(torch.float64)
    best_v = torch.full((len(u), 0), -torch.inf, dtype=torch.float64)
    best_i = torch.zeros((len(u), 0), dtype=torch.long)
    for a in range(0, len(items), chunk):
        s = u @ items[a : a + chunk].to(torch.float64).T
        v, i = s.topk(min(k, s.shape[1]), dim=1)
        v, j = torch.cat([best_v, v], 1).topk(min(k, best_v.shape[1] + v.shape[1]), dim=1)
        best_i, best_v = torch.gather(torch.cat([best_i, i + a], 1), 1, j), v
    return best_i.numpy()


def recall(got: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(g[g >= 0], t)) / len(t) for g, t in zip(got, truth)]))


def timed(fn, queries, *args, **kwargs):
    """(fn(queries, ...), seconds), after a warm-up call on the first 8 queries."""
    fn(queries[:8], *args, **kwargs)
    t0 = time.perf_counter()
    out = fn(queries, *args, **kwargs)
    return out, time.perf_counter() - t0


def bench_size(items, users, k: int, exact_queries: int, search: dict[str, list[dict]]) -> list[dict]:
    """One row per index and search setting over ``items`` (N, d) float32 tensor for ``users``
    (n, d); ``search``: kind -> the search-time settings to try on one built index."""
    from crossrec_cli.evaluation.index import build_index

    rows = []
    truth, secs = timed(brute_topk, users, items, k)
    rows.append({"index": "brute", "settings": "float64, torch.topk", "build_s": 0.0, "queries": len(users),
                 "qps": len(users) / secs, "recall": 1.0})
    sub = users if len(items) <= 100_000 else users[:exact_queries]
    chunk = 512 if len(items) <= 100_000 else 100
    exact = build_index(items, "exact")
    (got, _), secs = timed(exact.search, sub, k, user_chunk=chunk)
    rows.append({"index": "exact", "settings": f"top_items, user_chunk {chunk}", "build_s": 0.0,
                 "queries": len(sub), "qps": len(sub) / secs, "recall": recall(got, truth[: len(sub)])})
    del exact
    for kind in ("flat", "ivf", "hnsw"):
        index = build_index(items, kind)
        for n, tune in enumerate(search.get(kind, [{}])):
            if tune:
                index.retune(**tune)
            (got, _), secs = timed(index.search, users, k)
            info = index.describe()
            settings = ", ".join(f"{key} {v}" for key, v in info.items() if key not in ("index", "kind", "items", "build_s"))
            rows.append({"index": kind, "settings": settings or "IndexFlatIP", "build_s": info["build_s"] if n == 0 else None,
                         "queries": len(users), "qps": len(users) / secs, "recall": recall(got, truth)})
        del index
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--queries", type=int, default=1000, help="user-like query vectors (default 1000)")
    p.add_argument("--k", type=int, default=100, help="recall@k against exact search (default 100)")
    p.add_argument("--noise", type=float, default=0.25,
                   help="norm of the Gaussian noise on a copied item vector, relative to 1 (default 0.25)")
    p.add_argument("--exact-queries", type=int, default=200,
                   help="queries of the `exact` row above 100k items (a full sort per user; default 200)")
    p.add_argument("--nprobe", type=int, nargs="+", default=[16, 64], help="ivf: nprobe values, one index (default 16 64)")
    p.add_argument("--ef-search", type=int, nargs="+", default=[128, 512],
                   help="hnsw: ef_search values, one index (default 128 512)")
    p.add_argument("--model-dir", default=str(REPO / "models" / "all-MiniLM-L6-v2"))
    args = p.parse_args()
    if not CACHE.is_file() and not Path(args.model_dir, "config.json").is_file():
        sys.exit(f"error: {args.model_dir}: no provisioned model; run `make install` or pass --model-dir")

    import faiss
    import torch

    base = item_vectors(args.model_dir)
    users = torch.from_numpy(user_queries(base, args.queries))
    print(f"{len(base)} real item vectors (all-MiniLM-L6-v2 of the bundled movies + music item texts, "
          f"unit length); copies beyond them carry Gaussian noise of norm {args.noise}")
    print(f"{args.queries} user-like queries (mean of 10 of the 200 nearest real items of a random item); "
          f"recall@{args.k} against float64 exact search; faiss {faiss.__version__}, torch {torch.__version__}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, faiss threads {faiss.omp_get_max_threads()}, "
          f"torch threads {torch.get_num_threads()}")
    print()
    head = f"{'items':>9}  {'index':<6} {'settings':<44} {'build s':>8} {'queries':>8} {'queries/s':>10} {'recall@' + str(args.k):>10}"
    print(head)
    print("-" * len(head))
    t_all = time.perf_counter()
    for n in args.sizes:
        items = torch.from_numpy(catalogue(base, n, args.noise))
        search = {"ivf": [{"nprobe": v} for v in args.nprobe], "hnsw": [{"ef_search": v} for v in args.ef_search]}
        for r in bench_size(items, users, args.k, args.exact_queries, search):
            build = "same" if r["build_s"] is None else f"{r['build_s']:.1f}"
            print(f"{n:>9}  {r['index']:<6} {r['settings']:<44} {build:>8} {r['queries']:>8} "
                  f"{r['qps']:>10.1f} {r['recall']:>10.4f}", flush=True)
        del items
    print()
    print(f"total {time.perf_counter() - t_all:.0f} s; load average {os.getloadavg()[0]:.1f} at the end. "
          f"`exact` ran on the first {args.exact_queries} queries above 100k items (a full sort of every score row); "
          "build `same`: the index above, searched with other settings.")


if __name__ == "__main__":
    main()
