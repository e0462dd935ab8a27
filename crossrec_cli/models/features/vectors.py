"""``vectors:<name>``: an item vector from a file the domain declares (image, audio, any signal
computed elsewhere; ``crossrec_cli/data/vectors.py``), mapped to ``dim`` by one linear layer
after a LayerNorm. Items the file lacks, and every item of a domain without that file, get one
learned "missing" vector (the mask). Inductive: the map is shared by every domain whose file has
the same dimension."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from crossrec_cli.errors import CrossrecError
from crossrec_cli.models.features.base import FEATURES, Catalogue, FeatureContext, ItemFeature
from crossrec_cli.models.init import init_weights


@FEATURES.register("vectors")
class VectorFeature(ItemFeature):
    def __init__(self, ctx: FeatureContext, name: str = ""):
        super().__init__()
        self.source = name.partition(":")[2]
        if not self.source:
            raise CrossrecError("model.features", "'vectors' needs the file's name",
                                "write vectors:<name>, the name under vectors: in the domain file")
        self.ctx = ctx
        self.missing = nn.Parameter(torch.randn(ctx.cfg.dim) * ctx.cfg.init_std)
        self.norm: nn.Module | None = None
        self.map: nn.Module | None = None
        self.data: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # key -> (vectors (N, d_in), has (N,))

    def add_catalogue(self, key: str, catalogue: Catalogue) -> None:
        rows = catalogue.data.get(f"vectors:{self.source}")
        rows = list(rows) if rows is not None else [None] * catalogue.n_items
        dims = {len(r) for r in rows if r is not None}
        if len(dims) > 1:
            raise CrossrecError(f"domain={key}", f"vectors:{self.source} rows have sizes {sorted(dims)}", "one size per file")
        d_in = dims.pop() if dims else (self.map.in_features if self.map is not None else 0)
        if self.map is None and d_in:
            self.norm = nn.LayerNorm(d_in).to(self.ctx.device())
            self.map = nn.Linear(d_in, self.ctx.cfg.dim).to(self.ctx.device())
            init_weights(self.map, self.ctx.cfg.init_std)
        elif self.map is not None and d_in != self.map.in_features:
            raise CrossrecError(f"domain={key}", f"vectors:{self.source} has {d_in} values per item, "
                                f"another domain {self.map.in_features}", "use vectors of one size in every domain")
        mat = np.zeros((catalogue.n_items, max(d_in, 1)), dtype=np.float32)
        has = np.zeros(catalogue.n_items, dtype=bool)
        for i, r in enumerate(rows):
            if r is not None:
                mat[i], has[i] = r, True
        dev = self.ctx.device()
        self.data[key] = (torch.as_tensor(mat, device=dev), torch.as_tensor(has, device=dev))

    def forward(self, key: str, fresh: torch.Tensor | None = None) -> torch.Tensor:
        mat, has = self.data[key]
        if self.map is None:  # no domain has the file: every item is "missing"
            return self.missing.expand(len(mat), -1)
        vec = self.map(self.norm(mat))
        return torch.where(has.unsqueeze(-1), vec, self.missing.expand_as(vec))
