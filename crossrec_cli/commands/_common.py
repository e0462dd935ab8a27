"""What every recipe shares: run directory, domain lookup on the Hydra search path, error exit."""

from __future__ import annotations

import logging
import random
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf

from crossrec_cli.config_check import check_common, check_targets
from crossrec_cli.data import Domain, DomainSpec, load_domain
from crossrec_cli.errors import CrossrecError
from crossrec_cli.io import atomic_write_json, atomic_write_text

log = logging.getLogger("crossrec")
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def run_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def names(value: Any) -> list[str]:
    """A domain option given as one name or a list of names."""
    if isinstance(value, (list, tuple, ListConfig)):
        return [str(v) for v in value]
    return [str(value)]


def _search_dirs() -> list[Path]:
    dirs = []
    for src in HydraConfig.get().runtime.config_sources:
        if src.schema == "file":
            dirs.append(Path(src.path))
        elif src.schema == "pkg":
            import importlib.resources

            dirs.append(Path(str(importlib.resources.files(src.path.replace("/", ".")))))
    return dirs


def domain_spec(name: str, overrides: dict | None = None) -> DomainSpec:
    """Find ``domain/<name>.yaml`` on the config search path (``hydra.searchpath`` included)."""
    tried = []
    for d in _search_dirs():
        path = d / "domain" / f"{name}.yaml"
        tried.append(str(path))
        if path.is_file():
            try:
                raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                raise CrossrecError(str(path), f"not valid YAML: {getattr(exc, 'problem', exc)}",
                                    "fix the domain file", line=mark.line + 1 if mark else None) from None
            if not isinstance(raw, dict):
                raise CrossrecError(str(path), "domain file is not a mapping", "expected name/format/path keys", line=1)
            if overrides:
                raw = OmegaConf.to_container(OmegaConf.merge(raw, overrides))
            return DomainSpec.from_dict(raw, where=str(path))
    raise CrossrecError(
        f"domain={name}", "no such domain file", f"looked for domain/{name}.yaml in {', '.join(tried) or 'no config dirs'}"
    )


def domain_names(cfg: DictConfig) -> list[str]:
    """Names chosen with ``domain=NAME`` or ``domain=[A,B]`` (Hydra merges a list selection
    into one node, so the names are read back from the override itself)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for ov in OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task)):
        if ov.key_or_group == "domain" and ov.package is None and not ov.is_delete():
            value = ov.value()
            if isinstance(value, (list, tuple)):
                return [str(v) for v in value]
    return [str(cfg.domain.name)]


def load_domains(cfg: DictConfig, value: Any = None) -> list[tuple[DomainSpec, Domain]]:
    """Load the domains named by ``value`` (default: the ``domain`` selection), each with
    ``data.overrides`` merged in. A single selection keeps command-line ``domain.*`` overrides."""
    ov = OmegaConf.to_container(cfg.data.overrides) or None
    chosen = names(value) if value is not None else domain_names(cfg)
    out = []
    for n in chosen:
        if value is None and len(chosen) == 1:
            base = OmegaConf.create(OmegaConf.to_container(cfg.domain, resolve=True))
            raw = OmegaConf.to_container(OmegaConf.merge(base, ov or {}))
            spec = DomainSpec.from_dict(raw, where=str(_find_domain_file(n) or "domain"))
        else:
            spec = domain_spec(n, ov)
        out.append((spec, load_domain(spec)))
    return out


def _find_domain_file(name: str) -> Path | None:
    for d in _search_dirs():
        if (d / "domain" / f"{name}.yaml").is_file():
            return d / "domain" / f"{name}.yaml"
    return None


def write_config(cfg: DictConfig) -> None:
    atomic_write_text(run_dir() / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))


def write_metrics(record: dict[str, Any]) -> Path:
    path = run_dir() / "metrics.json"
    atomic_write_json(path, record)
    return path


# keys that may change between an interrupted run and its resumption (they do not change results)
RESUME_FREE = ("resume", "progress", "debug", "device", "logger", "eval.cache_vectors", "eval.user_chunk",
               "eval.item_chunk", "eval.batch_size")


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def check_resume_config(cfg: DictConfig) -> None:
    """Resuming with a changed value that matters stops with one line per differing key."""
    path = run_dir() / "config.yaml"
    if not path.is_file():
        raise CrossrecError(str(path), "nothing to resume: no config.yaml in the run directory",
                            "pass resume=<the interrupted run directory>")
    old = _flat(OmegaConf.to_container(OmegaConf.load(path), resolve=True))
    new = _flat(OmegaConf.to_container(cfg, resolve=True))
    lines = []
    for key in sorted(set(old) | set(new)):
        if any(key == f or key.startswith(f + ".") for f in RESUME_FREE):
            continue
        if old.get(key, "<unset>") != new.get(key, "<unset>"):
            lines.append(f"error: config key {key}: the interrupted run used {old.get(key, '<unset>')!r}, "
                         f"this command {new.get(key, '<unset>')!r}; resume with the run's own value")
    if lines:
        print("\n".join(lines), file=sys.stderr)
        sys.exit(2)


def run_recipe(cfg: DictConfig, recipe: Callable[[DictConfig], dict[str, Any]]) -> dict[str, Any] | None:
    """Run a recipe: a CrossrecError becomes one ``error:`` line and exit code 2."""
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
        check_common(plain)
        check_targets(plain, list(cfg.get("allowed_targets") or []))
        if cfg.get("resume"):
            check_resume_config(cfg)
        write_config(cfg)
        return recipe(cfg)
    except CrossrecError as exc:
        if cfg.get("debug", False):
            traceback.print_exc()
        print(exc.one_line(), file=sys.stderr)
        sys.stderr.flush()
        sys.exit(2)
