"""Fusion: how an item's feature vectors become one vector (one module per method). See ``base``."""

from crossrec_cli.models.fusion.base import FUSIONS, Fusion, build_fusion

__all__ = ["FUSIONS", "Fusion", "build_fusion"]
