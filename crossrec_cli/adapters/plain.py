"""frozen (nothing trains; the caller caches item vectors) and full fine-tuning."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from crossrec_cli.adapters.base import ADAPTERS, AdapterFamily
from crossrec_cli.adapters.peft_methods import settings_from


@dataclass(frozen=True)
class _NoSettings:
    """frozen / full take no settings."""

    rules: ClassVar[dict[str, str]] = {}


TRAINS = {"frozen": False, "full": True}  # method -> whether the backbone's weights train


class Plain(AdapterFamily):
    priority = 100  # any model is 'frozen' or 'full': ask the other families first

    def apply(self, model: nn.Module, method: str, hparams: dict[str, Any], total_steps: int | None,
              adapter_name: str) -> nn.Module:
        settings_from(_NoSettings, method, hparams)
        return model.requires_grad_(TRAINS[method])

    def method_of(self, model: nn.Module) -> str | None:
        return "full" if any(p.requires_grad for p in model.parameters()) else "frozen"

    def trains_backbone(self, method: str) -> bool:
        return TRAINS[method]

    def separate_weights(self, method: str) -> bool:
        return False

    def mergeable(self, method: str) -> bool:
        return TRAINS[method]  # the trained backbone is the plain backbone


ADAPTERS.register(*TRAINS)(Plain())
