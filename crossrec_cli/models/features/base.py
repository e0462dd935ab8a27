"""The item-feature interface: one source of item vectors per module, fused into an item's vector.

An item feature turns a domain's per-item data into one (N, dim) matrix. ``text`` reads the
rendered item texts through the backbone, ``id`` learns one vector per item; a new source (a
knowledge-graph entity, an image vector file) is one module in this package that registers a
builder here, plus its config::

    @FEATURES.register("kg")
    class KgFeature(ItemFeature):
        def __init__(self, ctx: FeatureContext): ...
        def add_catalogue(self, key, catalogue): ...   # reads catalogue.data["kg"]
        def forward(self, key, fresh=None): ...        # (N, dim)

The per-item data comes from ``Domain.item_features`` (filtering, k-core, fingerprints and
catalogue registration handle every entry alike), wrapped in a ``Catalogue``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from crossrec_cli.errors import CrossrecError
from crossrec_cli.registry import Registry


@dataclass(frozen=True)
class Catalogue:
    """One domain's items as the item tower sees them: how many, and per-item data keyed by
    feature name (every value has one entry per item, in item order)."""

    n_items: int
    data: Mapping[str, Sequence[Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, domain: Any) -> Catalogue:
        """A ``crossrec_cli.data.Domain``'s items."""
        return cls(domain.n_items, domain.item_features)

    @classmethod
    def from_texts(cls, texts: Sequence[str]) -> Catalogue:
        texts = list(texts)
        return cls(len(texts), {"text": texts})

    def get(self, name: str, key: str) -> Sequence[Any]:
        """The per-item data of feature ``name`` for domain ``key``; a domain without it is an error."""
        if name not in self.data:
            raise CrossrecError(f"domain={key}", f"the domain has no item {name!r} data",
                                f"it has {sorted(self.data) or 'none'}; drop the {name!r} item feature or add the data")
        return self.data[name]


@dataclass
class FeatureContext:
    """What every feature may read, shared with the model that holds it (not a module, so it
    registers no parameters twice): the model config, the backbone, whether the backbone
    trains, where tensors live, and two run settings the model can change after building."""

    cfg: Any  # crossrec_cli.models.seqrec.SeqRecConfig
    backbone: Any  # crossrec_cli.models.backbone.Backbone | None
    backbone_trains: bool
    device: Callable[[], torch.device]
    cache_vectors: bool = True  # frozen-backbone vectors come from / go to the disk cache
    route: Callable[[str], None] | None = None  # switch the backbone to a domain's adapter


class ItemFeature(nn.Module):
    """One source of item vectors. Subclasses set ``transductive`` when they learn per-item
    parameters (such a feature cannot score a catalogue it was not trained with)."""

    transductive: bool = False

    def add_catalogue(self, key: str, catalogue: Catalogue) -> None:
        raise NotImplementedError

    def can_score(self, key: str) -> bool:
        return True

    def refresh(self, key: str, cache: bool = True) -> None:
        """Recompute whatever is cached for domain ``key`` (e.g. after the backbone trained)."""

    def extra_loss(self, key: str) -> torch.Tensor | None:
        """An auxiliary loss added to each training step on domain ``key`` (None: none)."""
        return None

    def forward(self, key: str, fresh: torch.Tensor | None = None) -> torch.Tensor:
        """(N, dim) vectors of domain ``key``'s items; ``fresh`` (item indices) are recomputed
        with gradients when the feature's encoder trains."""
        raise NotImplementedError

    def rows(self, key: str, rows: torch.Tensor) -> torch.Tensor:
        """(len(rows), dim): ``forward(key)[rows]``; a feature overrides it to compute only those
        rows (the context items of a mixed history, a few of a large catalogue)."""
        return self(key)[rows]


# builder(ctx, name) -> ItemFeature; ``name`` is the model.features entry, "kind" or "kind:arg"
# (e.g. "vectors:image": the registered kind "vectors", reading the domain's "image" vectors)
FEATURES: Registry[Callable[[FeatureContext, str], ItemFeature]] = Registry(
    "item feature", "model.features", "crossrec_cli.models.features")
