"""``crossrec export run=DIR [format=onnx] [domain=NAME] [quantize=int8]``: a trained run as an
export folder that ``crossrec serve`` (or any onnxruntime program) serves.

Recipe: load the run (``load_run``: a domain it never trained on is set up zero-shot, as
``crossrec evaluate`` ranks it) -> a catalogue for domains created at serve time (the training
catalogues' statistics, read zero-shot) -> write graphs, item matrices and manifest
(``serving.export``) -> onnxruntime against PyTorch on each domain's test users, refused beyond
``parity_tolerance`` -> ``quantize=int8``: the int8 encoder's recall@10 and items/s ->
``metrics.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from rich.console import Console

from crossrec_cli.commands._common import (config_dirs, domain_spec, finish, open_run_logger, run_dir,
                                           seed_everything)
from crossrec_cli.commands.checkpoint_eval import LoadedRun, load_run, overrides, single_domain_inputs
from crossrec_cli.commands.recsys import _checkpoint_file, model_mode, rank_unseen, zero_shot_prior, zero_shot_record
from crossrec_cli.data import load_domain
from crossrec_cli.errors import CrossrecError
from crossrec_cli.evaluation.report import metrics_record
from crossrec_cli.io import atomic_write_json, sha256_file
from crossrec_cli.models.features.base import Catalogue
from crossrec_cli.serving.export import NEW_DOMAIN, DomainExport, encodes_text, export_model

# the keys crossrec export reads; an override of any other is refused (check_overrides)
READS = ("run", "format", "quantize", "opset", "parity_tolerance", "domain", "experiment", "eval.zero_shot_prior",
         "eval.zero_shot_align", "backbone.trust_remote_code", "device", "num_threads", "seed", "overwrite", "debug",
         "allowed_targets", "data.overrides", "hydra")


def check_overrides(cfg: DictConfig, given: list[str], reads: tuple[str, ...] = READS,
                    command: str = "export") -> CrossrecError | None:
    """An override of a key the command does not read is an error, not a silent no-op."""
    for o in given:
        key = o.split("=", 1)[0].lstrip("+~")
        if not any(key == r or key.startswith(r + ".") for r in reads):
            return CrossrecError(key, f"crossrec {command} does not read this key",
                                 f"it reads {', '.join(r for r in reads if r != 'hydra')}")
    return None


def check_settings(cfg: DictConfig) -> None:
    if not cfg.get("run"):
        raise CrossrecError("run", "crossrec export needs the run to export", "pass run=<a finetune / transfer run dir>")
    if cfg.format != "onnx":
        raise CrossrecError("format", f"{cfg.format!r} is not an export format", "format=onnx")
    if cfg.quantize not in (None, "int8"):
        raise CrossrecError("quantize", f"{cfg.quantize!r} is not a quantisation", "quantize=int8, or leave it null")
    if not isinstance(cfg.opset, int) or isinstance(cfg.opset, bool) or not 17 <= cfg.opset <= 21:
        raise CrossrecError("opset", f"expected an ONNX opset from 17 to 21, got {cfg.opset!r}", "e.g. opset=18")
    tol = cfg.parity_tolerance
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol > 0:
        raise CrossrecError("parity_tolerance", f"expected a positive number, got {tol!r}", "e.g. parity_tolerance=1e-5")


def new_domain_key(cfg: DictConfig, loaded: LoadedRun) -> str | None:
    """Register the catalogue that domains created at serve time are read with: every training
    catalogue's items, ranked as a domain the run never saw (``rank_unseen``); None when the run
    cannot make items from text, or ``eval.zero_shot_prior=auto`` needs validation examples."""
    model = loaded.model
    if encodes_text(model) is not None or zero_shot_prior(loaded.cfg, model) == "auto":
        return None
    for name in loaded.trained_on:
        if name not in model.catalogues:
            spec = domain_spec(name, config_dirs(cfg), overrides(loaded.saved))
            model.add_catalogue(name, Catalogue.of(load_domain(spec)))
    text = model.features["text"]
    model.add_catalogue(NEW_DOMAIN, Catalogue.from_texts([t for n in loaded.trained_on for t in text.texts[n]]))
    text.encoded[NEW_DOMAIN] = torch.cat([text.base(n) for n in loaded.trained_on])  # encoded already: no second pass
    rank_unseen(loaded.cfg, model, [NEW_DOMAIN], loaded.trained_on)
    return NEW_DOMAIN


def export_run(cfg: DictConfig, out: Path) -> tuple[LoadedRun, dict[str, Any]]:
    """Export ``cfg.run`` into ``out`` and check it: (the loaded run, the manifest)."""
    from crossrec_cli.serving.engine import Engine
    from crossrec_cli.serving.parity import int8_report, parity

    loaded = load_run(cfg)
    single_domain_inputs(loaded, "export")
    model = loaded.model
    unseen = loaded.unseen
    domains = [DomainExport(s.name, loaded.key(s.name), "zero-shot" if s.name in unseen else model_mode(loaded.saved),
                            list(d.item_ids), list(d.item_text), d.fingerprint()) for s, d in loaded.domains]
    run = Path(str(cfg.run)).expanduser().resolve()
    about = {"run": str(run), "checkpoint_sha256": sha256_file(_checkpoint_file(run / "checkpoint")), "model": str(loaded.saved.model.name),
             "backbone": str(loaded.saved.backbone.name), "adapter": str(loaded.saved.adapter.name),
             "trained_on": loaded.trained_on, **zero_shot_record(loaded.cfg, model, unseen)}
    manifest = export_model(model, domains, out, int(cfg.opset), cfg.quantize, new_domain_key(cfg, loaded), about)
    threads = torch.get_num_threads()
    engine = Engine(out, threads=threads)
    tests = {d.name: (d.key, loaded.split(d.name).test) for d in domains}
    manifest["parity"], encoded = parity(engine, model, tests, int(loaded.cfg.eval.batch_size))
    # what a request ranks: the user tower over the exported items (a new text's item vector comes from
    # the ONNX encoder, whose float rounding the scores carry too: max_score_diff_encoded, reported)
    worst = max((p["max_score_diff"] for p in manifest["parity"].values()), default=0.0)
    manifest["parity_max_score_diff"] = worst
    if worst > float(cfg.parity_tolerance):
        raise CrossrecError("parity_tolerance", f"onnxruntime's scores differ from PyTorch's by {worst:.3g} on the "
                            f"test users, more than {cfg.parity_tolerance}", "report it with the run's config.yaml")
    if cfg.quantize == "int8":
        texts = {d.name: list(model.features["text"].texts[d.key]) for d in domains}
        manifest["quantize"] = {"int8": int8_report(engine, Engine(out, threads=threads, encoder="int8"), encoded,
                                                    texts, {n: t for n, (_, t) in tests.items()})}
    atomic_write_json(out / "manifest.json", manifest, "the export's manifest")
    return loaded, manifest


def run(cfg: DictConfig) -> dict[str, Any]:
    seed_everything(cfg.seed)
    check_settings(cfg)
    out = run_dir(cfg) / "export"
    loaded, manifest = export_run(cfg, out)
    record = metrics_record(
        "export", str(loaded.saved.model.name), "zero-shot" if loaded.unseen else model_mode(loaded.saved), "export",
        int(loaded.saved.seed), {n: d["fingerprint"] for n, d in manifest["domains"].items()}, {}, {},
        run=manifest["run"], export=str(out), format="onnx", opset=int(cfg.opset), parity=manifest["parity"],
        parity_max_score_diff=manifest["parity_max_score_diff"], text_encoder=manifest["encoder"] is not None,
        new_items=manifest["new_items"] or "from text", **({"quantize": manifest["quantize"]} if "quantize" in manifest else {}),
    )
    path = finish(cfg, record, open_run_logger(cfg))
    Console().print(f"export: {out}\nonnxruntime vs PyTorch, largest score difference on the test users: "
                    f"{manifest['parity_max_score_diff']:.2e}\nmetrics: {path}")
    return record
