"""The text-based sequential recommender: item tower (LM -> pool -> projection [+ item id]),
user tower (causal transformer over history item vectors) and a cosine/dot score.

One model serves several domains: each has its own catalogue (texts, optional id table).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from crossrec_cli.models.backbone import Backbone
from crossrec_cli.models.encode import cached_text_vectors, forward_pool
from crossrec_cli.models.projection import build_projection


@dataclass
class SeqRecConfig:
    dim: int = 64
    max_history: int = 50
    layers: int = 2
    heads: int = 2
    dropout: float = 0.5
    ffn_dropout: float | None = None  # between the feed-forward's two maps (None: = dropout; RecBole: 0)
    readout: str = "last"  # last (causal transformer) | mean (mean of history vectors)
    score: str = "dot"  # dot | cosine (with temperature) | auto (dot for id-only items, cosine with text)
    temperature: float = 0.07
    item_ids: bool = False  # transductive: add a learned id embedding to the text vector
    norm_first: bool = False  # False: post-LN blocks after an input LayerNorm, as SASRec
    init_std: float = 0.02  # N(0, init_std) for every embedding and linear map of the towers
    projection: str = "mlp"  # text -> item vector: linear | mlp | whiten | moe (models/projection.py)
    experts: int = 8  # projection=moe
    projection_dropout: float = 0.0  # dropout on the LM vectors before whiten / moe
    text_norm: str = "none"  # none | center | standardize: LM vectors by their domain's catalogue statistics
    pooling: str = "mean"
    max_length: int = 64
    encode_batch: int = 128


def init_weights(module: nn.Module, std: float) -> None:
    """Every embedding, linear map and attention projection ~ N(0, std), biases 0, LayerNorms
    1/0 (BERT / SASRec). torch's defaults (N(0, 1) embeddings, Kaiming / Xavier maps) put the
    position table ~50x above the item vectors at the user tower's input."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.MultiheadAttention) and m.in_proj_weight is not None:
            nn.init.normal_(m.in_proj_weight, std=std)
            nn.init.zeros_(m.in_proj_bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class UserTower(nn.Module):
    """Item vectors of a left-padded history (B, L, d) + valid mask (B, L) -> per-position
    user states (B, L, d); position L-1 is the newest item."""

    def __init__(self, cfg: SeqRecConfig):
        super().__init__()
        self.cfg = cfg
        self.pos = nn.Embedding(cfg.max_history, cfg.dim)
        # SASRec: LayerNorm(item + position) -> dropout -> post-LN blocks; pre-LN blocks end in
        # a final LayerNorm instead
        self.in_norm = nn.Identity() if cfg.norm_first else nn.LayerNorm(cfg.dim)
        layer = nn.TransformerEncoderLayer(
            cfg.dim, cfg.heads, 4 * cfg.dim, cfg.dropout, batch_first=True, norm_first=cfg.norm_first, activation="gelu"
        )
        if cfg.ffn_dropout is not None:  # torch drops the FFN's hidden units too; SASRec / RecBole do not
            layer.dropout = nn.Dropout(cfg.ffn_dropout)
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.dim) if cfg.norm_first else nn.Identity()
        self.drop = nn.Dropout(cfg.dropout)
        init_weights(self, cfg.init_std)

    def forward(self, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        if self.cfg.readout == "mean":  # running mean over valid items, causal by construction
            m = valid.unsqueeze(-1).to(h.dtype)
            return (h * m).cumsum(1) / m.cumsum(1).clamp_min(1.0)
        n = h.shape[1]
        x = self.drop(self.in_norm(h + self.pos.weight[-n:].unsqueeze(0)))
        causal = torch.ones(n, n, dtype=torch.bool, device=h.device).triu(1)
        blocked = causal.unsqueeze(0) | ~valid.unsqueeze(1)  # (B, L, L): True = may not attend
        blocked &= ~torch.eye(n, dtype=torch.bool, device=h.device)  # padded rows see themselves: no NaN
        mask = torch.zeros(blocked.shape, dtype=h.dtype, device=h.device).masked_fill(blocked, float("-inf"))
        mask = mask.repeat_interleave(self.cfg.heads, 0)
        return self.norm(self.encoder(x, mask=mask))


class SeqRec(nn.Module):
    """Item and user towers. ``catalogues[key]`` holds a domain's item texts (and id count)."""

    def __init__(self, cfg: SeqRecConfig, backbone: Backbone | None, backbone_trains: bool):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.backbone_model = backbone.model if backbone is not None else None  # registered params
        self.backbone_trains = backbone_trains and backbone is not None
        self.proj = None
        if backbone is not None:
            self.proj = build_projection(cfg.projection, backbone.hidden_size, cfg.dim, cfg.experts, cfg.projection_dropout)
            init_weights(self.proj, cfg.init_std)
        self.score = cfg.score if cfg.score != "auto" else ("dot" if backbone is None else "cosine")
        self.id_emb = nn.ModuleDict()
        self.user = UserTower(cfg)
        self.texts: dict[str, list[str]] = {}
        self._base: dict[str, torch.Tensor] = {}  # frozen (or last refreshed) LM vectors per domain
        self.cache_vectors = True  # frozen-backbone vectors come from / go to the disk cache
        self.composites: dict[str, tuple[str, str]] = {}  # key -> (target, source) with shared users
        self.switch_adapter = None  # callable(domain): route the backbone through that domain's adapter

    # -- catalogues --------------------------------------------------------------------------
    def add_catalogue(self, key: str, texts: list[str]) -> None:
        """Register a domain's items (text in item order); transductive models get an id table."""
        self.texts[key] = list(texts)
        self._base.pop(key, None)
        if self.cfg.item_ids and key not in self.id_emb:
            emb = nn.Embedding(len(texts), self.cfg.dim)
            nn.init.normal_(emb.weight, std=self.cfg.init_std)
            self.id_emb[key] = emb.to(self.user.pos.weight.device)

    def add_composite(self, key: str, target: str, source: str) -> None:
        """A merged catalogue: target items (0..N_t-1) then source items, each with a learned
        domain embedding, for histories that mix both domains (shared users)."""
        self.composites[key] = (target, source)
        if not hasattr(self, "domain_emb"):
            self.domain_emb = nn.Embedding(2, self.cfg.dim)
            nn.init.normal_(self.domain_emb.weight, std=self.cfg.init_std)
            self.domain_emb.to(self.user.pos.weight.device)

    def n_targets(self, key: str) -> int:
        """Items that can be recommended under ``key`` (a composite's target catalogue)."""
        return len(self.texts[self.composites[key][0] if key in self.composites else key])

    def can_score(self, key: str) -> bool:
        if key in self.composites:
            return all(self.can_score(k) for k in self.composites[key])
        return self.backbone is not None and not self.cfg.item_ids or key in self.id_emb

    @torch.no_grad()
    def refresh(self, key: str, cache: bool = True) -> None:
        """(Re-)encode a domain's catalogue with the backbone: (N, hidden), detached."""
        if key in self.composites:
            for k in self.composites[key]:
                self.refresh(k, cache)
            return
        if self.backbone is None:
            return
        self._route(key)
        dev = self.user.pos.weight.device
        if self.backbone_trains:
            from crossrec_cli.models.encode import encode_texts

            vecs = encode_texts(self.backbone, self.texts[key], self.cfg.max_length, self.cfg.pooling, self.cfg.encode_batch)
        else:
            vecs = cached_text_vectors(self.backbone, self.texts[key], self.cfg.max_length, self.cfg.pooling,
                                       self.cfg.encode_batch, cache=cache and self.cache_vectors)
        self._base[key] = vecs.to(dev)

    def _route(self, key: str) -> None:
        if self.switch_adapter is not None:
            self.switch_adapter(key)

    def base(self, key: str) -> torch.Tensor:
        if key not in self._base:
            self.refresh(key)
        return self._base[key]

    def item_matrix(self, key: str, fresh: torch.Tensor | None = None) -> torch.Tensor:
        """(N, dim) item vectors of a domain. ``fresh`` (item indices) are re-encoded with
        gradients through a training backbone; the rest come from the last refresh."""
        if key in self.composites:
            t, src = self.composites[key]
            nt = len(self.texts[t])
            ft = fs = None
            if fresh is not None:
                ft, fs = fresh[fresh < nt], fresh[fresh >= nt] - nt
            dom = self.domain_emb.weight
            return torch.cat([self.item_matrix(t, ft) + dom[0], self.item_matrix(src, fs) + dom[1]])
        parts = []
        if self.backbone is not None:
            base = self.base(key)
            if fresh is not None and self.backbone_trains and len(fresh):
                self._route(key)
                texts = [self.texts[key][i] for i in fresh.tolist()]
                new = forward_pool(self.backbone, texts, self.cfg.max_length, self.cfg.pooling).to(base.dtype)
                base = base.index_copy(0, fresh.to(base.device), new)
            parts.append(self.proj(self._normalise(key, base)))
        if self.cfg.item_ids:
            parts.append(self.id_emb[key].weight)
        return parts[0] if len(parts) == 1 else parts[0] + parts[1]

    def _normalise(self, key: str, base: torch.Tensor) -> torch.Tensor:
        """``model.text_norm``: centre (and scale) the LM vectors with their own domain's
        catalogue statistics, (N, hidden) -> (N, hidden). LM spaces are anisotropic (every item
        shares one large mean direction); removing it per domain also aligns domains for
        zero-shot transfer. Statistics come from the last refresh (no gradient)."""
        if self.cfg.text_norm == "none":
            return base
        ref = self.base(key)
        base = base - ref.mean(0)
        return base / (ref.std(0) + 1e-6) if self.cfg.text_norm == "standardize" else base

    # -- users and scores ----------------------------------------------------------------------
    def user_states(self, items: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
        """items: (N, dim); hist: (B, L) item indices, -1 = padding (left) -> (B, L, dim)."""
        valid = hist >= 0
        h = items[hist.clamp_min(0)] * valid.unsqueeze(-1)
        return self.user(h, valid)

    def logits(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """users (..., dim) x items (M, dim) -> (..., M)."""
        if self.score == "cosine":
            return F.normalize(users, dim=-1) @ F.normalize(items, dim=-1).T / self.cfg.temperature
        return users @ items.T

    def scoring_vectors(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Vectors whose dot product ranks like ``logits`` (for the chunked evaluator)."""
        if self.score == "cosine":
            return F.normalize(users, dim=-1), F.normalize(items, dim=-1)
        return users, items


def pad_histories(histories: list, max_len: int) -> torch.Tensor:
    """Left-pad the last ``max_len`` items of each history with -1: (B, max_len) long."""
    out = torch.full((len(histories), max_len), -1, dtype=torch.long)
    for i, h in enumerate(histories):
        h = list(h)[-max_len:]
        if h:
            out[i, max_len - len(h):] = torch.as_tensor(h, dtype=torch.long)
    return out


@torch.no_grad()
def seqrec_scorer(model: SeqRec, key: str, batch_size: int = 256, refresh: bool = False):
    """(user_vectors(evalset) -> (n, dim), item vectors (N, dim)) for the chunked evaluator.

    ``refresh`` re-encodes the catalogue first (needed after the backbone has trained). The
    returned function runs the user tower in eval mode without gradients whenever it is called."""
    was = model.training
    model.eval()
    if refresh:
        model.refresh(key)
    items = model.item_matrix(key)
    model.train(was)

    @torch.no_grad()
    def user_vectors(evalset) -> torch.Tensor:
        was_training = model.training
        model.eval()
        out = []
        for a in range(0, len(evalset), batch_size):
            hist = pad_histories(evalset.histories[a : a + batch_size], model.cfg.max_history).to(items.device)
            out.append(model.user_states(items, hist)[:, -1])
        model.train(was_training)
        users = torch.cat(out) if out else torch.zeros(0, items.shape[1])
        return model.scoring_vectors(users, items)[0].cpu()

    targets = items[: model.n_targets(key)]
    return user_vectors, model.scoring_vectors(targets[:1], targets)[1].cpu()
