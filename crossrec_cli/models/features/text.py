"""``text``: the item's rendered text through the backbone (pooled), then a projection
(``model.projection``) into the towers' space. Inductive: any catalogue with texts can be scored.

A frozen backbone's vectors are encoded once per catalogue (and cached on disk); a training
backbone re-encodes the items each batch touches, with gradients, over the last refresh."""

from __future__ import annotations

from collections.abc import Callable

import torch

from crossrec_cli.models.encode import cached_text_vectors, encode_texts, forward_pool
from crossrec_cli.models.features.base import FEATURES, Catalogue, FeatureContext, ItemFeature
from crossrec_cli.models.init import init_weights
from crossrec_cli.models.projection import build_projection
from crossrec_cli.registry import Registry

# model.text_norm: (vectors (N, hidden), the catalogue's vectors (M, hidden)) -> (N, hidden)
TEXT_NORMS: Registry[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = Registry("text norm", "model.text_norm")
TEXT_NORMS.add("none", lambda base, ref: base)
TEXT_NORMS.add("center", lambda base, ref: base - ref.mean(0))
TEXT_NORMS.add("standardize", lambda base, ref: (base - ref.mean(0)) / (ref.std(0) + 1e-6))
MEAN_FREE = {"center", "standardize"}  # norms that remove the catalogue's mean: a shift of it changes nothing


@FEATURES.register("text")
class TextFeature(ItemFeature):
    def __init__(self, ctx: FeatureContext, name: str = ""):
        super().__init__()
        cfg = ctx.cfg
        self.ctx = ctx
        self.proj = build_projection(cfg.projection, ctx.backbone.hidden_size, cfg.dim, cfg.experts, cfg.projection_dropout,
                                     cfg.residual_dim)
        init_weights(self.proj, cfg.init_std)
        self.texts: dict[str, list[str]] = {}
        self.encoded: dict[str, torch.Tensor] = {}  # LM vectors per domain (N, hidden), detached
        self.shift: dict[str, torch.Tensor] = {}  # per domain: added to its LM vectors (align_to)
        self.plain: set[str] = set()  # domains read through the projection's base only (read_plain)

    def add_catalogue(self, key: str, catalogue: Catalogue) -> None:
        self.texts[key] = list(catalogue.get("text", key))
        self.encoded.pop(key, None)

    def _route(self, key: str) -> None:
        if self.ctx.route is not None:
            self.ctx.route(key)

    @torch.no_grad()
    def refresh(self, key: str, cache: bool = True) -> None:
        """(Re-)encode a domain's catalogue with the backbone: (N, hidden), detached."""
        ctx, cfg = self.ctx, self.ctx.cfg
        self._route(key)
        if ctx.backbone_trains:
            vecs = encode_texts(ctx.backbone, self.texts[key], cfg.max_length, cfg.pooling, cfg.encode_batch)
        else:
            vecs = cached_text_vectors(ctx.backbone, self.texts[key], cfg.max_length, cfg.pooling,
                                       cfg.encode_batch, cache=cache and ctx.cache_vectors)
        self.encoded[key] = vecs.to(ctx.device())

    def base(self, key: str) -> torch.Tensor:
        if key not in self.encoded:
            self.refresh(key)
        return self.encoded[key]

    def forward(self, key: str, fresh: torch.Tensor | None = None) -> torch.Tensor:
        base = self.base(key)
        if fresh is not None and self.ctx.backbone_trains and len(fresh):
            self._route(key)
            cfg = self.ctx.cfg
            texts = [self.texts[key][i] for i in fresh.tolist()]
            new = forward_pool(self.ctx.backbone, texts, cfg.max_length, cfg.pooling).to(base.dtype)
            base = base.index_copy(0, fresh.to(base.device), new)
        return self.project(key, self.normalise(key, base))

    def rows(self, key: str, rows: torch.Tensor) -> torch.Tensor:
        """The projection of those rows only (the normalisation still reads the whole catalogue)."""
        return self.project(key, self.normalise(key, self.base(key))[rows])

    def project(self, key: str, x: torch.Tensor) -> torch.Tensor:
        """Normalised LM vectors of domain ``key`` -> item vectors: the projection, or its ``base``
        for a domain marked by ``read_plain``."""
        return self.proj.base(x) if key in self.plain else self.proj(x)

    def read_plain(self, key: str, on: bool = True) -> bool:
        """Read domain ``key`` through the projection's ``base`` (the part that holds for every
        catalogue, e.g. projection=residual without its learned correction), as a domain the model
        never trained on is; False when the projection has no such part (nothing changes)."""
        if not hasattr(self.proj, "base"):
            return False
        (self.plain.add if on else self.plain.discard)(key)
        return True

    def normalise(self, key: str, base: torch.Tensor) -> torch.Tensor:
        """``model.text_norm``: centre (and scale) the LM vectors with their own domain's
        catalogue statistics, (N, hidden) -> (N, hidden). LM spaces are anisotropic (every item
        shares one large mean direction); removing it per domain also aligns domains for
        zero-shot transfer. Statistics come from the last refresh (no gradient)."""
        shift = self.shift.get(key)
        if shift is None:
            return TEXT_NORMS.get(self.ctx.cfg.text_norm)(base, self.base(key))
        return TEXT_NORMS.get(self.ctx.cfg.text_norm)(base + shift, self.base(key) + shift)

    @torch.no_grad()
    def align_to(self, key: str, mean: torch.Tensor) -> None:
        """Shift domain ``key``'s LM vectors so that their catalogue mean is ``mean`` (the mean of the
        catalogues a model trained on): first-moment alignment of a domain the model never saw, so
        that its projection reads vectors centred where the training ones were. No effect under
        ``model.text_norm=center`` / ``standardize``, which centre every domain on its own mean:
        then nothing is shifted (and metrics.json's ``zero_shot_align`` does not list the domain)."""
        if self.ctx.cfg.text_norm in MEAN_FREE:
            return
        base = self.base(key)
        self.shift[key] = mean.to(base) - base.mean(0)
