"""Next-item recommendation training: ``fit`` runs the one training loop (``training/engine``)
with the ``NextItem`` objective: interleaved domain batches, the ``trainer.loss`` of each target,
early stopping on the mean valid ``trainer.monitor`` and the best weights kept apart."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from crossrec_cli.adapters import adapter_loss, adapter_step_hook
from crossrec_cli.data.split import Split
from crossrec_cli.errors import CrossrecError
from crossrec_cli.models.encode import to_device
from crossrec_cli.models.seqrec import SeqRec
from crossrec_cli.training import checkpoint as ckpt
from crossrec_cli.training.batches import collate, epoch_order, windows
from crossrec_cli.adversarial.base import Adversary
from crossrec_cli.training import distributed
from crossrec_cli.training.engine import LoopSettings, Objective, Progress, Shard
from crossrec_cli.training.engine import run as run_loop
from crossrec_cli.training.losses import LOSSES, SAMPLED_ABOVE, NextItemLoss, expected_log_counts

__all__ = ["NextItem", "Progress", "TrainConfig", "batch_loss", "fit", "load_trainable_state", "make_optimizer",
           "plan", "trainable_state"]

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
    loss: str = "full"  # full softmax over the domain's items | sampled (in-batch + n_negatives) | sampled_logq | auto
    n_negatives: int = 256
    sampled_above: int | None = None  # loss=auto: sampled_logq above this many items (None: losses.SAMPLED_ABOVE)
    max_steps_per_epoch: int | None = None
    checkpoint_every: int = 0  # also checkpoint every N steps (0: at epoch ends only)
    keep_last: int = 2
    window_stride: int | None = None  # targets per training window (None: max_history, no overlap)
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; fp16 with a GradScaler)
    compile: bool = False  # torch.compile the user tower
    seed: int = 0


def trainable_state(model: SeqRec) -> dict[str, torch.Tensor]:
    """Every tensor outside the backbone, plus the backbone's trainable parameters (its frozen
    weights and buffers are rebuilt from the backbone config)."""
    trains = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
            if not k.startswith("backbone_model.") or k in trains}


def load_trainable_state(model: SeqRec, state: dict[str, torch.Tensor], source: str) -> None:
    state = SeqRec.upgrade_state(state)
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


def loss_for(tc: TrainConfig, n_items: int) -> NextItemLoss:
    """The next-item loss ``trainer.loss`` gives a catalogue of ``n_items`` (``auto`` decides by size)."""
    return LOSSES.get(tc.loss).resolve(n_items, tc.sampled_above or SAMPLED_ABOVE)


def batch_loss(model: SeqRec, key: str, inp: torch.Tensor, tgt: torch.Tensor, tc: TrainConfig,
               batch_targets: torch.Tensor | None = None, share: torch.Tensor | None = None,
               weights: torch.Tensor | None = None) -> torch.Tensor:
    """The ``trainer.loss`` of each target given the history before it (training/losses.py).
    ``batch_targets``: the targets of the whole global batch when these rows are one process's
    part of it, so that a loss with in-batch negatives (sampled) scores the same candidates.
    ``weights`` (B,): each row's targets weigh that much in the mean (fairness.reweight)."""
    dev = model.user.pos.weight.device
    inp, tgt = to_device(inp, dev), to_device(tgt, dev)
    n_items = model.n_targets(key)
    mask = (tgt >= 0) & (tgt < n_items)  # merged histories: source items are context only
    targets = tgt[mask]
    if weights is not None:
        weights = weights.to(dev).unsqueeze(1).expand_as(tgt)[mask]
    loss = loss_for(tc, n_items)
    negatives = loss.negatives(n_items, tc.n_negatives, dev)
    log_q = None
    if loss.corrects:  # in-batch candidates come by popularity: each item's expected count among them
        if share is None:
            share = target_share([tgt], n_items)
        in_batch = len(batch_targets) if batch_targets is not None else len(targets)
        log_q = expected_log_counts(share.to(dev), in_batch, len(negatives) if negatives is not None else 0)
    if negatives is not None and batch_targets is not None:
        negatives = torch.cat([negatives, batch_targets.to(dev)])
    fresh = None
    if model.backbone_trains:  # encode only the unique items this batch touches
        parts = [inp[inp >= 0], targets] + ([negatives] if negatives is not None else [])
        fresh = torch.unique(torch.cat(parts))
    context = None
    if key in model.composites and fresh is None:  # only the batch's context items are projected
        context = torch.unique(inp[inp >= n_items]) - n_items
    rows = None
    if negatives is not None and fresh is None and key not in model.composites:
        # a sampled loss reads only the batch's histories and candidates: the item tower projects
        # those rows alone, not the whole catalogue (the others stay zero and are never read)
        rows = torch.unique(torch.cat([inp[inp >= 0], targets, negatives]))
    items = model.item_matrix(key, fresh, context) if rows is None else model.item_rows(key, rows)
    states = model.user_states(items, inp)
    out = loss(model, states[mask], items, targets, n_items, negatives, log_q, weights)
    if model.cfg.general_loss:  # the readout's domain-general user ranks alone too (what an unseen domain reads)
        plain = model.general_item_matrix(key, items, fresh, context, rows)  # model.general_items
        general = model.user_states(plain, inp, general=True)[mask]
        out = out + model.cfg.general_loss * loss(model, general, plain, targets, n_items, negatives, log_q, weights)
    if model.cfg.seq_loss:  # UniSRec's sequence-sequence contrastive loss (each window's newest history)
        out = out + model.cfg.seq_loss * model.sequence_loss(items, inp, tgt[:, -1], states[:, -1])
    return out


def target_share(targets: list[torch.Tensor], n_items: int) -> torch.Tensor:
    """Each item's share of the training targets (-1 and context items >= ``n_items`` left out):
    how often a popularity-drawn (in-batch) candidate is that item."""
    flat = torch.cat([t.reshape(-1) for t in targets])
    counts = torch.bincount(flat[(flat >= 0) & (flat < n_items)], minlength=n_items).double()
    return (counts / counts.sum().clamp_min(1.0)).float()


Evaluate = Callable[[SeqRec], dict[str, dict[str, float]]]


class NextItem(Objective):
    """Predict every next item of the training windows; an epoch ends with validation."""

    def __init__(self, model: SeqRec, wins: dict[str, list], tc: TrainConfig, evaluate: Evaluate, run_dir: Path,
                 log_metrics: Callable[[dict[str, float], int], None] | None,
                 adversary: Adversary | None, weights: dict[str, np.ndarray] | None = None):
        self.model, self.wins, self.tc, self.evaluate, self.run_dir = model, wins, tc, evaluate, run_dir
        self.log_metrics, self.adversary = log_metrics, adversary
        self.loss_weights = weights or {}  # fairness.reweight: each training window's loss weight
        self.share = {}  # a logQ-corrected loss's popularity of each domain's training targets
        for key, ws in wins.items():
            n = model.n_targets(key)
            if ws and loss_for(tc, n).corrects:
                self.share[key] = target_share([torch.as_tensor(np.concatenate([w[len(w) - k:] for w, k in ws]))], n)

    def plan(self, epoch: int) -> list[tuple[str, np.ndarray]]:
        return plan(self.wins, self.tc, epoch)

    def start_epoch(self, prog: Progress) -> None:
        if prog.batch == 0 and self.model.backbone_trains:
            for key in self.wins:
                self.model.refresh(key)  # stale vectors for items outside the batch
        self.model.train()

    def module(self) -> torch.nn.Module:
        return self.model

    def shard(self, batch: tuple[str, np.ndarray], rank: int, world: int) -> Shard:
        """Process ``rank``'s contiguous slice of the batch's windows. A loss is a mean over the
        batch's targets (the full softmax's), so a slice's share is its fraction of the targets:
        the shares then weight the slices' mean losses into the whole batch's mean. A process
        whose slice is empty (a batch of fewer windows than processes) computes the first window
        with share 0, so that it still takes part in the step."""
        key, idx = batch
        _, tgt = collate([self.wins[key][i] for i in idx], self.model.cfg.max_history)
        is_target = (tgt >= 0) & (tgt < self.model.n_targets(key))
        counts = is_target.sum(1).numpy()
        mine = distributed.slices(len(idx), world)[rank]
        share = float(counts[mine].sum() / max(1, counts.sum()))
        if not len(mine):
            mine, share = np.arange(1), 0.0
        return Shard((key, idx[mine]), share, tgt[is_target])  # every target of the batch, repeats too (logQ counts them)

    def loss(self, batch: tuple[str, np.ndarray] | Shard, prog: Progress) -> tuple[torch.Tensor, float]:
        batch_targets = batch.context if isinstance(batch, Shard) else None
        model, (key, idx) = self.model, batch.batch if isinstance(batch, Shard) else batch
        inp, tgt = collate([self.wins[key][i] for i in idx], model.cfg.max_history)
        adv = self.adversary
        weights = torch.as_tensor(self.loss_weights[key][idx], dtype=torch.float32) if key in self.loss_weights else None
        if adv is None:
            loss = batch_loss(model, key, inp, tgt, self.tc, batch_targets, self.share.get(key), weights)
        else:  # FGM / PGD recompute the loss on perturbed inputs; GRL adds its own
            adv.see_batch(key, idx)
            loss = adv.step_loss(model, key, lambda: batch_loss(model, key, inp, tgt, self.tc, batch_targets,
                                                                self.share.get(key), weights))
            extra = adv.extra_loss(model, key)
            if extra is not None:
                loss = loss + extra
        aux = model.feature_loss(key)  # item features' own losses (the KG's TransE)
        if aux is not None:
            loss = loss + aux
        if model.backbone_trains:
            loss = loss + adapter_loss(model.backbone_model)  # AdaLoRA's orthogonality penalty
        return loss, 1.0

    def after_step(self, step: int) -> None:
        if self.model.backbone_trains:
            adapter_step_hook(self.model.backbone_model, step)  # AdaLoRA rank budget

    def end_epoch(self, prog: Progress) -> dict[str, Any]:
        """Validate; keep the best weights in ``run_dir/checkpoint``; stop after ``patience``
        epochs without a better mean valid ``monitor``."""
        tc, model = self.tc, self.model
        t0 = time.perf_counter()
        valid = self.evaluate(model)
        eval_seconds = time.perf_counter() - t0
        score = float(np.mean([m[tc.monitor] for m in valid.values()]))
        rec = {"epoch": prog.epoch + 1, "loss": prog.mean_loss(), f"valid_{tc.monitor}": score,
               "train_seconds": prog.epoch_seconds, "eval_seconds": eval_seconds, "valid": valid}
        adv = self.adversary.epoch_metrics() if self.adversary is not None else {}
        rec |= adv  # e.g. the GRL discriminator's accuracy, FGM's loss gap
        log.info("epoch %d loss %.4f valid %s %.4f (%.1fs train)%s", rec["epoch"], rec["loss"], tc.monitor, score,
                 prog.epoch_seconds, "".join(f", {k} {v:.4f}" for k, v in adv.items()))
        if self.log_metrics:
            self.log_metrics({"train/epoch_loss": rec["loss"], f"valid/{tc.monitor}": score,
                              **{f"train/{k}": v for k, v in adv.items()}}, prog.step)
        if score > prog.best:
            prog.best, prog.best_epoch, prog.bad_epochs = score, prog.epoch + 1, 0
            state = trainable_state(model)
            ckpt.write_checkpoint(self.run_dir / "checkpoint", {"model.safetensors": lambda p: save_file(state, p)},
                                  meta={"epoch": prog.epoch + 1, tc.monitor: score})
        else:
            prog.bad_epochs += 1
        if prog.bad_epochs >= tc.patience:
            prog.done = True
        return rec

    def weights(self) -> dict[str, torch.Tensor]:
        return trainable_state(self.model)

    def load_weights(self, state: dict[str, torch.Tensor], source: str) -> None:
        load_trainable_state(self.model, state, source)

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        """A training backbone's stale item vectors (items outside a batch are not re-encoded)."""
        if not self.model.backbone_trains:
            return {}
        return {f"base.{k}": v.cpu().contiguous() for k, v in self.model.encoded.items()}

    def load_extra_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        for k, v in tensors.items():
            if k.startswith("base."):
                self.model.encoded[k[5:]] = v


def fit(
    model: SeqRec,
    splits: dict[str, Split],
    tc: TrainConfig,
    evaluate: Evaluate,
    run_dir: Path,
    log_metrics: Callable[[dict[str, float], int], None] | None = None,
    resume: bool = False,
    show_progress: bool = True,
    adversary: Adversary | None = None,
    privacy: Any = None,
    weights: dict[str, np.ndarray] | None = None,
) -> Progress:
    """Train with early stopping on the mean valid ``tc.monitor`` over domains.

    Writes ``run_dir/checkpoints/step-N`` (atomic, verified; the newest ``keep_last`` kept) and
    the best weights to ``run_dir/checkpoint/model.safetensors``. ``resume`` continues from the
    newest verified checkpoint with identical data order, RNG and counters. ``adversary``
    (adversarial/) adds to or recomputes every step's loss (domain-adversarial alignment, FGM /
    PGD); what it trains must belong to ``model`` so it is optimised and checkpointed with it.
    ``privacy`` (``privacy/``, privacy=dp): the same objective, trained with private (DP-SGD) steps.
    ``weights``: per domain, a loss weight per training window (``batches.windows`` order).
    """
    wins = {k: windows(s, model.cfg.max_history, tc.window_stride) for k, s in splits.items()}
    if not any(wins.values()):
        raise CrossrecError("domain", "no training sequence has two or more items", "check the data and filters")
    objective = NextItem(model, wins, tc, evaluate, run_dir, log_metrics, adversary, weights)
    settings = LoopSettings(tc.epochs, tc.grad_clip, tc.checkpoint_every, tc.keep_last, show_progress,
                            precision=tc.precision)
    opt = make_optimizer(model, tc)
    if privacy is not None:  # private gradients; the run's optimiser still takes the steps
        objective = privacy.wrap(objective, splits, opt)
    return run_loop(objective, opt, settings, run_dir / "checkpoints", resume, log_metrics)
