"""crossrec pretrain: domain-adaptive contrastive pretraining of the item tower's backbone.

Recipe: domains -> item texts (+ history neighbours) -> backbone + adapter -> InfoNCE epochs ->
merged backbone saved as a plain model folder in ``checkpoint/backbone`` that
``finetune/transfer init_from=<this run>`` start from. With ``fusion=`` and item features beyond
text (``fusion=kg``, ``fusion=multimodal``, ``model.features=[text,kg]``) the views are the fused
item tower's vectors (``model`` settings as in finetune), and the tower's own tensors (feature
tables, projection, fusion) go to ``checkpoint/model.safetensors``, which ``init_from`` loads too.
Under torchrun every process encodes its share of each batch and the InfoNCE scores the whole
batch; rank 0 writes the run's results.
"""

from __future__ import annotations

import time
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from safetensors.torch import save_file

from crossrec_cli.adapters import ADAPTERS
from crossrec_cli.commands._common import finish, load_domains, open_run_logger, run_dir, seed_everything, write_metrics
from crossrec_cli.commands.recsys import build_model, item_features, model_mode
from crossrec_cli.data import make_split
from crossrec_cli.errors import CrossrecError
from crossrec_cli.evaluation.report import metrics_record
from crossrec_cli.models.backbone import build_backbone, resolve_device
from crossrec_cli.training import checkpoint as ckpt
from crossrec_cli.training import distributed
from crossrec_cli.training.preempt import EXIT_PREEMPTED
from crossrec_cli.training.pretrain import OBJECTIVES, neighbor_pairs, pretrain_item_tower

RUNS_DISTRIBUTED = True  # torchrun: see training/distributed.py
TOWER_PARTS = ("features.", "fusion.")  # SeqRec's item tower, saved by a fused pretrain (not the user tower)


def check_overrides(cfg: DictConfig, overrides: list[str]) -> CrossrecError | None:
    """``model.*`` on the command line shapes the fused item tower only: with item features that
    are text alone pretrain trains the backbone alone and would not read it."""
    if item_features(cfg) != ["text"]:
        return None
    given = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
    key = next((k for k in given if k == "model" or k.startswith("model.")), None)
    if key is None:
        return None
    return CrossrecError(key, "crossrec pretrain reads the model settings only for a fused item tower (features "
                         "beyond text)", "add fusion=kg or fusion=multimodal ('model.features=[text,...]'), or drop it")


def pretrain_adversary(cfg: DictConfig, domains: list[str]):
    """``adversarial=fgm | pgd`` perturbs the backbone's token embeddings; grl aligns the
    recommender's item vectors, which pretraining does not have."""
    from crossrec_cli.adversarial import build_adversary

    raw = OmegaConf.to_container(cfg.adversarial, resolve=True)
    name = raw.pop("name")
    if "grl" in ([name] if isinstance(name, str) else name):
        raise CrossrecError("adversarial", "grl aligns the recommender's item vectors; pretrain trains the backbone "
                            "alone", "use adversarial=fgm or pgd here, grl in finetune / transfer")
    return build_adversary(name, None, domains, raw)


def run(cfg: DictConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    seed_everything(cfg.seed)
    out = run_dir(cfg)
    p = cfg.pretrain
    objective = OBJECTIVES.get(str(p.objective))  # an unknown name stops here, before any data loads
    if not ADAPTERS.get(str(cfg.adapter.name)).mergeable(str(cfg.adapter.name)):
        mergeable = [m for m, fam in ADAPTERS.items() if fam.mergeable(m)]
        raise CrossrecError("adapter", f"pretrain cannot merge adapter={cfg.adapter.name} into a plain backbone",
                            f"use one of {mergeable}")
    if cfg.backbone.kind == "none":
        raise CrossrecError("backbone", "pretraining needs a language model", "choose backbone=minilm (or tiny)")
    features = item_features(cfg)
    fused = features != ["text"]  # a fused item tower: its vectors are the views
    if not fused and str(cfg.model.fusion) != "sum":
        raise CrossrecError("fusion", f"{cfg.model.fusion} fuses item features, and model.features is {features}",
                            "add features, e.g. 'model.features=[text,kg]' (or fusion=kg / multimodal), or drop fusion=")
    domains = load_domains(cfg, cfg.domains) if cfg.get("domains") else load_domains(cfg)
    data = {}
    for spec, d in domains:
        split = make_split(d, spec.order, spec.order_seed)  # neighbours from training histories only
        data[spec.name] = (d.item_text, neighbor_pairs(split.train_seqs))
    b = cfg.backbone
    dev = resolve_device(str(cfg.device))  # before anything loads: a missing GPU is one line
    from crossrec_cli.adapters import apply_adapter, param_counts

    steps = sum(-(-len(objective.units(t, n)) // p.batch_size) for t, n in data.values())
    steps = min(steps, p.max_steps or steps) * p.epochs
    tower = None
    if fused:  # finetune's item tower: backbone + adapter, every domain's catalogue registered
        tower = build_model(cfg, [(s.name, d) for s, d in domains], steps=max(1, steps))
        backbone = tower.backbone
    else:
        backbone = build_backbone(b.name, b.path, b.get("local"), b.get("config"), b.kind, cfg.seed, b.trust_remote_code)
        backbone.model.to(dev)
        hp = {k: v for k, v in cfg.adapter.items() if k != "name"}
        backbone.model = apply_adapter(backbone.model, cfg.adapter.name, total_steps=max(1, steps), **hp)
    trainable, total = param_counts(backbone.model if tower is None else tower)
    adversary = pretrain_adversary(cfg, list(data))
    logger = open_run_logger(cfg)
    try:
        history = pretrain_item_tower(backbone, data, p.objective, p.epochs, p.batch_size, p.lr, p.temperature,
                                      b.max_length, b.pooling, cfg.seed, p.max_steps, checkpoints=out / "checkpoints",
                                      resume=bool(cfg.get("resume")), checkpoint_every=int(p.checkpoint_every),
                                      log_metrics=logger, grad_clip=float(p.get("grad_clip") or 0.0),
                                      progress=bool(cfg.get("progress", False)), adversary=adversary,
                                      precision=str(p.get("precision") or "fp32"), tower=tower)
    except SystemExit as stop:
        if stop.code == EXIT_PREEMPTED:
            write_metrics(cfg, {"command": "pretrain", "status": "interrupted", "seed": cfg.seed,
                           "resume": f"crossrec pretrain resume={out}"})
        raise
    if not distributed.is_main():  # rank 0 writes the pretrained backbone and the metrics
        return {"command": "pretrain", "status": "complete", "rank": distributed.rank()}
    model = backbone.model.merge_and_unload() if hasattr(backbone.model, "merge_and_unload") else backbone.model
    writers = {"backbone": lambda path: (model.save_pretrained(path, safe_serialization=True),
                                         backbone.tokenizer.save_pretrained(path))}
    if tower is not None:  # the item tower's own tensors (the backbone is the folder above)
        state = {k: v.detach().cpu().contiguous() for k, v in tower.state_dict().items() if k.startswith(TOWER_PARTS)}
        writers["model.safetensors"] = lambda path: save_file(state, path)
    ckpt.write_checkpoint(out / "checkpoint", writers,
                          meta={"objective": p.objective, "domains": list(data), "features": features})
    record = metrics_record(
        "pretrain", f"pretrain-{p.objective}", model_mode(cfg), "none", cfg.seed,
        {s.name: d.fingerprint(features) for s, d in domains}, {}, {},
        backbone=b.name, adapter=cfg.adapter.name, trainable_params=trainable, total_params=total,
        features=features, fusion=str(cfg.model.fusion),
        adversarial=cfg.adversarial.name if isinstance(cfg.adversarial.name, str) else list(cfg.adversarial.name),
        history=history, seconds_per_epoch=sum(h["seconds"] for h in history) / max(1, len(history)),
        wall_seconds=time.perf_counter() - t0, status="complete",
    )
    path = finish(cfg, record, logger)
    Console().print(f"pretrained backbone: {out / 'checkpoint' / 'backbone'}  (use init_from={out}); metrics: {path}")
    return record
