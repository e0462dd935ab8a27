"""Domain-adaptive contrastive pretraining of the item tower's language model.

Objectives (InfoNCE over the batch, temperature ``tau``):
- ``contrastive``: two dropout views of the same item text are positives (SimCSE);
- ``neighbors``: an item and the next item in some user's history are positives.

An item's view is its pooled text vector, or, with a fused item tower (``fusion=`` with item
features beyond text: KG, vectors, ids), the tower's fused item vector, so the objective also
trains the tower's feature tables and fusion.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from typing import Any

import torch
import torch.nn.functional as F

from crossrec_cli.adapters import adapter_loss, adapter_step_hook
from crossrec_cli.models.backbone import Backbone
from crossrec_cli.models.encode import forward_pool
from crossrec_cli.registry import Registry
from crossrec_cli.training import distributed
from crossrec_cli.training.engine import LoopSettings, Shard, run
from crossrec_cli.training.engine import Objective as EngineObjective

log = logging.getLogger("crossrec")


def neighbor_pairs(train_seqs: list[np.ndarray]) -> np.ndarray:
    """(n, 2) item index pairs of consecutive items in training sequences."""
    pairs = [np.stack([s[:-1], s[1:]], 1) for s in train_seqs if len(s) > 1]
    return np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=np.int64)


def info_nce(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """Row i of ``a`` should match row i of ``b`` among all rows of ``b``: (B, d), (B, d) -> ()."""
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / tau
    return F.cross_entropy(logits, torch.arange(len(a), device=a.device))


class Objective:
    """A pretraining objective: what a batch is, and the two views whose InfoNCE is the loss."""

    def units(self, texts: list[str], pairs: np.ndarray) -> np.ndarray:
        """What one epoch permutes and cuts into batches: item indices or (anchor, positive) rows."""
        raise NotImplementedError

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """The units of a batch that become rows of the InfoNCE (all of them unless said)."""
        return idx

    def views(self, encode: Callable[[np.ndarray], torch.Tensor], idx: np.ndarray):
        """The two (B, d) views of a batch's rows; ``encode(items)`` is one item vector per index."""
        raise NotImplementedError


class Contrastive(Objective):
    """SimCSE: an item text against itself under a second dropout mask."""

    def units(self, texts, pairs):
        return np.arange(len(texts))

    def views(self, encode, idx):
        return encode(idx), encode(idx)


class Neighbors(Objective):
    """An item against the next item of some user's history."""

    def units(self, texts, pairs):
        return pairs

    def rows(self, idx):
        return idx[np.unique(idx[:, 0], return_index=True)[1]]  # one pair per anchor item

    def views(self, encode, idx):
        return encode(idx[:, 0]), encode(idx[:, 1])


OBJECTIVES: Registry[Objective] = Registry("pretrain objective", "pretrain.objective", "crossrec_cli.training")
OBJECTIVES.add("contrastive", Contrastive())
OBJECTIVES.add("neighbors", Neighbors())


def _plan(domains, objective: str, batch_size: int, seed: int, epoch: int, max_steps: int | None) -> list:
    rng = np.random.default_rng([seed, epoch])
    obj = OBJECTIVES.get(objective)
    batches = []
    for name in sorted(domains):
        units = obj.units(*domains[name])
        order = rng.permutation(len(units))
        batches += [(name, units[order[a : a + batch_size]]) for a in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))][: max_steps or None]


class _Trained:
    """The backbone as an adversary sees a model whose backbone trains (its input embeddings)."""

    backbone_trains = True

    def __init__(self, backbone: Backbone):
        self.backbone_model = backbone.model


class Pretrain(EngineObjective):
    """InfoNCE of an objective's two views, batches never mixing domains. ``tower``: a fused item
    tower (``SeqRec``, its catalogues registered under the names of ``domains``) whose item vectors
    are the views; None: the backbone's pooled text vectors."""

    loss_name = "pretrain/loss"

    def __init__(self, backbone: Backbone, domains: dict[str, tuple[list[str], np.ndarray]], objective: str,
                 batch_size: int, tau: float, max_length: int, pooling: str, seed: int, max_steps: int | None,
                 adversary: Any = None, tower: Any = None):
        self.backbone, self.domains, self.objective, self.tower = backbone, domains, objective, tower
        self.adversary = adversary  # FGM / PGD on the token embeddings (adversarial/perturb.py)
        self.batch_size, self.tau, self.max_length, self.pooling = batch_size, tau, max_length, pooling
        self.seed, self.max_steps = seed, max_steps
        self.trainable = [n for n, p in self.module().named_parameters() if p.requires_grad]

    def plan(self, epoch: int) -> list:
        return _plan(self.domains, self.objective, self.batch_size, self.seed, epoch, self.max_steps)

    def module(self) -> torch.nn.Module:
        return self.backbone.model if self.tower is None else self.tower

    def encoder(self, name: str) -> Callable[[np.ndarray], torch.Tensor]:
        """Item indices of domain ``name`` -> their vectors, with gradients."""
        if self.tower is None:
            texts = self.domains[name][0]
            return lambda items: forward_pool(self.backbone, [texts[i] for i in items], self.max_length, self.pooling)

        def fused(items: np.ndarray) -> torch.Tensor:
            dev = self.tower.user.pos.weight.device
            fresh = torch.as_tensor(np.unique(items), device=dev)  # re-encoded through a training backbone
            return self.tower.tower_vectors(self.tower.item_matrix(name, fresh))[torch.as_tensor(items, device=dev)]

        return fused

    def shard(self, batch, rank: int, world: int) -> Shard:
        """Process ``rank``'s contiguous slice of the batch's rows, padded (repeating the first
        row) to ``ceil(rows / world)`` so every process encodes as many; the loss gathers all
        processes' views, so each computes the whole batch's InfoNCE (share 1 / world) and its
        rows' gradients come back to it."""
        name, idx = batch
        rows = OBJECTIVES.get(self.objective).rows(idx)
        part = rows[distributed.slices(len(rows), world)[rank]]
        pad = np.repeat(rows[:1], -(-len(rows) // world) - len(part), axis=0)
        return Shard((name, np.concatenate([part, pad])), 1.0 / world, (len(rows), len(idx)))

    def loss(self, batch, prog):
        n_rows, n_units = batch.context if isinstance(batch, Shard) else (None, len(batch[1]))
        name, idx = batch.batch if isinstance(batch, Shard) else batch
        if n_units < 2:
            return None, 1.0
        obj = OBJECTIVES.get(self.objective)
        if n_rows is None:
            idx = obj.rows(idx)

        def closure() -> torch.Tensor:
            a, b = obj.views(self.encoder(name), idx)
            if n_rows is not None:  # every process's rows, in batch order
                a, b = distributed.gather_rows(a, n_rows), distributed.gather_rows(b, n_rows)
            return info_nce(a, b, self.tau)

        loss = closure() if self.adversary is None else self.adversary.step_loss(_Trained(self.backbone), name, closure)
        extra = self.tower.feature_loss(name) if self.tower is not None else None  # e.g. the KG's TransE loss
        loss = loss if extra is None else loss + extra
        return loss + adapter_loss(self.backbone.model), 1.0

    def after_step(self, step: int) -> None:
        adapter_step_hook(self.backbone.model, step)

    def end_epoch(self, prog):
        rec = super().end_epoch(prog)
        if self.adversary is not None:
            rec |= self.adversary.epoch_metrics()
        log.info("pretrain epoch %d loss %.4f (%d steps, %.1fs)", rec["epoch"], rec["loss"], rec["steps"], rec["seconds"])
        return rec

    def weights(self) -> dict[str, torch.Tensor]:
        params = dict(self.module().named_parameters())
        return {n: params[n].detach().cpu().contiguous() for n in self.trainable}

    def load_weights(self, state: dict[str, torch.Tensor], source: str) -> None:
        self.module().load_state_dict(state, strict=False)


def pretrain_item_tower(backbone: Backbone, domains: dict[str, tuple[list[str], np.ndarray]], objective: str,
                        epochs: int, batch_size: int, lr: float, tau: float, max_length: int, pooling: str,
                        seed: int, max_steps: int | None = None, checkpoints: Path | None = None,
                        resume: bool = False, checkpoint_every: int = 0,
                        log_metrics: Callable[[dict[str, float], int], None] | None = None,
                        grad_clip: float = 0.0, progress: bool = False, adversary: Any = None,
                        precision: str = "fp32", tower: Any = None) -> list[dict]:
    """Train ``backbone.model`` in place (with ``tower``, a fused item tower holding it: the whole
    tower). ``domains[name] = (item texts, neighbour pairs)``.

    Returns per-epoch records {epoch, loss, steps, seconds}. Batches never mix domains, so
    in-batch negatives come from the same catalogue. Runs the one training loop
    (``training/engine``): with ``checkpoints`` a resumable state is written at every epoch end
    (and every ``checkpoint_every`` steps, and on SIGTERM/SIGINT, which then exits with
    EXIT_PREEMPTED); ``resume`` continues exactly where it stopped; ``grad_clip`` > 0 clips the
    gradient norm of every step (0: no clipping).
    """
    task = Pretrain(backbone, domains, objective, batch_size, tau, max_length, pooling, seed, max_steps, adversary, tower)
    params = [p for p in task.module().parameters() if p.requires_grad]
    if not params:
        raise ValueError("the backbone has no trainable parameters (adapter=frozen?)")
    opt = torch.optim.AdamW(params, lr=lr)
    task.module().train()
    settings = LoopSettings(epochs, grad_clip, checkpoint_every, keep_last=2, progress=progress, label="pretrain",
                            precision=precision)
    prog = run(task, opt, settings, checkpoints, resume and checkpoints is not None, log_metrics)
    task.module().eval()
    return prog.history
