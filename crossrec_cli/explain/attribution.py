"""Why a trained recommender scores an item for a user.

- ``history_attributions``: each history item's contribution to the score, by integrated gradients
  through the user tower (captum; the baseline replaces every history item vector by zeros, the
  positions and mask kept), with its completeness gap (attributions sum to score - baseline score
  up to ``delta``); ``ablation``: the exact score drop when one history item is removed.
- ``attention_maps``: the user tower's attention weights per layer (L x L, averaged over heads).
- ``token_attributions``: integrated gradients on the backbone's input token embeddings of an
  item's text (captum LayerIntegratedGradients; baseline: every non-special token -> padding), for
  a model whose item vector is its text alone.
- ``kg_paths``: with a knowledge graph, the item - relation - entity - relation - history item
  paths that link a recommendation to the history.
- ``deletion``: faithfulness; the score after removing the k most-attributed history items
  against removing k random ones (Samek et al.'s deletion curve).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from crossrec_cli.models.seqrec import SeqRec, pad_histories


@dataclass
class Scorer:
    """score(history item indices, candidate) under a trained model, for one domain."""

    model: SeqRec
    key: str
    items: torch.Tensor  # (N, dim) item matrix, eval mode, no gradient

    @classmethod
    def of(cls, model: SeqRec, key: str) -> Scorer:
        model.eval()
        with torch.no_grad():
            return cls(model, key, model.item_matrix(key).detach())

    def inputs(self, history: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, L, dim) history item vectors and (1, L) valid mask, left-padded like training."""
        hist = pad_histories([history], self.model.cfg.max_history)
        valid = hist >= 0
        h = self.items[hist.clamp_min(0)] * valid.unsqueeze(-1)
        return h, valid

    def from_vectors(self, h: torch.Tensor, valid: torch.Tensor, candidate: int) -> torch.Tensor:
        """(B,) scores of ``candidate`` for users whose history vectors are ``h`` (B, L, dim)."""
        users = self.model.users_of(h, valid.expand(h.shape[0], -1), self.key)[:, -1]
        return self.model.logits(users, self.items[candidate:candidate + 1])[:, 0]

    @torch.no_grad()
    def score(self, history: list[int], candidate: int) -> float:
        if not history:
            return float("nan")
        h, valid = self.inputs(history)
        return float(self.from_vectors(h, valid, candidate)[0])

    @torch.no_grad()
    def user_vector(self, history: list[int]) -> torch.Tensor:
        h, valid = self.inputs(history)
        return self.model.users_of(h, valid, self.key)[:, -1]


def history_attributions(scorer: Scorer, history: list[int], candidate: int,
                         n_steps: int = 64) -> tuple[np.ndarray, float, float]:
    """(contribution per history item, oldest first; score; completeness gap |sum - (score - baseline)|)."""
    from captum.attr import IntegratedGradients

    h, valid = scorer.inputs(history)
    n = len(history[-scorer.model.cfg.max_history:])
    model, d = scorer.model, scorer.model.cfg.dim
    towers = Scorer(model, scorer.key, model.tower_vectors(scorer.items))  # the text prior's columns apart
    ig = IntegratedGradients(lambda x: towers.from_vectors(x, valid, candidate))
    attr, delta = ig.attribute(model.tower_vectors(h), baselines=torch.zeros_like(model.tower_vectors(h)),
                               n_steps=n_steps, method="gausslegendre", return_convergence_delta=True)
    per_item = attr[0].sum(-1)[-n:].detach().numpy().astype(np.float64)
    if scorer.items.shape[-1] > d:  # the text prior's share, split exactly over the history items
        per_item += prior_contributions(model, h[0, -n:, d:], scorer.items[candidate, d:])
    return per_item, scorer.score(history, candidate), float(abs(delta.item()))


def prior_contributions(model: SeqRec, hist: torch.Tensor, item: torch.Tensor) -> np.ndarray:
    """The text prior's score cos(normalised recency-weighted sum of ``hist`` (n, hidden), oldest
    first) . ``item`` as a sum over the history: item j adds a_j (x_j . item) / |sum_k a_k x_k|, a_j =
    recency^(n-1-j). The prior ignores the scale of its input, so integrated gradients from a zero
    baseline would give it nothing; this split is exact."""
    a = model.prior.recency ** torch.arange(len(hist) - 1, -1, -1, dtype=hist.dtype)
    total = (a.unsqueeze(1) * hist).sum(0)
    return (a * (hist @ item) / total.norm().clamp_min(1e-12)).detach().numpy().astype(np.float64)


def ablation(scorer: Scorer, history: list[int], candidate: int) -> np.ndarray:
    """Exact leave-one-out: score(history) - score(history without item j), per j."""
    full = scorer.score(history, candidate)
    return np.array([full - scorer.score(history[:j] + history[j + 1:], candidate) for j in range(len(history))])


def deletion(scorer: Scorer, history: list[int], candidate: int, contributions: np.ndarray, k_max: int = 5,
             draws: int = 10, seed: int = 0) -> dict[str, list[float]]:
    """Score drop after removing the k most-attributed history items vs k random ones (mean of
    ``draws``), k = 1..min(k_max, len(history) - 1)."""
    full = scorer.score(history, candidate)
    order = np.argsort(-contributions, kind="stable")
    rng = np.random.default_rng(seed)
    top, rand = [], []
    for k in range(1, min(k_max, len(history) - 1) + 1):
        drop = set(order[:k].tolist())
        top.append(full - scorer.score([x for j, x in enumerate(history) if j not in drop], candidate))
        got = []
        for _ in range(draws):
            pick = set(rng.choice(len(history), size=k, replace=False).tolist())
            got.append(full - scorer.score([x for j, x in enumerate(history) if j not in pick], candidate))
        rand.append(float(np.mean(got)))
    return {"top": [float(x) for x in top], "random": rand}


@torch.no_grad()
def attention_maps(scorer: Scorer, history: list[int]) -> list[np.ndarray]:
    """Per transformer layer of the user tower, the (n, n) attention weights over the last
    ``n`` history positions (rows attend to columns; averaged over heads)."""
    tower = scorer.model.user
    if not hasattr(tower, "encoder"):
        return []
    h, valid = scorer.inputs(history)
    n = len(history[-scorer.model.cfg.max_history:])
    captured: list[tuple[torch.Tensor, torch.Tensor]] = []
    hooks = [layer.register_forward_pre_hook(lambda _m, args, kwargs: captured.append((args[0], kwargs.get("src_mask"))),
                                             with_kwargs=True)
             for layer in tower.encoder.layers]
    try:
        tower(scorer.model.tower_vectors(h), valid)  # the towers' columns (not the text prior's)
    finally:
        for hk in hooks:
            hk.remove()
    maps = []
    for layer, (x, mask) in zip(tower.encoder.layers, captured):
        if layer.norm_first:
            x = layer.norm1(x)
        _, w = layer.self_attn(x, x, x, attn_mask=mask, need_weights=True, average_attn_weights=True)
        maps.append(w[0, -n:, -n:].numpy().astype(np.float64))
    return maps


def token_attributions(scorer: Scorer, user: torch.Tensor, text: str, n_steps: int = 32) -> list[tuple[str, float]] | None:
    """(token, contribution) of an item's text to its score for ``user`` (1, dim); None when the
    item vector is not the text alone or the backbone is absent."""
    from captum.attr import LayerIntegratedGradients

    model = scorer.model
    if list(model.features) != ["text"] or model.backbone is None:
        return None
    feat = model.features["text"]
    bb, cfg = feat.ctx.backbone, feat.ctx.cfg
    batch = bb.tokenizer([text], truncation=True, max_length=cfg.max_length, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    special = torch.tensor(bb.tokenizer.get_special_tokens_mask(ids[0].tolist(), already_has_special_tokens=True),
                           dtype=torch.bool)
    pad = bb.tokenizer.pad_token_id if bb.tokenizer.pad_token_id is not None else 0
    ref = torch.where(special.unsqueeze(0), ids, torch.full_like(ids, pad))

    def forward(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        from crossrec_cli.models.backbone import last_hidden
        from crossrec_cli.models.encode import pool

        hidden = last_hidden(bb.model, bb.kind, {"input_ids": input_ids, "attention_mask": attention_mask})
        vec = pool(hidden, attention_mask, cfg.pooling)
        item = feat.project(scorer.key, feat.normalise(scorer.key, vec))
        prior = model.prior_columns(scorer.key, vec)  # the text prior's part of the score, when it is on
        item = item if prior is None else torch.cat([item, prior.to(item.dtype)], -1)
        return model.logits(user.expand(len(item), -1), item).diagonal()

    model.eval()
    lig = LayerIntegratedGradients(forward, bb.model.get_input_embeddings())
    attr = lig.attribute(ids, baselines=ref, additional_forward_args=(mask,), n_steps=n_steps)
    per_token = attr[0].sum(-1).detach().numpy()
    tokens = bb.tokenizer.convert_ids_to_tokens(ids[0].tolist())
    return [(t, float(a)) for t, a, s in zip(tokens, per_token, special.tolist()) if not s]


def kg_paths(kg: Sequence, candidate: int, history: list[int], order: np.ndarray, limit: int = 5) -> list[dict]:
    """Knowledge-graph paths that link a recommended item to history items: a direct edge
    (item -r-> history item) or one shared neighbour (item -r1-> entity <-r2- history item),
    history items taken in ``order`` (most contributing first), at most ``limit`` paths.
    ``kg``: the domain's per-item ``KgItem`` (entity, ((relation, neighbour), ...))."""
    cand = kg[candidate]
    if cand.entity is None:
        return []
    out_edges: dict[str, list[str]] = {}
    for rel, nb in cand.edges:
        out_edges.setdefault(nb, []).append(rel)
    paths = []
    for j in order:
        h = history[int(j)]
        item = kg[h]
        if item.entity is None or h == candidate:
            continue
        if item.entity in out_edges:
            paths.append({"history_index": int(j), "path": [cand.entity, out_edges[item.entity][0], item.entity]})
        else:
            for rel, nb in item.edges:
                if nb in out_edges and nb != cand.entity:
                    paths.append({"history_index": int(j), "path": [cand.entity, out_edges[nb][0], nb, rel, item.entity]})
                    break
        if len(paths) >= limit:
            break
    return paths
