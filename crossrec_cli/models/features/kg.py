"""``kg``: an item's knowledge-graph entity, aggregated with its 1-hop neighbours.

Each domain's items carry ``KgItem(entity, edges)`` (``crossrec_cli/data/kg.py``). Per domain the
feature learns an entity table and a relation table (inverse relations apart); an item's vector
is ``W [e_item ; sum_j a_j e_j]`` over a fixed, seeded sample of ``neighbors`` edges with
relation-aware attention ``a = softmax_j((e_item * r_j) . e_j / sqrt(d))`` (KGCN / KGAT style).
Items without a linked entity (most Last.fm artists) get one learned "no entity" vector; a
domain without a graph is all "no entity", so transfer to it still works. Entity tables make the
feature transductive.

Settings (``model.feature_settings.kg``): ``neighbors`` (16), ``transe_weight`` (0: off; else a
TransE margin loss ``mean(max(0, margin + |h + r - t| - |h + r - t'|))`` over ``transe_batch``
sampled triples with a random tail t', added to each training step), ``margin`` (1.0),
``seed`` (0, the neighbour sample).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crossrec_cli.models.features.base import FEATURES, Catalogue, FeatureContext, ItemFeature
from crossrec_cli.models.init import init_weights

DEFAULTS = {"neighbors": 16, "transe_weight": 0.0, "transe_batch": 256, "margin": 1.0, "seed": 0}


def transe_loss(h: torch.Tensor, r: torch.Tensor, t: torch.Tensor, t_neg: torch.Tensor, margin: float) -> torch.Tensor:
    """Margin ranking of true triples over corrupted ones: (B, d) each -> ()."""
    pos = (h + r - t).norm(dim=-1)
    neg = (h + r - t_neg).norm(dim=-1)
    return F.relu(margin + pos - neg).mean()


@FEATURES.register("kg")
class KgFeature(ItemFeature):
    transductive = True

    def __init__(self, ctx: FeatureContext, name: str = ""):
        super().__init__()
        self.ctx = ctx
        given = dict(((ctx.cfg.feature_settings or {}).get("kg") or {}))
        unknown = sorted(set(given) - set(DEFAULTS))
        if unknown:
            from crossrec_cli.errors import CrossrecError

            raise CrossrecError(f"model.feature_settings.kg.{unknown[0]}", "unknown kg setting",
                                f"expected one of {sorted(DEFAULTS)}")
        self.settings = {**DEFAULTS, **given}
        dim = ctx.cfg.dim
        self.out = nn.Linear(2 * dim, dim)
        self.missing = nn.Parameter(torch.zeros(dim))
        init_weights(self.out, ctx.cfg.init_std)
        nn.init.normal_(self.missing, std=ctx.cfg.init_std)
        self.tables = nn.ModuleDict()  # per domain: entity and relation embeddings
        self.index: dict[str, dict[str, torch.Tensor]] = {}  # per domain: item entity, neighbours, triples

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
        triples = []
        for i, it in enumerate(items):
            if it is None or it.entity is None:
                continue
            h = item_ent[i] = ents.setdefault(it.entity, len(ents))
            edges = list(it.edges)
            if len(edges) > k:
                edges = [edges[j] for j in sorted(rng.choice(len(edges), k, replace=False))]
            for j, (rel, ent) in enumerate(edges):
                nbr_rel[i, j] = rels.setdefault(rel, len(rels))
                nbr_ent[i, j] = ents.setdefault(ent, len(ents))
                if not rel.startswith("~"):
                    triples.append((h, nbr_rel[i, j], nbr_ent[i, j]))
        dim, std, dev = self.ctx.cfg.dim, self.ctx.cfg.init_std, self.ctx.device()
        table = nn.ModuleDict({"ent": nn.Embedding(len(ents), dim), "rel": nn.Embedding(len(rels), dim)})
        init_weights(table, std)
        self.tables[key] = table.to(dev)
        self.index[key] = {
            "item": torch.as_tensor(item_ent, device=dev),
            "nbr_ent": torch.as_tensor(nbr_ent, device=dev),
            "nbr_rel": torch.as_tensor(nbr_rel, device=dev),
            "triples": torch.as_tensor(np.asarray(triples, dtype=np.int64).reshape(-1, 3), device=dev),
        }

    def can_score(self, key: str) -> bool:
        return key in self.tables

    def forward(self, key: str, fresh: torch.Tensor | None = None) -> torch.Tensor:
        ix, tab = self.index[key], self.tables[key]
        e = tab["ent"](ix["item"])  # (N, d)
        n, r = tab["ent"](ix["nbr_ent"]), tab["rel"](ix["nbr_rel"])  # (N, K, d)
        score = ((e.unsqueeze(1) * r) * n).sum(-1) / math.sqrt(e.shape[-1])
        score = score.masked_fill(ix["nbr_rel"] == 0, float("-inf"))
        att = torch.softmax(score, -1).nan_to_num(0.0)  # an item without edges aggregates nothing
        agg = (att.unsqueeze(-1) * n).sum(1)
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
        h, r, t = tab["ent"](pick[:, 0]), tab["rel"](pick[:, 1]), tab["ent"](pick[:, 2])
        return w * transe_loss(h, r, t, tab["ent"](neg), float(self.settings["margin"]))
