"""Robustness: the test split ranked again with perturbed items (``crossrec evaluate run=DIR
robustness=[typos:0.1,shuffle,drop:class,title_only,fgsm:0.1]``), seeded.

Each perturbation is one registered function. Text ones re-render every item's text before the
item tower encodes it: ``typos:p`` (each letter, with probability p, deleted, doubled, swapped
with the next or replaced), ``shuffle`` (the words of each text in random order), ``drop:FIELD``
(one text field left empty, e.g. the genres), ``title_only`` (the first text field alone).
``fgsm:eps`` attacks the item vectors themselves: one fast-gradient step, along each vector's
gradient direction and eps x the vector's norm long, that raises the test examples'
cross-entropy, computed from the test examples themselves (a white-box, worst-case probe).
The report gives every metric per perturbation and its relative drop from the clean metric.

A perturbation is one entry of ``PERTURBATIONS`` with ``metrics(probe, arg)``: a text one is a
function TextJob -> texts registered with ``@text_perturbation(name)``; an attack on the vectors
registers an object of its own (``Fgsm``), with ``reads_text = False``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from crossrec_cli.data.domain import render_text
from crossrec_cli.errors import CrossrecError
from crossrec_cli.registry import Registry


@dataclass
class TextJob:
    """What a text perturbation reads: the domain's texts and columns, its spec, a seeded rng."""

    texts: list[str]
    columns: dict[str, list[str]]
    fields: list[str]
    template: str | None
    rng: random.Random
    arg: str | None


@dataclass
class Probe:
    """What a perturbation ranks: a trained model, one domain and its split. ``rank_test()``
    ranks the test split with the model's current catalogue, item vectors refreshed."""

    model: Any
    key: str
    domain: Any
    spec: Any
    split: Any
    topk: list[int]
    exclude_seen: bool
    batch_size: int
    seed: int
    rank_test: Callable[[], dict[str, float]]


class Perturbation(Protocol):
    reads_text: bool  # the model must read item text

    def metrics(self, probe: Probe, arg: str | None) -> dict[str, float]: ...


PERTURBATIONS: Registry[Perturbation] = Registry("perturbation", "robustness", None)
LETTERS = "abcdefghijklmnopqrstuvwxyz"


class TextPerturbation:
    """Every item's text re-rendered by ``render``, the test split ranked with those texts (never
    cached on disk), the clean catalogue put back after."""

    reads_text = True

    def __init__(self, name: str, render: Callable[[TextJob], list[str]]):
        self.name, self.render = name, render  # the name seeds the perturbation's rng

    def metrics(self, probe: Probe, arg: str | None) -> dict[str, float]:
        from crossrec_cli.models.features import Catalogue

        texts = perturbed_texts(probe.domain, probe.spec, self.name, arg, probe.seed)
        model, cache = probe.model, probe.model.cache_vectors
        model.cache_vectors = False  # perturbed texts never go to the disk cache
        model.add_catalogue(probe.key, Catalogue(probe.domain.n_items, {**probe.domain.item_features, "text": texts}))
        try:
            return probe.rank_test()
        finally:
            model.cache_vectors = cache
            model.add_catalogue(probe.key, Catalogue.of(probe.domain))


def text_perturbation(*names: str) -> Callable[[Callable[[TextJob], list[str]]], Callable[[TextJob], list[str]]]:
    """Decorator: register a TextJob -> texts function under ``names``."""

    def add(render: Callable[[TextJob], list[str]]) -> Callable[[TextJob], list[str]]:
        for name in names:
            PERTURBATIONS.add(name, TextPerturbation(name, render))
        return render

    return add


def _rate(arg: str | None, default: float) -> float:
    try:
        p = float(arg) if arg is not None else default
    except ValueError:
        p = -1.0
    if not 0.0 < p <= 1.0:
        raise CrossrecError("robustness", f"expected a rate in (0, 1], got {arg!r}", "e.g. typos:0.1")
    return p


@text_perturbation("typos")
def typos(job: TextJob) -> list[str]:
    p = _rate(job.arg, 0.1)
    out = []
    for text in job.texts:
        chars, i, new = list(text), 0, []
        while i < len(chars):
            c = chars[i]
            if c.isalpha() and job.rng.random() < p:
                op = job.rng.randrange(4)
                if op == 1:
                    new += [c, c]
                elif op == 2 and i + 1 < len(chars):
                    new += [chars[i + 1], c]
                    i += 1
                elif op == 3:
                    new.append(job.rng.choice(LETTERS))
                # op 0 (or a swap at the end): the letter is deleted
            else:
                new.append(c)
            i += 1
        out.append("".join(new))
    return out


@text_perturbation("shuffle")
def shuffle(job: TextJob) -> list[str]:
    out = []
    for text in job.texts:
        words = text.split()
        job.rng.shuffle(words)
        out.append(" ".join(words))
    return out


@text_perturbation("drop")
def drop(job: TextJob) -> list[str]:
    if job.arg not in job.fields:
        raise CrossrecError("robustness", f"drop:{job.arg} names no text field", f"text fields: {job.fields}")
    cols = dict(job.columns) | {job.arg: [""] * len(job.texts)}
    return [render_text(cols, job.fields, job.template, r) or job.texts[r] for r in range(len(job.texts))]


@text_perturbation("title_only")
def title_only(job: TextJob) -> list[str]:
    return [render_text(job.columns, job.fields[:1], None, r) or job.texts[r] for r in range(len(job.texts))]


def parse(specs: list[str]) -> list[tuple[str, str | None]]:
    """["typos:0.1", "shuffle"] -> [("typos", "0.1"), ("shuffle", None)]; unknown names refused."""
    out = []
    for s in specs:
        name, _, arg = str(s).partition(":")
        PERTURBATIONS.get(name, "robustness")
        out.append((name, arg or None))
    return out


def perturbed_texts(domain: Any, spec: Any, name: str, arg: str | None, seed: int) -> list[str]:
    fields = list(spec.text_fields or [c for c in domain.item_columns if c != spec.item_field])
    job = TextJob(list(domain.item_text), domain.item_columns, fields, spec.text_template,
                  random.Random(f"{seed}:{name}:{arg}"), arg)
    perturbation = PERTURBATIONS.get(name, "robustness")
    if not isinstance(perturbation, TextPerturbation):
        raise CrossrecError("robustness", f"{name} does not perturb texts", "name a text perturbation, e.g. typos:0.1")
    return perturbation.render(job)


def fgsm_items(model: Any, key: str, evalset: Any, epsilon: float, batch_size: int = 256) -> torch.Tensor:
    """The item matrix after one FGSM step of ``epsilon`` x each vector's norm that raises the
    cross-entropy of ``evalset``'s targets (histories and candidates both read the matrix)."""
    from crossrec_cli.models.seqrec import pad_histories

    if not 0 < epsilon:
        raise CrossrecError("robustness", f"fgsm needs a positive epsilon, got {epsilon!r}", "e.g. fgsm:0.1")
    was = model.training
    model.eval()
    with torch.no_grad():
        base = model.item_matrix(key)
    items = base.detach().clone().requires_grad_(True)
    n_targets = model.n_targets(key)
    for a in range(0, len(evalset), batch_size):
        hist = pad_histories(evalset.histories[a:a + batch_size], model.cfg.max_history).to(items.device)
        users = model.user_states(items, hist, key)[:, -1]
        logits = model.logits(users, items[:n_targets])
        tgt = torch.as_tensor(evalset.targets[a:a + batch_size], dtype=torch.long, device=items.device)
        F.cross_entropy(logits, tgt, reduction="sum").backward()
    model.train(was)
    g = items.grad
    g[..., model.cfg.dim:] = 0  # the text prior's columns (model.text_prior) are the language model's, not attacked
    step = epsilon * model.tower_vectors(base).norm(dim=-1, keepdim=True) * g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (base + step).detach()


class Fgsm:
    """``fgsm:eps`` (default 0.1): the test split ranked with ``fgsm_items``' item matrix."""

    reads_text = False

    def metrics(self, probe: Probe, arg: str | None) -> dict[str, float]:
        if probe.model.backbone_trains:  # item vectors of the trained backbone, not stale ones
            probe.model.refresh(probe.key)
        items = fgsm_items(probe.model, probe.key, probe.split.test, float(arg or 0.1), probe.batch_size)
        return score_with_items(probe.model, items, probe.split.test, probe.topk, probe.exclude_seen, probe.batch_size,
                                probe.key)


PERTURBATIONS.add("fgsm", Fgsm())


def relative_drop(clean: dict[str, float], got: dict[str, float]) -> dict[str, float]:
    return {k: (got[k] - v) / v for k, v in clean.items() if "@" in k and k in got and v}


def score_with_items(model: Any, items: torch.Tensor, evalset: Any, topk: list[int], exclude_seen: bool,
                     batch_size: int = 256, key: str | None = None) -> dict[str, float]:
    """Test metrics with a given item matrix (the FGSM-perturbed one); ``key``: the domain of
    ``evalset`` (``SeqRec.user_states``)."""
    from crossrec_cli.evaluation.metrics import rank_metrics
    from crossrec_cli.evaluation.ranking import full_ranks
    from crossrec_cli.models.seqrec import pad_histories

    with torch.no_grad():
        out = []
        for a in range(0, len(evalset), batch_size):
            hist = pad_histories(evalset.histories[a:a + batch_size], model.cfg.max_history).to(items.device)
            out.append(model.user_states(items, hist, key)[:, -1])
        users = torch.cat(out)
        u, i = model.scoring_vectors(users, items)
    ranks = full_ranks(u.cpu(), i.cpu(), evalset.targets, evalset.histories if exclude_seen else None)
    return rank_metrics(np.asarray(ranks), topk) | {"examples": int(len(ranks))}
