"""Rank each example's target among all items (or its candidate list), in memory-bounded chunks.

Ties are broken by item order (the item file's first row first), so a constant scorer cannot
look good by luck, and popularity ties follow the item file as the protocol says.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from crossrec_cli.data.table import read_text
from crossrec_cli.errors import CrossrecError
from crossrec_cli.progress import chunks

# Relative size of a near-tie: a float64 dot product of length d rounds by about d * 1e-16 of
# |u| |v|. Only near-ties are compared vector by vector, so a generous bound costs nothing.
NEAR_TIE = 1e-9


def _better(s: torch.Tensor, ts: torch.Tensor, cols: torch.Tensor, t: torch.Tensor, items: torch.Tensor,
            tol: torch.Tensor) -> torch.Tensor:
    """(R, C) bool: column item ``cols[j]`` ranks above row r's target ``t[r]``.

    s: (R, C) scores; ts: (R, 1) the targets' scores; tol: (R, 1) near-tie size. Higher score
    first, ties by item order. An item with exactly the target's vector (duplicate texts: ml-100k
    has 36) ties by item order too, whatever rounding did: MKL rounds the same dot product
    differently in different columns of one product (1-row products, edge tiles).
    """
    better = (s > ts) | ((s == ts) & (cols < t.unsqueeze(1)))
    better &= cols != t.unsqueeze(1)  # the target never outranks itself
    r, j = ((s != ts) & ((s - ts).abs() <= tol)).nonzero(as_tuple=True)
    if len(r):
        twin = (items[cols[j]] == items[t[r]]).all(-1)
        r, j = r[twin], j[twin]
        better[r, j] = cols[j] < t[r]
    return better


def _better_pairs(s: torch.Tensor, ts: torch.Tensor, c: torch.Tensor, t: torch.Tensor, items: torch.Tensor,
                  tol: torch.Tensor) -> torch.Tensor:
    """``_better`` for single (score, target score, column, target, tolerance) pairs, all 1-D."""
    better = ((s > ts) | ((s == ts) & (c < t))) & (c != t)
    near = (s != ts) & ((s - ts).abs() <= tol)
    if near.any():
        twin = near.clone()
        twin[near] = (items[c[near]] == items[t[near]]).all(-1)
        better[twin] = c[twin] < t[twin]
    return better


def _exclusions(exclude: list[np.ndarray], targets: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(example, item) pairs to remove, the target never among them; sorted by example."""
    lens = np.fromiter((len(e) for e in exclude), dtype=np.int64, count=len(exclude))
    rows = np.repeat(np.arange(len(exclude)), lens)
    cols = np.concatenate([np.asarray(e, dtype=np.int64) for e in exclude]) if len(rows) else rows
    keep = cols != targets.numpy()[rows]
    return rows[keep], cols[keep]


def _unit_roundoff(dev: torch.device) -> float:
    """The float32 product's unit roundoff on ``dev``: TF32 / bf16 matmuls round far coarser."""
    if dev.type == "cuda":
        prec = torch.get_float32_matmul_precision()
        return {"highest": 2.0**-24, "high": 2.0**-11}.get(prec, 2.0**-8)
    return 2.0**-24


SCORE_DTYPES = ("float32", "float64")


def full_ranks(
    user_vecs: torch.Tensor,
    item_vecs: torch.Tensor,
    targets: np.ndarray,
    exclude: list[np.ndarray] | None = None,
    user_chunk: int = 512,
    item_chunk: int = 65536,
    score_dtype: str = "float32",
    device: torch.device | str | None = None,
) -> np.ndarray:
    """0-based rank of ``targets[i]`` under scores ``user_vecs[i] @ item_vecs.T``.

    user_vecs: (n, d); item_vecs: (N, d); targets: (n,). ``exclude[i]`` lists items removed
    from example i's ranking (its seen items; the target itself is never removed). Peak memory
    is user_chunk x item_chunk scores, never n x N.

    ``score_dtype="float64"`` scores every item in float64. ``"float32"`` (the default, on
    ``device``) scores in float32 and recomputes in float64 only the items whose float32 score is
    within the float32 rounding bound of the target's: every other item is on the same side of
    the target in both, so the ranks are the float64 ranks at a fraction of the cost.
    """
    if score_dtype not in SCORE_DTYPES:
        raise CrossrecError("eval.score_dtype", f"unknown value {score_dtype!r}", f"one of {', '.join(SCORE_DTYPES)}")
    n, n_items = user_vecs.shape[0], item_vecs.shape[0]
    items = item_vecs.detach().to("cpu", torch.float64)
    tgt = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    item_norm = items.norm(dim=1).max() if n_items else torch.tensor(0.0, dtype=torch.float64)
    ranks = np.zeros(n, dtype=np.int64)
    ex_rows, ex_cols = _exclusions(exclude, tgt) if exclude is not None else (None, None)
    fast = score_dtype == "float32"
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if fast:
        items_s = item_vecs.detach().to(dev, torch.float32)
        # |float32 dot - exact| <= gamma |u| |v| (d products and sums, plus rounding the inputs to
        # float32); two such scores differ from their exact difference by at most twice that
        gamma = (items.shape[1] + 2) * _unit_roundoff(dev)
        gamma = 2 * gamma / (1 - gamma)
    for a in chunks("rank users", n, user_chunk):
        u = user_vecs[a : a + user_chunk].detach().to("cpu", torch.float64)
        t_idx = tgt[a : a + user_chunk]
        unorm = u.norm(dim=1, keepdim=True)
        tol = NEAR_TIE * unorm * item_norm
        if ex_rows is not None:
            lo, hi = np.searchsorted(ex_rows, [a, a + len(u)])
            rows_c, cols_c = torch.as_tensor(ex_rows[lo:hi] - a), torch.as_tensor(ex_cols[lo:hi])
        if fast:
            ranks[a : a + len(u)] = _ranks_fast(u, items, items_s, t_idx, tol, gamma * unorm * item_norm,
                                                rows_c if ex_rows is not None else None,
                                                cols_c if ex_rows is not None else None, item_chunk, dev)
            continue
        t_score = None
        if n_items > item_chunk:  # several chunks: the target's score from its own vectors
            t_score = (u * items[t_idx]).sum(-1, keepdim=True)
        count = torch.zeros(len(u), dtype=torch.long)
        for b in range(0, n_items, item_chunk):
            s = u @ items[b : b + item_chunk].T
            if t_score is None:  # one chunk: read the target's score from the same product
                t_score = s.gather(1, t_idx.unsqueeze(1)).clone()
            if ex_rows is not None:
                inside = (cols_c >= b) & (cols_c < b + s.shape[1])
                s[rows_c[inside], cols_c[inside] - b] = -torch.inf
            cols = torch.arange(b, b + s.shape[1])
            count += _better(s, t_score, cols, t_idx, items, tol).sum(1)
        ranks[a : a + len(u)] = count.numpy()
    return ranks


def _ranks_fast(u: torch.Tensor, items: torch.Tensor, items_s: torch.Tensor, t_idx: torch.Tensor, tol: torch.Tensor,
                band: torch.Tensor, ex_rows: torch.Tensor | None, ex_cols: torch.Tensor | None, item_chunk: int,
                dev: torch.device) -> np.ndarray:
    """One user chunk of ``full_ranks``'s float32 path. u, items, tol, band: float64 on the CPU
    (band: the float32 error bound per row); items_s: float32 on ``dev``."""
    n_items = items.shape[0]
    us = u.to(dev, torch.float32)
    td = t_idx.to(dev)
    t_score = (us * items_s[td]).sum(-1, keepdim=True) if n_items > item_chunk else None
    width = (band + tol).to(dev, torch.float32)  # also holds every float64 near-tie
    count = torch.zeros(len(u), dtype=torch.long, device=dev)
    pairs_r, pairs_c = [], []
    for b in range(0, n_items, item_chunk):
        s = us @ items_s[b : b + item_chunk].T
        if t_score is None:
            t_score = s.gather(1, td.unsqueeze(1)).clone()
        if ex_rows is not None:
            inside = (ex_cols >= b) & (ex_cols < b + s.shape[1])
            s[ex_rows[inside].to(dev), (ex_cols[inside] - b).to(dev)] = -torch.inf
        diff = s - t_score
        count += (diff > width).sum(1)
        r, j = (diff.abs() <= width).nonzero(as_tuple=True)
        pairs_r.append(r.cpu())
        pairs_c.append(j.cpu() + b)
    count = count.cpu()
    r, c = torch.cat(pairs_r), torch.cat(pairs_c)
    t = t_idx[r]
    keep = c != t  # the target's own column
    r, c, t = r[keep], c[keep], t[keep]
    if len(r):  # the near-ties, in float64 exactly as the float64 path decides them
        s64 = (u[r] * items[c]).sum(-1)
        ts64 = (u[r] * items[t]).sum(-1)
        better = _better_pairs(s64, ts64, c, t, items, tol[r, 0])
        count.index_add_(0, r, better.long())
    return count.numpy()


def candidate_ranks(
    user_vecs: torch.Tensor, item_vecs: torch.Tensor, targets: np.ndarray, candidates: list[np.ndarray]
) -> np.ndarray:
    """0-based rank of ``targets[i]`` among ``candidates[i]`` (the target is added if missing).

    user_vecs: (n, d); item_vecs: (N, d); targets: (n,). The target's score is read from the
    same product as its candidates' scores.
    """
    ranks = np.zeros(len(targets), dtype=np.int64)
    items = item_vecs.detach().to(torch.float64)
    users = user_vecs.detach().to(torch.float64)
    for i, (t, cand) in enumerate(zip(targets, candidates)):
        cols = torch.as_tensor(np.unique(np.append(cand, int(t))), dtype=torch.long)
        s = users[i : i + 1] @ items[cols].T  # (1, C)
        ts = s[:, cols == int(t)]
        tol = NEAR_TIE * users[i].norm() * items[cols].norm(dim=1).max()
        ranks[i] = int(_better(s, ts, cols, torch.tensor([int(t)]), items, tol.reshape(1, 1)).sum())
    return ranks


def candidate_lists(value: str, domain) -> dict[int, np.ndarray]:
    """``eval.candidates``: ``published`` (the lists a benchmark publishes with its data, rebuilt by
    its reader: format cdsr, ``data/cdsr.py``) or a FILE read by ``read_candidates``."""
    if value == "published":
        from crossrec_cli.data.cdsr import published_candidates

        return published_candidates(domain)
    return read_candidates(value, {u: i for i, u in enumerate(domain.user_ids)},
                           {t: i for i, t in enumerate(domain.item_ids)})


def read_candidates(path: str | Path, user_index: dict[str, int], item_index: dict[str, int]) -> dict[int, np.ndarray]:
    """Read ``user_id<TAB>item ids separated by spaces``; returns user index -> item indices."""
    path = Path(path).expanduser()
    out: dict[int, np.ndarray] = {}
    for lineno, row in enumerate(read_text(path).splitlines(), start=1):
        if not row.strip():
            continue
        if "\t" not in row:
            raise CrossrecError(str(path), "no tab after the user id", "expected user_id<TAB>item ids", line=lineno)
        uid, rest = row.split("\t", 1)
        if uid not in user_index:
            raise CrossrecError(str(path), f"unknown user id {uid!r}", "not a user of the domain", line=lineno, col=1)
        ids = rest.split()
        if not ids:
            raise CrossrecError(str(path), f"user {uid!r} has no candidates", "list at least the test item", line=lineno)
        bad = [i for i in ids if i not in item_index]
        if bad:
            raise CrossrecError(str(path), f"unknown item id {bad[0]!r}", "not an item of the domain", line=lineno)
        if user_index[uid] in out:
            raise CrossrecError(str(path), f"user {uid!r} listed twice", "one line per user", line=lineno)
        out[user_index[uid]] = np.asarray([item_index[i] for i in ids], dtype=np.int64)
    if not out:
        raise CrossrecError(str(path), "file lists no users", "expected user_id<TAB>item ids lines", line=1)
    return out


def top_items(
    user_vecs: torch.Tensor,
    item_vecs: torch.Tensor,
    k: int,
    exclude: list[np.ndarray] | None = None,
    user_chunk: int = 512,
) -> tuple[np.ndarray, np.ndarray]:
    """Each user's ``k`` best items: (indices (n, k), scores (n, k)), best first, ties by item
    order as in ``full_ranks``. ``exclude[i]``: items never recommended to user i (seen items);
    a user with fewer than ``k`` items left gets index -1 and score -inf in the free slots.

    Per user chunk: the k-th best score by ``torch.topk``, then only the items scoring at least
    that (the k best and any ties with the k-th) are sorted by (score, item order)."""
    n, n_items = user_vecs.shape[0], item_vecs.shape[0]
    items = item_vecs.detach().to(torch.float64)
    k_eff = min(k, n_items)
    idx = np.full((n, k), -1, dtype=np.int64)
    val = np.full((n, k), -np.inf, dtype=np.float64)
    if k_eff == 0:
        return idx, val
    for a in chunks("top-k of users", n, user_chunk):
        s = user_vecs[a : a + user_chunk].detach().to(torch.float64) @ items.T
        if exclude is not None:
            for r, seen in enumerate(exclude[a : a + user_chunk]):
                s[r, torch.as_tensor(np.asarray(seen, dtype=np.int64))] = -torch.inf
        kth = torch.topk(s, k_eff, dim=1).values[:, -1:]
        rows, cols = (s >= kth).nonzero(as_tuple=True)
        scores = s[rows, cols].numpy()
        rows, cols = rows.numpy(), cols.numpy()
        order = np.lexsort((cols, -scores, rows))  # by user, then score descending, then item order
        rows, cols, scores = rows[order], cols[order], scores[order]
        place = np.arange(len(rows)) - np.searchsorted(rows, rows)  # position within the user's list
        keep = place < k_eff
        rows, cols, scores, place = rows[keep], cols[keep], scores[keep], place[keep]
        cols = np.where(np.isneginf(scores), -1, cols)
        idx[a + rows, place], val[a + rows, place] = cols, scores
    return idx, val
