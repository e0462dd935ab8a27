"""Where a `crossrec finetune` training step spends its time, and the full-softmax loss before/after.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/profile_train.py [--steps 10] [--reps 2] [OVERRIDES ...]

Builds the model of ``crossrec finetune domain=music OVERRIDES`` (bundled Last.fm, 17,632 artists;
default: frozen MiniLM on the artists' tag text) and runs its real training steps (collate, item
vectors, user tower, loss, backward, clip, AdamW) on the epoch-0 batches, twice per repetition,
interleaved so the machine's load hits both alike:

  plain   F.cross_entropy(model.logits(users, items), targets): the (T, N) logits in memory
  full    today's ``trainer.loss=full`` (training/losses.linear_cross_entropy)

(``--losses plain,full``, the default; ``--losses full,sampled_logq`` times the sampled softmax
against the full one, e.g. on a large catalogue.)

It prints seconds per step and per epoch (the epoch's steps x s/step) of each, their ratio, the
largest gradient difference of one step, and a torch.profiler table of the fused step's top ops.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10, help="timed steps per path and repetition")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--losses", default="plain,full",
                    help="the two step paths to time: plain (cross-entropy of the logits) or a trainer.loss name")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()

    from crossrec_cli.cli import compose
    from crossrec_cli.commands._common import load_domains, seed_everything
    from crossrec_cli.commands.recsys import build_model, train_config
    from crossrec_cli.data import make_split
    from crossrec_cli.training import losses
    from crossrec_cli.training.batches import collate, windows
    from crossrec_cli.training.loop import batch_loss, make_optimizer, plan

    given = [o.split("=", 1)[0] for o in args.overrides]
    cfg = compose("finetune", (["domain=music"] if "domain" not in given else []) + args.overrides, tempfile.mkdtemp())
    seed_everything(int(cfg.seed))
    domains = load_domains(cfg)
    splits = {s.name: make_split(d, s.order, s.order_seed) for s, d in domains}
    tc = train_config(cfg, splits)
    model = build_model(cfg, [(s.name, d) for s, d in domains], tc, splits)
    opt = make_optimizer(model, tc)
    params = [p for g in opt.param_groups for p in g["params"]]
    wins = {k: windows(s, model.cfg.max_history, tc.window_stride) for k, s in splits.items()}
    batches = plan(wins, tc, 0)

    class Plain(losses.NextItemLoss):
        def __call__(self, model, users, items, targets, n_items, negatives, log_q=None):
            return F.cross_entropy(model.logits(users, items[:n_items]), targets)

    losses.LOSSES.add("plain", Plain())  # the path under test goes through the real batch_loss
    configs = {name: dataclasses.replace(tc, loss=name) for name in args.losses.split(",")}
    first, second = configs

    def step(batch, name: str) -> None:
        key, idx = batch
        inp, tgt = collate([wins[key][i] for i in idx], model.cfg.max_history)
        value = batch_loss(model, key, inp, tgt, configs[name])
        opt.zero_grad(set_to_none=True)
        value.backward()
        torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
        opt.step()

    n_targets = sum(int((collate([wins[k][i] for i in idx], model.cfg.max_history)[1] >= 0).sum())
                    for k, idx in batches) / len(batches)
    print(f"crossrec finetune {' '.join(args.overrides)}: {model.n_items(next(iter(wins))):,} items, "
          f"{len(batches)} steps/epoch of {tc.batch_size} windows (~{n_targets:,.0f} targets/step), "
          f"torch threads {torch.get_num_threads()}")

    # one step's gradients, both ways, from the same weights
    key, idx = batches[0]
    inp, tgt = collate([wins[key][i] for i in idx], model.cfg.max_history)
    grads = []
    for name in configs:
        torch.manual_seed(0)  # the same dropout masks
        opt.zero_grad(set_to_none=True)
        batch_loss(model, key, inp, tgt, configs[name]).backward()
        grads.append([p.grad.clone() for p in params if p.grad is not None])
    diff = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)) for a, b in zip(*grads))
    print(f"one step's gradients, {first} vs {second}: largest difference {diff:.1e} of the tensor's largest entry"
          " (a sampled loss draws other candidates: a different gradient by design)")

    for b in batches[:2]:  # warm-up
        step(b, second)
    times = {name: [] for name in configs}
    todo = (batches * (1 + 2 * args.steps * args.reps // len(batches)))[2:]
    for r in range(args.reps):
        for name in configs:
            chunk, todo = todo[: args.steps], todo[args.steps :]
            t0 = time.perf_counter()
            for b in chunk:
                step(b, name)
            times[name].append((time.perf_counter() - t0) / len(chunk))
    print(f"{'loss':<8} {'s/step':>8} {'s/epoch':>8}")
    for name, ts in times.items():
        print(f"{name:<8} {min(ts):>8.3f} {min(ts) * len(batches):>8.1f}")
    print(f"{second} / {first} step time: {min(times[second]) / min(times[first]):.2f}")

    if not args.no_profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for b in todo[:5]:
                step(b, second)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
