"""Validation-pass throughput: users/s of one full-ranking pass, before and after, same ranks.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_eval.py RUN [--users 50000] [--before REV]
        [--exclude-seen] [--threads N] [--reps 1]

RUN is a finished `crossrec finetune` run on the bundled music domain (e.g. a frozen-MiniLM run
with tag text); its best weights score every one of the 17,632 artists. The domain's validation
examples are repeated (histories and targets as they are) until there are ``--users`` of them,
the size of a public Amazon set that one validation pass had to rank.

Timed, interleaved in this one process:

  user tower   the run's user vectors of every example (what both paths share)
  before       ``full_ranks`` of revision ``--before`` (read with ``git show``): float64 scores
  float64      today's ``full_ranks(score_dtype="float64")``
  float32      today's default: float32 scores, float64 only for the near-ties

and the ranks of every path are compared with the first (they must be identical).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def old_ranking(rev: str):
    """``crossrec_cli/evaluation/ranking.py`` as it was at ``rev``, as a module."""
    src = subprocess.run(["git", "show", f"{rev}:crossrec_cli/evaluation/ranking.py"], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "ranking_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("ranking_before", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--users", type=int, default=50000)
    ap.add_argument("--before", default="6c53d3c", help="git revision whose full_ranks is 'before'")
    ap.add_argument("--exclude-seen", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--reps", type=int, default=1)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from crossrec_cli.cli import compose
    from crossrec_cli.commands.checkpoint_eval import load_run
    from crossrec_cli.data import make_split
    from crossrec_cli.data.split import EvalSet
    from crossrec_cli.evaluation import ranking
    from crossrec_cli.models.seqrec import seqrec_scorer

    cfg = compose("evaluate", [f"run={args.run}"], tempfile.mkdtemp())
    loaded = load_run(cfg)
    spec, domain = loaded.domains[0]
    split = make_split(domain, spec.order, spec.order_seed)
    base = split.valid
    reps = -(-args.users // len(base))
    idx = np.tile(np.arange(len(base)), reps)[: args.users]
    ev = EvalSet(base.users[idx], [base.histories[i] for i in idx], base.targets[idx])
    users_fn, items = seqrec_scorer(loaded.model, spec.name, int(loaded.cfg.eval.batch_size))
    print(f"run {args.run}: domain {spec.name}, {len(ev):,} examples ({len(base):,} valid examples x {reps}), "
          f"{items.shape[0]:,} items x {items.shape[1]} dims, torch threads {torch.get_num_threads()}, "
          f"exclude_seen {args.exclude_seen}")

    t0 = time.perf_counter()
    users = users_fn(ev)
    t_user = time.perf_counter() - t0
    print(f"user tower: {t_user:.1f} s ({len(ev) / t_user:,.0f} users/s)")
    exclude = ev.histories if args.exclude_seen else None
    before = old_ranking(args.before)
    paths = {
        f"before ({args.before})": lambda: before.full_ranks(users, items, ev.targets, exclude),
        "float64": lambda: ranking.full_ranks(users, items, ev.targets, exclude, score_dtype="float64"),
        "float32": lambda: ranking.full_ranks(users, items, ev.targets, exclude, score_dtype="float32"),
    }
    times: dict[str, list[float]] = {k: [] for k in paths}
    ranks: dict[str, np.ndarray] = {}
    for _ in range(args.reps):  # interleaved: the machine's load hits every path alike
        for name, fn in paths.items():
            t0 = time.perf_counter()
            ranks[name] = fn()
            times[name].append(time.perf_counter() - t0)
    first = next(iter(ranks.values()))
    print(f"{'ranking path':<22} {'s/pass':>8} {'users/s':>10} {'x before':>9}  ranks")
    t_before = min(next(iter(times.values())))
    for name, ts in times.items():
        t = min(ts)
        same = "identical" if np.array_equal(ranks[name], first) else f"{int((ranks[name] != first).sum())} differ"
        print(f"{name:<22} {t:>8.2f} {len(ev) / t:>10,.0f} {t_before / t:>9.2f}  {same}")
    ndcg = float(np.mean(np.where(first < 10, 1 / np.log2(first + 2), 0.0)))
    print(f"valid NDCG@10 over the repeated examples: {ndcg:.4f}")


if __name__ == "__main__":
    main()
