"""The private-training registry and what a method sees of the run before it trains.

A builder ``(settings, context) -> PrivacyMethod | None`` is registered under ``privacy.name``
(``none`` needs no module). ``settings`` are the method's config keys; ``context`` is what of the
rest of the run decides whether the method can work (``TrainingContext``), so that a combination
it cannot honour is refused in one line before any data loads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from crossrec_cli.registry import Registry


@dataclass
class TrainingContext:
    """The settings of a run that a private-training method must agree with."""

    loss: str = "full"  # trainer.loss
    precision: str = "fp32"  # trainer.precision
    compile: bool = False  # trainer.compile
    adversarial: list[str] = field(default_factory=list)  # adversarial.name, as a list ("none" left out)
    processes: int = 1  # torchrun's world size
    mixed_history: bool = False  # mixed_history or context: histories that read another domain


class PrivacyMethod:
    """A private-training method: what it does to the training objective, what it reports."""

    def wrap(self, objective: Any, splits: dict[str, Any], optimizer: Any) -> Any:
        """The private version of a ``NextItem`` objective over ``splits`` (domain -> Split),
        trained by ``optimizer`` (the run's, which still takes the steps)."""
        raise NotImplementedError

    def record(self) -> dict[str, Any]:
        """metrics.json's ``privacy`` entry after training."""
        return {}


PRIVACY: Registry[Callable[[dict[str, Any], TrainingContext], PrivacyMethod | None]] = Registry(
    "privacy method", "privacy.name", "crossrec_cli.privacy")
PRIVACY.add("none", lambda settings, context: None)


def build_privacy(name: str, settings: dict[str, Any], context: TrainingContext) -> PrivacyMethod | None:
    """The method registered as ``name`` (None for ``none``); a refused combination is a
    CrossrecError naming the key."""
    return PRIVACY.get(str(name))(settings, context)
