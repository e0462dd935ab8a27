"""Adversarial removal of a protected user attribute (``adversarial=fair``, ``fairness.attribute``).

A discriminator reads the user vector (the user tower's state at every position of a training
window: what ``evaluation/fairness.py``'s probe reads at a user's last position) and predicts
the window's user's group of ``fairness.attribute``; through gradient reversal (``grl.py``) the
user tower learns to make the groups indistinguishable while the discriminator learns to tell
them apart (Edwards & Storkey 2016; Beutel et al. 2017). Groups are weighed inversely to their
share of the labelled rows, so the discriminator cannot win by predicting the largest group.

The labels come from the recipe (``settings["fairness"]``, a ``FairLabels``): the group of each
training window's user, blank for users without a value and for every user the leakage probe
scores (``evaluation.fairness.training_labels``), so the reported leakage is measured on users
whose attribute training never read. Per epoch the discriminator's balanced accuracy (mean
recall over groups; chance is 1 / groups) is reported as ``fair_disc_accuracy``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from crossrec_cli.adversarial.base import ADVERSARIAL, Adversary, Closure, add_aux
from crossrec_cli.adversarial.grl import DomainDiscriminator
from crossrec_cli.errors import CrossrecError


@dataclass
class FairLabels:
    """``attribute``'s groups (``classes``) and, per domain, the group index of each training
    window's user (-1: not read)."""

    attribute: str
    classes: list[str]
    windows: dict[str, np.ndarray]


class FairAdversary(Adversary):
    def __init__(self, model: Any, labels: FairLabels, hidden: int, weight: float):
        if not weight > 0:
            raise CrossrecError("adversarial.weight", f"expected a positive number, got {weight!r}", "e.g. 1.0")
        self.labels, self.n = labels, len(labels.classes)
        self.disc = add_aux(model, "fair_disc", DomainDiscriminator(model.cfg.dim, self.n, hidden, weight))
        counts = np.bincount(np.concatenate([w[w >= 0] for w in labels.windows.values()]), minlength=self.n)
        self.class_weight = torch.as_tensor(counts.sum() / (self.n * np.maximum(counts, 1)), dtype=torch.float32)
        self.rows: torch.Tensor | None = None
        self.states: tuple[torch.Tensor, torch.Tensor] | None = None
        self.hits = np.zeros(self.n)
        self.seen = np.zeros(self.n)

    def see_batch(self, key: str, windows: np.ndarray) -> None:
        self.rows = torch.as_tensor(self.labels.windows[key][windows], dtype=torch.long)
        self.states = None

    def step_loss(self, model: Any, key: str, closure: Closure) -> torch.Tensor:
        """The step's loss, keeping the user states (and valid mask) of its first user-tower pass."""

        def keep(_module, inputs, out):
            general = len(inputs) > 2 and inputs[2]
            if self.states is None and not general:
                self.states = (out, inputs[1])

        handle = model.user.register_forward_hook(keep)
        try:
            return closure()
        finally:
            handle.remove()

    def extra_loss(self, model: Any, key: str) -> torch.Tensor | None:
        if self.states is None or self.rows is None:
            return None
        states, valid = self.states
        self.states = None
        labels = self.rows.to(states.device).unsqueeze(1).expand(valid.shape)
        keep = valid & (labels >= 0)
        if not keep.any():
            return None
        x, y = states[keep], labels[keep]
        if model.score == "cosine":  # the probe reads the scoring vector: direction only
            x = F.normalize(x, dim=-1)
        logits = self.disc(x)
        guess = logits.argmax(1).cpu().numpy()
        truth = y.cpu().numpy()
        self.seen += np.bincount(truth, minlength=self.n)
        self.hits += np.bincount(truth[guess == truth], minlength=self.n)
        return F.cross_entropy(logits, y, weight=self.class_weight.to(logits.device))

    def epoch_metrics(self) -> dict[str, float]:
        present = self.seen > 0
        out = {"fair_disc_accuracy": float(np.mean(self.hits[present] / self.seen[present]))} if present.any() else {}
        self.hits, self.seen = np.zeros(self.n), np.zeros(self.n)
        return out


@ADVERSARIAL.register("fair")
def fair(model: Any, domains: list[str], settings: dict[str, Any]) -> FairAdversary:
    """``settings``: hidden, weight (the reversal scale) and the recipe's ``fairness`` (FairLabels)."""
    labels = settings.get("fairness")
    if labels is None or model is None:
        raise CrossrecError("adversarial", "fair hides fairness.attribute from the recommender's user vectors, "
                            "which only crossrec finetune trains with the users' attribute",
                            "use adversarial=fair in crossrec finetune with fairness.attribute=<a user_groups column>")
    return FairAdversary(model, labels, int(settings["hidden"]), float(settings["weight"]))
