"""PGD (Madry et al. 2018): ``steps`` ascent steps of size ``alpha``, projected onto the
``epsilon`` ball, then the loss at the final point (alpha null: 2.5 x epsilon / steps)."""

from __future__ import annotations

from typing import Any

from crossrec_cli.adversarial.base import ADVERSARIAL
from crossrec_cli.adversarial.perturb import InputAdversary


@ADVERSARIAL.register("pgd")
def pgd(model: Any, domains: list[str], settings: dict[str, Any]) -> InputAdversary:
    eps, steps = float(settings["epsilon"]), int(settings["steps"])
    alpha = settings.get("alpha")
    return InputAdversary("pgd", eps, steps, float(alpha) if alpha is not None else 2.5 * eps / steps,
                          float(settings["weight"]))
