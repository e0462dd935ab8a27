"""Top-k retrieval over a whole catalogue: exact, or FAISS for catalogues too large to score densely.

``build_index(item_vecs, kind, ...)`` returns an object with ``search(user_vecs, k, exclude,
user_chunk) -> (indices (n, k), scores (n, k))``, the layout of ``ranking.top_items``: best first,
index -1 and score -inf where a user has fewer than k items left.

- ``exact``: ``top_items`` itself (float64, ties by item order). Metrics always rank this way.
- ``flat`` (``IndexFlatIP``), ``ivf`` (``IndexIVFFlat``: nlist lists, nprobe probed per query),
  ``hnsw`` (``IndexHNSWFlat``: hnsw_m links per node, ef_construction / ef_search candidates):
  all inner product, the score of every crossrec model (scoring vectors carry cosine and
  temperature).

A FAISS index only proposes candidates. Each user's search asks for k + its seen items + a
margin; seen items are dropped, and the rest are rescored in float64 by the same product as the
exact path and ordered by (score, item order). So a score does not depend on the index (up to
float64 rounding), and a flat index returns ``top_items``'s lists up to float32 near-ties at the
k-th place. A user left with fewer than k candidates while the catalogue holds more (IVF probed
too few lists, HNSW's graph search ended early) is ranked again by exact search, so every user
gets k items when possible.
"""

from __future__ import annotations

import math
import time
from typing import Any, Protocol

import numpy as np
import torch

from crossrec_cli.errors import CrossrecError
from crossrec_cli.evaluation.ranking import top_items
from crossrec_cli.registry import Registry


class TopK(Protocol):
    kind: str

    def search(self, user_vecs: torch.Tensor, k: int, exclude: list[np.ndarray] | None = None,
               user_chunk: int = 512) -> tuple[np.ndarray, np.ndarray]: ...

    def describe(self) -> dict[str, Any]: ...


INDEXES: Registry[Any] = Registry("top-k index", "eval.faiss.kind")


def build_index(item_vecs: torch.Tensor, kind: str = "exact", **options: Any) -> TopK:
    """The ``kind`` index over ``item_vecs`` (N, d); ``options``: that kind's settings."""
    return INDEXES.get(kind)(item_vecs, **options)


def import_faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise CrossrecError("eval.index", "faiss is not installed",
                            "pip install crossrec[faiss] (faiss-cpu), or eval.index=exact") from None
    return faiss


@INDEXES.register("exact")
class Exact:
    """Today's exact top-k: the whole score row of each user, float64."""

    kind = "exact"

    def __init__(self, item_vecs: torch.Tensor):
        self.item_vecs = item_vecs

    def search(self, user_vecs: torch.Tensor, k: int, exclude: list[np.ndarray] | None = None,
               user_chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
        return top_items(user_vecs, self.item_vecs, k, exclude, user_chunk)

    def describe(self) -> dict[str, Any]:
        return {"index": "exact"}


class _Faiss:
    """Shared by the FAISS kinds: ``self.index`` holds the items as float32 rows 0..N-1;
    ``settings``: the kind's own, as used (``describe`` reports them)."""

    kind = ""

    def __init__(self, item_vecs: torch.Tensor, **settings: Any):
        self.settings = settings
        self.item_vecs = item_vecs.detach().cpu()
        self.faiss = import_faiss()
        t0 = time.perf_counter()
        self.index = self.build(np.ascontiguousarray(self.item_vecs.numpy(), dtype=np.float32))
        self.build_s = time.perf_counter() - t0

    def build(self, items: np.ndarray) -> Any:
        raise NotImplementedError

    def retune(self, **search: Any) -> None:
        """Change search-time settings of the built index (ivf: nprobe; hnsw: ef_search)."""
        raise CrossrecError("eval.faiss", f"a {self.kind} index has no search-time settings", "")

    def describe(self) -> dict[str, Any]:
        return {"index": "faiss", "kind": self.kind, **self.settings, "items": int(self.index.ntotal),
                "build_s": round(self.build_s, 3)}

    def search(self, user_vecs: torch.Tensor, k: int, exclude: list[np.ndarray] | None = None,
               user_chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """(indices (n, k), scores (n, k)) as ``top_items``; user_vecs: (n, d)."""
        n, n_items = user_vecs.shape[0], self.item_vecs.shape[0]
        idx = np.full((n, k), -1, dtype=np.int64)
        val = np.full((n, k), -np.inf, dtype=np.float64)
        users = user_vecs.detach().cpu()
        keep = k + 16  # candidates rescored per user: float32 near-ties at the k-th place stay in
        short = []
        for a in range(0, n, user_chunk):
            u = users[a : a + user_chunk]
            seen = None
            if exclude is not None:
                seen = [np.unique(np.asarray(s, dtype=np.int64)) for s in exclude[a : a + len(u)]]
            want = min(n_items, keep + max((len(s) for s in seen or []), default=0))
            _, cand = self.index.search(np.ascontiguousarray(u.numpy(), dtype=np.float32), want)
            cand = _drop(cand, seen, keep)
            i, v = _rescore(u, self.item_vecs, cand, k)
            idx[a : a + len(u)], val[a : a + len(u)] = i, v
            found = (i >= 0).sum(1)
            left = n_items - (np.array([len(s) for s in seen]) if seen else 0)  # seen: valid item indices
            short += (a + np.flatnonzero(found < np.minimum(k, left))).tolist()
        if short:  # the approximate search ran dry for these users: rank them exactly
            rows = np.asarray(short)
            sub = [exclude[r] for r in short] if exclude is not None else None
            idx[rows], val[rows] = top_items(users[rows], self.item_vecs, k, sub, user_chunk)
        return idx, val


def _drop(cand: np.ndarray, seen: list[np.ndarray] | None, keep: int) -> np.ndarray:
    """(n, keep) candidates: ``cand``'s rows without -1 and seen items, in order, -1 padded."""
    out = np.full((len(cand), keep), -1, dtype=np.int64)
    for r, row in enumerate(cand):
        ok = row[row >= 0]
        if seen is not None and len(seen[r]):
            ok = ok[~np.isin(ok, seen[r])]
        out[r, : min(keep, len(ok))] = ok[:keep]
    return out


def _rescore(users: torch.Tensor, items: torch.Tensor, cand: np.ndarray, k: int,
             block: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of each row of ``cand`` (n, C) by float64 score, ties by item order; users: (n, d).

    Each score is an elementwise product summed over d, so two items with equal vectors get
    equal scores (a matrix product may round them differently by column)."""
    n, c = cand.shape
    scores = np.full((n, c), -np.inf)
    for a in range(0, n, block):
        cb = cand[a : a + block]
        rows = torch.as_tensor(np.where(cb >= 0, cb, 0))
        s = (users[a : a + block].to(torch.float64).unsqueeze(1) * items[rows].to(torch.float64)).sum(-1).numpy()
        scores[a : a + block] = np.where(cb >= 0, s, -np.inf)
    tie = np.where(cand >= 0, cand, np.iinfo(np.int64).max)
    order = np.lexsort((tie, -scores), axis=1)[:, :k]
    idx, val = np.take_along_axis(cand, order, 1), np.take_along_axis(scores, order, 1)
    if idx.shape[1] < k:
        pad = k - idx.shape[1]
        idx = np.pad(idx, ((0, 0), (0, pad)), constant_values=-1)
        val = np.pad(val, ((0, 0), (0, pad)), constant_values=-np.inf)
    idx[np.isneginf(val)] = -1
    return idx, val


@INDEXES.register("flat")
class Flat(_Faiss):
    """``IndexFlatIP``: every item scored in float32; exact up to float32 rounding."""

    kind = "flat"

    def build(self, items: np.ndarray) -> Any:
        index = self.faiss.IndexFlatIP(items.shape[1])
        index.add(items)
        return index


def auto_nlist(n_items: int) -> int:
    """sqrt(N) lists, at most N / 39 (k-means wants 39 points a list). FAISS suggests 4 to 16
    sqrt(N), for faster queries; sqrt(N) keeps k-means at 1M items near a minute on one core."""
    return max(1, min(round(math.sqrt(n_items)), n_items // 39))


@INDEXES.register("ivf")
class IVF(_Faiss):
    """``IndexIVFFlat``: k-means into ``nlist`` lists (None: ``auto_nlist``); a query scans the
    ``nprobe`` lists with the nearest centroids."""

    kind = "ivf"

    def __init__(self, item_vecs: torch.Tensor, nlist: int | None = None, nprobe: int = 16):
        n_items = item_vecs.shape[0]
        nlist = auto_nlist(n_items) if nlist is None else nlist
        if not 1 <= nlist <= max(1, n_items):
            raise CrossrecError("eval.faiss.nlist", f"{nlist} lists for {n_items} items",
                                "use at most the number of items, or null for sqrt(items)")
        super().__init__(item_vecs, nlist=nlist, nprobe=min(nprobe, nlist))

    def build(self, items: np.ndarray) -> Any:
        faiss = self.faiss
        quantizer = faiss.IndexFlatIP(items.shape[1])
        index = faiss.IndexIVFFlat(quantizer, items.shape[1], self.settings["nlist"], faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = 0  # k-means draws its sample and start from this seed: the same lists every run
        index.train(items)
        index.add(items)
        index.nprobe = self.settings["nprobe"]
        return index

    def retune(self, nprobe: int) -> None:
        self.settings["nprobe"] = self.index.nprobe = min(nprobe, self.settings["nlist"])


@INDEXES.register("hnsw")
class HNSW(_Faiss):
    """``IndexHNSWFlat``: a graph with ``hnsw_m`` links per item, built with ``ef_construction``
    candidates per insertion, searched with ``ef_search`` (at least the number of results)."""

    kind = "hnsw"

    def __init__(self, item_vecs: torch.Tensor, hnsw_m: int = 32, ef_construction: int = 40, ef_search: int = 128):
        super().__init__(item_vecs, hnsw_m=hnsw_m, ef_construction=ef_construction, ef_search=ef_search)

    def build(self, items: np.ndarray) -> Any:
        index = self.faiss.IndexHNSWFlat(items.shape[1], self.settings["hnsw_m"], self.faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.settings["ef_construction"]
        index.add(items)  # insertion order is fixed and single-threaded runs are deterministic
        index.hnsw.efSearch = self.settings["ef_search"]
        return index

    def retune(self, ef_search: int) -> None:
        self.settings["ef_search"] = self.index.hnsw.efSearch = ef_search
