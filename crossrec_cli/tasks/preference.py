"""Preference prediction (TALLRec style): build a scorer on a backbone, train it on examples,
score P(like), and the source -> target transfer protocol with its control.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from crossrec_cli.adapters import adapter_loss, adapter_step_hook, apply_adapter, param_counts
from crossrec_cli.errors import CrossrecError, either
from crossrec_cli.models.backbone import Backbone
from crossrec_cli.registry import Registry
from crossrec_cli.tasks.examples import (
    INPUT_TEMPLATE,
    INSTRUCTION,
    PrefExample,
    encoder_pair,
    render_input,
)
from crossrec_cli.tasks.metrics import binary_metrics
from crossrec_cli.tasks.models import SequenceClassifier, SimilarityScorer, YesNoScorer
from crossrec_cli.tasks.prompts import answer_token_ids, build_prompt
from crossrec_cli.tasks.similarity_head import CORRECTIONS, SimilarityHead
from crossrec_cli.tasks.train import TrainSettings, fit, plan_steps, predict

log = logging.getLogger("crossrec")



def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# TrainSettings keys a head may override -> (test, what is expected)
TRAIN_KEYS: dict[str, tuple[Callable[[Any], bool], str]] = {
    **{k: (lambda v, lo=lo: _number(v) and isinstance(v, int) and v >= lo, f"an integer >= {lo}")
       for k, lo in (("epochs", 1), ("min_steps", 0), ("batch_size", 1))},
    **{k: (lambda v: _number(v) and v > 0, "a number > 0") for k in ("lr", "head_lr")},
    **{k: (lambda v: _number(v) and v >= 0, "a number >= 0") for k in ("weight_decay", "grad_clip")},
}


@dataclass
class ScorerSpec:
    """How examples become logits. ``scorer``: auto (head for encoders, yes_no for decoders),
    head, yes_no; zero-shot scoring uses ``similarity`` for encoders and untrained yes_no for decoders.

    ``head``: similarity (``SimilarityHead``: the zero-shot score plus a learned correction) or pair
    (``SequenceClassifier`` on ``history [SEP] candidate``); ``calibrate`` / ``l2`` / ``scale_l2`` /
    ``correction`` configure the similarity head, and ``head_train`` (TrainSettings fields) replaces
    the training settings for it; ``item_max_length``: tokens per item text for it and for the
    zero-shot scorer. Values are checked here, errors name the task config key."""

    scorer: str = "auto"
    head: str = "similarity"
    calibrate: bool = True
    l2: float = 8.0
    scale_l2: float = 2.0
    correction: str = "linear"
    head_train: dict = field(default_factory=dict)
    item_max_length: int = 64
    adapter: str = "frozen"
    adapter_hparams: dict = field(default_factory=dict)
    pooling: str = "mean"
    max_length: int = 256
    history_template: str = "Liked: {liked}. Disliked: {disliked}."
    instruction: str = INSTRUCTION
    input_template: str = INPUT_TEMPLATE
    prompt_style: str = "chat"
    answers: tuple[str, str] = ("Yes", "No")
    dropout: float = 0.1
    eval_batch_size: int = 16
    device: str = "cpu"

    def __post_init__(self) -> None:
        def check(ok: bool, key: str, value: Any, expected: str) -> None:
            if not ok:
                raise CrossrecError(f"task.{key}", f"invalid value {value!r}", f"expected {expected}")

        choosable = ["auto", *(name for name, k in SCORERS.items() if k.trains)]
        check(self.scorer in choosable, "scorer", self.scorer, either(choosable))
        check(self.head in HEADS, "head.type", self.head, either(HEADS))
        check(isinstance(self.calibrate, bool), "head.calibrate", self.calibrate, "true or false")
        for key in ("l2", "scale_l2"):
            check(_number(getattr(self, key)) and getattr(self, key) >= 0, f"head.{key}", getattr(self, key),
                  "a number >= 0")
        check(self.correction in CORRECTIONS, "head.correction", self.correction, either(CORRECTIONS))
        n = self.item_max_length
        check(isinstance(n, int) and not isinstance(n, bool) and n >= 1, "item_max_length", n, "an integer >= 1")
        self.head_train = dict(self.head_train or {})  # null: no overrides
        for key, value in self.head_train.items():
            if key not in TRAIN_KEYS:
                raise CrossrecError(f"task.head.train.{key}", "unknown key", "expected one of " + ", ".join(TRAIN_KEYS))
            test, expected = TRAIN_KEYS[key]
            check(test(value), f"head.train.{key}", value, expected)

    def settings_for(self, kind: str, settings: TrainSettings) -> TrainSettings:
        """``settings`` with ``head_train`` applied when scorer ``kind`` builds a head that takes it."""
        if SCORERS.get(kind).heads and HEADS.get(self.head).own_training and self.head_train:
            return dataclasses.replace(settings, **self.head_train)
        return settings

    def resolved(self, kind: str, zero_shot: bool) -> str:
        """The scorer (a key of SCORERS) this backbone kind gets."""
        if zero_shot:
            return ZERO_SHOT_SCORER[kind]
        want = wanted_scorer(self.scorer, kind)
        if kind not in SCORERS.get(want, "task.scorer").backbones:
            raise CrossrecError("task.scorer", f"{want} scoring needs a {' or '.join(SCORERS.get(want).backbones)} "
                                "backbone", "use scorer=head or backbone=smollm2")
        return want


@dataclass(frozen=True)
class ScorerKind:
    """One way of turning examples into P(like): which backbone kinds it runs on, whether it
    trains, how it is built on a copied backbone (``build(bb, spec, zero_shot, total_steps)``, may
    replace ``bb.model`` by its adapted copy) and what it reads (``inputs(scorer, examples)``)."""

    backbones: tuple[str, ...]
    trains: bool
    build: Callable[[Backbone, ScorerSpec, bool, int | None], nn.Module]
    inputs: Callable[[Scorer, list[PrefExample]], list[Any]]
    heads: bool = False  # builds ``task.head.type``'s head (HEADS) on the encoder


@dataclass(frozen=True)
class HeadKind:
    """``task.head.type`` of the ``head`` scorer: the module on the adapted encoder and its inputs."""

    build: Callable[[Backbone, ScorerSpec], nn.Module]
    inputs: Callable[[Scorer, list[PrefExample]], list[Any]]
    own_training: bool = False  # ``task.head.train`` replaces the training settings for it


SCORERS: Registry[ScorerKind] = Registry("preference scorer", "task.scorer")
HEADS: Registry[HeadKind] = Registry("preference head", "task.head.type")
AUTO_SCORER = {"encoder": "head", "decoder": "yes_no"}  # task.scorer=auto, by backbone kind
ZERO_SHOT_SCORER = {"encoder": "similarity", "decoder": "yes_no"}  # task.zero_shot=true, by backbone kind


def wanted_scorer(setting: str, kind: str) -> str:
    """``task.scorer`` with ``auto`` decided by the backbone kind."""
    return AUTO_SCORER[kind] if setting == "auto" else setting


@dataclass
class Scorer:
    model: nn.Module
    kind: str  # head | yes_no | similarity
    spec: ScorerSpec
    adapted: nn.Module  # the (adapted) backbone module, for step hooks and parameter counts

    def inputs(self, examples: list[PrefExample]) -> list[Any]:
        """What this scorer reads: text pairs, prompts, or (liked, disliked, candidate) lists."""
        return SCORERS.get(self.kind).inputs(self, examples)

    def prob_like(self, examples: list[PrefExample]) -> np.ndarray:
        """(n,) P(like) for examples."""
        if not examples:
            return np.zeros(0)
        return predict(self.model, self.inputs(examples), self.spec.eval_batch_size)[:, 1]


def build_scorer(base: Backbone, spec: ScorerSpec, seed: int, zero_shot: bool = False,
                 total_steps: int | None = None) -> Scorer:
    """A fresh scorer on a copy of ``base`` (``base`` itself never trains, so the control arm of a
    transfer starts from exactly the same weights). The head is initialised from ``seed``."""
    kind = spec.resolved(base.kind, zero_shot)
    bb = dataclasses.replace(base, model=copy.deepcopy(base.model))
    torch.manual_seed(seed)
    model = SCORERS.get(kind).build(bb, spec, zero_shot, total_steps)
    model.to(torch.device(spec.device))
    return Scorer(model, kind, spec, bb.model)


def _item_lists(scorer: Scorer, examples: list[PrefExample]) -> list[Any]:
    for ex in examples:
        if not ex.candidate:
            raise CrossrecError(ex.key, f"the {scorer.kind} scorer needs the candidate and history items",
                                "use TALLRec wording (User Preference: ... User Unpreference: ...), "
                                "task.head.type=pair or a decoder")
    return [(tuple(ex.liked), tuple(ex.disliked), ex.candidate) for ex in examples]


def _prompts(scorer: Scorer, examples: list[PrefExample]) -> list[Any]:
    s, tok = scorer.spec, scorer.model.tokenizer
    return [build_prompt(tok, ex.instruction or s.instruction, render_input(ex, s.input_template), s.prompt_style)
            for ex in examples]


def _similarity(bb: Backbone, spec: ScorerSpec, zero_shot: bool, total_steps: int | None) -> nn.Module:
    bb.model.requires_grad_(False)
    return SimilarityScorer(bb, spec.pooling, min(spec.max_length, spec.item_max_length))


def _yes_no(bb: Backbone, spec: ScorerSpec, zero_shot: bool, total_steps: int | None) -> nn.Module:
    yes, no = answer_token_ids(bb.tokenizer, list(spec.answers))
    if not zero_shot:
        bb.model = apply_adapter(bb.model, spec.adapter, total_steps=total_steps, **spec.adapter_hparams)
    else:
        bb.model.requires_grad_(False)
    return YesNoScorer(bb, yes, no, spec.max_length)


def _head(bb: Backbone, spec: ScorerSpec, zero_shot: bool, total_steps: int | None) -> nn.Module:
    bb.model = apply_adapter(bb.model, spec.adapter, total_steps=total_steps, **spec.adapter_hparams)
    return HEADS.get(spec.head).build(bb, spec)


SCORERS.add("similarity", ScorerKind(("encoder",), False, _similarity, _item_lists))  # zero-shot only
SCORERS.add("head", ScorerKind(("encoder", "decoder"), True, _head,
                               lambda scorer, examples: HEADS.get(scorer.spec.head).inputs(scorer, examples),
                               heads=True))
SCORERS.add("yes_no", ScorerKind(("decoder",), True, _yes_no, _prompts))
HEADS.add("similarity", HeadKind(
    lambda bb, spec: SimilarityHead(bb, spec.pooling, min(spec.max_length, spec.item_max_length),
                                    correction=spec.correction, dropout=spec.dropout, l2=spec.l2,
                                    scale_l2=spec.scale_l2),
    _item_lists, own_training=True))
HEADS.add("pair", HeadKind(
    lambda bb, spec: SequenceClassifier(bb, 2, spec.pooling, spec.max_length, spec.dropout),
    lambda scorer, examples: [encoder_pair(ex, scorer.spec.history_template) for ex in examples]))


def train_scorer(scorer: Scorer, examples: list[PrefExample], settings: TrainSettings) -> list[float]:
    """Fit on examples (label 1 = like); returns per-epoch losses."""
    if not SCORERS.get(scorer.kind).trains or not examples:
        return []
    if not any(p.requires_grad for p in scorer.model.parameters()):
        raise CrossrecError("adapter", f"nothing trains with adapter {scorer.spec.adapter!r} and scorer {scorer.kind}",
                            "choose adapter=lora (or full), or task.zero_shot=true")
    labels = np.array([ex.label for ex in examples], dtype=np.int64)
    inputs, head = scorer.inputs(examples), scorer.model
    if isinstance(head, SimilarityHead):
        if scorer.spec.calibrate:
            fitted = head.calibrate(inputs, labels)
            log.info("calibrated the similarity head on %d examples: %s", len(examples),
                     {k: round(v, 4) for k, v in fitted.items()})

        def extra() -> torch.Tensor:  # the same objective as the calibration: mean loss + prior / n
            return adapter_loss(scorer.adapted) + head.prior() / len(examples)
    else:
        def extra() -> torch.Tensor:
            return adapter_loss(scorer.adapted)
    return fit(head, inputs, labels, settings, step_hook=lambda step: adapter_step_hook(scorer.adapted, step),
               extra_loss=extra)


def evaluate(scorer: Scorer, evals: dict[str, list[PrefExample]]) -> dict[str, dict[str, float]]:
    """{name: auc / logloss / accuracy ...} for each list of examples."""
    return {name: binary_metrics(np.array([ex.label for ex in exs]), scorer.prob_like(exs))
            for name, exs in evals.items() if exs}


def run_preference(base: Backbone, spec: ScorerSpec, train: list[PrefExample],
                   evals: dict[str, list[PrefExample]], settings: TrainSettings,
                   zero_shot: bool = False) -> dict[str, Any]:
    """Train (unless zero-shot) one scorer and evaluate it: {"metrics": {name: ...}, "losses",
    "trainable", "total", "scorer", "train_examples", "seconds"}."""
    start = time.perf_counter()
    settings = spec.settings_for(spec.resolved(base.kind, zero_shot), settings)
    _, total_steps = plan_steps(len(train), settings)
    scorer = build_scorer(base, spec, settings.seed, zero_shot, total_steps)
    losses = [] if zero_shot else train_scorer(scorer, train, settings)
    trainable, total = param_counts(scorer.model)
    return {"metrics": evaluate(scorer, evals), "losses": losses, "trainable": trainable, "total": total,
            "scorer": scorer.kind, "train_examples": 0 if zero_shot else len(train),
            "seconds": round(time.perf_counter() - start, 2)}


def run_transfer(base: Backbone, spec: ScorerSpec, source_train: list[PrefExample],
                 target_train: list[PrefExample], source_evals: dict[str, list[PrefExample]],
                 target_evals: dict[str, list[PrefExample]], settings: TrainSettings) -> dict[str, dict]:
    """Arms, each {"metrics": {split: ...}, ...}:

    - ``zero_shot``: no training, on the target;
    - ``source``: trained on the source, evaluated on the source and (zero-shot transfer) the target;
    - ``transfer``: the source model further trained on ``target_train`` (skipped when empty);
    - ``control``: the same target training from the same initial backbone without the source step.
    """
    arms: dict[str, dict] = {"zero_shot": run_preference(base, spec, [], target_evals, settings, zero_shot=True)}
    start = time.perf_counter()
    settings = spec.settings_for(spec.resolved(base.kind, False), settings)
    _, steps = plan_steps(len(source_train) + len(target_train), settings)
    scorer = build_scorer(base, spec, settings.seed, total_steps=steps)
    losses = train_scorer(scorer, source_train, settings)
    src_metrics = evaluate(scorer, source_evals)
    arms["source"] = {"metrics": evaluate(scorer, target_evals), "source_metrics": src_metrics, "losses": losses,
                      "train_examples": len(source_train), "seconds": round(time.perf_counter() - start, 2)}
    if target_train:
        start = time.perf_counter()
        losses = train_scorer(scorer, target_train, settings)
        arms["transfer"] = {"metrics": evaluate(scorer, target_evals), "losses": losses,
                            "train_examples": len(target_train), "seconds": round(time.perf_counter() - start, 2)}
        arms["control"] = run_preference(base, spec, target_train, target_evals, settings)
    trainable, total = param_counts(scorer.model)
    arms["source"].update(trainable=trainable, total=total, scorer=scorer.kind)
    return arms
