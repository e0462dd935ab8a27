"""The three graphs an export holds, as modules over a trained ``SeqRec`` (traced to ONNX).

The library computes every number; these modules only fix what a graph takes and returns:

- ``UserGraph``: history rows of ``item_matrix`` (B, L, W) + valid mask (B, L) -> the newest
  position's scoring vector (B, W') (``users_of`` then ``scoring_vectors``). The item matrix stays
  outside the graph, so items added at serve time need no new graph.
- ``ItemHead``: LM vectors of texts (n, hidden) -> (rows (n, W), scoring vectors (n, W')) of one
  domain, with that domain's catalogue statistics (``model.text_norm``, zero-shot alignment, the
  text prior's centre) fixed as they were at export: an added item never moves the others.
- ``TextEncoder``: token ids + attention mask (B, T) -> pooled LM vectors (B, hidden).
"""

from __future__ import annotations

import torch
from torch import nn

from crossrec_cli.models.backbone import Backbone, last_hidden
from crossrec_cli.models.encode import pool
from crossrec_cli.models.seqrec import SeqRec


class UserGraph(nn.Module):
    """(rows (B, L, W), valid (B, L) bool) -> user scoring vectors (B, W'); ``general``: the readout's
    domain-general user (a domain the run never trained on, readout=residual | pool)."""

    def __init__(self, model: SeqRec, general: bool, width: int):
        super().__init__()
        self.model, self.general = model, general
        self.register_buffer("probe", torch.zeros(1, width), persistent=False)  # scoring_vectors reads its width

    def forward(self, rows: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        h = rows * valid.unsqueeze(-1).to(rows.dtype)  # padding rows are zero, as in user_states
        users = self.model.users_of(h, valid, general=self.general)[:, -1]
        return self.model.scoring_vectors(users, self.probe)[0]


class ItemHead(nn.Module):
    """LM vectors (n, hidden) -> (item rows (n, W), scoring vectors (n, W')) of domain ``key``: the
    text feature's normalisation and projection, the fusion and the text prior's columns, as
    ``SeqRec.item_matrix`` computes them for an item tower whose only feature is text."""

    def __init__(self, model: SeqRec, key: str):
        super().__init__()
        self.model, self.key = model, key

    def forward(self, lm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        text = self.model.features["text"]
        out = self.model.fusion([text.project(self.key, text.normalise(self.key, lm))], self.key)
        prior = self.model.prior_columns(self.key, lm)
        rows = out if prior is None else torch.cat([out, prior.to(out.dtype)], 1)
        return rows, self.model.scoring_vectors(rows[:1], rows)[1]


class TextEncoder(nn.Module):
    """(input_ids, attention_mask) (B, T) -> pooled LM vectors (B, hidden), as ``forward_pool``."""

    def __init__(self, backbone: Backbone, pooling: str):
        super().__init__()
        self.backbone, self.model, self.pooling = backbone, backbone.model, pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = last_hidden(self.model, self.backbone.kind, {"input_ids": input_ids, "attention_mask": attention_mask})
        mask = attention_mask
        if hidden.shape[1] != mask.shape[1]:  # prompt-learning methods prepend virtual tokens
            extra = hidden.shape[1] - mask.shape[1]
            mask = torch.cat([mask.new_ones(mask.shape[0], extra), mask], 1)
        return pool(hidden, mask, self.pooling)
