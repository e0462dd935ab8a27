"""Beyond accuracy: what a model recommends, not whether it hits the held-out item.

- ``coverage@k``: distinct items in anyone's top-k / catalogue size;
- ``arp@k``: average recommended-item popularity (the mean, over users, of the mean interaction
  count of their top-k items; Abdollahpouri et al. 2019), ``arp_history`` the same over the items
  of the users' own histories, and ``popularity_lift@k`` = arp@k / arp_history (> 1: the model
  pushes items more popular than those its users pick);
- ``popular_share@k``: the share of recommended slots taken by the 20% most popular items.

Popularity is the interaction count the caller passes (training interactions in an evaluation).
"""

from __future__ import annotations

import numpy as np


def beyond_accuracy(top: np.ndarray, counts: np.ndarray, histories: list[np.ndarray], k: int) -> dict[str, float]:
    """top: (n, >=k) item indices best first (-1: empty slot); counts: (N,) popularity."""
    top = np.asarray(top)[:, :k]
    counts = np.asarray(counts, dtype=np.float64)
    filled = top >= 0
    n_items = len(counts)
    rec_pop = np.where(filled, counts[np.where(filled, top, 0)], 0.0)
    per_user = rec_pop.sum(1) / np.maximum(filled.sum(1), 1)
    hist = np.array([counts[h].mean() if len(h) else 0.0 for h in histories])
    arp, arp_hist = float(per_user.mean()) if len(top) else 0.0, float(hist.mean()) if len(hist) else 0.0
    head = np.zeros(n_items, dtype=bool)
    head[np.argsort(-counts, kind="stable")[: max(1, int(round(0.2 * n_items)))]] = True
    slots = int(filled.sum())
    return {
        f"coverage@{k}": float(len(np.unique(top[filled])) / n_items) if n_items else 0.0,
        f"arp@{k}": arp,
        "arp_history": arp_hist,
        f"popularity_lift@{k}": arp / arp_hist if arp_hist else float("nan"),
        f"popular_share@{k}": float(head[top[filled]].sum() / slots) if slots else 0.0,
    }
