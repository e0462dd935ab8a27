"""The one training loop. Every command trains through ``run``: next-item recommendation
(``training/loop.py``), contrastive pretraining of the backbone (``training/pretrain.py``) and the
preference / classification heads (``tasks/train.py``) are ``Objective``s that say what a batch
is, what its loss is and what an epoch end does; the loop does the rest the same way for all:

- optimiser steps with gradient clipping (``grad_clip`` > 0) and the objective's step hooks
  (AdaLoRA's rank budget);
- the run's logger (``<loss_name>`` every step) and a rich progress bar (``progress``);
- resumable checkpoints (``checkpoints``: every ``checkpoint_every`` steps and at each epoch end;
  weights, optimiser, RNG, counters and the objective's extra tensors; atomic and verified) and
  ``resume`` from the newest verified one, with identical data order, RNG and counters;
- ``precision``: fp32, or the loss under ``torch.autocast`` in bf16 / fp16 (fp16 with a
  GradScaler, whose state the checkpoints keep);
- SIGTERM / SIGINT: the current step finishes, a checkpoint is written (when the run keeps
  them) and the process exits with EXIT_PREEMPTED.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from crossrec_cli.errors import CrossrecError
from crossrec_cli.io import read_safetensors
from crossrec_cli.training import checkpoint as ckpt
from crossrec_cli.training.preempt import EXIT_PREEMPTED, StopFlag
from crossrec_cli.training.state import flatten, rng_state, set_rng_state, unflatten

log = logging.getLogger("crossrec")
LogMetrics = Callable[[dict[str, float], int], None]


@dataclass
class Progress:
    """Counters and early-stopping state: everything besides tensors that resume needs."""

    epoch: int = 0
    batch: int = 0  # next batch within the epoch
    step: int = 0
    best: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    epoch_loss: float = 0.0  # sum of weight * loss over the epoch's steps so far
    epoch_batches: int = 0  # steps of the epoch so far
    epoch_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    epoch_weight: float = 0.0  # sum of the steps' weights (the mean loss divides by it)

    def mean_loss(self) -> float:
        return self.epoch_loss / max(1e-12, self.epoch_weight) if self.epoch_weight else 0.0


@dataclass
class LoopSettings:
    epochs: int
    grad_clip: float = 0.0
    checkpoint_every: int = 0  # also checkpoint every N steps (0: at epoch ends only)
    keep_last: int = 2
    progress: bool = False  # rich progress bars
    label: str = "train"  # progress bar / log label
    precision: str = "fp32"  # fp32 | bf16 | fp16: the dtype autocast computes the loss in


# trainer.precision -> the autocast dtype (None: plain float32)
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device_type: str):
    """The context a step's forward pass runs in."""
    if precision not in PRECISIONS:
        raise CrossrecError("trainer.precision", f"unknown value {precision!r}", f"one of {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    return torch.autocast(device_type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


class Objective:
    """One kind of training. ``module`` holds every parameter the optimiser trains."""

    loss_name = "train/loss"  # the logger's key for the per-step loss

    def plan(self, epoch: int) -> list[Any]:
        """The epoch's batches, a pure function of (seed, epoch), so a resumed run replays them."""
        raise NotImplementedError

    def start_epoch(self, prog: Progress) -> None:
        """Before the epoch's first batch (not again when resuming mid-epoch)."""

    def loss(self, batch: Any, prog: Progress) -> tuple[torch.Tensor | None, float]:
        """(the batch's loss, its weight in the epoch's mean loss); None: nothing to learn from
        this batch (the step still counts)."""
        raise NotImplementedError

    def after_step(self, step: int) -> None:
        """After ``optimizer.step()`` of step number ``step`` (0-based)."""

    def end_epoch(self, prog: Progress) -> dict[str, Any]:
        """The epoch's record for ``prog.history`` (may set ``prog.done``, early stopping)."""
        return {"epoch": prog.epoch + 1, "loss": prog.mean_loss(), "steps": prog.epoch_batches,
                "seconds": prog.epoch_seconds}

    # checkpoints
    def weights(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def load_weights(self, state: dict[str, torch.Tensor], source: str) -> None:
        raise NotImplementedError

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def load_extra_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        pass


def run(objective: Objective, opt: torch.optim.Optimizer, s: LoopSettings, checkpoints: Path | None = None,
        resume: bool = False, log_metrics: LogMetrics | None = None, on_preempt: Callable[[], None] | None = None,
        prog: Progress | None = None) -> Progress:
    """Train until ``s.epochs`` epochs ran or the objective set ``prog.done``; returns the counters."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn

    prog = prog or Progress()
    params = [p for g in opt.param_groups for p in g["params"]]
    device_type = params[0].device.type if params else "cpu"
    autocast(s.precision, device_type)  # an unknown precision stops here
    scaler = torch.amp.GradScaler(device_type, enabled=s.precision == "fp16")  # off: every call passes through
    if resume:
        if checkpoints is None:
            raise CrossrecError("resume", "this training keeps no checkpoints", "run it again without resume=")
        prog = restore(objective, opt, checkpoints, scaler)
    bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
              TextColumn("{task.fields[info]}"), disable=not s.progress, transient=False)
    # signals are trapped only where a checkpoint can be written for resume=
    with (StopFlag() if checkpoints is not None else _NoStop()) as stop, bar:
        ep_task = bar.add_task(f"{s.label} epochs", total=s.epochs, completed=prog.epoch, info="")
        while prog.epoch < s.epochs and not prog.done:
            batches = objective.plan(prog.epoch)
            if prog.batch == 0:
                objective.start_epoch(prog)
            b_task = bar.add_task(f"epoch {prog.epoch + 1}", total=len(batches), completed=prog.batch, info="")
            while prog.batch < len(batches):
                t0 = time.perf_counter()
                with autocast(s.precision, device_type):
                    loss, weight = objective.loss(batches[prog.batch], prog)
                value = 0.0
                if loss is not None:
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    if s.grad_clip:
                        scaler.unscale_(opt)
                        torch.nn.utils.clip_grad_norm_(params, s.grad_clip)
                    scaler.step(opt)  # skipped by fp16's scaler when a gradient overflowed
                    scaler.update()
                    objective.after_step(prog.step)
                    value = float(loss.detach())
                prog.batch += 1
                prog.step += 1
                prog.epoch_loss += value * weight
                prog.epoch_weight += weight
                prog.epoch_batches += 1
                prog.epoch_seconds += time.perf_counter() - t0
                bar.update(b_task, advance=1, info=f"loss {prog.mean_loss():.4f}")
                if log_metrics:
                    log_metrics({objective.loss_name: value}, prog.step)
                if checkpoints is not None and (stop.stop or (s.checkpoint_every and prog.step % s.checkpoint_every == 0)):
                    save(objective, opt, prog, checkpoints, s.keep_last, scaler)
                if stop.stop:
                    log.warning("signal %s at step %d%s", stop.signal, prog.step,
                                ": checkpoint written, resume with resume=<run dir>" if checkpoints else "")
                    if on_preempt is not None:
                        on_preempt()
                    raise SystemExit(EXIT_PREEMPTED)
            bar.remove_task(b_task)
            rec = objective.end_epoch(prog)
            prog.history.append(rec)
            prog.epoch += 1
            prog.batch = prog.epoch_batches = 0
            prog.epoch_loss = prog.epoch_seconds = prog.epoch_weight = 0.0
            bar.update(ep_task, completed=prog.epoch)
            if checkpoints is not None:
                save(objective, opt, prog, checkpoints, s.keep_last, scaler)
    return prog


class _NoStop:
    """No signal handlers: SIGTERM keeps its default meaning for runs without checkpoints."""

    stop = False
    signal = None

    def __enter__(self) -> _NoStop:
        return self

    def __exit__(self, *exc) -> None:
        pass


def save(objective: Objective, opt: torch.optim.Optimizer, prog: Progress, root: Path, keep_last: int,
         scaler: torch.amp.GradScaler | None = None) -> Path:
    """A resumable checkpoint ``root/step-N``: weights, optimiser, RNG, counters, extra tensors."""
    o_t, o_s = flatten(opt.state_dict(), "opt")
    r_t, r_s = flatten(rng_state(), "rng")
    state, extra = objective.weights(), objective.extra_tensors()
    folder = ckpt.write_checkpoint(root / f"step-{prog.step}", {
        "model.safetensors": lambda p: save_file(state, p),
        "optimizer.safetensors": lambda p: save_file(o_t or {"_": torch.zeros(0)}, p),
        "rng.safetensors": lambda p: save_file(r_t, p),
        "extra.safetensors": lambda p: save_file(extra or {"_": torch.zeros(0)}, p),
        "state.json": lambda p: Path(p).write_text(json.dumps(
            {"progress": asdict(prog), "optimizer": o_s, "rng": r_s,
             **({"grad_scaler": scaler.state_dict()} if scaler is not None and scaler.is_enabled() else {})},
            indent=1)),
    }, meta={"step": prog.step, "epoch": prog.epoch})
    ckpt.prune(root, keep_last, protect={root.parent / "checkpoint"})
    return folder


def restore(objective: Objective, opt: torch.optim.Optimizer, root: Path,
            scaler: torch.amp.GradScaler | None = None) -> Progress:
    for tmp in Path(root).glob(".tmp-step-*"):  # half-written by a killed run: never visible, now removed
        shutil.rmtree(tmp, ignore_errors=True)
    folder = ckpt.latest_verified(root)
    if folder is None:
        raise CrossrecError(str(root), "no verified checkpoint to resume from", "start a new run without resume=")
    st = json.loads((folder / "state.json").read_text())
    objective.load_weights(read_safetensors(folder / "model.safetensors"), str(folder / "model.safetensors"))
    opt.load_state_dict(unflatten(st["optimizer"], read_safetensors(folder / "optimizer.safetensors")))
    set_rng_state(unflatten(st["rng"], read_safetensors(folder / "rng.safetensors")))
    if scaler is not None and scaler.is_enabled() and "grad_scaler" in st:
        scaler.load_state_dict(st["grad_scaler"])
    objective.load_extra_tensors({k: v for k, v in read_safetensors(folder / "extra.safetensors").items() if k != "_"})
    log.info("resumed from %s (step %d)", folder, st["progress"]["step"])
    return Progress(**st["progress"])
