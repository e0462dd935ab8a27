"""``load_domain(spec)``: one entry point over the format readers (registered in
``crossrec_cli.data.domain.READERS`` by their own modules)."""

from __future__ import annotations

from crossrec_cli.data.domain import READERS, Domain, DomainSpec


def load_domain(spec: DomainSpec) -> Domain:
    """Read the domain's files, validate them and apply its filters; a knowledge graph beside
    them (``data/kg.py``) becomes the ``kg`` item feature, each declared vector file
    (``data/vectors.py``) a ``vectors:<name>`` one (both read when a run first uses them)."""
    from crossrec_cli.data.kg import attach_graph
    from crossrec_cli.data.vectors import attach_vectors

    domain = READERS.get(spec.format, "format")(spec)
    return attach_vectors(attach_graph(domain, spec), spec)
