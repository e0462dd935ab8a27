"""crossrec: cross-domain recommendation with pretrained language models."""

__version__ = "0.1.0"
