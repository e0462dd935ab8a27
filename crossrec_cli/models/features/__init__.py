"""Item features (text through the backbone, item ids; one module each). See ``base``."""

from crossrec_cli.models.features.base import FEATURES, Catalogue, FeatureContext, ItemFeature

__all__ = ["FEATURES", "Catalogue", "FeatureContext", "ItemFeature"]
