"""Scorers for the text tasks. Every one maps a list of inputs to logits (B, n_labels):

- ``SequenceClassifier``: encoder, ``first [SEP] second`` -> pooled vector -> linear head; ONE
  label vector per sequence (not per token).
- ``YesNoScorer``: decoder, prompt -> next-token logits of the answer tokens, (B, 2) = [no, yes].
- ``SimilarityScorer``: zero-shot encoder baseline, cos(candidate, liked) - cos(candidate, disliked).
- ``SimilarityHead`` (similarity_head.py): that score as a trainable head, (B, 2) = [0, logit].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from crossrec_cli.models.backbone import Backbone, last_hidden
from crossrec_cli.models.encode import pool


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def fit_length(model: nn.Module, want: int) -> int:
    """``want`` capped at the model's position table (a longer input would fail, not truncate)."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return min(want, int(limit)) if limit else want


def backbone_trains(model: nn.Module) -> bool:
    return any(p.requires_grad for p in model.parameters())


class SequenceClassifier(nn.Module):
    """inputs: list of (first, second | None) texts -> logits (B, n_labels)."""

    def __init__(self, backbone: Backbone, n_labels: int, pooling: str = "mean", max_length: int = 256,
                 dropout: float = 0.1):
        super().__init__()
        self.backbone = backbone.model
        self.tokenizer = backbone.tokenizer
        self.kind = backbone.kind
        self.pooling, self.max_length = pooling, fit_length(backbone.model, max_length)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.hidden_size, n_labels)
        self._frozen_cache: dict[tuple, torch.Tensor] = {}

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def train(self, mode: bool = True) -> SequenceClassifier:
        super().train(mode)
        if not backbone_trains(self.backbone):
            self.backbone.eval()  # frozen features: no dropout noise, and they can be cached
        return self

    def pooled(self, inputs: Sequence[tuple[str, str | None]]) -> torch.Tensor:
        """(B, hidden) pooled backbone states of the (pair) texts."""
        first = [a for a, _ in inputs]
        second = [b for _, b in inputs]
        pair = all(b is not None for b in second)
        batch = self.tokenizer(first, second if pair else None, padding=True, truncation=True,
                               max_length=self.max_length, return_tensors="pt")
        batch = {k: v.to(_device(self.head)) for k, v in batch.items()}
        hidden = last_hidden(self.backbone, self.kind, batch)
        mask = batch["attention_mask"]
        if hidden.shape[1] != mask.shape[1]:  # prompt-learning adapters prepend virtual tokens
            mask = torch.cat([mask.new_ones(mask.shape[0], hidden.shape[1] - mask.shape[1]), mask], 1)
        return pool(hidden, mask, self.pooling)

    def forward(self, inputs: Sequence[tuple[str, str | None]]) -> torch.Tensor:
        if backbone_trains(self.backbone):
            vecs = self.pooled(inputs)
        else:  # frozen backbone: encode each distinct input once, train only the head
            todo = [x for x in dict.fromkeys(inputs) if x not in self._frozen_cache]
            if todo:
                with torch.no_grad():
                    for a in range(0, len(todo), 64):
                        chunk = todo[a:a + 64]
                        self._frozen_cache.update(zip(chunk, self.pooled(chunk).float()))
            vecs = torch.stack([self._frozen_cache[x] for x in inputs])
        return self.head(self.dropout(vecs.to(self.head.weight.dtype)))


class YesNoScorer(nn.Module):
    """prompts (B strings ending where the answer starts) -> logits (B, 2) = [no, yes].

    Left padding with explicit position ids, so the last position is every prompt's answer slot
    and only that position's vocabulary logits are computed (``logits_to_keep=1``).
    """

    def __init__(self, backbone: Backbone, yes_id: int, no_id: int, max_length: int = 512):
        super().__init__()
        self.backbone = backbone.model
        self.tokenizer = backbone.tokenizer
        self.ids = torch.tensor([no_id, yes_id])
        self.max_length = fit_length(backbone.model, max_length)

    def head_parameters(self) -> list[nn.Parameter]:
        return []

    def forward(self, prompts: Sequence[str]) -> torch.Tensor:
        tok = self.tokenizer
        side, tside = tok.padding_side, tok.truncation_side
        tok.padding_side, tok.truncation_side = "left", "left"  # keep the question at the end
        try:
            batch = tok(list(prompts), padding=True, truncation=True, max_length=self.max_length,
                        add_special_tokens=False, return_tensors="pt")
        finally:
            tok.padding_side, tok.truncation_side = side, tside
        dev = _device(self.backbone)
        ids, mask = batch["input_ids"].to(dev), batch["attention_mask"].to(dev)
        positions = (mask.long().cumsum(-1) - 1).clamp_min(0)
        out = self.backbone(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1)
        return out.logits[:, -1, self.ids.to(dev)].float()


def embed_texts(model: nn.Module, tokenizer, kind: str, pooling: str, max_length: int,
                texts: list[str]) -> torch.Tensor:
    """(len(texts), hidden) unit-norm pooled vectors, with gradients when enabled and the model trains."""
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    batch = {k: v.to(_device(model)) for k, v in batch.items()}
    hidden = last_hidden(model, kind, batch)
    return F.normalize(pool(hidden, batch["attention_mask"], pooling).float(), dim=-1)


def group_means(vecs: torch.Tensor, groups: Sequence[Sequence[str]], row: dict[str, int]) -> torch.Tensor:
    """(len(groups), hidden): per group the unit-norm mean of its texts' rows of ``vecs``; an empty
    group gives a zero vector, so its cosine with anything is 0."""
    out = vecs.new_zeros(len(groups), vecs.shape[1])
    rows = [row[t] for g in groups for t in g]
    if rows:
        owner = torch.tensor([i for i, g in enumerate(groups) for _ in g], device=vecs.device)
        out = out.index_add(0, owner, vecs[torch.tensor(rows, device=vecs.device)])
    return F.normalize(out, dim=-1)


def like_balance(liked: Sequence[str], disliked: Sequence[str]) -> float:
    """(liked - disliked) / history length in [-1, 1]; 0 for an empty history."""
    n = len(liked) + len(disliked)
    return (len(liked) - len(disliked)) / n if n else 0.0


class SimilarityScorer(nn.Module):
    """inputs: (liked texts, disliked texts, candidate) -> logits (B, 2) = [0, scale * s] with
    s = cos(c, mean liked) - cos(c, mean disliked); no training (the zero-shot baseline)."""

    def __init__(self, backbone: Backbone, pooling: str = "mean", max_length: int = 64, scale: float = 5.0):
        super().__init__()
        self.backbone, self.tokenizer = backbone.model, backbone.tokenizer
        self.kind, self.pooling, self.scale = backbone.kind, pooling, scale
        self.max_length = fit_length(backbone.model, max_length)
        self._cache: dict[str, torch.Tensor] = {}  # text -> unit vector (the backbone never changes)
        self.eval()  # never trains: no dropout noise in the vectors

    def head_parameters(self) -> list[nn.Parameter]:
        return []

    @torch.no_grad()
    def embed(self, texts: list[str]) -> torch.Tensor:
        """(len(texts), hidden) unit vectors; each distinct text is encoded once per scorer."""
        todo = sorted((t for t in dict.fromkeys(texts) if t not in self._cache), key=len)
        for a in range(0, len(todo), 64):
            chunk = todo[a:a + 64]
            vecs = embed_texts(self.backbone, self.tokenizer, self.kind, self.pooling, self.max_length, chunk)
            self._cache.update(zip(chunk, vecs))
        return torch.stack([self._cache[t] for t in texts])

    def forward(self, inputs: Sequence[tuple[Sequence[str], Sequence[str], str]]) -> torch.Tensor:
        texts = sorted(dict.fromkeys(t for x in inputs for t in (*x[0], *x[1], x[2])), key=len)
        vecs = self.embed(texts)
        row = {t: i for i, t in enumerate(texts)}
        cand = vecs[torch.tensor([row[x[2]] for x in inputs], device=vecs.device)]
        liked, disliked = group_means(vecs, [x[0] for x in inputs], row), group_means(vecs, [x[1] for x in inputs], row)
        s = ((cand * liked).sum(-1) - (cand * disliked).sum(-1)).cpu()
        return torch.stack([torch.zeros_like(s), self.scale * s], 1)
