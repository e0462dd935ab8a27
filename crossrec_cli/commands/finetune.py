"""crossrec finetune: train the recommender on one or more domains.

Recipe: domains -> splits -> backbone + adapter + towers -> fit (early stopping on valid
NDCG@10, best weights kept) -> reload best -> valid/test per domain -> metrics.json + curve.
Under torchrun every process trains its share of each batch; rank 0 validates, tests and writes.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from crossrec_cli.commands._common import finish, load_domains, names, open_run_logger, run_dir, seed_everything, write_metrics
from crossrec_cli.commands.recsys import (
    adversary_of, build_model, early_stopping_sample, check_same_data, fair_training, evaluate_model, item_features, item_score, load_init, model_mode, resume_dir, save_final, text_prior, train_config,
)
from crossrec_cli.data import make_split
from crossrec_cli.data.assemble import check_evaluable
from crossrec_cli.data.context import context_of, mixed_histories
from crossrec_cli.evaluation.report import metrics_record, metrics_table
from crossrec_cli.errors import CrossrecError
from crossrec_cli.models.encode import across_processes
from crossrec_cli.privacy import TrainingContext, build_privacy
from crossrec_cli.training import distributed
from crossrec_cli.training.loop import fit
from crossrec_cli.training.preempt import EXIT_PREEMPTED
from crossrec_cli.training.plots import training_curve

RUNS_DISTRIBUTED = True  # torchrun: see training/distributed.py
log = logging.getLogger("crossrec")


def run(cfg: DictConfig) -> dict[str, Any]:
    if cfg.task.name != "recommendation":
        if distributed.launched():
            raise CrossrecError("task", f"task={cfg.task.name} trains in one process only",
                                "launch it without torchrun (or with --nproc_per_node 1)")
        from crossrec_cli.commands.tasks import run_task

        return run_task(cfg, "finetune")
    t_start = time.perf_counter()
    seed_everything(cfg.seed)
    out = run_dir(cfg)
    privacy = privacy_of(cfg)  # what privacy=dp cannot honour stops before any data loads
    domains = load_domains(cfg)
    splits = {spec.name: make_split(d, spec.order, spec.order_seed) for spec, d in domains}
    for name, split in splits.items():
        check_evaluable(split, name)
    keys, mixed = {name: name for name in splits}, {}  # the model's catalogue key of each domain
    context = load_domains(cfg, cfg.context) if cfg.context else []  # inputs only: never trained or ranked
    if cfg.mixed_history or context:
        every = domains + context
        ctx_splits = {s.name: make_split(d, s.order, s.order_seed) for s, d in context}
        splits, keys, mixed = mixed_histories({s.name: d for s, d in every}, {s.name: s.shared_user_space for s, _ in every},
                                              splits | ctx_splits, targets=list(splits))
    tc = train_config(cfg, splits)
    model = build_model(cfg, [(s.name, d) for s, d in domains + context], tc, splits)
    for name, key in keys.items():
        if key != name:  # the domain's items, then the other domain's as context
            model.add_composite(key, name, context_of(key))
    load_init(cfg, model)
    if distributed.active() and not model.backbone_trains:  # each process encodes its share of every catalogue
        with across_processes():
            for key in model.catalogues:
                model.refresh(key)
    if cfg.freeze:
        if not cfg.get("init_from"):
            raise CrossrecError("freeze", f"{list(cfg.freeze)} keeps parts as init_from loads them, and init_from is "
                                "not set (they would stay untrained)", "set init_from=<run dir> or drop freeze")
        log.info("freeze: %d parameter tensors of %s stay as loaded", model.freeze(list(cfg.freeze)), list(cfg.freeze))
    fair, weights = fair_training(cfg, domains, splits, cfg.model.max_history, tc)
    adversary = adversary_of(cfg, model, [s.name for s, _ in domains], fair)
    if distributed.is_main() and distributed.world_size() > 1 and {"fgm", "pgd"} & set(names(cfg.adversarial.name)):
        log.warning("adversarial=%s with %d processes: each perturbs its part of a batch along that part's own "
                    "gradient, so steps differ slightly from one process's", cfg.adversarial.name, distributed.world_size())
    logger = open_run_logger(cfg)

    def valid_only(m):
        return {keys[k]: evaluate_model(cfg, m, keys[k], s, parts=("valid",))["valid"] for k, s in splits.items()}

    dataset = {s.name: d.fingerprint(item_features(cfg)) for s, d in domains}
    if distributed.is_main():
        check_same_data(out, dataset, resuming=resume_dir(cfg) is not None)
    try:
        prog = fit(model, {keys[k]: s for k, s in splits.items()}, tc, valid_only, out, log_metrics=logger, resume=resume_dir(cfg) is not None,
                   show_progress=bool(cfg.progress), adversary=adversary, privacy=privacy, weights=weights)
    except SystemExit as stop:
        if stop.code == EXIT_PREEMPTED:
            write_metrics(cfg, {"command": "finetune", "status": "interrupted", "seed": cfg.seed, "dataset": dataset,
                           "resume": f"crossrec finetune resume={out}"})
        raise
    if not distributed.is_main():  # rank 0 tests the best weights and writes the run's results
        return {"command": "finetune", "status": "complete", "rank": distributed.rank()}
    result = save_final(cfg, model, out, splits, domains, prog, tc, keys)
    record = metrics_record(
        "finetune", cfg.model.name, model_mode(cfg), "candidates" if cfg.eval.candidates else "full", cfg.seed,
        result["dataset"], result["valid"], result["test"],
        backbone=cfg.backbone.name, adapter=cfg.adapter.name, features=item_features(cfg), fusion=str(cfg.model.fusion), score=item_score(cfg), **text_prior(cfg),
        adversarial=cfg.adversarial.name if isinstance(cfg.adversarial.name, str) else list(cfg.adversarial.name),
        **({"privacy": privacy.record()} if privacy is not None else {}),
        **({"fairness_training": dict(cfg.fairness)} if fair is not None or weights is not None else {}),
        trainable_params=result["trainable_params"], total_params=result["total_params"],
        best_epoch=prog.best_epoch, epochs_run=len(prog.history),
        seconds_per_epoch=sum(h["train_seconds"] for h in prog.history) / max(1, len(prog.history)),
        wall_seconds=time.perf_counter() - t_start, history=_history(prog.history),
        status="complete", **early_stopping_sample(cfg), **({"mixed_history": mixed} if mixed else {}),
        **({"freeze": list(cfg.freeze)} if cfg.freeze else {}), **{k: result[k] for k in ("fusion_gates", "beyond_accuracy", "groups", "fairness") if k in result},
    )
    path = finish(cfg, record, logger)
    if prog.history:
        training_curve(prog.history, tc.monitor, out / "training_curve.png", f"{cfg.backbone.name} · {cfg.adapter.name}")
    Console().print(metrics_table(record))
    Console().print(f"trainable {result['trainable_params']:,} / total {result['total_params']:,} parameters; "
                    f"metrics: {path}")
    return record


def privacy_of(cfg: DictConfig):
    """``privacy=<name>`` (conf/privacy/, privacy/): the private-training method, or None."""
    raw = OmegaConf.to_container(cfg.privacy, resolve=True)
    name = raw.pop("name")
    context = TrainingContext(loss=str(cfg.trainer.loss), precision=str(cfg.trainer.precision),
                              compile=bool(cfg.trainer.compile),
                              adversarial=[n for n in names(cfg.adversarial.name) if n != "none"],
                              processes=distributed.world_size(), mixed_history=bool(cfg.mixed_history or cfg.context))
    return build_privacy(name, raw, context)


def _history(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "valid"} for h in history]
