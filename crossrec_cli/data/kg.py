"""Knowledge graphs beside a domain's items, read from public layouts into the item feature
``Domain.item_features["kg"]`` (one ``KgItem`` per item: its entity and its 1-hop edges).

- RecBole atomic files: ``<stem>.kg`` (``head_id:token relation_id:token tail_id:token``) and
  ``<stem>.link`` (``item_id:token entity_id:token``) beside the other atomic files of a
  ``format: recbole`` domain are used when present, as RecBole does (no key needed).
- KGCN layout, declared in the domain file::

      kg: {layout: kgcn, triples: kg.txt, links: item_index2entity_id.txt}

  ``kg.txt`` rows are ``head<TAB>relation<TAB>tail``, ``item_index2entity_id.txt`` rows
  ``item_id<TAB>entity``, both without a header (as in the Last.fm hetrec2011 Satori graph).
- ``kg: {layout: recbole, triples: FILE.kg, links: FILE.link}`` names RecBole files explicitly.

Entity and relation ids are arbitrary strings. An item's edges are the triples where its entity
is the head (``relation``) or the tail (``~relation``, the inverse). Items without a linked entity
get ``KgItem(None, ())``. Every item of a domain also holds one shared ``adjacency`` (entity ->
its edges, the whole graph; read by the feature's second hop; not part of the item's repr, so
fingerprints are what they were). Malformed rows are one-line ``path:line`` errors.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from crossrec_cli.data.table import read_delimited, read_text
from crossrec_cli.errors import CrossrecError

Edges = tuple[tuple[str, str], ...]  # (relation, neighbour entity); "~r" = r reversed


@dataclass(frozen=True)
class KgItem:
    entity: str | None  # the item's linked entity (None: not linked)
    edges: Edges = ()
    # every entity's edges in the graph, one mapping shared by a domain's items (None: not given)
    adjacency: Mapping[str, Edges] | None = field(default=None, repr=False, compare=False)


@dataclass
class KgSpec:
    """The ``kg:`` key of a domain file (paths relative to the domain folder)."""

    layout: str
    triples: str
    links: str

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> KgSpec:
        if not isinstance(raw, dict):
            raise CrossrecError(where, f"expected a mapping, got {raw!r}",
                                "write e.g. kg: {layout: kgcn, triples: kg.txt, links: item_index2entity_id.txt}")
        unknown = sorted(set(raw) - {"layout", "triples", "links"})
        if unknown:
            raise CrossrecError(f"{where}.{unknown[0]}", "unknown kg key", "expected layout, triples and links")
        for key in ("layout", "triples", "links"):
            if not isinstance(raw.get(key), str) or not raw[key]:
                raise CrossrecError(f"{where}.{key}", f"expected a string, got {raw.get(key)!r}",
                                    "name the layout (recbole or kgcn) and both files")
        if raw["layout"] not in LAYOUTS:
            raise CrossrecError(f"{where}.layout", f"unknown layout {raw['layout']!r}", f"expected one of {list(LAYOUTS)}")
        return cls(raw["layout"], raw["triples"], raw["links"])


@dataclass
class Graph:
    triples: list[tuple[str, str, str]] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)  # item id -> entity


def _rows(path: Path, n: int) -> list[tuple[list[str], int]]:
    """Headerless tab-separated rows of exactly ``n`` non-empty fields, with their line numbers."""
    out = []
    for line_no, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split("\t")]
        if len(cells) != n:
            raise CrossrecError(str(path), f"expected {n} tab-separated fields, got {len(cells)}",
                                "one row per line: " + ("head, relation, tail" if n == 3 else "item id, entity"),
                                line=line_no)
        empty = next((i for i, c in enumerate(cells, start=1) if not c), None)
        if empty is not None:
            raise CrossrecError(str(path), "empty field", "every field needs a value", line=line_no, col=empty)
        out.append((cells, line_no))
    return out


def _links(pairs: list[tuple[str, str, int]], path: Path) -> dict[str, str]:
    links: dict[str, str] = {}
    for item, entity, line in pairs:
        if item in links and links[item] != entity:
            raise CrossrecError(str(path), f"item {item!r} is linked twice ({links[item]!r}, {entity!r})",
                                "link each item to one entity", line=line)
        links[item] = entity
    return links


def read_recbole(triples: Path, links: Path) -> Graph:
    kg = read_delimited(triples, typed=True)
    heads, rels, tails = (kg.require(c) for c in ("head_id", "relation_id", "tail_id"))
    for col, name in ((heads, "head_id"), (rels, "relation_id"), (tails, "tail_id")):
        for value, line in zip(col, kg.lines):
            if not value:
                raise CrossrecError(str(triples), f"empty {name}", "every triple needs head, relation and tail", line=line)
    ln = read_delimited(links, typed=True)
    items, ents = ln.require("item_id"), ln.require("entity_id")
    for value, line in zip(ents, ln.lines):
        if not value:
            raise CrossrecError(str(links), "empty entity_id", "every link needs an entity", line=line)
    return Graph(list(zip(heads, rels, tails)), _links(list(zip(items, ents, ln.lines)), links))


def read_kgcn(triples: Path, links: Path) -> Graph:
    kg = [tuple(cells) for cells, _ in _rows(triples, 3)]
    pairs = [(cells[0], cells[1], line) for cells, line in _rows(links, 2)]
    return Graph(kg, _links(pairs, links))  # type: ignore[arg-type]


# layout name (``kg: {layout: ...}``) -> reader(triples file, links file)
LAYOUTS: dict[str, Callable[[Path, Path], Graph]] = {"recbole": read_recbole, "kgcn": read_kgcn}


def graph_source(spec: Any, folder: Path) -> tuple[Callable[[Path, Path], Graph], Path, Path] | None:
    """(reader, triples file, links file) of the domain's graph: its ``kg:`` key, else RecBole's
    ``<stem>.kg`` + ``<stem>.link`` beside the atomic files; None without a graph."""
    raw = getattr(spec, "kg", None)
    if raw is not None:
        ks = KgSpec.from_dict(raw, f"domain.{spec.name}.kg")
        return LAYOUTS[ks.layout], folder / ks.triples, folder / ks.links
    if spec.format == "recbole" and spec.dataset:
        kg, link = folder / f"{spec.dataset}.kg", folder / f"{spec.dataset}.link"
        if kg.is_file() and link.is_file():
            return read_recbole, kg, link
    return None


def find_graph(spec: Any, folder: Path) -> Graph | None:
    """The domain's graph, read and checked (None without one)."""
    source = graph_source(spec, folder)
    if source is None:
        return None
    reader, *paths = source
    for path in paths:
        if not path.is_file():
            raise CrossrecError(str(path), "knowledge-graph file does not exist", f"check kg: in the domain file of {spec.name!r}")
    return reader(*paths)


def adjacency(graph: Graph) -> dict[str, Edges]:
    """Entity -> every edge touching it (both directions), in triple order."""
    edges: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for h, r, t in graph.triples:
        edges[h].append((r, t))
        edges[t].append(("~" + r, h))
    return {e: tuple(v) for e, v in edges.items()}


def item_graph(item_ids: list[str], graph: Graph) -> list[KgItem]:
    """One KgItem per item: its entity, every edge touching it (both directions) and the graph's
    shared adjacency (a neighbour's own edges, for a second hop)."""
    adj = adjacency(graph)
    out = []
    for iid in item_ids:
        ent = graph.links.get(iid)
        out.append(KgItem(ent, adj.get(ent, ()), adj) if ent is not None else KgItem(None, (), adj))
    return out


def attach_graph(domain: Any, spec: Any) -> Any:
    """``domain`` with ``item_features["kg"]`` when the domain has a knowledge graph; the files
    are read (and checked) the first time a run uses the feature."""
    from crossrec_cli.data.domain import LazyItems

    folder = spec.folder()
    if graph_source(spec, folder) is None:
        return domain
    ids = list(domain.item_ids)
    lazy = LazyItems(len(ids), lambda: item_graph(ids, find_graph(spec, folder)))
    return replace(domain, item_features={**domain.item_features, "kg": lazy})
