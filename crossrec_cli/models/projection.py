"""Text projections: LM vectors (N, hidden) -> item vectors (N, dim), chosen by
``model.projection``.

- ``linear``: one affine map.
- ``mlp``: two layers with a GELU.
- ``whiten``: UniSRec's parametric whitening, ``W (x - b)`` — a learned centring of the
  anisotropic LM space before the map (Hou et al., KDD 2022, eq. 2).
- ``moe``: UniSRec's mixture-of-experts adaptor: ``experts`` whitening maps mixed by a softmax
  gate computed from the text vector itself, with gate noise while training (eq. 3-4).
- ``residual``: the LM vector plus a learned two-layer correction scaled by a per-dimension gain
  that starts at zero (LayerScale, Touvron et al. 2021): item vectors start as the language
  model's and stay in its space, which every domain shares.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from crossrec_cli.errors import CrossrecError

from crossrec_cli.registry import Registry


class Whitening(nn.Module):
    """(N, d_in) -> (N, d_out): ``lin(dropout(x) - b)``, UniSRec's PWLayer."""

    def __init__(self, d_in: int, d_out: int, dropout: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.bias = nn.Parameter(torch.zeros(d_in))
        self.lin = nn.Linear(d_in, d_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(self.drop(x) - self.bias)


class MoEAdaptor(nn.Module):
    """(N, d_in) -> (N, d_out): softmax-gated sum of ``experts`` whitening maps."""

    def __init__(self, d_in: int, d_out: int, experts: int = 8, dropout: float = 0.0):
        super().__init__()
        self.experts = nn.ModuleList(Whitening(d_in, d_out, dropout) for _ in range(experts))
        # zero gates: every expert weighs the same at the start, as in UniSRec
        self.gate = nn.Parameter(torch.zeros(d_in, experts))
        self.noise = nn.Parameter(torch.zeros(d_in, experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = x @ self.gate
        if self.training:  # noisy gating keeps every expert in use while training
            logits = logits + torch.randn_like(logits) * (F.softplus(x @ self.noise) + 1e-2)
        gates = torch.softmax(logits, dim=-1)  # (N, E)
        out = torch.stack([e(x) for e in self.experts], dim=-2)  # (N, E, d_out)
        return (gates.unsqueeze(-1) * out).sum(-2)


def linear(d_in: int, d_out: int, experts: int, dropout: float, hidden: int = 64) -> nn.Module:
    return nn.Linear(d_in, d_out)


def mlp(d_in: int, d_out: int, experts: int, dropout: float, hidden: int = 64) -> nn.Module:
    """Two layers (d_in -> d_in -> d_out, GELU): enough capacity to give each item a vector of
    its own from its text, as an id table would."""
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(d_in, d_in), nn.GELU(), nn.Linear(d_in, d_out))


def whiten(d_in: int, d_out: int, experts: int, dropout: float, hidden: int = 64) -> nn.Module:
    return Whitening(d_in, d_out, dropout)


def moe(d_in: int, d_out: int, experts: int, dropout: float, hidden: int = 64) -> nn.Module:
    return MoEAdaptor(d_in, d_out, experts, dropout)


def identity(d_in: int, d_out: int, experts: int, dropout: float, hidden: int = 64) -> nn.Module:
    """The LM vector itself (with ``model.projection_dropout``): item vectors stay in the language
    model's space, which a domain the model never saw shares; needs model.dim = the hidden size."""
    if d_in != d_out:
        raise CrossrecError("model.dim", f"{d_out}, but model.projection=identity keeps the backbone's {d_in} "
                            "dimensions", f"set model.dim={d_in}")
    return nn.Dropout(dropout)


class Residual(nn.Module):
    """(N, d) -> (N, d): ``x + scale * mlp(dropout(x))``, ``scale`` starting at zero; the MLP's
    hidden layer is ``hidden`` wide (``model.residual_dim``): a low-rank correction. The correction
    is learned on the training catalogues' items and belongs to them: a catalogue the model never
    trained on is read as ``base(x) = x``, the LM space itself (see ``TextFeature.read_plain``)."""

    def __init__(self, d: int, dropout: float = 0.0, hidden: int = 64):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))
        self.scale = nn.Parameter(torch.zeros(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.mlp(self.drop(x))

    def base(self, x: torch.Tensor) -> torch.Tensor:
        """The part of the map that holds for any catalogue: the LM vector as it is."""
        return x


def residual(d_in: int, d_out: int, experts: int, dropout: float, hidden: int = 64) -> nn.Module:
    """The LM vector plus a correction learned from zero; needs model.dim = the hidden size."""
    if d_in != d_out:
        raise CrossrecError("model.dim", f"{d_out}, but model.projection=residual keeps the backbone's {d_in} "
                            "dimensions", f"set model.dim={d_in}")
    return Residual(d_in, dropout, hidden)


PROJECTIONS: Registry[Callable[..., nn.Module]] = Registry("projection", "model.projection")
for _name, _build in {"linear": linear, "mlp": mlp, "whiten": whiten, "moe": moe, "identity": identity, "residual": residual}.items():
    PROJECTIONS.add(_name, _build)


def build_projection(name: str, d_in: int, d_out: int, experts: int = 8, dropout: float = 0.0,
                     hidden: int = 64) -> nn.Module:
    """The projection registered under ``name`` (``model.projection``); ``hidden``: the width of
    ``residual``'s correction (``model.residual_dim``)."""
    build = PROJECTIONS.get(name)
    takes_hidden = "hidden" in inspect.signature(build).parameters  # a plugged builder may take the first four only
    return build(d_in, d_out, experts, dropout, **({"hidden": hidden} if takes_hidden else {}))
