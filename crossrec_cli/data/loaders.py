"""``load_domain(spec)``: one entry point over the format readers."""

from __future__ import annotations

import importlib

from crossrec_cli.data.domain import Domain, DomainSpec

# format -> module with a ``load(spec) -> Domain`` function
READERS = {
    "recbole": "crossrec_cli.data.recbole",
    "movielens": "crossrec_cli.data.movielens",
    "lastfm": "crossrec_cli.data.lastfm",
    "amazon": "crossrec_cli.data.amazon",
    "instruction": "crossrec_cli.data.instruction",
}


def load_domain(spec: DomainSpec) -> Domain:
    """Read the domain's files, validate them and apply its filters."""
    module = importlib.import_module(READERS[spec.format])
    return module.load(spec)
