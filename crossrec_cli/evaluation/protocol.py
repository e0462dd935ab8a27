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


def sample_examples(evalset: EvalSet, n: int, seed: int) -> EvalSet:
    """A seeded sample of ``n`` examples in their original order (all of them when n >= len)."""
    if n >= len(evalset):
        return evalset
    keep = np.zeros(len(evalset), dtype=bool)
    keep[np.random.default_rng([seed, 1009]).choice(len(evalset), size=n, replace=False)] = True
    return evalset.subset(keep)


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
    *,
    score_dtype: str = "float32",
    device: torch.device | str | None = None,
    valid_users: int | None = None,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """``{"valid": metrics, "test": metrics}``; each example's own history is the model input.
    ``parts=("valid",)`` ranks the validation split only (early stopping never touches test).

    With ``candidates`` the test examples are ranked within their user's list (listed users
    only); validation always ranks the full catalogue (it drives early stopping).
    ``score_dtype`` / ``device``: how ``full_ranks`` scores (the ranks are the same).
    ``valid_users=N`` ranks a fixed sample of N validation examples (the same N for every
    call with the same ``seed``: the early-stopping signal of large domains, cheaply).
    """
    out: dict[str, dict[str, float]] = {}
    for name, evalset in (("valid", split.valid), ("test", split.test)):
        if name not in parts:
            continue
        if name == "valid" and valid_users is not None:
            evalset = sample_examples(evalset, valid_users, seed)
        if name == "test" and candidates is not None:
            sub, cands = restrict_to_candidates(evalset, candidates, candidates_source)
            ranks = candidate_ranks(user_vectors(sub), item_vecs, sub.targets, cands)
        else:
            if len(evalset) == 0:
                out[name] = {}
                continue
            exclude = own_items(evalset.histories, item_vecs.shape[0]) if exclude_seen else None
            ranks = full_ranks(user_vectors(evalset), item_vecs, evalset.targets, exclude, user_chunk, item_chunk,
                               score_dtype, device)
        out[name] = rank_metrics(ranks, topk)
        out[name]["examples"] = int(len(ranks))
    return out


def own_items(histories: list[np.ndarray], n_items: int) -> list[np.ndarray]:
    """Each history's items of the ranked catalogue (0..n_items-1): a mixed history's items of
    another domain (indices from n_items on, data/context.py) are inputs, never seen candidates."""
    return [h[h < n_items] for h in histories]


def test_report(
    user_vectors: UserVectors,
    item_vecs: torch.Tensor,
    split: Split,
    topk: list[int],
    exclude_seen: bool = False,
    groups: dict[str, np.ndarray] | None = None,
    user_chunk: int = 512,
    item_chunk: int = 65536,
    *,
    score_dtype: str = "float32",
    device: torch.device | str | None = None,
    seed: int = 0,
) -> dict[str, dict]:
    """What the test users are recommended, beyond hitting their target: ``beyond_accuracy`` of
    their top-k lists (each k of ``topk``) against the training popularity (evaluation/beyond.py), and with
    ``groups`` (user column -> label per user index) the test metrics of each group and their gap,
    and ``fairness``: how well each column is read from the user vectors (evaluation/fairness.py,
    its held-out users drawn with ``seed``)."""
    from crossrec_cli.evaluation.beyond import beyond_accuracy
    from crossrec_cli.evaluation.groups import group_metrics
    from crossrec_cli.evaluation.ranking import top_items

    ev = split.test
    if not len(ev):
        return {}
    users = user_vectors(ev)
    n = item_vecs.shape[0]
    own = own_items(ev.histories, n)
    exclude = own if exclude_seen else None
    k = max(topk)
    top, _ = top_items(users, item_vecs, k, exclude, user_chunk)
    counts = split.train_item_counts(n)[:n]
    beyond: dict[str, float] = {}
    for kk in topk:  # one top-k list, read at every k
        beyond |= beyond_accuracy(top, counts, own, kk)
    out: dict[str, dict] = {"beyond_accuracy": beyond}
    if groups:
        ranks = full_ranks(users, item_vecs, ev.targets, exclude, user_chunk, item_chunk, score_dtype, device)
        out["groups"] = group_metrics(ranks, ev.users, groups, topk)
        from crossrec_cli.evaluation.fairness import attribute_leakage

        out["fairness"] = attribute_leakage(user_vectors, split, groups, seed)
    return out


def groups_of(spec, domain) -> dict[str, np.ndarray] | None:
    """The domain file's ``user_groups`` as labels per user index (None without the key)."""
    if not spec.user_groups:
        return None
    from crossrec_cli.data.groups import user_groups

    return user_groups(domain.user_ids, domain.user_attributes, spec.user_groups, f"domain.{spec.name}.user_groups")


def extras_by_key(per_domain: dict[str, dict[str, dict]]) -> dict[str, dict[str, dict]]:
    """{domain: {"beyond_accuracy": .., "groups": ..}} -> {"beyond_accuracy": {domain: ..}, ...}
    (the metrics.json layout: one top-level key, keyed by domain like ``test``)."""
    out: dict[str, dict[str, dict]] = {}
    for name, parts in per_domain.items():
        for key, value in parts.items():
            out.setdefault(key, {})[name] = value
    return out
