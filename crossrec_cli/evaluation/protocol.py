"""One evaluation protocol for every model: valid + test, full ranking or candidate lists."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from crossrec_cli.data.split import EvalSet, Split
from crossrec_cli.errors import CrossrecError
from crossrec_cli.evaluation.metrics import rank_metrics
from crossrec_cli.evaluation.ranking import candidate_ranks, full_ranks

UserVectors = Callable[[EvalSet], torch.Tensor]


def restrict_to_candidates(evalset: EvalSet, candidates: dict[int, np.ndarray], source: str) -> tuple[EvalSet, list[np.ndarray]]:
    """Keep only listed users; every list must contain that user's target."""
    listed = np.isin(evalset.users, np.fromiter(candidates, dtype=np.int64))
    sub = evalset.subset(listed)
    missing = set(candidates) - set(sub.users.tolist())
    if missing:
        raise CrossrecError(source, f"{len(missing)} listed users have no test example", "list only evaluated users")
    cands = []
    for u, t in zip(sub.users.tolist(), sub.targets.tolist()):
        if t not in set(candidates[u].tolist()):
            raise CrossrecError(source, f"candidates of user index {u} miss the test item", "each list must contain the user's test item")
        cands.append(candidates[u])
    return sub, cands


def evaluate_split(
    user_vectors: UserVectors,
    item_vecs: torch.Tensor,
    split: Split,
    topk: list[int],
    exclude_seen: bool = False,
    candidates: dict[int, np.ndarray] | None = None,
    candidates_source: str = "eval.candidates",
    user_chunk: int = 512,
    item_chunk: int = 65536,
    parts: tuple[str, ...] = ("valid", "test"),
) -> dict[str, dict[str, float]]:
    """``{"valid": metrics, "test": metrics}``; each example's own history is the model input.
    ``parts=("valid",)`` ranks the validation split only (early stopping never touches test).

    With ``candidates`` the test examples are ranked within their user's list (listed users
    only); validation always ranks the full catalogue (it drives early stopping).
    """
    out: dict[str, dict[str, float]] = {}
    for name, evalset in (("valid", split.valid), ("test", split.test)):
        if name not in parts:
            continue
        if name == "test" and candidates is not None:
            sub, cands = restrict_to_candidates(evalset, candidates, candidates_source)
            ranks = candidate_ranks(user_vectors(sub), item_vecs, sub.targets, cands)
        else:
            if len(evalset) == 0:
                out[name] = {}
                continue
            exclude = evalset.histories if exclude_seen else None
            ranks = full_ranks(user_vectors(evalset), item_vecs, evalset.targets, exclude, user_chunk, item_chunk)
        out[name] = rank_metrics(ranks, topk)
        out[name]["examples"] = int(len(ranks))
    return out
