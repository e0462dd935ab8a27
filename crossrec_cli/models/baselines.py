"""Untrained baselines scored by the same evaluator: popularity and text zero-shot.

Each baseline is a builder registered in ``BASELINES`` under its ``model.name`` (one config file
in conf/model/): ``builder(ctx, domain, split) -> (user_vectors(evalset), item vectors)``. A new
baseline is one module in crossrec_cli/models/ with a registered builder, plus its config file.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from crossrec_cli.data.split import EvalSet, Split
from crossrec_cli.errors import CrossrecError
from crossrec_cli.registry import Registry


@dataclass
class BaselineContext:
    """What a baseline may read: its own ``model.*`` keys, the backbone config, the run's seed
    and vector-cache choice, and a cache shared across the domains of one command."""

    model: dict[str, Any]
    backbone: dict[str, Any]
    seed: int = 0
    cache_vectors: bool = True
    shared: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"


Scorer = tuple[Callable[[EvalSet], torch.Tensor], torch.Tensor]
BASELINES: Registry[Callable[[BaselineContext, Any, Split], Scorer]] = Registry("baseline", "model", "crossrec_cli.models")


def popularity_vectors(train_counts: np.ndarray, n_users: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Item vectors (N, 1) = training counts, user vectors (n, 1) = 1, so score = count."""
    items = torch.as_tensor(train_counts, dtype=torch.float64).unsqueeze(1)
    return torch.ones(n_users, 1, dtype=torch.float64), items


def check_recency(value) -> float:
    """``model.recency`` as a float in (0, 1]; anything else is a one-line CrossrecError."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 < value <= 1
    if not ok:
        raise CrossrecError("model.recency", f"expected a number in (0, 1], got {value!r}",
                            "e.g. model.recency=0.8 (1.0 = plain mean of the history)")
    return float(value)


def recency_weights(length: int, recency: float) -> torch.Tensor:
    """(length,) weights, oldest first: ``recency**(length-1), ..., recency, 1`` (newest = 1)."""
    return torch.tensor([recency ** (length - 1 - j) for j in range(length)], dtype=torch.float32)


def mean_history_vectors(item_vecs: torch.Tensor, evalset: EvalSet, history: int = 50,
                         recency: float = 1.0) -> torch.Tensor:
    """(n, d): weighted mean of the L2-normalised vectors of each example's last ``history`` items.

    The newest item weighs 1, the one before ``recency``, then ``recency**2``, ... (exponential
    decay); ``recency=1.0`` is the plain mean. An empty history gives a zero vector (every item
    ties; ties follow item order).
    """
    recency = check_recency(recency)
    normed = F.normalize(item_vecs.float(), dim=-1)
    out = torch.zeros(len(evalset), normed.shape[1])
    for i, hist in enumerate(evalset.histories):
        if len(hist):
            vecs = normed[torch.as_tensor(hist[-history:], dtype=torch.long)]
            if recency == 1.0:
                out[i] = vecs.mean(0)  # exactly the pre-recency computation
            else:
                w = recency_weights(len(vecs), recency)
                out[i] = (w.unsqueeze(1) * vecs).sum(0) / w.sum()
    return out


@BASELINES.register("popularity")
def popularity(ctx: BaselineContext, domain: Any, split: Split) -> Scorer:
    """Score = the item's training count, the same for every user."""
    counts = split.train_item_counts(domain.n_items)
    _, items = popularity_vectors(counts, 1)
    return (lambda ev: popularity_vectors(counts, len(ev))[0]), items


@BASELINES.register("text_zeroshot")
def text_zeroshot(ctx: BaselineContext, domain: Any, split: Split) -> Scorer:
    """Cosine between an item's LM vector and the recency-weighted mean of the history's."""
    from crossrec_cli.models.backbone import build_backbone, resolve_device
    from crossrec_cli.models.encode import cached_text_vectors
    from crossrec_cli.models.features.text import TEXT_NORMS

    recency = check_recency(ctx.model.get("recency", 1.0))
    b = ctx.backbone
    if "backbone" not in ctx.shared:
        if b.get("kind") == "none":
            raise CrossrecError("backbone", "text_zeroshot needs a language model", "choose backbone=minilm (or tiny)")
        dev = resolve_device(ctx.device)
        ctx.shared["backbone"] = build_backbone(b["name"], b.get("path"), b.get("local"), b.get("config"), b["kind"],
                                                ctx.seed, bool(b.get("trust_remote_code", False)),
                                                runtime=b.get("runtime", "torch"))
        ctx.shared["backbone"].model.to(dev)
    items = cached_text_vectors(ctx.shared["backbone"], domain.item_text, b["max_length"], b["pooling"],
                                cache=ctx.cache_vectors)
    items = TEXT_NORMS.get(str(ctx.model.get("text_norm", "none")))(items, items)  # by this domain's own catalogue
    history = int(ctx.model.get("history", 50))
    return (lambda ev: mean_history_vectors(items, ev, history, recency)), F.normalize(items, dim=-1)


# LM vectors and the user's own history only, no training interaction: eval.test_users=all may rank training users
text_zeroshot.reads_interactions = False
