"""``kg``: an item's knowledge-graph entity, aggregated with its sampled neighbours (1 or 2 hops).

Each domain's items carry ``KgItem(entity, edges, adjacency)`` (``crossrec_cli/data/kg.py``). Per
domain the feature learns an entity table and a relation table (inverse relations apart); an
item's vector is ``W [e_item ; sum_j a_j n_j]`` over a fixed, seeded sample of ``neighbors``
edges (r_j, e_j) with relation-aware attention ``a = softmax_j((e_item * r_j) . n_j / sqrt(d))``
(KGCN / KGAT style). With ``hops=1``, ``n_j = e_j``. With ``hops=2`` each neighbour is first
aggregated with ``neighbors2`` of its own edges (seeded, once per entity) by the same attention:
``n_j = W2 [e_j ; sum_m a_m e_m]``. Items without a linked entity (most Last.fm artists) get one
learned "no entity" vector; a domain without a graph is all "no entity", so transfer to it still
works. Entity tables make the feature transductive.

With ``relation_text=true`` a relation's vector is ``rel[r] + M enc(text(r))``: the frozen
backbone's pooled encoding of the relation name made readable (``film.film.actor`` -> ``film film
actor``; the inverse ``~film.film.actor`` -> ``film film actor (inverse)``), encoded once per
catalogue without gradient (cached on disk like item texts; re-encoded at a refresh when the
backbone trains), through one learned map ``M`` shared by every domain, plus the domain's learned
table as a residual: graphs with the same relation names share that part in transfer.

Settings (``model.feature_settings.kg``): ``neighbors`` (16), ``hops`` (1 or 2), ``neighbors2``
(8; another value needs hops=2), ``relation_text`` (false; needs a backbone), ``transe_weight`` (0: off;
else a TransE margin loss ``mean(max(0, margin + |h + r - t| - |h + r - t'|))`` over
``transe_batch`` sampled triples with a random tail t', added to each training step), ``margin``
(1.0), ``seed`` (0, the neighbour samples).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crossrec_cli.errors import CrossrecError
from crossrec_cli.models.encode import cached_text_vectors, encode_texts
from crossrec_cli.models.features.base import FEATURES, Catalogue, FeatureContext, ItemFeature
from crossrec_cli.models.init import init_weights

DEFAULTS = {"neighbors": 16, "hops": 1, "neighbors2": 8, "relation_text": False, "transe_weight": 0.0,
            "transe_batch": 256, "margin": 1.0, "seed": 0}
KEY = "model.feature_settings.kg"


def transe_loss(h: torch.Tensor, r: torch.Tensor, t: torch.Tensor, t_neg: torch.Tensor, margin: float) -> torch.Tensor:
    """Margin ranking of true triples over corrupted ones: (B, d) each -> ()."""
    pos = (h + r - t).norm(dim=-1)
    neg = (h + r - t_neg).norm(dim=-1)
    return F.relu(margin + pos - neg).mean()


def attend(h: torch.Tensor, r: torch.Tensor, n: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """Relation-aware attention of heads over their neighbours: h (B, d), r and n (B, K, d), pad
    (B, K) bool -> (B, d) = sum_j a_j n_j, a = softmax_j((h * r_j) . n_j / sqrt(d)) over the
    non-pad j; a head without edges aggregates nothing (zeros)."""
    score = ((h.unsqueeze(1) * r) * n).sum(-1) / math.sqrt(h.shape[-1])
    score = score.masked_fill(pad, float("-inf"))
    att = torch.softmax(score, -1).nan_to_num(0.0)
    return (att.unsqueeze(-1) * n).sum(1)


def readable(relation: str) -> str:
    """A relation name as text: runs of non-alphanumerics become one space (``film.film.actor``
    -> ``film film actor``); the inverse ``~r`` is ``readable(r) + " (inverse)"``."""
    if relation.startswith("~"):
        return readable(relation[1:]) + " (inverse)"
    return " ".join(re.sub(r"[^0-9A-Za-z]+", " ", relation).split()) or relation


def _sample(edges: Sequence[tuple[str, str]], k: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """At most k of ``edges``, a seeded sample without replacement kept in edge order."""
    edges = list(edges)
    if len(edges) > k:
        edges = [edges[j] for j in sorted(rng.choice(len(edges), k, replace=False))]
    return edges


def _settings(given: Mapping[str, Any], has_backbone: bool) -> dict[str, Any]:
    """``model.feature_settings.kg`` over DEFAULTS; an unknown or unusable setting is refused."""
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise CrossrecError(f"{KEY}.{unknown[0]}", "unknown kg setting", f"expected one of {sorted(DEFAULTS)}")
    s = {**DEFAULTS, **given}
    if s["hops"] not in (1, 2) or isinstance(s["hops"], bool):
        raise CrossrecError(f"{KEY}.hops", f"expected 1 or 2, got {s['hops']!r}", "hops=1 (default) or hops=2")
    if not isinstance(s["neighbors2"], int) or isinstance(s["neighbors2"], bool) or s["neighbors2"] < 1:
        raise CrossrecError(f"{KEY}.neighbors2", f"expected a positive integer, got {s['neighbors2']!r}", "e.g. 8")
    if s["neighbors2"] != DEFAULTS["neighbors2"] and s["hops"] == 1:
        raise CrossrecError(f"{KEY}.neighbors2", f"{s['neighbors2']} is only read with hops=2",
                            f"set {KEY}.hops=2 or leave neighbors2 at {DEFAULTS['neighbors2']}")
    if not isinstance(s["relation_text"], bool):
        raise CrossrecError(f"{KEY}.relation_text", f"expected true or false, got {s['relation_text']!r}", "")
    if s["relation_text"] and not has_backbone:
        raise CrossrecError(f"{KEY}.relation_text", "true needs a backbone to encode relation names",
                            "choose a backbone (backbone=minilm) or set relation_text=false")
    return s


@FEATURES.register("kg")
class KgFeature(ItemFeature):
    transductive = True

    def __init__(self, ctx: FeatureContext, name: str = ""):
        super().__init__()
        self.ctx = ctx
        self.settings = _settings(dict((ctx.cfg.feature_settings or {}).get("kg") or {}), ctx.backbone is not None)
        dim = ctx.cfg.dim
        self.out = nn.Linear(2 * dim, dim)
        self.missing = nn.Parameter(torch.zeros(dim))
        init_weights(self.out, ctx.cfg.init_std)
        nn.init.normal_(self.missing, std=ctx.cfg.init_std)
        # built only when asked, so a default run draws the same random numbers as before
        self.out2 = nn.Linear(2 * dim, dim) if self.settings["hops"] == 2 else None
        self.rel_map = nn.Linear(ctx.backbone.hidden_size, dim) if self.settings["relation_text"] else None
        for m in (self.out2, self.rel_map):
            if m is not None:
                init_weights(m, ctx.cfg.init_std)
        self.tables = nn.ModuleDict()  # per domain: entity and relation embeddings
        self.index: dict[str, dict[str, torch.Tensor]] = {}  # per domain: item entity, neighbours, triples
        self.vocab: dict[str, tuple[list[str], list[str]]] = {}  # per domain: entity, relation names by id
        self.rel_encoded: dict[str, torch.Tensor] = {}  # relation_text: (R, hidden) per domain, detached

    def add_catalogue(self, key: str, catalogue: Catalogue) -> None:
        if key in self.tables:
            return
        items = catalogue.data.get("kg") or [None] * catalogue.n_items
        ents: dict[str, int] = {"<none>": 0}
        rels: dict[str, int] = {"<pad>": 0}
        k = int(self.settings["neighbors"])
        rng = np.random.default_rng([int(self.settings["seed"]), catalogue.n_items])
        item_ent = np.zeros(catalogue.n_items, dtype=np.int64)
        nbr_ent = np.zeros((catalogue.n_items, k), dtype=np.int64)
        nbr_rel = np.zeros((catalogue.n_items, k), dtype=np.int64)
        triples: list[tuple[int, int, int]] = []
        for i, it in enumerate(items):
            if it is None or it.entity is None:
                continue
            h = item_ent[i] = ents.setdefault(it.entity, len(ents))
            for j, (rel, ent) in enumerate(_sample(it.edges, k, rng)):
                nbr_rel[i, j] = rels.setdefault(rel, len(rels))
                nbr_ent[i, j] = ents.setdefault(ent, len(ents))
                if not rel.startswith("~"):
                    triples.append((h, nbr_rel[i, j], nbr_ent[i, j]))
        index = {"item": item_ent, "nbr_ent": nbr_ent, "nbr_rel": nbr_rel}
        if self.out2 is not None:
            index |= self._second_hop(key, items, nbr_ent, ents, rels, triples)
        index["triples"] = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
        dim, std, dev = self.ctx.cfg.dim, self.ctx.cfg.init_std, self.ctx.device()
        table = nn.ModuleDict({"ent": nn.Embedding(len(ents), dim), "rel": nn.Embedding(len(rels), dim)})
        init_weights(table, std)
        self.tables[key] = table.to(dev)
        self.index[key] = {name: torch.as_tensor(a, device=dev) for name, a in index.items()}
        self.vocab[key] = (list(ents), list(rels))
        self.rel_encoded.pop(key, None)

    def _second_hop(self, key: str, items: Sequence[Any], nbr_ent: np.ndarray, ents: dict[str, int],
                    rels: dict[str, int], triples: list[tuple[int, int, int]]) -> dict[str, np.ndarray]:
        """hops=2: the distinct sampled neighbours ``hop1`` (U,) (row 0: the pad entity), each
        one's seeded sample of ``neighbors2`` edges ``nbr2_ent``/``nbr2_rel`` (U, K2), and
        ``nbr_pos`` (N, K), a neighbour's row. U <= N * K + 1, so at most N * K * K2 indices.
        New entities, relations and (non-inverse) triples are added to ``ents``, ``rels``, ``triples``."""
        adj = next((it.adjacency for it in items if it is not None and it.adjacency is not None), None)
        if adj is None and any(it is not None and it.edges for it in items):
            raise CrossrecError(f"{KEY}.hops", f"2, but domain={key}'s kg items carry no graph adjacency",
                                "read the graph with crossrec_cli.data.kg.item_graph, or set hops=1")
        k2 = int(self.settings["neighbors2"])
        rng = np.random.default_rng([int(self.settings["seed"]), len(items), 2])
        hop1 = np.unique(np.concatenate([[0], nbr_ent.ravel()]))  # sorted entity ids, 0 first
        names = list(ents)
        nbr2_ent = np.zeros((len(hop1), k2), dtype=np.int64)
        nbr2_rel = np.zeros((len(hop1), k2), dtype=np.int64)
        for u, ent in enumerate(hop1[1:].tolist(), start=1):
            for m, (rel, other) in enumerate(_sample((adj or {}).get(names[ent], ()), k2, rng)):
                nbr2_rel[u, m] = rels.setdefault(rel, len(rels))
                nbr2_ent[u, m] = ents.setdefault(other, len(ents))
                if not rel.startswith("~"):
                    triples.append((ent, nbr2_rel[u, m], nbr2_ent[u, m]))
        pos = np.zeros(len(names), dtype=np.int64)
        pos[hop1] = np.arange(len(hop1))
        return {"hop1": hop1, "nbr2_ent": nbr2_ent, "nbr2_rel": nbr2_rel, "nbr_pos": pos[nbr_ent]}

    def can_score(self, key: str) -> bool:
        return key in self.tables

    @torch.no_grad()
    def refresh(self, key: str, cache: bool = True) -> None:
        """relation_text: (re-)encode the domain's relation names when the backbone trains."""
        if self.rel_map is not None and key in self.vocab and (self.ctx.backbone_trains or key not in self.rel_encoded):
            self._encode_relations(key, cache)

    @torch.no_grad()
    def _encode_relations(self, key: str, cache: bool = True) -> None:
        ctx, cfg = self.ctx, self.ctx.cfg
        texts = [readable(r) for r in self.vocab[key][1][1:]]  # id 0 is the pad: a zero vector
        if ctx.route is not None:
            ctx.route(key)
        if ctx.backbone_trains:
            vecs = encode_texts(ctx.backbone, texts, cfg.max_length, cfg.pooling, cfg.encode_batch)
        else:
            vecs = cached_text_vectors(ctx.backbone, texts, cfg.max_length, cfg.pooling, cfg.encode_batch,
                                       cache=cache and ctx.cache_vectors)
        self.rel_encoded[key] = torch.cat([vecs.new_zeros(1, vecs.shape[1]), vecs]).to(ctx.device())

    def relation_text(self, key: str) -> torch.Tensor:
        """relation_text: the text part ``M enc(text(r))`` of every relation of a domain, (R, dim)."""
        if key not in self.rel_encoded:
            self._encode_relations(key)
        return self.rel_map(self.rel_encoded[key])

    def relations(self, key: str, idx: torch.Tensor) -> torch.Tensor:
        """Relation vectors of ids ``idx`` (any shape S) -> (*S, dim): the learned table, plus the
        text part with relation_text."""
        r = self.tables[key]["rel"](idx)
        return r if self.rel_map is None else r + self.relation_text(key)[idx]

    def neighbours(self, key: str) -> torch.Tensor:
        """(N, K, dim) vectors of each item's sampled neighbours: their entities (hops=1), or each
        aggregated with its own sampled neighbours, ``W2 [e_j ; sum_m a_m e_m]`` (hops=2)."""
        ix, ent = self.index[key], self.tables[key]["ent"]
        if self.out2 is None:
            return ent(ix["nbr_ent"])
        u = ent(ix["hop1"])  # (U, d)
        own = attend(u, self.relations(key, ix["nbr2_rel"]), ent(ix["nbr2_ent"]), ix["nbr2_rel"] == 0)
        return self.out2(torch.cat([u, own], -1))[ix["nbr_pos"]]

    def forward(self, key: str, fresh: torch.Tensor | None = None) -> torch.Tensor:
        ix, tab = self.index[key], self.tables[key]
        e = tab["ent"](ix["item"])  # (N, d)
        agg = attend(e, self.relations(key, ix["nbr_rel"]), self.neighbours(key), ix["nbr_rel"] == 0)
        vec = self.out(torch.cat([e, agg], -1))
        return torch.where((ix["item"] > 0).unsqueeze(-1), vec, self.missing.expand_as(vec))

    def extra_loss(self, key: str) -> torch.Tensor | None:
        """The TransE auxiliary loss on the domain's graph (None when off or graphless)."""
        w = float(self.settings["transe_weight"])
        triples = self.index.get(key, {}).get("triples")
        if not w or triples is None or not len(triples):
            return None
        tab = self.tables[key]
        pick = triples[torch.randint(len(triples), (int(self.settings["transe_batch"]),), device=triples.device)]
        neg = torch.randint(1, tab["ent"].num_embeddings, (len(pick),), device=triples.device)
        h, r, t = tab["ent"](pick[:, 0]), self.relations(key, pick[:, 1]), tab["ent"](pick[:, 2])
        return w * transe_loss(h, r, t, tab["ent"](neg), float(self.settings["margin"]))
