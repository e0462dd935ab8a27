"""``crossrec evaluate run=<run dir> [domain=...]``: reload a trained run and evaluate it.

The run's own config.yaml rebuilds the model (backbone, adapter, towers); the best weights
come from ``<run>/checkpoint/model.safetensors`` (safetensors only, manifest verified). Without
``domain=`` the run's training domains are evaluated.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from crossrec_cli.io import read_safetensors

from crossrec_cli.config_check import check_targets
from crossrec_cli.commands._common import config_dirs, domain_spec, finish, load_domains, open_run_logger
from crossrec_cli.commands.recsys import (
    _checkpoint_file, build_model, evaluate_model, item_features, item_score, model_mode, param_counts, text_prior,
    rank_unseen, test_users, zero_shot_prior, zero_shot_record,
)
from crossrec_cli.data import Domain, DomainSpec, Split, load_domain, make_split
from crossrec_cli.data.context import context_of, with_context
from crossrec_cli.data.assemble import check_evaluable
from crossrec_cli.errors import CrossrecError
from crossrec_cli.evaluation.protocol import extras_by_key
from crossrec_cli.evaluation.report import metrics_record, metrics_table
from crossrec_cli.models.seqrec import SeqRec
from crossrec_cli.training.loop import load_trainable_state

log = logging.getLogger("crossrec")


def _domain_given(cfg: DictConfig) -> bool:
    return bool(cfg.runtime.domain_given)


def run_config(run: Path) -> DictConfig:
    path = run / "config.yaml"
    if not path.is_file():
        raise CrossrecError(str(path), "not a crossrec run directory (no config.yaml)", "pass run=<a finetune/transfer run dir>")
    return OmegaConf.load(path)


def unseen_of(domains: list[tuple[DomainSpec, Domain]], trained_on: list[str]) -> list[str]:
    return [s.name for s, _ in domains if s.name not in trained_on]


@dataclass
class LoadedRun:
    model: SeqRec
    cfg: DictConfig  # the run's saved config with this command's eval / device settings
    saved: DictConfig  # the run's config.yaml as written
    trained_on: list[str]
    domains: list[tuple[DomainSpec, Domain]]
    splits: dict[str, Split] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # a mixed-history run: domain -> its composite key
    context: dict[str, Domain] = field(default_factory=dict)  # ... and every domain its histories read

    def key(self, name: str) -> str:
        """The model's catalogue key of domain ``name`` (its composite for a mixed-history run)."""
        return self.keys.get(name, name)

    @property
    def unseen(self) -> list[str]:
        """The command's domains the run never trained on (ranked zero-shot)."""
        return unseen_of(self.domains, self.trained_on)

    def split(self, name: str) -> Split:
        """Domain ``name``'s split, made once per command."""
        if name not in self.splits:
            spec, domain = next((s, d) for s, d in self.domains if s.name == name)
            self.splits[name] = make_split(domain, spec.order, spec.order_seed)
            if name in self.keys:  # the histories the run was trained and evaluated with
                src = self.context[context_of(self.keys[name])]
                self.splits[name] = with_context(domain, self.splits[name], src, make_split(src))[0]
        return self.splits[name]


def overrides(saved: DictConfig) -> dict | None:
    """The run's ``data.overrides`` (filters), which its training domains were loaded with."""
    return OmegaConf.to_container(saved.data.overrides) or None


def load_run(cfg: DictConfig) -> LoadedRun:
    """The trained model of ``cfg.run`` with the best weights, its catalogues registered for the
    command's domains (``domain=``), or the run's own training domains when none is given."""
    run = Path(str(cfg.run)).expanduser()
    saved = run_config(run)
    check_targets(OmegaConf.to_container(saved), list(cfg.get("allowed_targets") or []), where=str(run / "config.yaml"))
    meta_path = run / "checkpoint" / "crossrec.json"
    if not meta_path.is_file():
        raise CrossrecError(str(meta_path), "run has no finished checkpoint", "use a run that completed training")
    meta = json.loads(meta_path.read_text())
    trained_on = meta["domains"]
    keys = dict(meta.get("mixed_history") or {})  # domain -> "<domain>+<context domain>"
    if _domain_given(cfg):
        domains = load_domains(cfg)
    else:
        domains = [(s, load_domain(s)) for s in (domain_spec(n, config_dirs(cfg), overrides(saved)) for n in trained_on)]
    # the saved model's architecture, this command's evaluation protocol
    # trust_remote_code is this command's choice, never the (possibly edited) run folder's; so is the
    # runtime that encodes the item texts (backbone.runtime)
    mcfg = OmegaConf.merge(saved, {"eval": cfg.eval, "device": cfg.device, "init_from": None,
                                   "backbone": {"trust_remote_code": bool(cfg.backbone.get("trust_remote_code", False)),
                                                "runtime": str(cfg.backbone.get("runtime", "torch"))}})
    unseen = unseen_of(domains, trained_on)
    if unseen and model_mode(saved) == "transductive":
        raise CrossrecError(f"domain={unseen[0]}", "a transductive model (item ids) cannot score a domain it was "
                            f"not trained on (it was trained on {', '.join(trained_on)})",
                            "use one of its training domains, or an inductive (text) run")
    if keys:
        given = [s.name for s, _ in domains]
        if [n for n in given if n not in keys]:
            raise CrossrecError("domain", f"{run} read mixed-domain histories (mixed_history) of {', '.join(keys)}; it "
                                f"ranks those domains only, with the same inputs", f"pass domain= among {', '.join(keys)}")
        keys = {n: k for n, k in keys.items() if n in given}
        context = [(s, load_domain(s)) for s in (domain_spec(context_of(k), config_dirs(cfg), overrides(saved))
                                                 for k in keys.values()) if s.name not in given]
        domains_ctx = {s.name: (s, d) for s, d in domains + context}
    model = build_model(mcfg, [(s.name, d) for s, d in (list(domains_ctx.values()) if keys else domains)])
    for name, key in keys.items():
        model.add_composite(key, name, context_of(key))
    state = SeqRec.upgrade_state(read_safetensors(_checkpoint_file(run / "checkpoint")))
    own = model.state_dict()
    load_trainable_state(model, {k: v for k, v in state.items() if k in own}, str(run / "checkpoint"))
    loaded = LoadedRun(model, mcfg, saved, trained_on, domains, keys=keys,
                       context={n: d for n, (_, d) in domains_ctx.items()} if keys else {})
    auto = zero_shot_prior(mcfg, model) == "auto"  # its weight is chosen on each unseen domain's validation examples
    rank_unseen(mcfg, model, unseen, trained_on, lambda n: load_domain(domain_spec(n, config_dirs(cfg), overrides(saved))),
                {n: loaded.split(n) for n in unseen} if auto else None)
    return loaded


def single_domain_inputs(loaded: LoadedRun, command: str) -> None:
    """``recommend`` / ``explain`` read each user's history in one domain: a mixed-history run is
    refused in one line, not fed inputs it was never trained on."""
    if loaded.keys:
        raise CrossrecError("run", f"{command} reads single-domain histories, but the run read mixed-domain ones "
                            f"({', '.join(loaded.keys.values())})", "evaluate it with `crossrec evaluate run=...`")


def robustness(cfg: DictConfig, mcfg: DictConfig, model: SeqRec, spec: DomainSpec, domain: Domain, split,
               clean: dict[str, float]) -> dict[str, dict]:
    """``robustness=[...]``: the test split again under each perturbation (evaluation/robustness.py):
    {perturbation: {"metrics": ..., "drop": relative change per metric}}, the clean metrics kept."""
    from crossrec_cli.evaluation import robustness as rb

    specs = rb.parse(list(cfg.robustness))
    if not model.reads_text and any(rb.PERTURBATIONS.get(name).reads_text for name, _ in specs):
        vector_only = [n for n, p in rb.PERTURBATIONS.items() if not p.reads_text]
        raise CrossrecError("robustness", "text perturbations need a model that reads item text",
                            f"use {' or '.join(vector_only)} alone for this run, or a run with a backbone")
    probe = rb.Probe(model, spec.name, domain, spec, split, list(mcfg.eval.topk), bool(mcfg.eval.exclude_seen),
                     int(mcfg.eval.batch_size), int(cfg.seed),
                     lambda: evaluate_model(mcfg, model, spec.name, split, refresh=True, parts=("test",))["test"])
    out = {}
    for name, arg in specs:
        label = f"{name}:{arg}" if arg else name
        got = rb.PERTURBATIONS.get(name).metrics(probe, arg)
        out[label] = {"metrics": got, "drop": rb.relative_drop(clean, got)}
        log.info("robustness %s: test ndcg@10 %.4f (%+.1f%%)", label, got.get("ndcg@10", float("nan")),
                 100 * out[label]["drop"].get("ndcg@10", float("nan")))
    return out


def evaluate_run(cfg: DictConfig) -> dict[str, Any]:
    run = Path(str(cfg.run)).expanduser()
    loaded = load_run(cfg)
    model, mcfg, saved, trained_on, domains = (loaded.model, loaded.cfg, loaded.saved, loaded.trained_on,
                                               loaded.domains)
    dataset, valid, test, extras = {}, {}, {}, {}
    for spec, domain in domains:
        split = loaded.split(spec.name)
        check_evaluable(split, spec.name)
        split = test_users(cfg, split, spec.name, spec.name not in loaded.unseen, "the run (it trained on it)")
        res = evaluate_model(mcfg, model, loaded.key(spec.name), split, domain, refresh=model.backbone_trains, spec=spec)
        extras[spec.name] = res.get("extras", {})
        if cfg.get("robustness"):
            extras[spec.name]["robustness"] = robustness(cfg, mcfg, model, spec, domain, split, res["test"])
        dataset[spec.name] = domain.fingerprint(item_features(mcfg)) | {"split": split.kind}
        valid[spec.name], test[spec.name] = res["valid"], res["test"]
    trainable, total = param_counts(model)
    gates = {spec.name: model.fusion_gates(spec.name) for spec, _ in domains}
    unseen = loaded.unseen
    record = metrics_record(
        "evaluate", saved.model.name, "zero-shot" if unseen else model_mode(saved),
        "candidates" if cfg.eval.candidates else "full", int(saved.seed), dataset, valid, test,
        run=str(run), trained_on=trained_on, backbone=saved.backbone.name, adapter=saved.adapter.name,
        features=item_features(mcfg), fusion=str(mcfg.model.get("fusion", "sum")), score=item_score(mcfg), **text_prior(mcfg),
        **zero_shot_record(cfg, model, unseen), **({"mixed_history": {n: context_of(k) for n, k in loaded.keys.items()}}
                                                   if loaded.keys else {}),
        trainable_params=trainable, total_params=total, **({"fusion_gates": gates} if any(gates.values()) else {}),
        **extras_by_key(extras),
    )
    path = finish(cfg, record, open_run_logger(cfg))
    Console().print(metrics_table(record))
    Console().print(f"metrics: {path}")
    return record
