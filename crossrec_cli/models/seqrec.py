"""The sequential recommender: item tower (the fusion of item features: text through the LM and
a projection, item id, ...), user tower (causal transformer over history item vectors) and a
cosine/dot score.

One model serves several domains: each registers its own catalogue with every item feature.
"""

from __future__ import annotations

import math

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from crossrec_cli.errors import CrossrecError
from crossrec_cli.models.backbone import Backbone
from crossrec_cli.models.features import FEATURES, Catalogue, FeatureContext
from crossrec_cli.models.fusion import build_fusion
from crossrec_cli.models.init import init_weights
from crossrec_cli.models.prior import TextPrior
from crossrec_cli.registry import Registry
from crossrec_cli.progress import phase

__all__ = ["SeqRec", "SeqRecConfig", "UserTower", "init_weights", "item_drop", "pad_histories", "seqrec_scorer"]

# checkpoint names before the item features were modules -> today's (SeqRec.upgrade_state)
LEGACY_NAMES = (("proj.", "features.text.proj."), ("id_emb.", "features.id.emb."))


@dataclass
class SeqRecConfig:
    dim: int = 64
    max_history: int = 50
    layers: int = 2
    heads: int = 2
    dropout: float = 0.5
    ffn_dropout: float | None = None  # between the feed-forward's two maps (None: = dropout; RecBole: 0)
    readout: str = "last"  # last (causal transformer) | mean (mean of history vectors) | residual | pool
    positions: str = "end"  # end: position 0 = the newest item | start: 0 = the oldest item in the window (RecBole)
    score: str = "auto"  # auto (dot for id-only items, cosine with text) | dot | cosine (with temperature)
    temperature: float = 0.07
    item_ids: bool = False  # transductive: add a learned id embedding to the text vector
    features: list[str] | None = None  # item features fused into an item's vector (None: text if a backbone, + id if item_ids)
    fusion: str = "sum"  # how the features' vectors combine (models/fusion/)
    feature_settings: dict | None = None  # per feature, e.g. {kg: {neighbors: 16, transe_weight: 0.1}}
    norm_first: bool = False  # False: post-LN blocks after an input LayerNorm, as SASRec
    init_std: float = 0.02  # N(0, init_std) for every embedding and linear map of the towers
    projection: str = "mlp"  # text -> item vector: linear | mlp | whiten | moe (models/projection.py)
    experts: int = 8  # projection=moe
    projection_dropout: float = 0.0  # dropout on the LM vectors before whiten / moe
    text_norm: str = "none"  # none | center | standardize: LM vectors by their domain's catalogue statistics
    residual_dim: int = 64  # width of the learned corrections of projection=residual / readout=residual
    general_loss: float = 0.0  # weight of a next-item loss on the readout's domain-general user alone (residual | pool)
    general_items: str = "model"  # the items general_loss reads: model (the towers' item vectors) | plain (the
    # projection's base: the language model's space, as a domain the model never trained on is read)
    seq_loss: float = 0.0  # weight of UniSRec's sequence-sequence contrastive loss (sequence_loss); 0 = off
    seq_drop: float = 0.2  # its item-drop view: the share of a history's items dropped (UniSRec: 0.2)
    text_prior: float = 0.0  # weight of the untrained text scorer added to every logit (models/prior.py); 0 = off
    text_prior_recency: float = 0.9  # its recency weighting over the history (model=text_zeroshot's default)
    pooling: str = "mean"
    max_length: int = 64
    encode_batch: int = 128


def _dot(users: torch.Tensor, items: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    return users, items, 1.0


def _cosine(users: torch.Tensor, items: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    return F.normalize(users, dim=-1), F.normalize(items, dim=-1), temperature


# model.score: (users, items, temperature) -> (u, i, t) with logits (u @ i.T) / t; u @ i.T alone
# ranks the same (t > 0). "auto" = cosine when the items have text, else dot (resolve_score).
SCORES: dict[str, Callable[[torch.Tensor, torch.Tensor, float], tuple[torch.Tensor, torch.Tensor, float]]] = {
    "dot": _dot, "cosine": _cosine}


def resolve_score(score: str, features: Sequence[str]) -> str:
    """``model.score`` with "auto" decided by the item features."""
    return score if score != "auto" else ("cosine" if "text" in features else "dot")


class UserTower(nn.Module):
    """Item vectors of a left-padded history (B, L, d) + valid mask (B, L) -> per-position
    user states (B, L, d); position L-1 is the newest item."""

    def __init__(self, cfg: SeqRecConfig):
        super().__init__()
        self.cfg = cfg
        readout = READOUTS.get(cfg.readout)
        # readout=residual / pool run their transformer at model.residual_dim between two linear maps
        width = cfg.residual_dim if getattr(readout, "narrow", False) else cfg.dim
        self.pos = nn.Embedding(cfg.max_history, width)
        # SASRec: LayerNorm(item + position) -> dropout -> post-LN blocks; pre-LN blocks end in
        # a final LayerNorm instead
        self.in_norm = nn.Identity() if cfg.norm_first else nn.LayerNorm(width)
        layer = nn.TransformerEncoderLayer(
            width, cfg.heads, 4 * width, cfg.dropout, batch_first=True, norm_first=cfg.norm_first, activation="gelu"
        )
        if cfg.ffn_dropout is not None:  # torch drops the FFN's hidden units too; SASRec / RecBole do not
            layer.dropout = nn.Dropout(cfg.ffn_dropout)
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width) if cfg.norm_first else nn.Identity()
        self.drop = nn.Dropout(cfg.dropout)
        init_weights(self, cfg.init_std)
        if getattr(readout, "build", None) is not None:  # the readout's own parameters
            readout.build(self, cfg, width)

    def forward(self, h: torch.Tensor, valid: torch.Tensor, general: bool = False) -> torch.Tensor:
        """User states; ``general``: the readout's domain-general user only (``Readout.general``)."""
        readout = READOUTS.get(self.cfg.readout)
        if not general:
            return readout(self, h, valid)
        part = getattr(readout, "general", None)
        if part is None:
            raise CrossrecError("model.readout", f"{self.cfg.readout} has no domain-general user",
                                "use model.readout=residual or pool")
        return part(self, h, valid)

    @property
    def has_general(self) -> bool:
        """Whether the readout has a domain-general part (``Readout.general``)."""
        return getattr(READOUTS.get(self.cfg.readout), "general", None) is not None

    def attend(self, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The causal transformer's state at every position."""
        n = h.shape[1]
        x = self.drop(self.in_norm(h + POSITIONS.get(self.cfg.positions)(self.pos, valid)))
        causal = torch.ones(n, n, dtype=torch.bool, device=h.device).triu(1)
        blocked = causal.unsqueeze(0) | ~valid.unsqueeze(1)  # (B, L, L): True = may not attend
        blocked &= ~torch.eye(n, dtype=torch.bool, device=h.device)  # padded rows see themselves: no NaN
        mask = torch.zeros(blocked.shape, dtype=h.dtype, device=h.device).masked_fill(blocked, float("-inf"))
        mask = mask.repeat_interleave(self.cfg.heads, 0)
        return self.norm(self.encoder(x, mask=mask))


def running_mean(tower: UserTower, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The mean of the valid items up to each position: causal by construction, no parameters."""
    m = valid.unsqueeze(-1).to(h.dtype)
    return (h * m).cumsum(1) / m.cumsum(1).clamp_min(1.0)


@dataclass(frozen=True)
class Readout:
    """A ``model.readout``: ``forward(tower, h, valid)``, plus ``build(tower, cfg, width)`` adding
    its own parameters to the tower, ``narrow``: its transformer runs at ``model.residual_dim``
    (between the ``down`` / ``up`` maps its build adds), and ``general(tower, h, valid)``: the part
    of the user that reads any catalogue the same way (no transformer, nothing tied to the training
    catalogues' directions), trained alone by ``model.general_loss`` and what a domain the model
    never trained on is read through (``SeqRec.read_general``). A plain callable is a readout too."""

    forward: Callable[[UserTower, torch.Tensor, torch.Tensor], torch.Tensor]
    build: Callable[[UserTower, SeqRecConfig, int], None] | None = None
    narrow: bool = False
    general: Callable[[UserTower, torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    def __call__(self, tower: UserTower, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.forward(tower, h, valid)


def _logit(p: float) -> float:
    p = min(max(float(p), 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def _build_residual(tower: UserTower, cfg: SeqRecConfig, width: int) -> None:
    """The transformer's share of the user state, learned from zero, and the learned recency."""
    tower.down, tower.up = nn.Linear(cfg.dim, width), nn.Linear(width, cfg.dim)
    init_weights(tower, cfg.init_std)  # the whole tower again (the draws runs of this readout were made with)
    tower.gain = nn.Parameter(torch.zeros(cfg.dim))
    # the text scorer's recency, learned: sigmoid(recency_logit), from model.text_prior_recency
    tower.recency_logit = nn.Parameter(torch.tensor(_logit(cfg.text_prior_recency)))


def recency_user(tower: UserTower, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """readout=residual's domain-general user: the text scorer's user with the learned recency."""
    recency = torch.sigmoid(tower.recency_logit)
    return TextPrior(tower.cfg.text_prior_recency).users(F.normalize(h, dim=-1) * valid.unsqueeze(-1).to(h.dtype),
                                                         valid, recency)


def residual_readout(tower: UserTower, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The text scorer's user (the L2-normalised recency-weighted mean of the L2-normalised item
    vectors up to each position) plus the causal transformer's state times a per-dimension gain
    that starts at zero: an untrained model ranks as ``model=text_zeroshot`` does (with
    ``projection=residual``, ``text_norm=center``, cosine), and training adds what the sequence
    tells beyond it, in the language model's space. The recency is learned too, from
    ``model.text_prior_recency``: how fast interest moves on is a property of sequences, not of one
    catalogue's items, so what it learns carries to a domain the model never saw."""
    return recency_user(tower, h, valid) + tower.gain * tower.up(tower.attend(tower.down(h), valid))


def _build_pool(tower: UserTower, cfg: SeqRecConfig, width: int) -> None:
    """Keys of the history's items, queries from the transformer's state (zero at the start), and
    a bias per distance back in the history, from the text scorer's recency weights: the recency
    learned as one number (``recency_logit``) plus a free offset per distance (from zero)."""
    tower.down = nn.Linear(cfg.dim, width)
    tower.key = nn.Linear(cfg.dim, width)
    tower.query = nn.Linear(width, width)
    init_weights(tower, cfg.init_std)
    nn.init.zeros_(tower.query.weight)
    nn.init.zeros_(tower.query.bias)
    # the bias per distance back: distance x log sigmoid(recency_logit) (the text scorer's recency
    # weights, learned as one number like readout=residual's, so it moves in a few epochs) + a free
    # offset per distance, from zero
    tower.recency_logit = nn.Parameter(torch.tensor(_logit(cfg.text_prior_recency)))
    tower.back_offset = nn.Parameter(torch.zeros(cfg.max_history))
    tower.like_newest = nn.Parameter(torch.zeros(()))  # weight of an item's cosine to the newest one


def back_bias(tower: UserTower) -> torch.Tensor:
    """readout=pool's bias (max_history,) per distance back: distance x log recency + the offset."""
    back = torch.arange(tower.back_offset.shape[0], dtype=tower.back_offset.dtype, device=tower.back_offset.device)
    return back * F.logsigmoid(tower.recency_logit) + tower.back_offset


def _pool_scores(tower: UserTower, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """readout=pool's domain-general scores (B, L, L) of history item j at position t, from what any
    catalogue has: a bias per distance back, plus ``like_newest`` x the cosine of item j to the item
    at t (how much a user's interest stays near its newest item)."""
    n = x.shape[1]
    steps = torch.arange(n, device=x.device)
    bias = back_bias(tower)
    back = (steps[:, None] - steps[None, :]).clamp_min(0).clamp_max(bias.shape[0] - 1)
    return bias[back] + tower.like_newest * (x @ x.transpose(1, 2))


def _pool(scores: torch.Tensor, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The softmax-weighted mean of the items up to each position (padded rows: 0)."""
    steps = torch.arange(x.shape[1], device=x.device)
    blocked = (steps[None, :] > steps[:, None]).unsqueeze(0) | ~valid.unsqueeze(1)
    return torch.softmax(scores.masked_fill(blocked, float("-inf")), dim=-1).nan_to_num(0.0) @ x


def pool_general(tower: UserTower, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """readout=pool's domain-general user: the history weighted by distance and likeness to the newest item only."""
    x = F.normalize(h, dim=-1)
    return _pool(_pool_scores(tower, x, valid), x, valid)


def pool_readout(tower: UserTower, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The user as a weighted mean of its own history's L2-normalised item vectors, the weights
    learned: softmax over the items up to each position of (the transformer's query . the item's
    key) + a bias per distance back (distance x log of a learned recency + a free offset) +
    ``like_newest`` x the item's cosine to the newest. It starts as the text scorer (query, offset
    and ``like_newest`` zero, recency ``model.text_prior_recency``: the scorer's weights), and whatever it learns, the user
    stays inside the span of its own items: on a domain the model never saw it can only re-weight
    that domain's history, never carry the training catalogue's directions into it."""
    x = F.normalize(h, dim=-1)
    q = tower.query(tower.attend(tower.down(h), valid))  # (B, L, w)
    scores = q @ tower.key(h).transpose(1, 2) / math.sqrt(q.shape[-1])  # (B, L, L): position t reads item j
    return _pool(scores + _pool_scores(tower, x, valid), x, valid)


# model.readout: (tower, item vectors (B, L, d), valid (B, L)) -> user states (B, L, d)
READOUTS: Registry[Callable[[UserTower, torch.Tensor, torch.Tensor], torch.Tensor]] = Registry(
    "readout", "model.readout")
READOUTS.add("last", UserTower.attend)
READOUTS.add("mean", running_mean)
READOUTS.add("residual", Readout(residual_readout, _build_residual, narrow=True, general=recency_user))
READOUTS.add("pool", Readout(pool_readout, _build_pool, narrow=True, general=pool_general))

# model.positions: (position table, valid (B, L)) -> position vectors, (1 or B, L, d)
POSITIONS: Registry[Callable[[nn.Embedding, torch.Tensor], torch.Tensor]] = Registry("positions", "model.positions")
POSITIONS.add("end", lambda pos, valid: pos.weight[-valid.shape[1]:].unsqueeze(0))  # the newest item is last
# left-padded rows: count valid items from the oldest
POSITIONS.add("start", lambda pos, valid: pos((valid.long().cumsum(1) - 1).clamp_min(0)))


class SeqRec(nn.Module):
    """Item and user towers. An item's vector is the fusion of its item features
    (``models/features``: text through the backbone, item id, ...), one catalogue per domain."""

    def __init__(self, cfg: SeqRecConfig, backbone: Backbone | None, backbone_trains: bool,
                 features: list[str] | None = None):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.backbone_model = backbone.model if backbone is not None else None  # registered params
        self.backbone_trains = backbone_trains and backbone is not None
        names = feature_names(cfg, backbone is not None) if features is None else list(features)
        if "text" in names and backbone is None:
            raise CrossrecError("model.features", "the text item feature needs a backbone",
                                "choose a backbone (backbone=minilm) or drop text from model.features")
        self.ctx = FeatureContext(cfg, backbone, self.backbone_trains, device=lambda: self.user.pos.weight.device)
        self.features = nn.ModuleDict({name: FEATURES.get(name.split(":")[0])(self.ctx, name) for name in names})
        self.fusion = build_fusion(cfg.fusion, names, cfg.dim, cfg.init_std)
        self.score = resolve_score(cfg.score, names)
        self.user = UserTower(cfg)
        self.prior = TextPrior(cfg.text_prior_recency)
        self.prior_weights: dict[str, float] = {}  # per domain, when not cfg.text_prior (text_prior_on)
        self.prior_choice: dict[str, dict[float, float]] = {}  # eval.zero_shot_prior=auto: valid ndcg@10 per weight
        self.general_users: set[str] = set()  # domains whose users are read through the tower's general part (read_general)
        if cfg.general_loss and not self.user.has_general:
            raise CrossrecError("model.general_loss", f"{cfg.general_loss}, but model.readout={cfg.readout} has no "
                                "domain-general user to train", "set model.readout=residual or pool, or model.general_loss=0")
        if cfg.general_items not in ("model", "plain"):
            raise CrossrecError("model.general_items", f"unknown value {cfg.general_items!r}", "model or plain")
        if cfg.general_items == "plain" and not cfg.general_loss:
            raise CrossrecError("model.general_items", "plain is read by model.general_loss, which is 0",
                                "set model.general_loss=1 (or drop model.general_items)")
        if cfg.general_items == "plain" and not ("text" in names and hasattr(self.features["text"].proj, "base")):
            raise CrossrecError("model.general_items", f"plain reads the projection's base, and model.projection="
                                f"{cfg.projection} (features {names}) has none", "use model.projection=residual")
        if not 0 <= cfg.seq_drop < 1:
            raise CrossrecError("model.seq_drop", f"{cfg.seq_drop}", "a share in [0, 1)")
        if cfg.text_prior and "text" not in names:
            raise CrossrecError("model.text_prior", f"{cfg.text_prior}, but the item tower reads no text ({names})",
                                "set model.text_prior=0 or add text to model.features")
        self.catalogues: dict[str, Catalogue] = {}
        self.composites: dict[str, tuple[str, str]] = {}  # key -> (target, source) with shared users

    # run settings the features read
    @property
    def cache_vectors(self) -> bool:
        return self.ctx.cache_vectors

    @cache_vectors.setter
    def cache_vectors(self, value: bool) -> None:
        self.ctx.cache_vectors = value

    @property
    def switch_adapter(self) -> Callable[[str], None] | None:
        """callable(domain): route the backbone through that domain's adapter."""
        return self.ctx.route

    @switch_adapter.setter
    def switch_adapter(self, fn: Callable[[str], None] | None) -> None:
        self.ctx.route = fn

    @property
    def reads_text(self) -> bool:
        """Whether an item's text is one of its features (a backbone encodes it)."""
        return "text" in self.features

    @property
    def encoded(self) -> dict[str, torch.Tensor]:
        """The text feature's LM vectors per domain (stale ones for a training backbone)."""
        return self.features["text"].encoded if self.reads_text else {}

    @property
    def transductive(self) -> bool:
        return any(f.transductive for f in self.features.values())

    # -- catalogues --------------------------------------------------------------------------
    def add_catalogue(self, key: str, catalogue: Catalogue | Sequence[str]) -> None:
        """Register a domain's items with every item feature (a plain list: item texts)."""
        if not isinstance(catalogue, Catalogue):
            catalogue = Catalogue.from_texts(catalogue)
        self.catalogues[key] = catalogue
        for feature in self.features.values():
            feature.add_catalogue(key, catalogue)

    def add_composite(self, key: str, target: str, source: str) -> None:
        """A merged catalogue: target items (0..N_t-1) then source items, each with a learned
        domain embedding, for histories that mix both domains (shared users)."""
        self.composites[key] = (target, source)
        if not hasattr(self, "domain_emb"):
            self.domain_emb = nn.Embedding(2, self.cfg.dim)
            nn.init.normal_(self.domain_emb.weight, std=self.cfg.init_std)
            self.domain_emb.to(self.user.pos.weight.device)

    def n_items(self, key: str) -> int:
        return self.catalogues[key].n_items

    def n_targets(self, key: str) -> int:
        """Items that can be recommended under ``key`` (a composite's target catalogue)."""
        return self.n_items(self.composites[key][0] if key in self.composites else key)

    def can_score(self, key: str) -> bool:
        if key in self.composites:
            return all(self.can_score(k) for k in self.composites[key])
        return all(f.can_score(key) for f in self.features.values())

    @torch.no_grad()
    def refresh(self, key: str, cache: bool = True) -> None:
        """Recompute every feature's cached vectors of a domain (the backbone's: (N, hidden))."""
        if key in self.composites:
            for k in self.composites[key]:
                self.refresh(k, cache)
            return
        for feature in self.features.values():
            feature.refresh(key, cache)

    def item_matrix(self, key: str, fresh: torch.Tensor | None = None, context: torch.Tensor | None = None) -> torch.Tensor:
        """(N, dim) item vectors of a domain: its features fused. ``fresh`` (item indices) are
        re-encoded with gradients through a training backbone; the rest come from the last refresh.
        With ``model.text_prior`` the text prior's item vectors follow as more columns (N, dim + hidden).
        ``context`` (a composite, frozen backbone): the only source rows the caller reads (a batch's
        inputs); the other source rows are left zero, so a step projects a few context items, not
        the whole other catalogue."""
        if key in self.composites:
            t, src = self.composites[key]
            nt = self.n_items(t)
            ft = fs = None
            if fresh is not None:
                ft, fs = fresh[fresh < nt], fresh[fresh >= nt] - nt
            target = self.item_matrix(t, ft)
            source = self.item_matrix(src, fs) if context is None or fresh is not None else self.item_rows(src, context)
            dom = F.pad(self.domain_emb.weight, (0, target.shape[1] - self.cfg.dim))  # the prior's columns stay
            return torch.cat([target + dom[0], source + dom[1]])
        out = self.fusion([f(key, fresh) for f in self.features.values()], key)
        perturb = getattr(self, "item_perturb", None)  # adversarial training (adversarial/perturb.py)
        out = perturb(key, out) if perturb is not None else out
        prior = self.prior_columns(key, self.features["text"].base(key)) if self.reads_text else None
        return out if prior is None else torch.cat([out, prior.to(out.dtype)], 1)

    def item_rows(self, key: str, rows: torch.Tensor) -> torch.Tensor:
        """(N, dim [+ prior]) of domain ``key`` with only ``rows`` computed, the rest zero: what a
        step that reads a few items (a sampled loss, a composite's context) needs of a catalogue."""
        rows = rows.to(self.user.pos.weight.device)
        sub = self.fusion([f.rows(key, rows) for f in self.features.values()], key)
        perturb = getattr(self, "item_perturb", None)
        if perturb is not None:  # adversarial perturbations read the whole matrix
            return self.item_matrix(key)
        prior = self.prior_columns(key, self.features["text"].base(key)) if self.reads_text else None
        width = sub.shape[1] + (0 if prior is None else prior.shape[1])
        out = sub.new_zeros(self.n_items(key), width)
        out = out.index_copy(0, rows, sub if prior is None else torch.cat([sub, prior[rows].to(sub.dtype)], 1))
        return out

    def prior_columns(self, key: str, lm: torch.Tensor) -> torch.Tensor | None:
        """The text prior's item columns for LM vectors ``lm`` of domain ``key``'s catalogue (None
        when the prior is off there); ``item_matrix`` appends them to the towers' vectors."""
        weight = self.prior_weights.get(key, self.cfg.text_prior)
        return self.prior.items(lm, weight, self.features["text"].base(key)) if weight else None

    def set_text_prior(self, key: str, weight: float) -> None:
        """Domain ``key``'s logits get ``weight`` x the text zero-shot scorer from now on, instead of
        ``model.text_prior``'s weight (``eval.zero_shot_prior`` on a domain the model never saw)."""
        if weight and not self.reads_text:
            raise CrossrecError("eval.zero_shot_prior", f"{weight}, but the item tower reads no text",
                                "set eval.zero_shot_prior=0 for a model without item text")
        self.prior_weights[key] = float(weight)

    @contextmanager
    def text_prior_on(self, key: str, weight: float) -> Iterator[None]:
        """``set_text_prior(key, weight)`` within the block only."""
        before = self.prior_weights.get(key)
        self.set_text_prior(key, weight)
        try:
            yield
        finally:
            if before is None:
                self.prior_weights.pop(key)
            else:
                self.prior_weights[key] = before

    def tower_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """The towers' own columns of ``item_matrix`` rows (without the text prior's)."""
        return items[..., : self.cfg.dim]

    @torch.no_grad()
    def fusion_gates(self, key: str) -> dict[str, float] | None:
        """Mean gate of each item feature over domain ``key``'s items, for fusions that gate
        (``gated``); None for the others."""
        if not hasattr(self.fusion, "gates") or key in self.composites:
            return None
        was = self.training
        self.eval()
        gates = self.fusion.gates([f(key) for f in self.features.values()]).mean(0)
        self.train(was)
        return {name: round(float(g), 4) for name, g in zip(self.features, gates)}

    def feature_loss(self, key: str) -> torch.Tensor | None:
        """The item features' auxiliary training losses on domain ``key`` (e.g. TransE), or None."""
        if key in self.composites:
            losses = [self.feature_loss(k) for k in self.composites[key]]
        else:
            losses = [f.extra_loss(key) for f in self.features.values()]
        losses = [x for x in losses if x is not None]
        return sum(losses[1:], losses[0]) if losses else None

    @staticmethod
    def upgrade_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Checkpoint tensor names of runs written before item features were modules
        (``proj.*``, ``id_emb.<domain>.*``) -> today's names; other names pass unchanged."""
        out = {}
        for k, v in state.items():
            for old, new in LEGACY_NAMES:
                if k.startswith(old):
                    k = new + k[len(old):]
                    break
            out[k] = v
        return out

    # -- users and scores ----------------------------------------------------------------------
    def user_states(self, items: torch.Tensor, hist: torch.Tensor, key: str | None = None,
                    general: bool = False) -> torch.Tensor:
        """items: (N, dim) from ``item_matrix``; hist: (B, L) item indices, -1 = padding (left)
        -> (B, L, dim), with the text prior's user states as more columns when it is on.
        ``key``: the histories' domain (one marked by ``read_general`` reads the domain-general
        user); ``general``: that user whatever the domain (``Readout.general``)."""
        valid = hist >= 0
        return self.users_of(items[hist.clamp_min(0)] * valid.unsqueeze(-1), valid, key, general)

    def users_of(self, h: torch.Tensor, valid: torch.Tensor, key: str | None = None,
                 general: bool = False) -> torch.Tensor:
        """User states (B, L, ...) from history rows of ``item_matrix`` (B, L, ...), zero at padding:
        the user tower over the towers' columns, the text prior over its own (``key`` and
        ``general`` as in ``user_states``)."""
        general = general or key in self.general_users
        if h.shape[-1] == self.cfg.dim:
            return self.user(h, valid, general)
        return torch.cat([self.user(self.tower_vectors(h), valid, general), self.prior.users(h[..., self.cfg.dim:], valid)],
                         -1)

    def sequence_loss(self, items: torch.Tensor, hist: torch.Tensor, next_items: torch.Tensor,
                      states: torch.Tensor | None = None) -> torch.Tensor:
        """UniSRec's sequence-sequence contrastive loss (Hou et al., KDD 2022): the user after each
        history (its newest position; ``states``: that row of ``user_states`` when the caller has
        it) and after an item-drop view of it (``item_drop``) are a positive pair; the other
        histories' views in the batch are the negatives, except those whose next item
        (``next_items``) is the same. Cosine / temperature."""
        users = (self.user_states(items, hist)[:, -1] if states is None else states)[:, : self.cfg.dim]
        view = self.user_states(items, item_drop(hist, self.cfg.seq_drop))[:, -1, : self.cfg.dim]
        a, b = F.normalize(users, dim=-1), F.normalize(view, dim=-1)
        logits = a @ b.T / self.cfg.temperature
        same = (next_items[:, None] == next_items[None, :]) & ~torch.eye(len(a), dtype=torch.bool, device=a.device)
        return F.cross_entropy(logits.masked_fill(same, float("-inf")), torch.arange(len(a), device=a.device))

    def parts(self) -> list[str]:
        """What ``freeze`` can name: the user tower, the item features (all, or one), the fusion."""
        return ["user", "features", *(f"features.{n}" for n in self.features), "fusion"]

    def freeze(self, parts: Sequence[str]) -> int:
        """Keep ``parts`` (``parts()``) as they are (loaded by ``init_from`` or a transfer's source
        step): their parameters stop training. UniSRec's parameter-efficient fine-tuning is
        ``freeze=[user]`` (the MoE adaptor of the text feature trains alone). Returns how many
        parameter tensors were frozen."""
        known = self.parts()
        for part in parts:
            if part not in known:
                raise CrossrecError("freeze", f"unknown part {part!r}", f"a list of: {', '.join(known)}")
        n = 0
        for name, p in self.named_parameters():
            if any(name.startswith(part + ".") for part in parts) and p.requires_grad:
                p.requires_grad_(False)
                n += 1
        if parts and not any(p.requires_grad for p in self.parameters()):
            raise CrossrecError("freeze", f"{list(parts)} leaves nothing of the model to train",
                                f"freeze fewer of: {', '.join(known)}")
        return n

    def general_item_matrix(self, key: str, items: torch.Tensor, fresh: torch.Tensor | None = None,
                            context: torch.Tensor | None = None, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The item vectors ``model.general_loss`` trains the domain-general user on: ``items``
        (the towers' own, model.general_items=model), or the domain read in the language model's
        space (plain: ``TextFeature.read_plain``, as on a domain the model never trained on)."""
        if self.cfg.general_items != "plain":
            return items
        text = self.features["text"]
        keys = list(self.composites.get(key, (key,)))
        was = [k in text.plain for k in keys]
        for k in keys:
            text.read_plain(k)
        try:
            return self.item_matrix(key, fresh, context) if rows is None else self.item_rows(key, rows)
        finally:
            for k, on in zip(keys, was):
                text.read_plain(k, on)

    def read_general(self, key: str, on: bool = True) -> bool:
        """Rank domain ``key``'s users through the user tower's domain-general part (a domain the
        model never trained on); False when the readout has none (nothing changes)."""
        if not self.user.has_general:
            return False
        (self.general_users.add if on else self.general_users.discard)(key)
        return True

    def logits(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """users (..., dim) x items (M, dim) -> (..., M)."""
        if items.shape[-1] > self.cfg.dim:  # the text prior's columns follow
            u, i = self.logit_vectors(users, items)
            return u @ i.T
        u, i, t = SCORES[self.score](users, items, self.cfg.temperature)
        return u @ i.T / t

    def logit_vectors(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(u, i) with ``u @ i.T == logits(users, items)``: what a fused softmax loss multiplies."""
        d = self.cfg.dim
        u, i, t = SCORES[self.score](users[..., :d], items[..., :d], self.cfg.temperature)
        if items.shape[-1] == d:
            return u / t, i
        return torch.cat([u / t, users[..., d:]], -1), torch.cat([i, items[..., d:]], -1)

    def scoring_vectors(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Vectors whose dot product ranks like ``logits`` (for the chunked evaluator)."""
        if items.shape[-1] > self.cfg.dim:
            return self.logit_vectors(users, items)
        return SCORES[self.score](users, items, self.cfg.temperature)[:2]

def feature_names(cfg: SeqRecConfig | Any, has_backbone: bool) -> list[str]:
    """The item features of ``model.features``; unset: the text through the backbone when there
    is one, plus an id vector when ``model.item_ids`` (the transductive shorthand)."""
    listed = cfg.features if isinstance(cfg, SeqRecConfig) else cfg.get("features")
    item_ids = cfg.item_ids if isinstance(cfg, SeqRecConfig) else bool(cfg.get("item_ids", False))
    if listed is None:
        names = (["text"] if has_backbone else []) + (["id"] if item_ids else [])
    else:
        names = [str(n) for n in listed]
        if item_ids and "id" not in names:
            raise CrossrecError("model.item_ids", f"true, but model.features={names} has no 'id'",
                                "add id to model.features or drop model.item_ids")
    if not names:
        raise CrossrecError("model.features", "the item tower has no feature",
                            "give it a backbone (text) or item ids (model.item_ids=true)")
    if len(set(names)) != len(names):
        raise CrossrecError("model.features", f"{names} lists a feature twice", "name each feature once")
    return names


def is_transductive(names: list[str]) -> bool:
    """Whether any of the item features learns per-item parameters."""
    return any(FEATURES.get(n.split(":")[0]).transductive for n in names)


def item_drop(hist: torch.Tensor, p: float) -> torch.Tensor:
    """UniSRec's item-drop view of left-padded histories (B, L; -1 = padding): every item but the
    newest is dropped with probability ``p`` (torch's generator), the kept ones left-padded again
    in their order."""
    valid = hist >= 0
    keep = valid & (torch.rand(hist.shape, device=hist.device) >= p)
    keep[:, -1] = valid[:, -1]
    dest = hist.shape[1] - keep.flip(1).long().cumsum(1).flip(1)  # L - (kept items from here to the newest)
    rows = torch.arange(hist.shape[0], device=hist.device).unsqueeze(1).expand_as(hist)
    out = torch.full_like(hist, -1)
    out[rows[keep], dest[keep]] = hist[keep]
    return out


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
        with phase("user vectors", len(evalset)) as bar:
            for a in range(0, len(evalset), batch_size):
                hist = pad_histories(evalset.histories[a : a + batch_size], model.cfg.max_history).to(items.device)
                out.append(model.user_states(items, hist, key)[:, -1])
                bar.advance(len(hist))
        model.train(was_training)
        users = torch.cat(out) if out else torch.zeros(0, items.shape[1])
        return model.scoring_vectors(users, items)[0].cpu()

    targets = items[: model.n_targets(key)]
    return user_vectors, model.scoring_vectors(targets[:1], targets)[1].cpu()
