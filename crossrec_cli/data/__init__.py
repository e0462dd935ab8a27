"""Domains: items with text, interactions, splits; loaders for public formats."""

from crossrec_cli.data.domain import Domain, DomainSpec, FilterSpec
from crossrec_cli.data.loaders import load_domain
from crossrec_cli.data.split import EvalSet, Split, make_split, with_every_user

__all__ = [
    "Domain",
    "DomainSpec",
    "EvalSet",
    "FilterSpec",
    "Split",
    "load_domain",
    "make_split",
    "with_every_user",
]
