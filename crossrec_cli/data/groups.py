"""Users' groups from their attributes (a domain's ``user_groups``): which group each user is in,
and the spec's check. The per-group metrics are ``evaluation/groups.py``'s.

A domain file names the columns to group by (``user_groups``), numeric ones cut into bins::

    user_groups:
      gender: null                              # one group per value
      age: {bins: [18, 25, 35, 45, 50, 56]}     # <18, 18-24, 25-34, ..., 56+
"""

from __future__ import annotations

from typing import Any

import numpy as np

from crossrec_cli.errors import CrossrecError


def check_groups(raw: Any, where: str) -> None:
    if not isinstance(raw, dict) or not raw:
        raise CrossrecError(where, f"expected a mapping of user columns, got {raw!r}",
                            "e.g. user_groups: {gender: null, age: {bins: [18, 25, 35]}}")
    for column, opts in raw.items():
        if opts is None or opts == {}:
            continue
        if not isinstance(opts, dict) or set(opts) != {"bins"}:
            raise CrossrecError(f"{where}.{column}", f"expected null or {{bins: [...]}}, got {opts!r}",
                                "null: one group per value; bins: ascending numeric edges")
        bins = opts["bins"]
        ok = isinstance(bins, list) and bins and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bins)
        if not ok or any(b >= c for b, c in zip(bins, bins[1:])):
            raise CrossrecError(f"{where}.{column}.bins", f"expected ascending numbers, got {bins!r}", "e.g. [18, 25, 35]")


def _bin_label(x: float, bins: list[float]) -> str:
    def fmt(v: float) -> str:
        return str(int(v)) if float(v).is_integer() else str(v)

    if x < bins[0]:
        return f"<{fmt(bins[0])}"
    for lo, hi in zip(bins, bins[1:]):
        if lo <= x < hi:
            return f"{fmt(lo)}-{fmt(hi - 1) if float(hi).is_integer() and float(lo).is_integer() else fmt(hi)}"
    return f"{fmt(bins[-1])}+"


def user_groups(user_ids: list[str], attributes: dict[str, dict[str, str]], spec: dict[str, Any],
                where: str = "user_groups") -> dict[str, np.ndarray]:
    """Column -> (n_users,) group label per user index ("" when the user has no value)."""
    out = {}
    for column, opts in spec.items():
        if column not in attributes:
            raise CrossrecError(f"{where}.{column}", "not a user column of the domain",
                                f"user columns: {sorted(attributes) or 'none (no user file)'}")
        values = attributes[column]
        bins = (opts or {}).get("bins")
        labels = []
        for uid in user_ids:
            v = values.get(uid, "")
            if v and bins:
                try:
                    v = _bin_label(float(v), bins)
                except ValueError:
                    raise CrossrecError(f"{where}.{column}", f"user {uid!r} has {v!r}", "bins need numbers") from None
            labels.append(v)
        out[column] = np.asarray(labels, dtype=object)
    return out
