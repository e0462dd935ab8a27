"""FGM (Miyato et al. 2017): one step of size ``epsilon`` along the loss gradient's direction."""

from __future__ import annotations

from typing import Any

from crossrec_cli.adversarial.base import ADVERSARIAL
from crossrec_cli.adversarial.perturb import InputAdversary


@ADVERSARIAL.register("fgm")
def fgm(model: Any, domains: list[str], settings: dict[str, Any]) -> InputAdversary:
    eps = float(settings["epsilon"])
    return InputAdversary("fgm", eps, 1, eps, float(settings["weight"]))
