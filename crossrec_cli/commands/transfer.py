"""crossrec transfer: source -> target, always with its control.

Recipe: (a) train on the source (or init_from), (b) zero-shot on the target, (c) adapt on the
target (optionally a fraction of its training users), (d) control = the same target training
from the same initial model without the source step; then forgetting on the source, lift of
adapted over control, metrics.json, a table and a bar chart.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from crossrec_cli.commands._common import finish, load_domains, names, open_run_logger, prefixed, run_dir, seed_everything, write_metrics
from crossrec_cli.commands.recsys import (
    adversary_of, build_model, early_stopping_sample, evaluate_model, item_features, item_score, load_best, load_init, load_matching, model_mode, param_counts, text_prior, train_config,
    zero_shot,
)
from crossrec_cli.data import make_split
from crossrec_cli.data.context import composite_key, short_history_mask, with_context
from crossrec_cli.data.assemble import check_evaluable
from crossrec_cli.data.split import subsample_training_users
from crossrec_cli.errors import CrossrecError
from crossrec_cli.evaluation.report import metrics_record
from crossrec_cli.training.loop import fit
from crossrec_cli.training.preempt import EXIT_PREEMPTED


def _phase(cfg, model, splits, valid_splits, tc, out: Path, logger, extra=None) -> dict:
    """Train one arm in its own folder. With ``resume``, a finished arm is reloaded and an
    interrupted one continues from its newest verified checkpoint."""
    import json

    from crossrec_cli.io import atomic_write_json
    from crossrec_cli.training import checkpoint as ckpt

    done = out / "phase.json"
    if cfg.get("resume") and done.is_file():
        load_best(model, out)
        return json.loads(done.read_text())

    def valid(m):
        return {k: evaluate_model(cfg, m, k, s, parts=("valid",))["valid"] for k, s in valid_splits.items()}

    resume = bool(cfg.get("resume")) and ckpt.latest_verified(out / "checkpoints") is not None
    try:
        prog = fit(model, splits, tc, valid, out, log_metrics=prefixed(logger, out.name), show_progress=bool(cfg.progress),
                   adversary=extra, resume=resume)
    except SystemExit as stop:
        if stop.code == EXIT_PREEMPTED:
            write_metrics(cfg, {"command": "transfer", "status": "interrupted", "seed": cfg.seed, "phase": out.name,
                           "resume": f"crossrec transfer resume={out.parent}"})
        raise
    load_best(model, out)
    info = {"best_epoch": prog.best_epoch, "epochs_run": len(prog.history),
            "seconds_per_epoch": sum(h["train_seconds"] for h in prog.history) / max(1, len(prog.history))}
    atomic_write_json(done, info)
    return info


def _context_arm(cfg, sources, splits_src, tspec, target, split_full, split_tgt, tc, out, logger):
    """Shared users: adapt again from the source model with merged (source + target) histories."""
    space = tspec.shared_user_space
    if not cfg.overlap.context or not space or len(sources) != 1 or sources[0][0].shared_user_space != space:
        return None

    sspec, sdom = sources[0]
    full, shared = with_context(target, split_full, sdom, splits_src[sspec.name])
    if len(shared) == 0:
        return None
    part, _ = with_context(target, split_tgt, sdom, splits_src[sspec.name])
    catalogues = [(sspec.name, sdom), (tspec.name, target)]
    seed_everything(cfg.seed)
    model = build_model(cfg, catalogues, tc, splits_src)
    key = composite_key(tspec.name, sspec.name)
    model.add_composite(key, tspec.name, sspec.name)
    if cfg.get("init_from"):
        load_init(cfg, model)  # a pretrain run: its backbone (+ a fused item tower)
    else:
        load_matching(model, out / "source")
    model.freeze(list(cfg.freeze))
    phase = _phase(cfg, model, {key: part}, {key: full}, tc, out / "with_context", logger)
    metrics = evaluate_model(cfg, model, key, full)
    return {"model": model, "key": key, "split": full, "metrics": metrics, "phase": phase, "shared_users": int(len(shared))}


def _cold_start(cfg, arms: dict, n_target: int) -> dict:
    """Test metrics on examples whose target-domain history has <= overlap.cold_start_max items."""
    import numpy as np

    from crossrec_cli.data.split import Split

    k = int(cfg.overlap.cold_start_max)
    out = {"max_target_items": k}
    for arm, (model, key, split) in arms.items():
        mask = short_history_mask(split.test, n_target, k)
        out["examples"] = int(mask.sum())
        if not mask.any():
            continue
        sub = Split(split.train_users, split.train_seqs, split.valid.subset(np.zeros(len(split.valid), bool)),
                    split.test.subset(mask), split.kind)
        out[arm] = evaluate_model(cfg, model, key, sub)["test"]
    return out


def _both(res: dict[str, dict], name: str) -> dict:
    return {"valid": {name: res["valid"]}, "test": {name: res["test"]}}


def run(cfg: DictConfig) -> dict[str, Any]:
    if cfg.task.name != "recommendation":
        from crossrec_cli.commands.tasks import run_task

        return run_task(cfg, "transfer")
    t0 = time.perf_counter()
    out = run_dir(cfg)
    sources = load_domains(cfg, cfg.source)
    (tspec, target), = load_domains(cfg, cfg.target)
    tname = tspec.name
    if tname in names(cfg.source):
        raise CrossrecError("target", f"{tname!r} is also a source", "choose a different target domain")
    splits_src = {s.name: make_split(d, s.order, s.order_seed) for s, d in sources}
    split_full = make_split(target, tspec.order, tspec.order_seed)
    for name, split in [*splits_src.items(), (tname, split_full)]:
        check_evaluable(split, name)
    split_tgt = subsample_training_users(split_full, float(cfg.target_fraction), int(cfg.seed))
    catalogues = [(s.name, d) for s, d in sources] + [(tname, target)]
    tc = train_config(cfg, splits_src)
    keys = [s.name for s, _ in sources] + [tname]

    logger = open_run_logger(cfg)
    # (a) source
    seed_everything(cfg.seed)
    model = build_model(cfg, catalogues, tc, splits_src)
    extra = adversary_of(cfg, model, keys)
    phases = {}
    if cfg.get("init_from"):
        load_init(cfg, model)
    else:
        phases["source"] = _phase(cfg, model, splits_src, splits_src, tc, out / "source", logger, extra)
    before = {s.name: evaluate_model(cfg, model, s.name, splits_src[s.name], d)["test"] for s, d in sources}
    # (b) zero-shot
    # a transductive model has (untrained) id vectors for target items: no zero-shot for it
    zero, zero_record = None, {}
    if not model.transductive:  # as `evaluate` ranks a domain a run never saw (eval.zero_shot_align / _prior)
        with zero_shot(cfg, model, tname, keys[:-1], split_full) as zero_record:
            zero = evaluate_model(cfg, model, tname, split_full, target)
    # (c) adapt (``freeze``: parts of the source model kept as they are)
    model.freeze(list(cfg.freeze))
    phases["adapted"] = _phase(cfg, model, {tname: split_tgt}, {tname: split_full}, tc, out / "adapted", logger, extra)
    adapted = evaluate_model(cfg, model, tname, split_full, target)
    after = {s.name: evaluate_model(cfg, model, s.name, splits_src[s.name], d) for s, d in sources}
    trainable, total = param_counts(model)
    ctx = _context_arm(cfg, sources, splits_src, tspec, target, split_full, split_tgt, tc, out, logger)
    # (d) control: same initial model and target data, no source step
    seed_everything(cfg.seed)
    control_model = build_model(cfg, catalogues, tc, splits_src)
    phases["control"] = _phase(cfg, control_model, {tname: split_tgt}, {tname: split_full}, tc, out / "control", logger)
    control = evaluate_model(cfg, control_model, tname, split_full, target)

    lift = {k: (adapted["test"][k] - v) / v if v > 0 else None
            for k, v in control["test"].items() if "@" in k}
    cold = None
    if ctx is not None:
        cold = _cold_start(cfg, {"adapted": (model, tname, split_full), "control": (control_model, tname, split_full),
                                 "with_context": (ctx["model"], ctx["key"], ctx["split"])}, target.n_items)
    transfer = {
        "zero_shot": _both(zero, tname) if zero else {"skipped": "a transductive model (item ids) cannot score unseen target items"},
        "adapted": _both(adapted, tname),
        "control": _both(control, tname),
    }
    transfer["source_before"] = {"test": before}
    forgetting = {n: {k: after[n]["test"][k] - v for k, v in before[n].items() if "@" in k} for n in before}
    if ctx is not None:
        transfer["with_context"] = _both(ctx["metrics"], tname) | {"shared_users": ctx["shared_users"]}
        transfer["cold_start"] = cold
        phases["with_context"] = ctx["phase"]
    used = item_features(cfg)
    dataset = {s.name: d.fingerprint(used) | {"split": splits_src[s.name].kind} for s, d in sources}
    dataset[tname] = target.fingerprint(used) | {"split": split_tgt.kind}
    record = metrics_record(
        "transfer", cfg.model.name, model_mode(cfg), "candidates" if cfg.eval.candidates else "full", cfg.seed, dataset,
        {tname: adapted["valid"], **{k: v["valid"] for k, v in after.items()}},
        {tname: adapted["test"], **{k: v["test"] for k, v in after.items()}},
        source=names(cfg.source), target=tname, target_fraction=float(cfg.target_fraction),
        adversarial=cfg.adversarial.name if isinstance(cfg.adversarial.name, str) else list(cfg.adversarial.name),
        backbone=cfg.backbone.name, adapter=cfg.adapter.name,
        features=used, fusion=str(cfg.model.fusion), score=item_score(cfg), **text_prior(cfg),
        **zero_record, **({"freeze": list(cfg.freeze)} if cfg.freeze else {}), transfer=transfer, lift=lift, forgetting=forgetting, phases=phases, trainable_params=trainable, total_params=total,
        wall_seconds=time.perf_counter() - t0, status="complete", **early_stopping_sample(cfg),
    )
    path = finish(cfg, record, logger)
    _report(record, tname, out)
    Console().print(f"metrics: {path}")
    return record


def _report(record: dict, tname: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crossrec_cli.io import atomic_write

    arms = [a for a in ("zero_shot", "adapted", "control") if "test" in record["transfer"][a]]
    keys = [k for k in record["transfer"]["adapted"]["test"][tname] if "@" in k]
    table = Table(title=f"transfer {record['source']} -> {tname} · target test · fraction {record['target_fraction']}")
    table.add_column("arm")
    for k in keys:
        table.add_column(k, justify="right")
    for a in arms:
        m = record["transfer"][a]["test"][tname]
        table.add_row(a, *(f"{m[k]:.4f}" for k in keys))
    table.add_row("lift", *(f"{record['lift'][k]:+.1%}" if record["lift"].get(k) is not None else "n/a" for k in keys))
    Console().print(table)
    shown = [k for k in keys if k.startswith(("recall@", "ndcg@"))]
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    width = 0.8 / len(arms)
    for i, a in enumerate(arms):
        m = record["transfer"][a]["test"][tname]
        ax.bar([j + i * width for j in range(len(shown))], [m[k] for k in shown], width, label=a.replace("_", "-"))
    ax.set_xticks([j + width * (len(arms) - 1) / 2 for j in range(len(shown))], shown)
    ax.set_title(f"{', '.join(record['source'])} -> {tname} (target test)")
    ax.legend()
    fig.tight_layout()
    atomic_write(out / "transfer.png", lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
