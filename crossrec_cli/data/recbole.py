"""RecBole atomic files: ``<stem>.inter`` and ``<stem>.item`` with typed ``name:type`` headers."""

from __future__ import annotations

from dataclasses import replace

from crossrec_cli.data.assemble import RawInteractions, RawItems, assemble
from crossrec_cli.data.domain import READERS, Domain, DomainSpec
from crossrec_cli.data.table import read_delimited
from crossrec_cli.errors import CrossrecError


def stem(spec: DomainSpec) -> str:
    if not spec.dataset:
        raise CrossrecError(f"domain.{spec.name}.dataset", "missing file stem", "set dataset: <stem> for RecBole files")
    return spec.dataset


def read_items(spec: DomainSpec, path) -> RawItems:
    table = read_delimited(path, typed=True)
    ids = table.require(spec.item_field, "item id column")
    return RawItems(path, ids, table.columns, table.lines)


def load(spec: DomainSpec) -> Domain:
    folder = spec.folder()
    name = stem(spec)
    if spec.split != "loo" and (folder / f"{name}.train.inter").exists():
        from crossrec_cli.data.presplit import load_presplit

        return load_presplit(spec, folder, name)
    if spec.split == "given":
        raise CrossrecError(
            str(folder / f"{name}.train.inter"), "split: given but no split files", "expected <stem>.train/.valid/.test.inter"
        )
    items = read_items(spec, folder / f"{name}.item")
    table = read_delimited(folder / f"{name}.inter", typed=True)
    users = table.require(spec.user_field)
    inter_items = table.require(spec.item_field)
    time = table.floats(spec.time_field) if spec.time_field in table.columns else None
    rating = table.floats(spec.rating_field) if spec.rating_field in table.columns else None
    inter = RawInteractions(table.path, users, inter_items, table.lines, time, rating)
    domain = assemble(spec, items, inter)
    if (folder / f"{name}.user").is_file():  # user attributes, as RecBole reads them
        domain = replace(domain, user_attributes=read_users(spec, folder / f"{name}.user"))
    return domain


def read_users(spec: DomainSpec, path) -> dict[str, dict[str, str]]:
    """``<stem>.user``: every column but the user id, as {column: {user id: value}}."""
    table = read_delimited(path, typed=True)
    ids = table.require(spec.user_field, "user id column")
    return {c: dict(zip(ids, v)) for c, v in table.columns.items() if c != spec.user_field}


READERS.add("recbole", load)
