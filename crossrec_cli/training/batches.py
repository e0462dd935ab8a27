"""Training windows over time-ordered sequences: every position after the first is a target."""

from __future__ import annotations

import numpy as np
import torch

from crossrec_cli.data.split import Split

Window = tuple[np.ndarray, int]  # (items, how many of its last positions are targets)


def windows(split: Split, max_history: int, stride: int | None = None) -> list[Window]:
    """Cut each training sequence into windows of at most ``max_history + 1`` items so that every
    target position is predicted exactly once, with up to ``max_history`` items of context.

    ``stride`` (default ``max_history``: windows do not overlap) is how many targets each window
    adds; a smaller stride makes windows overlap, so every target except a sequence's first
    ``max_history - stride`` sees at least ``max_history - stride`` items of context, as at
    evaluation time (stride 1 is RecBole's one-sample-per-prefix augmentation). The compute per
    epoch grows by ``max_history / stride``; the number of targets does not.
    """
    return [w for seq in split.train_seqs for w in _cut(seq, max_history, stride or max_history)]


def _cut(seq: np.ndarray, max_history: int, step: int) -> list[Window]:
    out = []
    end = len(seq)
    while end > 1:
        start = max(0, end - max_history - 1)
        out.append((seq[start:end], min(step, end - start - 1)))
        end -= step
    return out


def window_users(split: Split, max_history: int, stride: int | None = None) -> np.ndarray:
    """The user index (``split.train_users``) of each window of ``windows(split, ...)``, in order."""
    counts = [len(_cut(seq, max_history, stride or max_history)) for seq in split.train_seqs]
    return np.repeat(np.asarray(split.train_users, dtype=np.int64), counts)


def collate(batch: list[Window], max_history: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded inputs (B, L) and targets (B, L), -1 = no target / padding / context only."""
    inp = torch.full((len(batch), max_history), -1, dtype=torch.long)
    tgt = torch.full((len(batch), max_history), -1, dtype=torch.long)
    for i, (w, k) in enumerate(batch):
        n = len(w) - 1
        inp[i, max_history - n:] = torch.as_tensor(w[:-1], dtype=torch.long)
        tgt[i, max_history - k:] = torch.as_tensor(w[len(w) - k:], dtype=torch.long)
    return inp, tgt


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of training windows for an epoch: a pure function of (seed, epoch), so a
    resumed run visits batches in exactly the same order."""
    return np.random.default_rng([seed, epoch]).permutation(n)
