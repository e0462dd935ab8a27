"""Untrained baselines scored by the same evaluator: popularity and text zero-shot."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from crossrec_cli.data.split import EvalSet
from crossrec_cli.errors import CrossrecError


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
