"""``crossrec serve run=DIR [host=127.0.0.1] [port=8000] [domain=NAME] [workers=1] [token=SECRET]``:
an HTTP JSON recommender (``serving.server``) over an export.

Recipe: the export to serve (a training run is exported first into this run's ``export/``, with
``crossrec export``'s recipe and checks) -> the engine over it (every graph loaded, every domain's
top-k index built, before the port opens) -> ``serve.json`` (address, domains) -> serve until
stopped. The top-k search is ``crossrec recommend``'s (``eval.index=exact | faiss``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from crossrec_cli.commands import export as export_command
from crossrec_cli.commands._common import CONF_DIR, domain_names, run_dir, seed_everything
from crossrec_cli.errors import CrossrecError
from crossrec_cli.io import atomic_write_json
from crossrec_cli.serving.export import read_manifest
from crossrec_cli.serving.server import Limits, ServeSettings, serve

READS = ("run", "host", "port", "workers", "token", "encoder", "limits", "opset", "parity_tolerance", "domain", "experiment",
         "eval.exclude_seen", "eval.zero_shot_prior", "eval.zero_shot_align", "eval.index", "eval.faiss",
         "backbone.trust_remote_code", "device", "num_threads", "seed", "overwrite", "debug", "allowed_targets",
         "data.overrides", "hydra")
EXPORTING = ("opset", "parity_tolerance", "eval.zero_shot_prior", "eval.zero_shot_align")  # a training run only


def check_overrides(cfg: DictConfig, given: list[str]) -> CrossrecError | None:
    return export_command.check_overrides(cfg, given, READS, "serve")


def _int(cfg: DictConfig, key: str, low: int, high: int) -> int:
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CrossrecError(key, f"expected an integer from {low} to {high}, got {value!r}", f"e.g. {key}={max(low, 1)}")
    return value


def check_settings(cfg: DictConfig) -> None:
    if not cfg.get("run"):
        raise CrossrecError("run", "crossrec serve needs a run to serve", "pass run=<a training run, an export run "
                            "or an export/ folder>")
    if not isinstance(cfg.host, str) or not cfg.host:
        raise CrossrecError("host", f"expected a host name or address, got {cfg.host!r}", "e.g. host=127.0.0.1")
    _int(cfg, "port", 1, 65535)
    _int(cfg, "workers", 1, 64)
    for key in Limits.__dataclass_fields__:
        _int(cfg, f"limits.{key}", 1, 1 << 30)
    token = cfg.token  # token=0123 reaches here as the number 123: refused, never a different secret
    if token is not None and (not isinstance(token, str) or not token.strip()):
        raise CrossrecError("token", f"expected a non-empty string, got {token!r}",
                            "quote a secret that reads as a number (token=\"'0123'\"); e.g. token=$(openssl rand -hex 16)")
    if cfg.encoder not in ("float32", "int8"):
        raise CrossrecError("encoder", f"{cfg.encoder!r} is not an encoder precision", "float32 or int8")
    if not isinstance(cfg.eval.exclude_seen, bool):
        raise CrossrecError("eval.exclude_seen", f"expected true or false, got {cfg.eval.exclude_seen!r}", "true")


def export_folder(cfg: DictConfig) -> tuple[Path, bool]:
    """(the export to serve, whether this command exported it): ``run=`` is an export folder, a run
    directory holding one (``crossrec export``'s), or a training run, exported into ``export/``."""
    source = Path(str(cfg.run)).expanduser()
    for folder in (source, source / "export"):
        if (folder / "manifest.json").is_file():
            read_manifest(folder)
            defaults = OmegaConf.load(Path(CONF_DIR) / "serve.yaml")
            changed = [k for k in EXPORTING if OmegaConf.select(cfg, k) != OmegaConf.select(defaults, k)]
            if changed:
                raise CrossrecError(changed[0], f"applies when run= is a training run; {folder} is exported already",
                                    "drop it, or export again with crossrec export")
            return folder, False
    if not (source / "checkpoint").is_dir():
        raise CrossrecError(str(source), "neither a training run (no checkpoint/) nor an export (no manifest.json)",
                            "pass run=<a finetune / transfer run, an export run or its export/ folder>")
    with open_dict(cfg):
        cfg.format, cfg.quantize = "onnx", "int8" if cfg.encoder == "int8" else None
    export_command.export_run(cfg, run_dir(cfg) / "export")
    return run_dir(cfg) / "export", True


def settings_of(cfg: DictConfig, folder: Path, exported: bool) -> ServeSettings:
    manifest = read_manifest(folder)
    domains = None
    if cfg.runtime.domain_given and not exported:
        domains = domain_names(cfg)
        missing = [n for n in domains if n not in manifest["domains"]]
        if missing:
            raise CrossrecError(f"domain={missing[0]}", f"{folder} holds no export of it (it has "
                                f"{', '.join(manifest['domains'])})", "export it: crossrec export run=<the run> "
                                f"domain={missing[0]}, or create it with POST /items")
    if cfg.encoder == "int8" and "int8" not in (manifest.get("encoder") or {}):
        raise CrossrecError("encoder", f"int8, but {folder} holds no int8 encoder", "export with quantize=int8")
    index, options = "exact", {}
    if cfg.eval.index == "faiss":  # crossrec recommend's FAISS settings
        f = cfg.eval.faiss
        index = str(f.kind)
        options = {"flat": {}, "ivf": {"nlist": f.nlist, "nprobe": f.nprobe},
                   "hnsw": {"hnsw_m": f.hnsw_m, "ef_construction": f.ef_construction, "ef_search": f.ef_search}}[index]
    limits = Limits(**OmegaConf.to_container(cfg.limits))
    return ServeSettings(str(folder.resolve()), domains, cfg.token, torch.get_num_threads(), str(cfg.encoder), index,
                         options, bool(cfg.eval.exclude_seen), limits, int(cfg.workers))


def run(cfg: DictConfig) -> dict[str, Any]:
    seed_everything(cfg.seed)
    check_settings(cfg)
    folder, exported = export_folder(cfg)
    settings = settings_of(cfg, folder, exported)
    engine = settings.engine() if settings.workers == 1 else None  # bad input fails here, before the port opens
    address = f"http://{cfg.host}:{cfg.port}"
    record = {"command": "serve", "url": address, "export": settings.folder, "exported_here": exported,
              "domains": (engine.health()["domains"] if engine else settings.domains), "workers": settings.workers,
              "token": settings.token is not None, "index": settings.index, "encoder": settings.encoder}
    atomic_write_json(run_dir(cfg) / "serve.json", record, "the server's address")
    print(f"crossrec serve: {address} (GET /health, POST /recommend, POST /items); export {settings.folder}", flush=True)
    serve(settings, str(cfg.host), int(cfg.port), engine)
    return record
