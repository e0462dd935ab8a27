"""Training windows over time-ordered sequences: every position after the first is a target."""

from __future__ import annotations

import numpy as np
import torch

from crossrec_cli.data.split import Split


def windows(split: Split, max_history: int) -> list[np.ndarray]:
    """Cut each training sequence into windows of at most ``max_history + 1`` items so that every
    target position is predicted exactly once, with up to ``max_history`` items of context."""
    out = []
    for seq in split.train_seqs:
        end = len(seq)
        while end > 1:
            start = max(0, end - max_history - 1)
            out.append(seq[start:end])
            end -= max_history
    return out


def collate(batch: list[np.ndarray], max_history: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded inputs (B, L) and targets (B, L), -1 = no target / padding."""
    inp = torch.full((len(batch), max_history), -1, dtype=torch.long)
    tgt = torch.full((len(batch), max_history), -1, dtype=torch.long)
    for i, w in enumerate(batch):
        n = len(w) - 1
        inp[i, max_history - n:] = torch.as_tensor(w[:-1], dtype=torch.long)
        tgt[i, max_history - n:] = torch.as_tensor(w[1:], dtype=torch.long)
    return inp, tgt


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of training windows for an epoch: a pure function of (seed, epoch), so a
    resumed run visits batches in exactly the same order."""
    return np.random.default_rng([seed, epoch]).permutation(n)
