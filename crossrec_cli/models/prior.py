"""``model.text_prior``: the untrained text scorer as a fixed term of every logit.

A text model trained on one domain ranks a domain it never saw worse than the language model
alone: its projection and user tower learn the training domain's distinctions and lose the
geometry of the LM vectors. With ``model.text_prior=w`` (> 0), every logit gets ``w`` times the
score of ``model=text_zeroshot`` with its defaults: the cosine between the recency-weighted mean
of the history's LM vectors and the item's, both centred on their own catalogue and
L2-normalised. The weight is fixed, so the towers learn what the language model misses in the
training domain, and on a new domain the language model's ranking stays underneath theirs: an
output-space ensemble with the zero-shot model, as in WiSE-FT (Wortsman et al., "Robust
fine-tuning of zero-shot models", CVPR 2022, arXiv:2109.01903), here kept during training too.

The prior adds no parameter; it rides along the towers' vectors as extra columns (items:
``[fused vector, weight x prior vector]``, users: ``[user state, prior state]``), so every consumer
of ``item_matrix`` / ``user_states`` / ``logits`` stays one matrix product. The same machinery
ensembles a model trained without the prior with the text scorer when it ranks a domain it never
saw (``eval.text_prior``, ``SeqRec.text_prior``): there the model's own towers rank a catalogue
they never trained on, and the language model keeps its ranking underneath.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from crossrec_cli.models.features.text import TEXT_NORMS


class TextPrior:
    """cos(recency-weighted mean of the history's centred LM vectors, the item's), times a weight
    that the item side carries (so that each domain of a model may have its own)."""

    def __init__(self, recency: float):
        self.recency = float(recency)

    @staticmethod
    def items(lm: torch.Tensor, weight: float, catalogue: torch.Tensor | None = None) -> torch.Tensor:
        """(N, hidden) LM vectors -> centred on their catalogue's mean (``catalogue``: that
        catalogue's vectors when ``lm`` is not all of it), L2-normalised, times ``weight``."""
        lm = lm.float()
        return weight * F.normalize(TEXT_NORMS.get("center")(lm, lm if catalogue is None else catalogue.float()), dim=-1)

    def users(self, h: torch.Tensor, valid: torch.Tensor, recency: torch.Tensor | None = None) -> torch.Tensor:
        """Prior item vectors of left-padded histories (B, L, hidden), zero at padding, and the
        valid mask (B, L) -> (B, L, hidden): at each position the L2-normalised mean of the items
        up to it, the newest weighing 1, the one before ``recency``, ... (causal). ``recency``: a
        tensor in (0, 1] to use instead of this prior's own (a learned one: gradients flow).
        One (L, L) decay matrix times the history: W[t, j] = recency ** (t - j) for j <= t."""
        n = h.shape[1]
        steps = torch.arange(n, device=h.device)
        gap = (steps[:, None] - steps[None, :]).to(h.dtype)
        r = torch.as_tensor(self.recency if recency is None else recency, dtype=h.dtype, device=h.device)
        w = torch.where(gap >= 0, r ** gap.clamp_min(0), torch.zeros((), dtype=h.dtype, device=h.device))
        m = valid.unsqueeze(-1).to(h.dtype)
        return F.normalize((w @ h) / (w @ m).clamp_min(1e-12), dim=-1)


def pick_prior_weight(gains: dict[float, np.ndarray]) -> float:
    """``eval.zero_shot_prior=auto``: the weight of the text scorer on a domain a model never trained
    on, from each weight's per-example validation NDCG@10 (``gains``, the same examples in the same
    order). The largest weight (the text scorer all but alone, what the language model knows)
    stands unless a smaller one beats it by more than one standard error of their paired
    per-example difference; then the best of those (the smallest on a tie)."""
    base = max(gains)

    def beats_base(w: float) -> bool:
        d = gains[w] - gains[base]
        return len(d) > 1 and float(d.mean()) > float(d.std(ddof=1)) / np.sqrt(len(d))

    better = [w for w in gains if w != base and beats_base(w)]
    return max(better, key=lambda w: (float(gains[w].mean()), -w)) if better else base
