"""Per-group test metrics from user attributes (fairness): the same ranks, split by a user column.

A domain file names the columns to group by (``user_groups``), numeric ones cut into bins::

    user_groups:
      gender: null                              # one group per value
      age: {bins: [18, 25, 35, 45, 50, 56]}     # <18, 18-24, 25-34, ..., 56+

Each column reports every group's metrics and ``gap``: the best group's value minus the worst
one's, per metric. Users without a value for the column are left out of it. Which group a user
is in: ``data/groups.py``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from crossrec_cli.evaluation.metrics import rank_metrics


def group_metrics(ranks: np.ndarray, users: np.ndarray, groups: dict[str, np.ndarray],
                  topk: list[int]) -> dict[str, dict[str, Any]]:
    """{column: {group: metrics (with ``examples``), "gap": {metric: best - worst}}}."""
    out: dict[str, dict[str, Any]] = {}
    for column, labels in groups.items():
        per_example = labels[users]
        res: dict[str, Any] = {}
        for g in sorted(set(per_example.tolist()) - {""}):
            sel = per_example == g
            res[g] = rank_metrics(ranks[sel], topk) | {"examples": int(sel.sum())}
        if len(res) > 1:
            keys = [k for k in next(iter(res.values())) if k != "examples"]
            res["gap"] = {k: max(m[k] for m in res.values()) - min(m[k] for m in res.values()) for k in keys
                          if all(not math.isnan(m[k]) for m in res.values())}
        out[column] = res
    return out
