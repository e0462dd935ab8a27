"""Domain-adaptive contrastive pretraining of the item tower's language model.

Objectives (InfoNCE over the batch, temperature ``tau``):
- ``contrastive``: two dropout views of the same item text are positives (SimCSE);
- ``neighbors``: an item and the next item in some user's history are positives.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from crossrec_cli.adapters import adapter_loss, adapter_step_hook
from crossrec_cli.models.backbone import Backbone
from crossrec_cli.models.encode import forward_pool
from crossrec_cli.registry import Registry

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

    def views(self, backbone: Backbone, texts: list[str], idx: np.ndarray, max_length: int, pooling: str):
        raise NotImplementedError


class Contrastive(Objective):
    """SimCSE: an item text against itself under a second dropout mask."""

    def units(self, texts, pairs):
        return np.arange(len(texts))

    def views(self, backbone, texts, idx, max_length, pooling):
        batch = [texts[i] for i in idx]
        return forward_pool(backbone, batch, max_length, pooling), forward_pool(backbone, batch, max_length, pooling)


class Neighbors(Objective):
    """An item against the next item of some user's history."""

    def units(self, texts, pairs):
        return pairs

    def views(self, backbone, texts, idx, max_length, pooling):
        idx = idx[np.unique(idx[:, 0], return_index=True)[1]]  # one pair per anchor item
        return (forward_pool(backbone, [texts[i] for i in idx[:, 0]], max_length, pooling),
                forward_pool(backbone, [texts[i] for i in idx[:, 1]], max_length, pooling))


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


def _save(folder: Path, backbone: Backbone, opt, state: dict) -> None:
    from safetensors.torch import save_file

    from crossrec_cli.training import checkpoint as ckpt
    from crossrec_cli.training.state import flatten, rng_state

    weights = {n: p.detach().cpu().contiguous() for n, p in backbone.model.named_parameters() if p.requires_grad}
    o_t, o_s = flatten(opt.state_dict(), "opt")
    r_t, r_s = flatten(rng_state(), "rng")
    ckpt.write_checkpoint(folder / f"step-{state['step']}", {
        "weights.safetensors": lambda p: save_file(weights, p),
        "optimizer.safetensors": lambda p: save_file(o_t or {"_": torch.zeros(0)}, p),
        "rng.safetensors": lambda p: save_file(r_t, p),
        "state.json": lambda p: Path(p).write_text(json.dumps({"state": state, "optimizer": o_s, "rng": r_s})),
    }, meta={"step": state["step"]})
    ckpt.prune(folder, keep_last=2)


def _restore(folder: Path, backbone: Backbone, opt) -> dict | None:
    from crossrec_cli.io import read_safetensors
    from crossrec_cli.training import checkpoint as ckpt
    from crossrec_cli.training.state import set_rng_state, unflatten

    latest = ckpt.latest_verified(folder)
    if latest is None:
        return None
    st = json.loads((latest / "state.json").read_text())
    backbone.model.load_state_dict(read_safetensors(latest / "weights.safetensors"), strict=False)
    opt.load_state_dict(unflatten(st["optimizer"], read_safetensors(latest / "optimizer.safetensors")))
    set_rng_state(unflatten(st["rng"], read_safetensors(latest / "rng.safetensors")))
    log.info("pretrain resumed from %s", latest)
    return st["state"]


def pretrain_item_tower(backbone: Backbone, domains: dict[str, tuple[list[str], np.ndarray]], objective: str,
                        epochs: int, batch_size: int, lr: float, tau: float, max_length: int, pooling: str,
                        seed: int, max_steps: int | None = None, checkpoints: Path | None = None,
                        resume: bool = False, checkpoint_every: int = 0,
                        log_metrics: Callable[[dict[str, float], int], None] | None = None) -> list[dict]:
    """Train ``backbone.model`` in place. ``domains[name] = (item texts, neighbour pairs)``.

    Returns per-epoch records {epoch, loss, steps, seconds}. Batches never mix domains, so
    in-batch negatives come from the same catalogue. With ``checkpoints`` a resumable state is
    written at every epoch end (and every ``checkpoint_every`` steps, and on SIGTERM/SIGINT,
    which then exits with EXIT_PREEMPTED); ``resume`` continues exactly where it stopped.
    """
    from crossrec_cli.training.preempt import EXIT_PREEMPTED, StopFlag

    params = [p for p in backbone.model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the backbone has no trainable parameters (adapter=frozen?)")
    opt = torch.optim.AdamW(params, lr=lr)
    backbone.model.train()
    st = {"epoch": 0, "batch": 0, "step": 0, "loss": 0.0, "seconds": 0.0, "history": []}
    if resume and checkpoints is not None:
        st = _restore(checkpoints, backbone, opt) or st
    with StopFlag() as stop:
        while st["epoch"] < epochs:
            batches = _plan(domains, objective, batch_size, seed, st["epoch"], max_steps)
            while st["batch"] < len(batches):
                t0 = time.perf_counter()
                name, idx = batches[st["batch"]]
                loss = _step(backbone, opt, domains[name][0], idx, objective, tau, max_length, pooling, st["step"])
                st["loss"] += loss
                if log_metrics is not None:
                    log_metrics({"pretrain/loss": loss}, st["step"] + 1)
                st["batch"] += 1
                st["step"] += 1
                st["seconds"] += time.perf_counter() - t0
                if checkpoints is not None and (stop.stop or (checkpoint_every and st["step"] % checkpoint_every == 0)):
                    _save(checkpoints, backbone, opt, st)
                if stop.stop:
                    raise SystemExit(EXIT_PREEMPTED)
            rec = {"epoch": st["epoch"] + 1, "loss": st["loss"] / max(1, len(batches)), "steps": len(batches),
                   "seconds": st["seconds"]}
            log.info("pretrain epoch %d loss %.4f (%d steps, %.1fs)", rec["epoch"], rec["loss"], rec["steps"], rec["seconds"])
            st["history"].append(rec)
            st.update(epoch=st["epoch"] + 1, batch=0, loss=0.0, seconds=0.0)
            if checkpoints is not None:
                _save(checkpoints, backbone, opt, st)
    backbone.model.eval()
    return st["history"]


def _step(backbone, opt, texts, idx, objective, tau, max_length, pooling, step) -> float:
    a, b = OBJECTIVES.get(objective).views(backbone, texts, idx, max_length, pooling)
    if len(a) < 2:
        return 0.0
    loss = info_nce(a, b, tau) + adapter_loss(backbone.model)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    adapter_step_hook(backbone.model, step)
    return float(loss.detach())
