"""``fit``: one explicit training loop with early stopping, checkpoints and exact resume."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from crossrec_cli.io import read_safetensors

from crossrec_cli.adapters import adapter_loss, adapter_step_hook
from crossrec_cli.data.split import Split
from crossrec_cli.errors import CrossrecError
from crossrec_cli.models.seqrec import SeqRec
from crossrec_cli.training import checkpoint as ckpt
from crossrec_cli.training.batches import collate, epoch_order, windows
from crossrec_cli.training.preempt import EXIT_PREEMPTED, StopFlag
from crossrec_cli.training.state import flatten, rng_state, set_rng_state, unflatten

log = logging.getLogger("crossrec")


@dataclass
class TrainConfig:
    epochs: int = 200
    batch_size: int = 64
    lr: float = 1e-3
    backbone_lr: float = 5e-5
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    patience: int = 10
    monitor: str = "ndcg@10"
    loss: str = "full"  # full softmax over the domain's items | sampled (in-batch + n_negatives)
    n_negatives: int = 256
    max_steps_per_epoch: int | None = None
    checkpoint_every: int = 0  # also checkpoint every N steps (0: at epoch ends only)
    keep_last: int = 2
    window_stride: int | None = None  # targets per training window (None: max_history, no overlap)
    seed: int = 0


@dataclass
class Progress:
    """Counters and early-stopping state: everything besides tensors that resume needs."""

    epoch: int = 0
    batch: int = 0  # next batch within the epoch
    step: int = 0
    best: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    epoch_loss: float = 0.0
    epoch_batches: int = 0
    epoch_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False


def trainable_state(model: SeqRec) -> dict[str, torch.Tensor]:
    """Every tensor outside the backbone, plus the backbone's trainable parameters (its frozen
    weights and buffers are rebuilt from the backbone config)."""
    trains = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
            if not k.startswith("backbone_model.") or k in trains}


def load_trainable_state(model: SeqRec, state: dict[str, torch.Tensor], source: str) -> None:
    missing = [k for k in trainable_state(model) if k not in state]
    unexpected = [k for k in state if k not in model.state_dict()]
    if missing or unexpected:
        raise CrossrecError(source, f"weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})",
                            "the run's config (model, adapter, backbone, domains) must match")
    model.load_state_dict(state, strict=False)


def make_optimizer(model: SeqRec, tc: TrainConfig) -> torch.optim.Optimizer:
    bb = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone_model.")]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("backbone_model.")]
    groups = [{"params": rest, "lr": tc.lr}]
    if bb:
        groups.append({"params": bb, "lr": tc.backbone_lr})
    return torch.optim.AdamW(groups, lr=tc.lr, weight_decay=tc.weight_decay)


def plan(wins: dict[str, list], tc: TrainConfig, epoch: int) -> list[tuple[str, np.ndarray]]:
    """The epoch's batches: (domain, window indices), domains interleaved, a pure function of
    (seed, epoch)."""
    batches = []
    for d, key in enumerate(sorted(wins)):
        order = epoch_order(len(wins[key]), tc.seed * 1000 + d, epoch)
        batches += [(key, order[a : a + tc.batch_size]) for a in range(0, len(order), tc.batch_size)]
    mix = np.random.default_rng([tc.seed, epoch, 7]).permutation(len(batches))
    batches = [batches[i] for i in mix]
    return batches[: tc.max_steps_per_epoch] if tc.max_steps_per_epoch else batches


def batch_loss(model: SeqRec, key: str, inp: torch.Tensor, tgt: torch.Tensor, tc: TrainConfig) -> torch.Tensor:
    """Softmax cross-entropy of each target given the history before it (-sum log P(z|x))."""
    dev = model.user.pos.weight.device
    inp, tgt = inp.to(dev), tgt.to(dev)
    n_items = model.n_targets(key)
    mask = (tgt >= 0) & (tgt < n_items)  # merged histories: source items are context only
    targets = tgt[mask]
    negatives = None
    if tc.loss == "sampled":
        negatives = torch.randint(n_items, (tc.n_negatives,), device=dev)
    fresh = None
    if model.backbone_trains:  # encode only the unique items this batch touches
        parts = [inp[inp >= 0], targets] + ([negatives] if negatives is not None else [])
        fresh = torch.unique(torch.cat(parts))
    items = model.item_matrix(key, fresh)
    users = model.user_states(items, inp)[mask]
    if tc.loss == "full":
        return F.cross_entropy(model.logits(users, items[:n_items]), targets)
    cand = torch.unique(torch.cat([targets, negatives]))
    return F.cross_entropy(model.logits(users, items[cand]), torch.searchsorted(cand, targets))


Evaluate = Callable[[SeqRec], dict[str, dict[str, float]]]


def fit(
    model: SeqRec,
    splits: dict[str, Split],
    tc: TrainConfig,
    evaluate: Evaluate,
    run_dir: Path,
    log_metrics: Callable[[dict[str, float], int], None] | None = None,
    resume: bool = False,
    show_progress: bool = True,
    extra_loss: Callable[[SeqRec, str], torch.Tensor] | None = None,
) -> Progress:
    """Train with early stopping on the mean valid ``tc.monitor`` over domains.

    Writes ``run_dir/checkpoints/step-N`` (atomic, verified; the newest ``keep_last`` kept) and
    the best weights to ``run_dir/checkpoint/model.safetensors``. ``resume`` continues from the
    newest verified checkpoint with identical data order, RNG and counters. ``extra_loss(model,
    domain)`` is added to every step's loss (e.g. domain-adversarial alignment); its parameters
    must belong to ``model`` so they are optimised and checkpointed with it.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn

    max_h = model.cfg.max_history
    wins = {k: windows(s, max_h, tc.window_stride) for k, s in splits.items()}
    if not any(wins.values()):
        raise CrossrecError("domain", "no training sequence has two or more items", "check the data and filters")
    opt = make_optimizer(model, tc)
    prog = Progress()
    root = run_dir / "checkpoints"
    if resume:
        prog = restore(model, opt, root)
    stop = StopFlag()
    bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
              TextColumn("{task.fields[info]}"), disable=not show_progress, transient=False)
    with stop, bar:
        ep_task = bar.add_task("epochs", total=tc.epochs, completed=prog.epoch, info="")
        while prog.epoch < tc.epochs and not prog.done:
            batches = plan(wins, tc, prog.epoch)
            if prog.batch == 0 and model.backbone_trains:
                for key in splits:
                    model.refresh(key)  # stale vectors for items outside the batch
            b_task = bar.add_task(f"epoch {prog.epoch + 1}", total=len(batches), completed=prog.batch, info="")
            model.train()
            while prog.batch < len(batches):
                t0 = time.perf_counter()
                key, idx = batches[prog.batch]
                inp, tgt = collate([wins[key][i] for i in idx], max_h)
                loss = batch_loss(model, key, inp, tgt, tc)
                if extra_loss is not None:
                    loss = loss + extra_loss(model, key)
                if model.backbone_trains:
                    loss = loss + adapter_loss(model.backbone_model)  # AdaLoRA's orthogonality penalty
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if tc.grad_clip:
                    torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], tc.grad_clip)
                opt.step()
                if model.backbone_trains:
                    adapter_step_hook(model.backbone_model, prog.step)  # AdaLoRA rank budget
                prog.batch += 1
                prog.step += 1
                prog.epoch_loss += float(loss.detach())
                prog.epoch_batches += 1
                prog.epoch_seconds += time.perf_counter() - t0
                bar.update(b_task, advance=1, info=f"loss {prog.epoch_loss / prog.epoch_batches:.4f}")
                if log_metrics:
                    log_metrics({"train/loss": float(loss.detach())}, prog.step)
                if stop.stop or (tc.checkpoint_every and prog.step % tc.checkpoint_every == 0):
                    save(model, opt, prog, root, tc)
                if stop.stop:
                    log.warning("signal %s: checkpoint written at step %d; resume with resume=%s", stop.signal, prog.step, run_dir)
                    raise SystemExit(EXIT_PREEMPTED)
            bar.remove_task(b_task)
            end_epoch(model, prog, tc, evaluate, run_dir, log_metrics)
            bar.update(ep_task, completed=prog.epoch, info=f"best {tc.monitor} {prog.best:.4f}")
            save(model, opt, prog, root, tc)
    return prog


def end_epoch(model: SeqRec, prog: Progress, tc: TrainConfig, evaluate: Evaluate, run_dir: Path,
              log_metrics: Callable | None) -> None:
    t0 = time.perf_counter()
    valid = evaluate(model)
    eval_seconds = time.perf_counter() - t0
    score = float(np.mean([m[tc.monitor] for m in valid.values()]))
    rec = {"epoch": prog.epoch + 1, "loss": prog.epoch_loss / max(1, prog.epoch_batches),
           f"valid_{tc.monitor}": score, "train_seconds": prog.epoch_seconds, "eval_seconds": eval_seconds,
           "valid": valid}
    prog.history.append(rec)
    log.info("epoch %d loss %.4f valid %s %.4f (%.1fs train)", rec["epoch"], rec["loss"], tc.monitor, score, prog.epoch_seconds)
    if log_metrics:
        log_metrics({"train/epoch_loss": rec["loss"], f"valid/{tc.monitor}": score}, prog.step)
    if score > prog.best:
        prog.best, prog.best_epoch, prog.bad_epochs = score, prog.epoch + 1, 0
        state = trainable_state(model)
        ckpt.write_checkpoint(run_dir / "checkpoint", {"model.safetensors": lambda p: save_file(state, p)},
                              meta={"epoch": prog.epoch + 1, tc.monitor: score})
    else:
        prog.bad_epochs += 1
    prog.epoch += 1
    prog.batch = prog.epoch_batches = 0
    prog.epoch_loss = prog.epoch_seconds = 0.0
    if prog.bad_epochs >= tc.patience:
        prog.done = True


def save(model: SeqRec, opt: torch.optim.Optimizer, prog: Progress, root: Path, tc: TrainConfig) -> Path:
    """A resumable checkpoint: weights, optimizer, RNG, counters (and stale item vectors)."""
    o_t, o_s = flatten(opt.state_dict(), "opt")
    r_t, r_s = flatten(rng_state(), "rng")
    extra = {f"base.{k}": v.cpu().contiguous() for k, v in model._base.items()} if model.backbone_trains else {}
    state = trainable_state(model)
    folder = ckpt.write_checkpoint(root / f"step-{prog.step}", {
        "model.safetensors": lambda p: save_file(state, p),
        "optimizer.safetensors": lambda p: save_file(o_t or {"_": torch.zeros(0)}, p),
        "rng.safetensors": lambda p: save_file(r_t, p),
        "extra.safetensors": lambda p: save_file(extra or {"_": torch.zeros(0)}, p),
        "state.json": lambda p: Path(p).write_text(json.dumps(
            {"progress": asdict(prog), "optimizer": o_s, "rng": r_s, "train": asdict(tc)}, indent=1)),
    }, meta={"step": prog.step, "epoch": prog.epoch})
    best = {root.parent / "checkpoint"}
    ckpt.prune(root, tc.keep_last, protect=best)
    return folder


def restore(model: SeqRec, opt: torch.optim.Optimizer, root: Path) -> Progress:
    for tmp in Path(root).glob(".tmp-step-*"):  # half-written by a killed run: never visible, now removed
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    folder = ckpt.latest_verified(root)
    if folder is None:
        raise CrossrecError(str(root), "no verified checkpoint to resume from", "start a new run without resume=")
    st = json.loads((folder / "state.json").read_text())
    load_trainable_state(model, read_safetensors(folder / "model.safetensors"), str(folder / "model.safetensors"))
    opt.load_state_dict(unflatten(st["optimizer"], read_safetensors(folder / "optimizer.safetensors")))
    set_rng_state(unflatten(st["rng"], read_safetensors(folder / "rng.safetensors")))
    for k, v in read_safetensors(folder / "extra.safetensors").items():
        if k.startswith("base."):
            model._base[k[5:]] = v
    log.info("resumed from %s (step %d)", folder, st["progress"]["step"])
    return Progress(**st["progress"])
