"""One linear training loop for the text tasks, and batched prediction.

A scorer maps a list of inputs to logits (B, C). Single-label targets (n,) int use cross-entropy
over C classes (preference: C = 2, class 1 = like); multi-label targets (n, C) 0/1 use a
sigmoid per label.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crossrec_cli.training.engine import LoopSettings, Objective, Progress, run

log = logging.getLogger("crossrec")


@dataclass
class TrainSettings:
    """Defaults = conf/task/preference.yaml's ``train`` (a test keeps the two equal)."""

    epochs: int = 3
    batch_size: int = 8
    lr: float = 5e-4  # backbone / adapter parameters
    head_lr: float = 1e-3  # the classifier head
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    min_steps: int = 60  # few-shot: repeat epochs until at least this many optimizer steps
    seed: int = 0
    log_metrics: Callable[[dict[str, float], int], None] | None = None  # the run's logger
    progress: bool = False  # rich progress bars
    precision: str | None = None  # fp32 | bf16 | fp16 (training/engine.PRECISIONS); None: fp32


def plan_steps(n: int, s: TrainSettings) -> tuple[int, int]:
    """(epochs, total optimizer steps) for ``n`` examples; AdaLoRA needs the total up front."""
    per_epoch = max(1, math.ceil(n / s.batch_size))
    epochs = max(s.epochs, math.ceil(s.min_steps / per_epoch)) if n else 0
    return epochs, epochs * per_epoch


def task_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits (B, C); targets (B,) class indices or (B, C) multi-label 0/1."""
    if targets.ndim == 2:
        return F.binary_cross_entropy_with_logits(logits, targets.float())
    return F.cross_entropy(logits, targets.long())


def optimizer_for(model: nn.Module, s: TrainSettings) -> torch.optim.Optimizer | None:
    """AdamW with two groups: the head at ``head_lr``, every other trainable parameter at ``lr``."""
    head = [p for p in getattr(model, "head_parameters", list)() if p.requires_grad]
    head_ids = {id(p) for p in head}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    groups = [g for g in ({"params": head, "lr": s.head_lr}, {"params": rest, "lr": s.lr}) if g["params"]]
    return torch.optim.AdamW(groups, weight_decay=s.weight_decay) if groups else None


class Supervised(Objective):
    """Labelled examples in seeded random order each epoch, ``task_loss`` of each batch."""

    def __init__(self, model: nn.Module, inputs: Sequence[Any], targets: np.ndarray, s: TrainSettings,
                 step_hook: Callable[[int], None] | None, extra_loss: Callable[[], torch.Tensor] | None):
        self.model, self.inputs, self.s = model, inputs, s
        self.y = torch.as_tensor(np.asarray(targets))
        self.step_hook, self.extra_loss = step_hook, extra_loss

    def plan(self, epoch: int) -> list[list[int]]:
        gen = torch.Generator().manual_seed(self.s.seed)  # the epoch-th permutation of one seeded stream
        for _ in range(epoch + 1):
            order = torch.randperm(len(self.inputs), generator=gen).tolist()
        bs = self.s.batch_size
        return [order[a:a + bs] for a in range(0, len(order), bs)]

    def loss(self, idx: list[int], prog: Progress) -> tuple[torch.Tensor, float]:
        logits = self.model([self.inputs[i] for i in idx])
        loss = task_loss(logits, self.y[idx].to(logits.device))
        if self.extra_loss is not None:
            loss = loss + self.extra_loss()
        return loss, float(len(idx))

    def after_step(self, step: int) -> None:
        if self.step_hook is not None:
            self.step_hook(step + 1)

    def end_epoch(self, prog: Progress) -> dict[str, Any]:
        rec = super().end_epoch(prog)
        log.debug("epoch %d loss %.4f", rec["epoch"], rec["loss"])
        return rec


def fit(model: nn.Module, inputs: Sequence[Any], targets: np.ndarray, s: TrainSettings,
        step_hook: Callable[[int], None] | None = None,
        extra_loss: Callable[[], torch.Tensor] | None = None) -> list[float]:
    """Train ``model`` on (inputs, targets) through the one training loop (``training/engine``:
    clipping, logger, progress); returns the mean loss of every epoch.

    ``step_hook(step)`` runs after each ``optimizer.step()`` with the 1-based step (AdaLoRA);
    ``extra_loss()`` is added to every batch loss (AdaLoRA's orthogonality penalty).
    """
    opt = optimizer_for(model, s)
    if opt is None or not len(inputs):
        return []
    epochs, _ = plan_steps(len(inputs), s)
    model.train()
    prog = run(Supervised(model, inputs, targets, s, step_hook, extra_loss), opt,
               LoopSettings(epochs, s.grad_clip, progress=s.progress, label="task", precision=s.precision or "fp32"), log_metrics=s.log_metrics)
    history = [rec["loss"] for rec in prog.history]
    log.info("trained on %d examples: %d epochs, %d steps, loss %.4f -> %.4f",
             len(inputs), epochs, prog.step, history[0], history[-1])
    model.eval()
    return history


@torch.no_grad()
def predict(model: nn.Module, inputs: Sequence[Any], batch_size: int = 16, multi_label: bool = False) -> np.ndarray:
    """Probabilities: (n, C) softmax over classes, or (n, C) sigmoids when ``multi_label``.
    Inputs are scored in order of length so batches pad little; the output keeps input order."""
    model.eval()
    order = sorted(range(len(inputs)), key=lambda i: len(str(inputs[i])))
    out: list[torch.Tensor] = []
    for a in range(0, len(order), batch_size):
        logits = model([inputs[i] for i in order[a:a + batch_size]]).float().cpu()
        out.append(torch.sigmoid(logits) if multi_label else torch.softmax(logits, -1))
    if not out:
        return np.zeros((0, 0))
    probs = torch.cat(out).numpy()
    result = np.empty_like(probs)
    result[np.asarray(order)] = probs
    return result
