"""crossrec evaluate: score a baseline (or a trained run) on one or more domains.

Recipe: load domains -> split -> build the scorer -> rank valid/test -> metrics.json.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig
from rich.console import Console

from crossrec_cli.commands._common import finish, load_domains, open_run_logger, seed_everything
from crossrec_cli.data import make_split
from crossrec_cli.data.assemble import check_evaluable
from crossrec_cli.errors import CrossrecError
from crossrec_cli.evaluation.protocol import evaluate_split
from crossrec_cli.evaluation.ranking import read_candidates
from crossrec_cli.evaluation.report import metrics_record, metrics_table
from crossrec_cli.models.backbone import build_backbone
from crossrec_cli.models.baselines import check_recency, mean_history_vectors, popularity_vectors
from crossrec_cli.models.encode import cached_text_vectors


def baseline_scorer(cfg: DictConfig, domain, split, backbone_cache: dict):
    """(user_vectors(evalset), item_vecs) for the baseline named by cfg.model.name."""
    name = cfg.model.name
    if name == "popularity":
        counts = split.train_item_counts(domain.n_items)
        _, items = popularity_vectors(counts, 1)
        return (lambda ev: popularity_vectors(counts, len(ev))[0]), items
    if name == "text_zeroshot":
        recency = check_recency(cfg.model.get("recency", 1.0))
        b = cfg.backbone
        if "bb" not in backbone_cache:
            if b.kind == "none":
                raise CrossrecError("backbone", "text_zeroshot needs a language model", "choose backbone=minilm (or tiny)")
            backbone_cache["bb"] = build_backbone(b.name, b.path, b.get("local"), b.get("config"), b.kind,
                                                  cfg.seed, b.trust_remote_code)
        items = cached_text_vectors(backbone_cache["bb"], domain.item_text, b.max_length, b.pooling,
                                    cache=cfg.eval.cache_vectors)
        import torch.nn.functional as F

        return (lambda ev: mean_history_vectors(items, ev, cfg.model.history, recency)), F.normalize(items, dim=-1)
    raise CrossrecError("model", f"unknown model {name!r} for evaluate", "expected popularity, text_zeroshot, or run=<run dir>")


def run(cfg: DictConfig) -> dict[str, Any]:
    if cfg.task.name != "recommendation":
        from crossrec_cli.commands.tasks import run_task

        return run_task(cfg, "evaluate")
    seed_everything(cfg.seed)
    if cfg.get("run"):
        from crossrec_cli.commands.checkpoint_eval import evaluate_run

        return evaluate_run(cfg)
    extra = {}
    if cfg.model.name == "text_zeroshot":  # a bad model.recency stops before data or model load
        extra["recency"] = check_recency(cfg.model.get("recency", 1.0))
    domains = load_domains(cfg)
    if cfg.eval.candidates and len(domains) != 1:
        raise CrossrecError("eval.candidates", "a candidate file needs exactly one domain", "pass one domain=")
    dataset, valid, test, cache = {}, {}, {}, {}
    for spec, domain in domains:
        split = make_split(domain, spec.order, spec.order_seed)
        check_evaluable(split, spec.name)
        user_vecs, item_vecs = baseline_scorer(cfg, domain, split, cache)
        cands = None
        if cfg.eval.candidates:
            cands = read_candidates(cfg.eval.candidates, {u: i for i, u in enumerate(domain.user_ids)},
                                    {t: i for i, t in enumerate(domain.item_ids)})
        res = evaluate_split(user_vecs, item_vecs, split, list(cfg.eval.topk), cfg.eval.exclude_seen, cands,
                             str(cfg.eval.candidates), cfg.eval.user_chunk, cfg.eval.item_chunk)
        dataset[spec.name] = domain.fingerprint() | {"split": split.kind}
        valid[spec.name], test[spec.name] = res["valid"], res["test"]
    record = metrics_record(
        "evaluate", cfg.model.name, "zero-shot", "candidates" if cfg.eval.candidates else "full", cfg.seed,
        dataset, valid, test, exclude_seen=bool(cfg.eval.exclude_seen),
        backbone=cfg.backbone.name if cfg.model.name == "text_zeroshot" else None,
        **extra,
    )
    path = finish(cfg, record, open_run_logger(cfg))
    Console().print(metrics_table(record))
    Console().print(f"metrics: {path}")
    return record
