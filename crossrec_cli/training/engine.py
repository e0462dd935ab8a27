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
- SIGTERM / SIGINT (Ctrl-C): the current step finishes, a checkpoint is written (when the run
  keeps them) and the process exits with EXIT_PREEMPTED (``Preempted``: the command's wrapper
  prints how to resume); a second signal before that stops at once (KeyboardInterrupt);
- several processes (``torchrun``, training/distributed.py): each step every process computes
  its ``Objective.shard`` of the same global batch under DistributedDataParallel, so the step
  is the one-process step on the whole batch; ``end_epoch`` (validation, early stopping) runs
  on rank 0 and its outcome is broadcast; rank 0 writes the checkpoints, with every process's
  RNG state, and every process resumes from them.
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
from crossrec_cli.progress import phase
from crossrec_cli.training import checkpoint as ckpt
from crossrec_cli.training import distributed
from crossrec_cli.training.preempt import Preempted, StopFlag
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


@dataclass
class Shard:
    """One process's part of a global batch when several processes share each step."""

    batch: Any  # the part, in the form of a ``plan()`` batch
    share: float  # the part's weight in the batch's loss: the shares of the parts add up to 1
    context: Any = None  # what the objective's loss needs to know of the whole batch


class Objective:
    """One kind of training. ``module()`` holds every parameter the optimiser trains."""

    loss_name = "train/loss"  # the logger's key for the per-step loss

    def plan(self, epoch: int) -> list[Any]:
        """The epoch's batches, a pure function of (seed, epoch), so a resumed run replays them."""
        raise NotImplementedError

    def start_epoch(self, prog: Progress) -> None:
        """Before the epoch's first batch (not again when resuming mid-epoch)."""

    def loss(self, batch: Any, prog: Progress) -> tuple[torch.Tensor | None, float]:
        """(the batch's loss, its weight in the epoch's mean loss); None: nothing to learn from
        this batch (the step still counts). ``batch``: a ``plan()`` batch, or a ``Shard`` of one."""
        raise NotImplementedError

    def module(self) -> torch.nn.Module:
        """What holds every parameter the optimiser trains (DDP wraps it)."""
        raise CrossrecError("torchrun", f"{type(self).__name__} training runs in one process only",
                            "launch it without torchrun (or with --nproc_per_node 1)")

    def shard(self, batch: Any, rank: int, world: int) -> Shard:
        """Process ``rank``'s part of a global batch shared by ``world`` processes: the parts'
        losses, each times its ``share``, add up to the whole batch's loss (the engine sums their
        gradients), and a part's loss is None exactly when the whole batch's is."""
        raise CrossrecError("torchrun", f"{type(self).__name__} training runs in one process only",
                            "launch it without torchrun (or with --nproc_per_node 1)")

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
    prog = prog or Progress()
    params = [p for g in opt.param_groups for p in g["params"]]
    device_type = params[0].device.type if params else "cpu"
    autocast(s.precision, device_type)  # an unknown precision stops here
    scaler = torch.amp.GradScaler(device_type, enabled=s.precision == "fp16")  # off: every call passes through
    if resume:
        if checkpoints is None:
            raise CrossrecError("resume", "this training keeps no checkpoints", "run it again without resume=")
        prog = restore(objective, opt, checkpoints, scaler)
    world, rank, main = distributed.world_size(), distributed.rank(), distributed.is_main()
    # several processes: the loss is the forward of a DDP module, whose backward averages gradients
    step_loss = distributed.wrap(objective.module(), objective.loss) if world > 1 else objective.loss
    # signals are trapped only where a checkpoint can be written for resume=; bars (progress.py)
    # in a terminal when s.progress, else a log line every progress_every seconds (rank 0 only)
    with (StopFlag() if checkpoints is not None else _NoStop()) as stop, \
            phase(f"{s.label} epochs", s.epochs, bars=s.progress, quiet=not main, lines=False,
                  completed=prog.epoch) as epochs:
        while prog.epoch < s.epochs and not prog.done:
            batches = objective.plan(prog.epoch)
            if prog.batch == 0:
                objective.start_epoch(prog)
            with phase(f"{s.label} epoch {prog.epoch + 1}", len(batches), bars=s.progress, quiet=not main,
                       completed=prog.batch) as bar:
                while prog.batch < len(batches):
                    t0 = time.perf_counter()
                    batch = batches[prog.batch]
                    part = objective.shard(batch, rank, world) if world > 1 else batch
                    with autocast(s.precision, device_type):
                        loss, weight = step_loss(part, prog)
                    value = 0.0
                    if loss is not None:
                        if world > 1:  # this process's part of the batch's loss; DDP averages the
                            loss = loss * part.share  # gradients, x world makes that their sum
                        opt.zero_grad(set_to_none=True)
                        scaler.scale(loss * world if world > 1 else loss).backward()
                        if s.grad_clip:
                            scaler.unscale_(opt)
                            torch.nn.utils.clip_grad_norm_(params, s.grad_clip)
                        scaler.step(opt)  # skipped by fp16's scaler when a gradient overflowed
                        scaler.update()
                        objective.after_step(prog.step)
                        value = float(loss.detach())
                    stopping = stop.stop
                    if world > 1:  # the whole batch's loss; a signal to any process stops them all here
                        value, signals = distributed.sum_floats(value, float(stop.stop))
                        stopping = signals > 0
                    prog.batch += 1
                    prog.step += 1
                    prog.epoch_loss += value * weight
                    prog.epoch_weight += weight
                    prog.epoch_batches += 1
                    prog.epoch_seconds += time.perf_counter() - t0
                    bar.advance(1, info=f"loss {prog.mean_loss():.4f}")
                    if log_metrics and main:
                        log_metrics({objective.loss_name: value}, prog.step)
                    written = None
                    if checkpoints is not None and (stopping or (s.checkpoint_every and prog.step % s.checkpoint_every == 0)):
                        written = save(objective, opt, prog, checkpoints, s.keep_last, scaler)
                    if stopping:
                        distributed.barrier()  # no process exits before rank 0's checkpoint is written
                        if on_preempt is not None:
                            on_preempt()
                        raise Preempted(stop.signal, prog.step, written)  # its one line: _common.run_recipe
            rec = objective.end_epoch(prog) if main else None  # validation runs once, on rank 0
            if world > 1:
                rec = _from_main(prog, rec)
            prog.history.append(rec)
            prog.epoch += 1
            prog.batch = prog.epoch_batches = 0
            prog.epoch_loss = prog.epoch_seconds = prog.epoch_weight = 0.0
            epochs.advance(1)
            if checkpoints is not None:
                save(objective, opt, prog, checkpoints, s.keep_last, scaler)
    return prog


def _from_main(prog: Progress, rec: dict[str, Any] | None) -> dict[str, Any]:
    """Rank 0's epoch record and early-stopping state, on every process."""
    keys = ("best", "best_epoch", "bad_epochs", "done")
    got = distributed.broadcast({"rec": rec, **{k: getattr(prog, k) for k in keys}})
    for k in keys:
        setattr(prog, k, got[k])
    return got["rec"]


class _NoStop:
    """No signal handlers: SIGTERM keeps its default meaning for runs without checkpoints."""

    stop = False
    signal = None

    def __enter__(self) -> _NoStop:
        return self

    def __exit__(self, *exc) -> None:
        pass


def save(objective: Objective, opt: torch.optim.Optimizer, prog: Progress, root: Path, keep_last: int,
         scaler: torch.amp.GradScaler | None = None) -> Path | None:
    """A resumable checkpoint ``root/step-N``: weights, optimiser, RNG, counters, extra tensors
    (and fp16's loss scale). Several processes: every one calls it, rank 0 writes it (None
    elsewhere), with each process's RNG state."""
    ranks = None
    if distributed.active():
        ranks = distributed.gather(_rng_json())
        if not distributed.is_main():
            return None
    o_t, o_s = flatten(opt.state_dict(), "opt")
    r_t, r_s = flatten(rng_state(), "rng")
    state, extra = objective.weights(), objective.extra_tensors()
    folder = ckpt.write_checkpoint(root / f"step-{prog.step}", {
        "model.safetensors": lambda p: save_file(state, p),
        "optimizer.safetensors": lambda p: save_file(o_t or {"_": torch.zeros(0)}, p),
        "rng.safetensors": lambda p: save_file(r_t, p),
        "extra.safetensors": lambda p: save_file(extra or {"_": torch.zeros(0)}, p),
        "state.json": lambda p: Path(p).write_text(json.dumps(
            {"progress": asdict(prog), "optimizer": o_s, "rng": r_s} | ({"rank_rng": ranks} if ranks else {})
            | ({"grad_scaler": scaler.state_dict()} if scaler is not None and scaler.is_enabled() else {}),
            indent=1)),
    }, meta={"step": prog.step, "epoch": prog.epoch})
    ckpt.prune(root, keep_last, protect={root.parent / "checkpoint"})
    return folder


def restore(objective: Objective, opt: torch.optim.Optimizer, root: Path,
            scaler: torch.amp.GradScaler | None = None) -> Progress:
    for tmp in Path(root).glob(".tmp-step-*") if distributed.is_main() else ():
        shutil.rmtree(tmp, ignore_errors=True)  # half-written by a killed run: never visible, now removed
    folder = ckpt.latest_verified(root)
    if folder is None:
        raise CrossrecError(str(root), "no verified checkpoint to resume from", "start a new run without resume=")
    st = json.loads((folder / "state.json").read_text())
    objective.load_weights(read_safetensors(folder / "model.safetensors"), str(folder / "model.safetensors"))
    opt.load_state_dict(unflatten(st["optimizer"], read_safetensors(folder / "optimizer.safetensors")))
    set_rng_state(unflatten(st["rng"], read_safetensors(folder / "rng.safetensors")))
    if scaler is not None and scaler.is_enabled() and "grad_scaler" in st:
        scaler.load_state_dict(st["grad_scaler"])
    ranks, rank = st.get("rank_rng") or [], distributed.rank()
    if 0 < rank < len(ranks):  # the run had this process: its own generators
        set_rng_state(ranks[rank] | {"torch": torch.frombuffer(bytearray.fromhex(ranks[rank]["torch"]), dtype=torch.uint8)})
    objective.load_extra_tensors({k: v for k, v in read_safetensors(folder / "extra.safetensors").items() if k != "_"})
    log.info("resumed from %s (step %d)", folder, st["progress"]["step"])
    return Progress(**st["progress"])


def _rng_json() -> dict[str, Any]:
    """This process's RNG state as JSON values (torch's bytes as hex)."""
    state = rng_state()
    return state | {"torch": state["torch"].numpy().tobytes().hex()}
