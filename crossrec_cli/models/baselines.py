"""Untrained baselines scored by the same evaluator: popularity and text zero-shot."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from crossrec_cli.data.split import EvalSet


def popularity_vectors(train_counts: np.ndarray, n_users: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Item vectors (N, 1) = training counts, user vectors (n, 1) = 1, so score = count."""
    items = torch.as_tensor(train_counts, dtype=torch.float64).unsqueeze(1)
    return torch.ones(n_users, 1, dtype=torch.float64), items


def mean_history_vectors(item_vecs: torch.Tensor, evalset: EvalSet, history: int = 50) -> torch.Tensor:
    """(n, d): mean of the L2-normalised vectors of each example's last ``history`` items.

    An empty history gives a zero vector (every item ties; ties follow item order).
    """
    normed = F.normalize(item_vecs.float(), dim=-1)
    out = torch.zeros(len(evalset), normed.shape[1])
    for i, hist in enumerate(evalset.histories):
        if len(hist):
            out[i] = normed[torch.as_tensor(hist[-history:], dtype=torch.long)].mean(0)
    return out
