"""Domain-adaptive contrastive pretraining of the item tower's language model.

Objectives (InfoNCE over the batch, temperature ``tau``):
- ``contrastive``: two dropout views of the same item text are positives (SimCSE);
- ``neighbors``: an item and the next item in some user's history are positives.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
import torch.nn.functional as F

from crossrec_cli.adapters import adapter_loss, adapter_step_hook
from crossrec_cli.models.backbone import Backbone
from crossrec_cli.models.encode import forward_pool

log = logging.getLogger("crossrec")


def neighbor_pairs(train_seqs: list[np.ndarray]) -> np.ndarray:
    """(n, 2) item index pairs of consecutive items in training sequences."""
    pairs = [np.stack([s[:-1], s[1:]], 1) for s in train_seqs if len(s) > 1]
    return np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=np.int64)


def info_nce(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """Row i of ``a`` should match row i of ``b`` among all rows of ``b``: (B, d), (B, d) -> ()."""
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / tau
    return F.cross_entropy(logits, torch.arange(len(a), device=a.device))


def pretrain_item_tower(backbone: Backbone, domains: dict[str, tuple[list[str], np.ndarray]], objective: str,
                        epochs: int, batch_size: int, lr: float, tau: float, max_length: int, pooling: str,
                        seed: int, max_steps: int | None = None, on_step=None) -> list[dict]:
    """Train ``backbone.model`` in place. ``domains[name] = (item texts, neighbour pairs)``.

    Returns per-epoch records {epoch, loss, steps, seconds}. Batches never mix domains, so
    in-batch negatives come from the same catalogue.
    """
    params = [p for p in backbone.model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the backbone has no trainable parameters (adapter=frozen?)")
    opt = torch.optim.AdamW(params, lr=lr)
    backbone.model.train()
    history = []
    global_step = 0
    for epoch in range(epochs):
        rng = np.random.default_rng([seed, epoch])
        batches = []
        for name in sorted(domains):
            texts, pairs = domains[name]
            if objective == "contrastive":
                order = rng.permutation(len(texts))
                batches += [(name, order[a : a + batch_size]) for a in range(0, len(order), batch_size)]
            else:
                order = rng.permutation(len(pairs))
                batches += [(name, pairs[order[a : a + batch_size]]) for a in range(0, len(order), batch_size)]
        batches = [batches[i] for i in rng.permutation(len(batches))][: max_steps or None]
        t0, total = time.perf_counter(), 0.0
        for step, (name, idx) in enumerate(batches):
            texts = domains[name][0]
            if objective == "contrastive":
                batch = [texts[i] for i in idx]
                a = forward_pool(backbone, batch, max_length, pooling)
                b = forward_pool(backbone, batch, max_length, pooling)  # a second dropout view
            else:
                idx = idx[np.unique(idx[:, 0], return_index=True)[1]]  # one pair per anchor item
                a = forward_pool(backbone, [texts[i] for i in idx[:, 0]], max_length, pooling)
                b = forward_pool(backbone, [texts[i] for i in idx[:, 1]], max_length, pooling)
            if len(a) < 2:
                continue
            loss = info_nce(a, b, tau) + adapter_loss(backbone.model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            adapter_step_hook(backbone.model, global_step)
            global_step += 1
            total += float(loss.detach())
            if on_step is not None:
                on_step(float(loss.detach()), step)
        rec = {"epoch": epoch + 1, "loss": total / max(1, len(batches)), "steps": len(batches),
               "seconds": time.perf_counter() - t0}
        log.info("pretrain epoch %d loss %.4f (%d steps, %.1fs)", rec["epoch"], rec["loss"], rec["steps"], rec["seconds"])
        history.append(rec)
    backbone.model.eval()
    return history
