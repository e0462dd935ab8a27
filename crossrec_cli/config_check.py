"""Value checks for the config sections every command shares (``seed``, ``eval``, ``trainer``,
``model``, ``backbone``), so that ``eval.topk=x`` or ``trainer.epochs=-1`` stops with one line naming the key
instead of a traceback deep inside a metric or the training loop.

Plain dicts in, CrossrecError out. A key that is absent is not checked (an
``evaluate`` of a baseline has no ``trainer``; experiment files may add only part of ``model``).
"""

from __future__ import annotations

import importlib
import math
import re
from dataclasses import fields
from collections.abc import Callable
from typing import Any

from crossrec_cli.errors import CrossrecError, either


def _int(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _losses() -> list[str]:
    from crossrec_cli.training.losses import LOSSES

    return LOSSES.names()


def _precisions() -> tuple[str, ...]:
    from crossrec_cli.training.engine import PRECISIONS

    return tuple(PRECISIONS)


def _score_dtypes() -> tuple[str, ...]:
    from crossrec_cli.evaluation.ranking import SCORE_DTYPES

    return SCORE_DTYPES


class OneOf:
    """A key whose values are the names of a table (a ``Registry`` or a dict), read when a value
    is checked so that a newly registered name is accepted without touching this file:
    ``OneOf("crossrec_cli.models.projection:PROJECTIONS")``; ``extra`` names come first."""

    def __init__(self, table: str, *extra: str, skip: tuple[str, ...] = ()):
        self.table, self.extra, self.skip = table, extra, skip

    def names(self) -> list[str]:
        module, _, attr = self.table.partition(":")
        table = getattr(importlib.import_module(module), attr)
        names = table.names() if hasattr(table, "names") else list(table)
        return [*self.extra, *(n for n in names if n not in self.skip)]

    def __call__(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.names()

    def __str__(self) -> str:
        return either(self.names())


def _choice(table: str, *extra: str, example: str, skip: tuple[str, ...] = ()) -> tuple[OneOf, OneOf, str]:
    """A CHECKS entry for a name-valued key."""
    one = OneOf(table, *extra, skip=skip)
    return one, one, example


def _positive(value: Any) -> bool:
    """A finite number > 0."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _monitor(value: Any) -> bool:
    from crossrec_cli.evaluation.metrics import RANKING_METRICS

    m = re.fullmatch(r"([a-z_]+)@[1-9][0-9]*", value) if isinstance(value, str) else None
    return m is not None and m.group(1) in RANKING_METRICS


def _topk(value: Any) -> bool:
    return isinstance(value, list) and len(value) > 0 and all(_int(k, 1) for k in value)


# key -> (test, what is expected, an example value for the hint)
CHECKS: dict[str, tuple[Callable[[Any], bool], str, str]] = {
    "seed": (lambda v: _int(v, 0) and v < 2**32, "an integer in [0, 2**32)", "0"),  # numpy's seed range
    "device": (lambda v: isinstance(v, str) and re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?|mps", v) is not None,
               "auto, cpu, cuda or cuda:N", "auto"),
    "num_threads": (lambda v: v == "auto" or _int(v, 1), "auto or a positive integer", "auto"),
    "overwrite": (lambda v: isinstance(v, bool), "true or false", "true"),
    "eval.topk": (_topk, "a non-empty list of positive integers", "[10,50]"),
    "eval.exclude_seen": (lambda v: isinstance(v, bool), "true or false", "false"),
    "eval.candidates": (lambda v: v is None or isinstance(v, str), "null or a file path", "null"),
    "eval.user_chunk": (lambda v: _int(v, 1), "a positive integer", "512"),
    "eval.item_chunk": (lambda v: _int(v, 1), "a positive integer", "65536"),
    "eval.batch_size": (lambda v: _int(v, 1), "a positive integer", "256"),
    "eval.cache_vectors": (lambda v: isinstance(v, bool), "true or false", "true"),
    "eval.score_dtype": (lambda v: v in _score_dtypes(), "float32 or float64", "float32"),
    "eval.valid_users": (lambda v: v is None or _int(v, 1), "null or a positive integer", "2000"),
    "eval.index": (lambda v: v in ("exact", "faiss"), "exact or faiss", "exact"),
    "eval.test_users": (lambda v: v in ("split", "all"), "split or all", "all"),
    "eval.faiss.kind": _choice("crossrec_cli.evaluation.index:INDEXES", skip=("exact",), example="flat"),
    "eval.faiss.nlist": (lambda v: v is None or _int(v, 1), "null or a positive integer", "null"),
    "eval.faiss.nprobe": (lambda v: _int(v, 1), "a positive integer", "16"),
    "eval.faiss.hnsw_m": (lambda v: _int(v, 2), "an integer >= 2", "32"),
    "eval.faiss.ef_construction": (lambda v: _int(v, 1), "a positive integer", "40"),
    "eval.faiss.ef_search": (lambda v: _int(v, 1), "a positive integer", "128"),
    "progress_every": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0,
                       "a number of seconds >= 0 (0: a line every step)", "30"),
    "trainer.epochs": (lambda v: _int(v, 1), "an integer >= 1", "20"),
    "trainer.batch_size": (lambda v: _int(v, 1), "an integer >= 1", "64"),
    "trainer.lr": (_positive, "a number > 0", "1e-3"),
    "trainer.patience": (lambda v: _int(v, 1), "an integer >= 1", "3"),
    "trainer.loss": (lambda v: isinstance(v, str) and v in _losses(), "a registered next-item loss (full, sampled, sampled_logq, auto)", "full"),
    "trainer.sampled_above": (lambda v: v is None or _int(v, 1), "null or a positive integer (catalogue size)", "20000"),
    "trainer.window_stride": (lambda v: v is None or _int(v, 1), "null or an integer >= 1", "null"),
    "trainer.monitor": (lambda v: _monitor(v), "<ranking metric>@K, e.g. recall@K, ndcg@K or mrr@K", "ndcg@10"),
    "target_fraction": (lambda v: _positive(v) and v <= 1, "a number in (0, 1]", "0.1"),
    "trainer.precision": (lambda v: v in _precisions(), "fp32, bf16 or fp16", "bf16"),
    "pretrain.precision": (lambda v: v in _precisions(), "fp32, bf16 or fp16", "bf16"),
    "trainer.compile": (lambda v: isinstance(v, bool), "true or false", "false"),
    "trainer.keep_last": (lambda v: _int(v, 1), "an integer >= 1", "2"),
    "model.dim": (lambda v: _int(v, 1), "a positive integer", "64"),
    "model.max_history": (lambda v: _int(v, 1), "a positive integer", "50"),
    "model.recency": (lambda v: _positive(v) and v <= 1, "a number in (0, 1] (1.0 = plain mean of the history)", "0.8"),
    "model.history": (lambda v: _int(v, 1), "a positive integer", "50"),  # text_zeroshot
    "model.ffn_dropout": (lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1),
                          "null or a number in [0, 1)", "0.0"),
    "model.layers": (lambda v: _int(v, 1), "a positive integer", "2"),
    "model.heads": (lambda v: _int(v, 1), "a positive integer", "2"),
    "model.readout": _choice("crossrec_cli.models.seqrec:READOUTS", example="last"),
    "model.positions": _choice("crossrec_cli.models.seqrec:POSITIONS", example="end"),
    "model.score": _choice("crossrec_cli.models.seqrec:SCORES", "auto", example="auto"),
    "model.features": (lambda v: v is None or (isinstance(v, list) and all(isinstance(n, str) for n in v)),
                       "null or a list of item feature names", "[text,id]"),
    "model.fusion": (lambda v: isinstance(v, str), "a fusion method name", "sum"),
    "model.feature_settings": (lambda v: v is None or (isinstance(v, dict) and all(isinstance(x, dict) for x in v.values())),
                               "null or a mapping feature -> settings", "{kg:{neighbors:16}}"),
    "model.projection": _choice("crossrec_cli.models.projection:PROJECTIONS", example="mlp"),
    "model.text_norm": _choice("crossrec_cli.models.features.text:TEXT_NORMS", example="none"),
    "backbone.kind": _choice("crossrec_cli.models.backbone:KINDS", "none", example="encoder"),
    "backbone.pooling": _choice("crossrec_cli.models.encode:POOLINGS", example="mean"),
    "backbone.runtime": _choice("crossrec_cli.models.runtimes:RUNTIMES", example="onnx"),
    "model.experts": (lambda v: _int(v, 1), "a positive integer", "8"),
    "model.residual_dim": (lambda v: _int(v, 1), "a positive integer", "64"),
    "model.general_loss": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0,
                           "a number >= 0", "1.0"),
    "model.general_items": (lambda v: v in ("model", "plain"), "model or plain", "plain"),
    "model.seq_loss": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0,
                       "a number >= 0 (0 = off)", "0.001"),
    "model.seq_drop": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1,
                       "a number in [0, 1)", "0.2"),
    "freeze": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
               "a list of model parts (user, features, features.<name>, fusion)", "[user]"),
    "model.init_std": (_positive, "a number > 0", "0.02"),
    "model.norm_first": (lambda v: isinstance(v, bool), "true or false", "false"),
    "model.temperature": (_positive, "a number > 0", "0.07"),
    "eval.zero_shot_align": (lambda v: isinstance(v, bool), "true or false", "true"),
    "eval.zero_shot_prior": (lambda v: v == "auto" or (isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0),
                             "a number >= 0 (0 = the trained model alone) or auto (chosen on the domain's validation "
                             "examples)", "2.0"),
    "model.text_prior": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0,
                         "a number >= 0 (0 = off)", "2.0"),
    "fairness.reweight": _choice("crossrec_cli.evaluation.fairness:REWEIGHTS", example="group"),
    "rerank": _choice("crossrec_cli.evaluation.rerankers:RERANKERS", example="calibrated"),
    "rerank_pool": (lambda v: v is None or _int(v, 1), "null or a positive integer (>= k)", "100"),
    "rerank_lambda": (lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1),
                      "null or a number in [0, 1] (0 = the score order)", "0.5"),
    "model.text_prior_recency": (lambda v: _positive(v) and v <= 1, "a number in (0, 1] (1.0 = plain mean of the history)",
                                 "0.9"),
}


def _lookup(cfg: dict[str, Any], key: str) -> tuple[bool, Any]:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def check_common(cfg: dict[str, Any], command: str | None = None) -> None:
    """Check ``seed``, ``eval`` and, when present, ``trainer`` and ``model`` of a resolved config
    (``OmegaConf.to_container(cfg, resolve=True)``); the first bad value is a CrossrecError.
    ``command``: the recipe's name, for the keys only some commands honour (``eval.index``)."""
    for key in ("eval", "trainer", "model"):
        if key in cfg and not isinstance(cfg[key], dict):
            raise CrossrecError(key, f"expected a config section, got {cfg[key]!r}", "set its keys, e.g. eval.topk=[10]")
    for key, (ok, expected, example) in CHECKS.items():
        present, value = _lookup(cfg, key)
        if present and not ok(value):
            raise CrossrecError(key, f"expected {expected}, got {value!r}", f"e.g. {key}={example}")
    _known_keys(cfg)
    _index(cfg, command)
    from crossrec_cli.models.runtimes import check_config  # backbone.runtime where it cannot apply

    check_config(cfg, command)
    if _lookup(cfg, "eval.test_users")[1] == "all" and command is not None and command != "evaluate":
        raise CrossrecError("eval.test_users", f"all is honoured by crossrec evaluate only, not crossrec {command} "
                            "(its final evaluation is on domains it trains on)", "drop it here; "
                            "rank an unseen domain's every user with crossrec evaluate run=<this run> domain=<it>")
    monitor, topk = _lookup(cfg, "trainer.monitor")[1], _lookup(cfg, "eval.topk")[1]
    if monitor is not None and topk is not None and int(monitor.split("@")[1]) not in topk:
        raise CrossrecError("trainer.monitor", f"{monitor} is not computed: eval.topk is {topk}",
                            f"use a cutoff in eval.topk, e.g. trainer.monitor={monitor.split('@')[0]}@{topk[0]}")
    dim, heads = _lookup(cfg, "model.dim")[1], _lookup(cfg, "model.heads")[1]
    if dim is not None and heads is not None and dim % heads:
        raise CrossrecError("model.dim", f"{dim} is not divisible by model.heads={heads}",
                            "attention splits dim across heads: choose dim as a multiple of heads")


def _known_keys(cfg: dict[str, Any]) -> None:
    """The typed sections take only their own fields: ``+trainer.foo=1`` is an error, not a key
    that nothing reads."""
    from crossrec_cli.models.seqrec import SeqRecConfig
    from crossrec_cli.training.loop import TrainConfig

    sections = {"trainer": ({f.name for f in fields(TrainConfig)} - {"seed"}, "TrainConfig")}
    if isinstance(cfg.get("model"), dict) and cfg["model"].get("name") == "seqrec":
        sections["model"] = ({f.name for f in fields(SeqRecConfig)} - {"pooling", "max_length"} | {"name"}, "seqrec")
    for section, (known, what) in sections.items():
        node = cfg.get(section)
        if not isinstance(node, dict):
            continue
        unknown = sorted(set(node) - known)
        if unknown:
            raise CrossrecError(f"{section}.{unknown[0]}", f"unknown key for {what}",
                                f"known keys: {', '.join(sorted(known))}")


# commands whose top-k lists may come from an approximate index: they write lists, not metrics
INDEX_COMMANDS = ("recommend", "serve")
FAISS_KEYS = ("kind", "nlist", "nprobe", "hnsw_m", "ef_construction", "ef_search")


def _index(cfg: dict[str, Any], command: str | None) -> None:
    """``eval.index=faiss`` is honoured by ``recommend`` and refused everywhere else: a metric
    ranks every item exactly, so an approximate index would change the numbers it reports."""
    index = _lookup(cfg, "eval.index")[1]
    if index not in (None, "exact") and command is not None and command not in INDEX_COMMANDS:
        raise CrossrecError("eval.index", f"crossrec {command} ranks exactly: metrics always rank every item exactly",
                            f"eval.index={index} applies to crossrec {' / '.join(INDEX_COMMANDS)}; drop it here")
    faiss = _lookup(cfg, "eval.faiss")[1]
    if isinstance(faiss, dict) and set(faiss) - set(FAISS_KEYS):
        unknown = min(set(faiss) - set(FAISS_KEYS))
        raise CrossrecError(f"eval.faiss.{unknown}", "unknown key for eval.faiss", f"known keys: {', '.join(FAISS_KEYS)}")


TARGET_PREFIXES = ("crossrec_cli.", "torch.optim.")


def check_targets(cfg: Any, allow: list[str] | tuple[str, ...] = (), where: str = "") -> None:
    """Every ``_target_`` in a user or checkpoint config must name something inside crossrec,
    torch.optim or the explicit allowlist (``allowed_targets``), checked before anything could be
    instantiated. crossrec itself builds its objects from typed builders, not from ``_target_``."""
    if isinstance(cfg, dict):
        for key, value in cfg.items():
            path = f"{where}.{key}" if where else str(key)
            if key == "_target_":
                name = str(value)
                if not (name.startswith(TARGET_PREFIXES) or name in allow):
                    raise CrossrecError(path, f"_target_ {name!r} is outside crossrec_cli / torch.optim",
                                        "add it to allowed_targets=[...] if you trust it")
            else:
                check_targets(value, allow, path)
    elif isinstance(cfg, list):
        for i, value in enumerate(cfg):
            check_targets(value, allow, f"{where}[{i}]")
