"""Item classifiers, chosen by ``task.classifier`` for ``task=classification``.

Each module registers one ``fit(job) -> Fitted``: trained on ``job.parts["train"]``, it scores
every other split. A classifier is one module here; conf/task/classification.yaml lists them.

- ``lm``: the backbone (with ``adapter=``) + a linear head, trained (``models.SequenceClassifier``)
- ``majority``: the most frequent training label
- ``tfidf_lr``: TF-IDF word 1-2 grams + logistic regression (scikit-learn)
- ``zero_shot``: cosine between the item text and each label's description, nothing trained
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crossrec_cli.models.backbone import Backbone
from crossrec_cli.registry import Registry
from crossrec_cli.tasks.train import TrainSettings

CLASSIFIERS: Registry = Registry("classifier", "task.classifier", "crossrec_cli.tasks.classifiers")


def reads_backbone(fit) -> bool:
    """Whether a registered classifier encodes text with the language model (``fit.reads_backbone``)."""
    return bool(getattr(fit, "reads_backbone", False))


def trains_adapter(fit) -> bool:
    """Whether it trains the run's ``adapter=`` (``fit.trains_adapter``); the others need frozen."""
    return bool(getattr(fit, "trains_adapter", False))


@dataclass
class ClassifyJob:
    texts: list[str]  # one input text per labelled item
    targets: np.ndarray  # (n,) class index, or (n, C) 0/1 when multi_label
    names: list[str]  # the labels
    label_texts: list[str]  # each label in words (zero-shot)
    multi_label: bool
    parts: dict[str, np.ndarray]  # split -> row indices; "train" is what may be learnt from
    settings: TrainSettings
    backbone: Callable[[], Backbone] | None = None  # builds the language model (None: backbone=none)
    adapter: str = "frozen"
    adapter_hparams: dict[str, Any] = field(default_factory=dict)
    pooling: str = "mean"
    max_length: int = 64
    device: str = "cpu"

    def need_backbone(self, who: str) -> Backbone:
        from crossrec_cli.errors import CrossrecError

        if self.backbone is None:
            raise CrossrecError("backbone", f"task.classifier={who} needs a language model",
                                "choose backbone=minilm, smollm2 or tiny")
        return self.backbone()


@dataclass
class Fitted:
    scores: dict[str, np.ndarray]  # split -> (n, C): argmax is the class; multi-label: >= threshold
    mode: str = "inductive"  # "zero-shot" when nothing was trained
    trainable: int = 0
    total: int = 0
    losses: list[float] = field(default_factory=list)
