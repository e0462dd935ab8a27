"""crossrec evaluate: score a baseline (or a trained run) on one or more domains.

Recipe: load domains -> split -> build the scorer -> rank valid/test -> metrics.json.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from crossrec_cli.commands._common import finish, load_domains, open_run_logger, seed_everything
from crossrec_cli.commands.recsys import ranking_options, test_users
from crossrec_cli.data import make_split
from crossrec_cli.data.assemble import check_evaluable
from crossrec_cli.errors import CrossrecError
from crossrec_cli.evaluation.protocol import evaluate_split, extras_by_key, groups_of, test_report
from crossrec_cli.evaluation.ranking import candidate_lists
from crossrec_cli.evaluation.report import metrics_record, metrics_table
from crossrec_cli.models.baselines import BASELINES, BaselineContext


def baseline_scorer(cfg: DictConfig, domain, split, shared: dict):
    """(user_vectors(evalset), item_vecs) of the baseline registered as ``cfg.model.name``."""
    builder = BASELINES.get(str(cfg.model.name), "model")
    ctx = BaselineContext(OmegaConf.to_container(cfg.model, resolve=True), OmegaConf.to_container(cfg.backbone, resolve=True),
                          int(cfg.seed), bool(cfg.eval.cache_vectors), shared, str(cfg.device))
    return builder(ctx, domain, split)


def run(cfg: DictConfig) -> dict[str, Any]:
    if cfg.task.name != "recommendation":
        from crossrec_cli.commands.tasks import run_task

        if cfg.eval.get("test_users", "split") != "split":
            raise CrossrecError("eval.test_users", f"task={cfg.task.name} has its own examples", "drop eval.test_users")

        return run_task(cfg, "evaluate")
    seed_everything(cfg.seed)
    if cfg.get("run"):
        from crossrec_cli.commands.checkpoint_eval import evaluate_run

        return evaluate_run(cfg)
    if cfg.get("robustness"):
        raise CrossrecError("robustness", "perturbations re-score a trained model", "pass run=<a finetune run dir>")
    if str(cfg.model.name) not in BASELINES:
        raise CrossrecError("model", f"{cfg.model.name!r} is not a baseline",
                            f"evaluate a trained model with run=<run dir>; baselines: {', '.join(BASELINES.names())}")
    extra = {"recency": float(cfg.model.recency)} if "recency" in cfg.model else {}  # checked by config_check
    if "text_norm" in cfg.model:
        extra["text_norm"] = str(cfg.model.text_norm)
    domains = load_domains(cfg)
    if cfg.eval.candidates and cfg.eval.candidates != "published" and len(domains) != 1:
        raise CrossrecError("eval.candidates", "a candidate file needs exactly one domain", "pass one domain=")
    dataset, valid, test, cache, extras = {}, {}, {}, {}, {}
    for spec, domain in domains:
        split = make_split(domain, spec.order, spec.order_seed)
        check_evaluable(split, spec.name)
        split = test_users(cfg, split, spec.name, getattr(BASELINES.get(str(cfg.model.name)), "reads_interactions", True),
                           f"model={cfg.model.name}")
        user_vecs, item_vecs = baseline_scorer(cfg, domain, split, cache)
        cands = None
        if cfg.eval.candidates:
            cands = candidate_lists(str(cfg.eval.candidates), domain)
        res = evaluate_split(user_vecs, item_vecs, split, list(cfg.eval.topk), cfg.eval.exclude_seen, cands,
                             str(cfg.eval.candidates), cfg.eval.user_chunk, cfg.eval.item_chunk,
                             **ranking_options(cfg))
        dataset[spec.name] = domain.fingerprint() | {"split": split.kind}
        valid[spec.name], test[spec.name] = res["valid"], res["test"]
        if not cfg.eval.candidates:
            extras[spec.name] = test_report(user_vecs, item_vecs, split, list(cfg.eval.topk), cfg.eval.exclude_seen,
                                            groups_of(spec, domain), cfg.eval.user_chunk, cfg.eval.item_chunk,
                                            seed=int(cfg.seed), **ranking_options(cfg))
    record = metrics_record(
        "evaluate", cfg.model.name, "zero-shot", "candidates" if cfg.eval.candidates else "full", cfg.seed,
        dataset, valid, test, exclude_seen=bool(cfg.eval.exclude_seen),
        backbone=cfg.backbone.name if "backbone" in cache else None,
        **extra, **extras_by_key(extras),
    )
    path = finish(cfg, record, open_run_logger(cfg))
    Console().print(metrics_table(record))
    Console().print(f"metrics: {path}")
    return record
