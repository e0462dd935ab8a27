"""task=preference / task=classification for finetune, transfer and evaluate.

The finetune / transfer / evaluate recipes hand over at their top when ``cfg.task.name`` is not
"recommendation". Recipe: load domains -> build examples -> (per seed) build the backbone, train,
score -> metrics.json (mean and ``<metric>_std`` over seeds) and a table.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from crossrec_cli.commands._common import (
    config_dirs,
    domain_spec,
    load_domains,
    names,
    run_dir,
    seed_everything,
    finish,
    open_run_logger,
    prefixed,
)
from crossrec_cli.data import load_domain
from crossrec_cli.errors import CrossrecError
from crossrec_cli.evaluation.report import metrics_record
from crossrec_cli.io import atomic_write_json, atomic_write_text
from crossrec_cli.models.backbone import build_backbone
from crossrec_cli.tasks import TASKS
from crossrec_cli.tasks.classification import confusion_png, label_data, run_classification, split_indices
from crossrec_cli.adapters import ADAPTERS
from crossrec_cli.tasks.classifiers import CLASSIFIERS, ClassifyJob, reads_backbone, trains_adapter
from crossrec_cli.tasks.examples import PreferenceData, preference_data, sample
from crossrec_cli.tasks.metrics import mean_std
from crossrec_cli.tasks.preference import SCORERS, ScorerSpec, run_preference, run_transfer, wanted_scorer
from crossrec_cli.tasks.train import TrainSettings
from crossrec_cli.training.loggers import Logger

log = logging.getLogger("crossrec")
COMMANDS = ("finetune", "transfer", "evaluate")
# recommendation keys the task recipes do not honour: refused, never silently ignored
UNSUPPORTED = {
    "resume": "task runs restart from the start (they train in minutes); run again without resume=",
    "init_from": "a task starts from its backbone: point backbone.path at a folder (a pretrain run's "
                 "<run>/checkpoint/backbone) instead",
    "per_domain_adapters": "task models have one adapter; drop per_domain_adapters",
}


def run_task(cfg: DictConfig, command: str) -> dict[str, Any]:
    """Run ``cfg.task`` for ``command``; writes metrics.json and returns its record."""
    if command not in COMMANDS:
        raise CrossrecError("task", f"task={cfg.task.name} has no {command!r} command",
                            f"use one of {COMMANDS}")
    handler = TASKS.get(str(cfg.task.name), "task.name")
    for key, hint in UNSUPPORTED.items():
        if cfg.get(key):
            raise CrossrecError(key, f"task={cfg.task.name} does not read it", hint)
    logger = open_run_logger(cfg)
    try:
        record = handler(cfg, command, logger)
    except BaseException:
        logger.close()
        raise
    path = finish(cfg, record, logger)
    Console().print(task_table(record))
    Console().print(f"metrics: {path}")
    return record


# ---- settings read from the config -------------------------------------------------------

def device_of(cfg: DictConfig) -> str:
    from crossrec_cli.models.backbone import resolve_device

    return str(resolve_device(str(cfg.get("device", "auto"))))


def _classification(cfg: DictConfig, command: str, logger: Logger) -> dict[str, Any]:
    if command != "finetune":
        raise CrossrecError("task", f"task=classification runs with finetune, not {command}",
                            "a classifier head has to be trained: crossrec finetune task=classification")
    return classification(cfg, logger)


# task.name -> handler(cfg, command, logger) -> record; recommendation is the recipes' own path
TASKS.add("preference", lambda cfg, command, logger: preference_transfer(cfg, logger) if command == "transfer"
          else preference(cfg, command, logger))
TASKS.add("classification", _classification)


def train_settings(cfg: DictConfig, seed: int, logger: Logger | None = None) -> TrainSettings:
    """task.train.<key>, falling back to the trainer's value where the task leaves it null."""
    t = cfg.task.train
    trainer = cfg.get("trainer") or {}
    fallback = {"lr": "backbone_lr", "head_lr": "lr"}
    values = {}
    for key in ("epochs", "batch_size", "lr", "head_lr", "weight_decay", "grad_clip", "min_steps", "precision"):
        v = t.get(key)
        if v is None:
            v = trainer.get(fallback.get(key, key))
        if v is not None:
            values[key] = v
    return TrainSettings(seed=seed, **values, log_metrics=prefixed(logger, f"seed{seed}") if logger else None,
                         progress=bool(cfg.get("progress", False)))


def plain_dict(node: Any) -> dict:
    """A config mapping as a plain dict ({} for None)."""
    return dict(OmegaConf.to_container(node, resolve=True)) if node is not None else {}  # type: ignore[arg-type]


def adapter_of(cfg: DictConfig, decoder_yes_no: bool) -> tuple[str, dict]:
    """(method, settings); Yes/No scoring with adapter=frozen trains ``task.decoder_adapter``
    (there is no head, so a frozen decoder would train nothing)."""
    raw = plain_dict(cfg.get("adapter")) or {"name": "frozen"}
    if decoder_yes_no and raw.get("name") == "frozen" and cfg.task.get("decoder_adapter"):
        log.info("task=preference: yes_no scoring trains task.decoder_adapter instead of adapter=frozen")
        raw = plain_dict(cfg.task.decoder_adapter)
    name = raw.pop("name")
    return str(name), raw


def scorer_spec(cfg: DictConfig, kind: str, device: str) -> ScorerSpec:
    t = cfg.task
    yes_no = wanted_scorer(t.scorer, kind) == "yes_no" and kind in SCORERS.get("yes_no").backbones
    method, hparams = adapter_of(cfg, yes_no)
    head = plain_dict(t.get("head"))  # task files written before task.head take the defaults
    keys = {"type": "head", "calibrate": "calibrate", "l2": "l2", "scale_l2": "scale_l2", "correction": "correction",
            "train": "head_train"}
    unknown = sorted(set(head) - set(keys))
    if unknown:
        raise CrossrecError(f"task.head.{unknown[0]}", "unknown key", "expected one of " + ", ".join(keys))
    defaults = ScorerSpec()
    return ScorerSpec(
        scorer=t.scorer, **{keys[k]: head.get(k, getattr(defaults, keys[k])) for k in keys},
        item_max_length=t.get("item_max_length", defaults.item_max_length),
        adapter=method, adapter_hparams=hparams, pooling=cfg.backbone.pooling,
        max_length=t.max_length, history_template=t.history_template, instruction=t.prompt.instruction,
        input_template=t.prompt.input, prompt_style=t.prompt.style, answers=tuple(t.answers),
        dropout=t.dropout, eval_batch_size=t.eval_batch_size, device=device,
    )


def backbone_for(cfg: DictConfig, seed: int):
    b = cfg.backbone
    if b.kind == "none":
        raise CrossrecError("backbone", f"task={cfg.task.name} needs a language model",
                            "choose backbone=minilm, smollm2 or tiny")
    config = plain_dict(b.config) if b.get("config") is not None else None
    return build_backbone(b.name, b.get("path"), b.get("local"), config, b.kind, seed, b.trust_remote_code,
                          b.get("gguf_file"))


def seeds_of(cfg: DictConfig) -> list[int]:
    seeds = cfg.task.get("seeds")
    return [int(s) for s in seeds] if seeds else [int(cfg.seed)]


# ---- preference ----------------------------------------------------------------------------

def examples_of(cfg: DictConfig, spec, domain) -> PreferenceData:
    t = cfg.task
    return preference_data(domain, like_threshold=t.like_threshold, max_history=t.max_history,
                           min_history=t.min_history, order=spec.order, order_seed=spec.order_seed)


def eval_sets(cfg: DictConfig, data: PreferenceData) -> dict[str, list]:
    n = cfg.task.eval_samples
    return {split: sample(exs, min(n, len(exs)) if n else None, cfg.task.eval_seed)
            for split, exs in (("valid", data.valid), ("test", data.test))}


def _fingerprint(domain, data: PreferenceData) -> dict:
    return domain.fingerprint() | {"examples": {"train": len(data.train), "valid": len(data.valid),
                                                "test": len(data.test)}, "source": data.source}


def preference(cfg: DictConfig, command: str, logger: Logger | None = None) -> dict[str, Any]:
    """finetune: train on each domain's (sampled) examples, score every domain's valid/test;
    evaluate: zero-shot scores."""
    device, zero_shot = device_of(cfg), command == "evaluate" or bool(cfg.task.zero_shot)
    domains = [(spec, d, examples_of(cfg, spec, d)) for spec, d in load_domains(cfg)]
    per_seed, info = [], {}
    for seed in seeds_of(cfg):
        seed_everything(seed)
        base = backbone_for(cfg, seed)
        spec = scorer_spec(cfg, base.kind, device)
        n = cfg.task.train_samples
        train = [] if zero_shot else [ex for _, _, data in domains for ex in sample(data.train, n, seed)]
        evals = {f"{split}/{s.name}": exs for s, _, data in domains
                 for split, exs in eval_sets(cfg, data).items()}
        res = run_preference(base, spec, train, evals, train_settings(cfg, seed, logger), zero_shot)
        log.info("seed %d: %s", seed, res["metrics"])
        per_seed.append({"seed": seed, **res})
        info = {k: res[k] for k in ("trainable", "total", "scorer")}
        info["adapter"] = "none" if zero_shot else spec.adapter
        info["head"] = spec.head if res["scorer"] == "head" else None
    valid, test = _aggregate(per_seed, [s.name for s, _, _ in domains])
    protocol = "given" if all(d.source == "instruction" for _, _, d in domains) else "preference-leave-one-out"
    return metrics_record(
        command, f"preference-{info['scorer']}", "zero-shot" if zero_shot else "inductive", protocol,
        int(cfg.seed), {s.name: _fingerprint(d, data) for s, d, data in domains}, valid, test,
        task="preference", backbone=cfg.backbone.name, adapter=info["adapter"], head=info["head"],
        trainable_params=info["trainable"], total_params=info["total"],
        train_samples=cfg.task.train_samples, seeds=seeds_of(cfg), per_seed=_strip(per_seed),
    )


def _aggregate(per_seed: list[dict], names: list[str]) -> tuple[dict, dict]:
    out: dict[str, dict] = {"valid": {}, "test": {}}
    for split, by_domain in out.items():
        for name in names:
            runs = [r["metrics"][f"{split}/{name}"] for r in per_seed if f"{split}/{name}" in r["metrics"]]
            if runs:
                by_domain[name] = mean_std(runs)
    return out["valid"], out["test"]


def _drop(d: dict, *keys: str) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


def _strip(per_seed: list[dict]) -> list[dict]:
    return [_drop(r, "trainable", "total", "scorer") for r in per_seed]


def preference_transfer(cfg: DictConfig, logger: Logger | None = None) -> dict[str, Any]:
    """source -> target with zero-shot, source-only, transfer and control arms (see run_transfer)."""
    device = device_of(cfg)
    ov = plain_dict(cfg.data.overrides) or None
    sources = names(cfg.source)
    if len(sources) != 1:
        raise CrossrecError("source", f"task=preference transfers from one domain, got {sources}", "pass source=NAME")
    ss, ts = domain_spec(sources[0], config_dirs(cfg), ov), domain_spec(str(cfg.target), config_dirs(cfg), ov)
    if ss.name == ts.name:
        raise CrossrecError("target", f"source and target are both {ss.name!r}", "transfer needs two domains")
    sd, td = load_domain(ss), load_domain(ts)
    sdata, tdata = examples_of(cfg, ss, sd), examples_of(cfg, ts, td)
    per_seed, arms_runs = [], []
    for seed in seeds_of(cfg):
        seed_everything(seed)
        base = backbone_for(cfg, seed)
        spec = scorer_spec(cfg, base.kind, device)
        src_train = sample(sdata.train, _cap(cfg.task.source_samples, len(sdata.train)), seed)
        n = cfg.task.train_samples  # 0: no target training, the source model is scored as it is
        tgt_train = [] if n == 0 else sample(tdata.train, n, seed)
        arms = run_transfer(base, spec, src_train, tgt_train, eval_sets(cfg, sdata), eval_sets(cfg, tdata),
                            train_settings(cfg, seed, logger))
        arms_runs.append(arms)
        per_seed.append({"seed": seed, "arms": {a: _drop(r, "trainable", "total") for a, r in arms.items()}})
    splits = ("valid", "test")
    arm_metrics = {a: {sp: mean_std([r[a]["metrics"][sp] for r in arms_runs]) for sp in splits} for a in arms_runs[0]}
    final = "transfer" if "transfer" in arm_metrics else "source"
    src = {sp: mean_std([r["source"]["source_metrics"][sp] for r in arms_runs]) for sp in splits}
    record = metrics_record(
        "transfer", f"preference-{arms_runs[0]['source']['scorer']}", "inductive", "preference-leave-one-out",
        int(cfg.seed), {ss.name: _fingerprint(sd, sdata), ts.name: _fingerprint(td, tdata)},
        {ss.name: src["valid"], ts.name: arm_metrics[final]["valid"]},
        {ss.name: src["test"], ts.name: arm_metrics[final]["test"]},
        task="preference", source=ss.name, target=ts.name, backbone=cfg.backbone.name, adapter=spec.adapter,
        trainable_params=arms_runs[0]["source"]["trainable"], total_params=arms_runs[0]["source"]["total"],
        source_samples=len(src_train), train_samples=cfg.task.train_samples, seeds=seeds_of(cfg),
        arms={a: m["test"] for a, m in arm_metrics.items()}, per_seed=per_seed,
    )
    if "control" in arm_metrics:
        record["gain_auc"] = arm_metrics["transfer"]["test"]["auc"] - arm_metrics["control"]["test"]["auc"]
    return record


def _cap(n: int | None, have: int) -> int | None:
    return None if n is None or n >= have else int(n)


# ---- classification ------------------------------------------------------------------------

def classification(cfg: DictConfig, logger: Logger | None = None) -> dict[str, Any]:
    """Per domain: labels -> a seeded split (stratified for single-label) -> per seed, fit
    ``task.classifier`` and score valid / test -> reports, confusion matrices, metrics.json."""
    t, device = cfg.task, device_of(cfg)
    classifier = str(t.get("classifier", "lm"))
    fit = CLASSIFIERS.get(classifier)  # an unknown name stops here, before any data is read
    method, hparams = adapter_of(cfg, False)
    if not trains_adapter(fit) and ADAPTERS.get(method).trains_backbone(method):
        raise CrossrecError("adapter", f"task.classifier={classifier} trains no language model",
                            "use adapter=frozen, or task.classifier=lm to train the adapter")
    uses_lm = reads_backbone(fit)
    dataset: dict[str, dict] = {}
    valid: dict[str, dict] = {}
    test: dict[str, dict] = {}
    per_seed: list[dict] = []
    for spec, domain in load_domains(cfg):
        data = label_data(domain, spec, t.multi_label)
        strata = None if data.multi_label or not t.get("stratify", True) else data.targets
        parts = split_indices(len(data.texts), tuple(t.split), t.split_seed, strata)
        runs = []
        for seed in seeds_of(cfg):
            seed_everything(seed)
            p = dict(parts)
            if t.train_samples:
                p["train"] = np.sort(np.asarray(sample(list(parts["train"]), t.train_samples, seed), dtype=np.int64))
            job = ClassifyJob(data.texts, data.targets, data.names, data.label_texts, data.multi_label, p,
                              train_settings(cfg, seed, logger),
                              None if cfg.backbone.kind == "none" else (lambda s=seed: backbone_for(cfg, s)),
                              method, hparams, cfg.backbone.get("pooling", "mean"), t.max_length, device)
            res = run_classification(job, classifier, t.threshold)
            stem = f"{spec.name}.{{split}}.seed{seed}"
            for split, (rep, text) in res.pop("reports").items():
                atomic_write_text(run_dir(cfg) / f"classification_report.{stem.format(split=split)}.txt", text)
                atomic_write_json(run_dir(cfg) / f"classification_report.{stem.format(split=split)}.json", rep)
            for split, counts in res.pop("confusion").items():
                confusion_png(counts, data.names, run_dir(cfg) / f"confusion_matrix.{stem.format(split=split)}.png",
                              f"{spec.name} {split} · {classifier} · seed {seed} (rows: true label)")
            runs.append(res)
            per_seed.append({"seed": seed, "domain": spec.name, **res})
        dataset[spec.name] = domain.fingerprint() | {
            "labels": data.names, "multi_label": data.multi_label, "label_field": spec.label_field,
            "items": {k: int(len(v)) for k, v in parts.items()},
            "label_counts": {n: int(c) for n, c in zip(data.names, _label_counts(data))}}
        for split, out in (("valid", valid), ("test", test)):
            if all(split in r["metrics"] for r in runs):
                out[spec.name] = mean_std([r["metrics"][split] for r in runs])
    split_kind = "stratified-item-split" if strata is not None else "random-item-split"
    return metrics_record(
        "finetune", "classification-head" if classifier == "lm" else f"classification-{classifier}",
        per_seed[-1]["mode"], split_kind, int(cfg.seed), dataset,
        valid, test, task="classification", classifier=classifier,
        backbone=cfg.backbone.name if uses_lm else "none", adapter=method if trains_adapter(fit) else "none",
        seeds=seeds_of(cfg), train_samples=t.train_samples,
        trainable_params=per_seed[-1]["trainable"], total_params=per_seed[-1]["total"],
        per_seed=[_drop(r, "trainable", "total") for r in per_seed],
    )


def _label_counts(data) -> np.ndarray:
    return data.targets.sum(0) if data.multi_label else np.bincount(data.targets, minlength=len(data.names))


# ---- output --------------------------------------------------------------------------------

def task_table(record: dict[str, Any]) -> Table:
    """Rows (split, domain); the task's metrics as columns, "mean ± std" over seeds."""
    preference = record.get("task") == "preference"
    keys = ["auc", "logloss", "accuracy"] if preference else ["micro_f1", "macro_f1", "accuracy"]
    who = [record.get("classifier"), record.get("backbone"), record.get("adapter")]
    table = Table(title=f"{record['command']} · task={record.get('task')} · " + " · ".join(str(w) for w in who if w))
    for col in ("split", "domain", *keys, "n"):
        table.add_column(col, justify="left" if col in ("split", "domain") else "right", no_wrap=True)

    def cells(m: dict) -> list[str]:
        return [(f"{m[k]:.4f}" + (f" ± {m[k + '_std']:.4f}" if f"{k}_std" in m else "")) if k in m else ""
                for k in keys] + [str(m.get("n", ""))]

    for part in ("valid", "test"):
        for dom, m in record.get(part, {}).items():
            table.add_row(part, dom, *cells(m))
    for arm, m in record.get("arms", {}).items():
        table.add_row(f"test ({arm})", record.get("target", ""), *cells(m))
    return table
