"""Turn raw item rows and interaction rows into a validated, filtered Domain."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from crossrec_cli.data.domain import Domain, DomainSpec, render_text, take_items
from crossrec_cli.data.split import Split
from crossrec_cli.errors import CrossrecError


@dataclass
class RawItems:
    path: Path
    ids: list[str]
    columns: dict[str, list[str]]  # every item column as strings (token_seq joined by spaces)
    lines: list[int]


@dataclass
class RawInteractions:
    path: Path
    users: list[str]
    items: list[str]
    lines: list[int]
    time: list[float] | None = None
    rating: list[float] | None = None


def item_texts(spec: DomainSpec, items: RawItems) -> list[str]:
    fields = spec.text_fields or [c for c in items.columns if c != spec.item_field]
    for f in fields:
        if f not in items.columns:
            raise CrossrecError(
                str(items.path), f"text field {f!r} is not a column", f"columns are {list(items.columns)}", line=1
            )
    texts = []
    for row, line in enumerate(items.lines):
        try:
            text = render_text(items.columns, fields, spec.text_template, row)
        except (KeyError, IndexError, ValueError) as exc:
            raise CrossrecError(
                f"domain.{spec.name}.text_template", f"cannot render template: {exc}", f"use fields among {fields}"
            ) from None
        if not text:
            raise CrossrecError(
                str(items.path), f"item {items.ids[row]!r} has no text in {fields}", "every item needs text", line=line
            )
        texts.append(text)
    return texts


def no_empty_ids(path: Path, ids: list[str], lines: list[int], what: str) -> None:
    """An empty id cell is an error at its file:line:col (col when the reader kept it)."""
    for value, line in zip(ids, lines):
        if not value:
            raise CrossrecError(str(path), f"empty {what}", f"every row needs a {what}", line=line,
                                col=getattr(ids, "col", None))


def assemble(spec: DomainSpec, items: RawItems, inter: RawInteractions) -> Domain:
    """Validate ids, build the item text and apply the domain's filters."""
    no_empty_ids(items.path, items.ids, items.lines, "item id")
    no_empty_ids(inter.path, inter.users, inter.lines, "user id")
    no_empty_ids(inter.path, inter.items, inter.lines, "item id")
    index: dict[str, int] = {}
    for iid, line in zip(items.ids, items.lines):
        if iid in index:
            raise CrossrecError(str(items.path), f"duplicate item id {iid!r}", "item ids must be unique", line=line)
        index[iid] = len(index)
    texts = item_texts(spec, items)
    item_idx = np.empty(len(inter.items), dtype=np.int64)
    for k, (iid, line) in enumerate(zip(inter.items, inter.lines)):
        j = index.get(iid)
        if j is None:
            raise CrossrecError(
                str(inter.path), f"unknown item id {iid!r}", f"not in the item file {items.path.name}", line=line
            )
        item_idx[k] = j
    users, user_idx = np.unique(np.asarray(inter.users, dtype=object), return_inverse=True)
    # re-number users by first appearance so "first N users" means file order
    first = np.full(len(users), len(user_idx), dtype=np.int64)
    np.minimum.at(first, user_idx, np.arange(len(user_idx)))
    rank = np.empty(len(users), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(users))
    user_idx = rank[user_idx]
    user_ids = [str(u) for u in users[np.argsort(first, kind="stable")]]
    n = len(item_idx)
    time = np.asarray(inter.time, dtype=np.float64) if inter.time is not None else np.full(n, np.nan)
    rating = np.asarray(inter.rating, dtype=np.float64) if inter.rating is not None else np.full(n, np.nan)
    domain = Domain(
        spec.name, list(items.ids), {"text": texts}, items.columns, user_ids,
        user_idx.astype(np.int64), item_idx, time, rating, origin=str(inter.path.parent),
    )
    return apply_filters(domain, spec)


def _keep(domain: Domain, mask: np.ndarray) -> Domain:
    """Keep interactions where ``mask``; drop users left without any."""
    kept_users, new_user = np.unique(domain.inter_user[mask], return_inverse=True)
    return replace(domain, user_ids=[domain.user_ids[u] for u in kept_users], inter_user=new_user.astype(np.int64),
                   inter_item=domain.inter_item[mask], inter_time=domain.inter_time[mask],
                   inter_rating=domain.inter_rating[mask])


def _keep_items(domain: Domain, keep: np.ndarray) -> Domain:
    """Keep the items where the boolean ``keep`` is set: ids, every item feature and column."""
    new_index = np.cumsum(keep) - 1
    return replace(domain, item_ids=take_items(domain.item_ids, keep),
                   item_features={n: take_items(v, keep) for n, v in domain.item_features.items()},
                   item_columns={c: take_items(v, keep) for c, v in domain.item_columns.items()},
                   inter_item=new_index[domain.inter_item])


def apply_filters(domain: Domain, spec: DomainSpec) -> Domain:
    f = spec.filters
    if f.min_rating is not None:
        if np.isnan(domain.inter_rating).all():
            raise CrossrecError(f"domain.{spec.name}.filters.min_rating", "the domain has no ratings", "remove the filter")
        domain = _keep(domain, domain.inter_rating >= f.min_rating)
    if f.user_core > 0 or f.item_core > 0:
        while True:
            uc = np.bincount(domain.inter_user, minlength=domain.n_users)
            ic = np.bincount(domain.inter_item, minlength=domain.n_items)
            mask = (uc[domain.inter_user] >= f.user_core) & (ic[domain.inter_item] >= f.item_core)
            if mask.all():
                break
            domain = _keep(domain, mask)
        if f.item_core > 0:
            domain = _keep_items(domain, np.bincount(domain.inter_item, minlength=domain.n_items) > 0)
    if f.max_users is not None:
        domain = _keep(domain, domain.inter_user < f.max_users)
    if f.drop_unused_items:
        domain = _keep_items(domain, np.bincount(domain.inter_item, minlength=domain.n_items) > 0)
    if domain.n_interactions == 0:
        raise CrossrecError(
            f"domain.{spec.name}.filters", "no interactions left after filtering", "loosen the filters or check the data"
        )
    return domain


def check_evaluable(split: Split, domain: str) -> None:
    """Stop before writing empty metrics: a domain whose split has no test example.

    Leave-one-out takes a user's last two interactions as valid and test, so only users with at
    least 3 interactions (after the filters) are evaluated.
    """
    if len(split.test):
        return
    if split.kind == "leave-one-out":
        raise CrossrecError(f"domain.{domain}", "no user has the 3 interactions leave-one-out needs",
                            "loosen the filters (min_rating, user_core, max_users) or use more data")
    raise CrossrecError(f"domain.{domain}", "the given test split has no example", "fill the test split file")
