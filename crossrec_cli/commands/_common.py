"""What every recipe shares: run directory, domain lookup, error exit. The
command-line layer (cli.py) fills ``cfg.runtime`` (run directory, config directories, the domain
selection as a list) before it calls a recipe; a test fills it with ``cli.compose``."""

from __future__ import annotations

import logging
import os
import random
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from crossrec_cli.config_check import check_common, check_targets
from crossrec_cli.data import Domain, DomainSpec, load_domain
from crossrec_cli.errors import CrossrecError, Interrupted
from crossrec_cli.io import atomic_write_json, atomic_write_text, io_fault
from crossrec_cli.models.seqrec import feature_names, resolve_score
from crossrec_cli import progress
from crossrec_cli.numerics import warm_vector_math
from crossrec_cli.rundir import RunLock, claim, run_files
from crossrec_cli.training import distributed
from crossrec_cli.training.loggers import Logger, flat_metrics, open_logger
from crossrec_cli.training.preempt import Preempted

log = logging.getLogger("crossrec")
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")  # shipped inside the package


def run_dir(cfg: DictConfig) -> Path:
    """The run directory the command line chose."""
    return Path(str(cfg.runtime.run_dir))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def names(value: Any) -> list[str]:
    """A domain option given as one name or a list of names."""
    if isinstance(value, (list, tuple, ListConfig)):
        return [str(v) for v in value]
    return [str(value)]


def config_dirs(cfg: DictConfig) -> list[Path]:
    """Where ``domain/<name>.yaml`` files are looked up: the search path, the package's conf last."""
    return [Path(str(d)) for d in cfg.runtime.config_dirs]


def read_domain_file(name: str, dirs: list[Path]) -> tuple[dict, Path]:
    """The first ``domain/<name>.yaml`` in ``dirs``, read as a mapping."""
    tried = []
    for d in dirs:
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
            return raw, path
    raise CrossrecError(
        f"domain={name}", "no such domain file", f"looked for domain/{name}.yaml in {', '.join(tried) or 'no config dirs'}"
    )


def domain_spec(name: str, dirs: list[Path], overrides: dict | None = None) -> DomainSpec:
    """``domain/<name>.yaml`` from ``dirs`` (the first that has it), ``overrides`` merged in."""
    raw, path = read_domain_file(name, dirs)
    if overrides:
        raw = OmegaConf.to_container(OmegaConf.merge(raw, overrides))
    return DomainSpec.from_dict(raw, where=str(path))


def domain_names(cfg: DictConfig) -> list[str]:
    """Names chosen with ``domain=NAME`` or ``domain=[A,B]`` (``cfg.runtime.domains``)."""
    return [str(n) for n in cfg.runtime.domains]


def selected_domain(cfg: DictConfig, name: str) -> dict:
    """Domain ``name`` of the ``domain`` selection as the run sees it (command-line ``domain.*``
    overrides included; with several domains ``cfg.domain[name]``), resolved."""
    node = cfg.domain if len(domain_names(cfg)) == 1 else cfg.domain[name]
    return OmegaConf.to_container(node, resolve=True)


def load_domains(cfg: DictConfig, value: Any = None) -> list[tuple[DomainSpec, Domain]]:
    """Load the domains named by ``value`` (default: the ``domain`` selection), each with
    ``data.overrides`` merged in. The selection's own config node is used, so command-line
    ``domain.*`` overrides hold (with several domains, ``domain.<name>.*``)."""
    ov = OmegaConf.to_container(cfg.data.overrides) or None
    dirs = config_dirs(cfg)
    if value is not None:
        return [(spec, load_domain(spec)) for spec in (domain_spec(n, dirs, ov) for n in names(value))]
    chosen = domain_names(cfg)
    out = []
    for n in chosen:
        raw = OmegaConf.to_container(OmegaConf.merge(OmegaConf.create(selected_domain(cfg, n)), ov or {}))
        where = next((str(d / "domain" / f"{n}.yaml") for d in dirs if (d / "domain" / f"{n}.yaml").is_file()), "domain")
        spec = DomainSpec.from_dict(raw, where=where)
        out.append((spec, load_domain(spec)))
    return out


def write_config(cfg: DictConfig) -> None:
    atomic_write_text(run_dir(cfg) / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True), "the run's config")


def open_run_logger(cfg: DictConfig) -> Logger:
    """The ``logger=`` of this run (``none`` for a command without a logger group, and for
    every process but rank 0 of several: rank 0 logs the run)."""
    node = cfg.get("logger")
    if node is None or not distributed.is_main():
        return Logger()
    options = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k != "name"}
    return open_logger(str(node.name), run_dir(cfg), OmegaConf.to_container(cfg, resolve=True), **options)


def prefixed(logger: Logger, prefix: str) -> Callable[[dict[str, float], int], None]:
    """``logger`` with every key under ``prefix/`` (one arm of a transfer, one seed of a task)."""
    return lambda metrics, step: logger({f"{prefix}/{k}": v for k, v in metrics.items()}, step)


def finish(cfg: DictConfig, record: dict[str, Any], logger: Logger) -> Path:
    """Write metrics.json, log its figures to the run's logger and close it."""
    path = write_metrics(cfg, record)
    logger.summary(flat_metrics(record))
    logger.close()
    return path


def write_metrics(cfg: DictConfig, record: dict[str, Any]) -> Path:
    """``metrics.json`` of the run (written by rank 0 of several processes)."""
    path = run_dir(cfg) / "metrics.json"
    record.setdefault("num_threads", torch.get_num_threads())  # what its seconds were measured with
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        record.setdefault("peak_gpu_memory_mib", round(torch.cuda.max_memory_allocated() / 2**20, 1))
    if distributed.is_main():
        atomic_write_json(path, record, "the run's metrics")
    return path


# keys that may change between an interrupted run and its resumption (they do not change results)
RESUME_FREE = ("runtime", "resume", "overwrite", "progress", "progress_every", "debug", "device", "num_threads", "logger", "eval.cache_vectors",
               "eval.user_chunk", "eval.item_chunk", "eval.batch_size", "eval.score_dtype", "eval.index", "eval.faiss")
# keys added after runs were written, with the value that behaves as their absence did: a run
# interrupted before the key existed resumes when the key still has that value
ADDED_KEYS = {"model.features": None, "model.fusion": "sum", "model.feature_settings": None, "model.positions": "end",
              "pretrain.grad_clip": 0.0, "adversarial.name": "none", "privacy.name": "none",
              "eval.valid_users": None, "model.feature_settings.kg.hops": 1,
              "model.feature_settings.kg.neighbors2": 8, "model.feature_settings.kg.relation_text": False,
              "trainer.precision": "fp32", "trainer.compile": False, "pretrain.precision": "fp32", "task.train.precision": None,
              "trainer.sampled_above": None, "model.general_items": "model", "model.seq_loss": 0.0, "model.seq_drop": 0.2,
              "freeze": []}


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def item_features(cfg: DictConfig) -> list[str]:
    """The run's item features (``model.features``, or what the backbone and item_ids imply)."""
    return feature_names(cfg.model, cfg.backbone.get("kind", "encoder") != "none")


def item_score(cfg: DictConfig) -> str:
    """The score the run's model uses (``model.score``, with auto decided by its item features)."""
    return resolve_score(str(cfg.model.get("score", "dot")), item_features(cfg))


def check_resume_config(cfg: DictConfig) -> None:
    """Resuming with a changed value that matters stops with one line per differing key."""
    path = run_dir(cfg) / "config.yaml"
    if not path.is_file():
        raise CrossrecError(str(path), "nothing to resume: no config.yaml in the run directory",
                            "pass resume=<the interrupted run directory>")
    saved = OmegaConf.load(path)
    old, new = (_flat(OmegaConf.to_container(c, resolve=True)) for c in (saved, cfg))
    for flat, c in ((old, saved), (new, cfg)):  # auto compares as the score it picks (a run may spell it out)
        if flat.get("model.score") == "auto":
            flat["model.score"] = item_score(c)
    # a pretrain run written before pretrain had an item tower: its model settings were never read
    towerless = not any(k.startswith("model.") for k in old) and item_features(cfg) == ["text"]
    lines = []
    for key in sorted(set(old) | set(new)):
        if any(key == f or key.startswith(f + ".") for f in RESUME_FREE):
            continue
        if towerless and key.startswith("model."):
            continue
        if key not in old and key in ADDED_KEYS and new.get(key) == ADDED_KEYS[key]:
            continue
        if old.get(key, "<unset>") != new.get(key, "<unset>"):
            lines.append(f"error: config key {key}: the interrupted run used {old.get(key, '<unset>')!r}, "
                         f"this command {new.get(key, '<unset>')!r}; resume with the run's own value")
    if lines:
        print("\n".join(lines), file=sys.stderr)
        sys.exit(2)


def has_checkpoint(folder: Path) -> bool:
    """Whether any ``checkpoints/`` folder under ``folder`` (a run, or a transfer's phases) holds
    a verified checkpoint."""
    from crossrec_cli.training import checkpoint as ckpt

    return any(ckpt.latest_verified(c) is not None for c in folder.rglob("checkpoints") if c.is_dir())


def cores() -> int:
    """CPU cores this process may use (a cluster's CPU binding included)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_threads(num_threads: int | str, concurrent_jobs: int = 1) -> int:
    """``num_threads``: N, or auto = cores / jobs running at once (at least 1), unless the
    environment sets OMP_NUM_THREADS (then torch already took that). Two jobs with a thread per
    core each oversubscribe the cores: epochs then swing 4x."""
    if num_threads == "auto" and os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    jobs = max(1, concurrent_jobs) * int(os.environ.get("LOCAL_WORLD_SIZE", 1))  # torchrun's processes too
    n = int(num_threads) if num_threads != "auto" else max(1, cores() // jobs)
    if n != torch.get_num_threads():
        torch.set_num_threads(n)
    return n


def expand_vector_features(cfg: DictConfig) -> None:
    """``vectors`` alone in ``model.features`` (``fusion=multimodal``): every vector file the run's
    domains declare (``vectors:`` of the domain files), as ``vectors:<name>`` in the order first
    declared. Rewritten in ``cfg`` before config.yaml is written, so the run records the files it fused."""
    model = cfg.get("model")
    listed = model.get("features") if model is not None else None
    if not listed or "vectors" not in [str(n) for n in listed]:
        return
    ov = OmegaConf.to_container(cfg.data.overrides) or {}
    chosen = domain_names(cfg)
    files = [selected_domain(cfg, n) for n in chosen]
    named = [n for key in ("domains", "source", "target") if cfg.get(key) is not None for n in names(cfg.get(key))]
    files += [read_domain_file(n, config_dirs(cfg))[0] for n in named if n not in chosen]
    declared = list(dict.fromkeys(str(k) for f in files + [ov] for k in (f.get("vectors") or {})))
    if not declared:
        raise CrossrecError("model.features", f"'vectors' takes every vector file the run's domains declare, "
                            f"and {', '.join(chosen + named) or 'none of them'} declares none",
                            "add vectors: {NAME: {path: FILE}} to the domain file, or name the features without 'vectors'")
    expanded = [m for n in listed for m in ([f"vectors:{d}" for d in declared] if str(n) == "vectors" else [str(n)])]
    with open_dict(cfg):
        cfg.model.features = expanded


def run_recipe(cfg: DictConfig, recipe: Callable[[DictConfig], dict[str, Any]]) -> dict[str, Any] | None:
    """Run a recipe in a run directory of its own (``rundir``: locked, and never one that holds
    another run unless ``resume`` or ``overwrite``): a CrossrecError (a disk fault included)
    becomes one ``error:`` line and its exit code; a stop on a signal says how to resume."""
    module = recipe.__module__.rpartition(".")[2]  # crossrec_cli.commands.<command>
    command = module.replace("_", " ")
    lock, fresh = None, False
    try:
        if distributed.launched():
            join_processes(cfg, recipe)
        plain = OmegaConf.to_container(cfg, resolve=True)
        check_common(plain, module)
        check_targets(plain, list(cfg.get("allowed_targets") or []))
        if distributed.is_main():  # the other processes of several run under rank 0's lock
            lock = RunLock(run_dir(cfg)).acquire()
            claim(run_dir(cfg), bool(cfg.get("resume")), bool(cfg.get("overwrite")), command)
            fresh = not run_files(run_dir(cfg))
        expand_vector_features(cfg)
        if cfg.get("resume") is True and not has_checkpoint(run_dir(cfg)):
            # a requeued job that was stopped before its first checkpoint: run it from the start
            log.warning("resume=true: %s holds no checkpoint yet; starting the run from the beginning", run_dir(cfg))
            with open_dict(cfg):
                cfg.resume = None
        if cfg.get("resume"):
            check_resume_config(cfg)
        set_threads(cfg.get("num_threads", "auto"), int((cfg.get("runtime") or {}).get("concurrent_jobs", 1)))
        warm_vector_math()  # before any multi-threaded op: same seed, same bits (see numerics.py)
        progress.configure(bars=bool(cfg.get("progress", True)), every=float(cfg.get("progress_every", 30)),
                           quiet=not distributed.is_main())  # under torchrun rank 0 shows progress
        if distributed.is_main():
            write_config(cfg)
        return recipe(cfg)
    except Preempted as stop:
        if distributed.is_main():
            name = signal.Signals(stop.signum).name if stop.signum else "a signal"
            print(f"crossrec: stopped by {name} after step {stop.step}, checkpoint {stop.checkpoint or 'written'}; "
                  f"continue with: crossrec {command} resume={run_dir(cfg)}", file=sys.stderr)
        raise
    except KeyboardInterrupt:
        fail(cfg, Interrupted(str(run_dir(cfg)), "interrupted (Ctrl-C) where no checkpoint could be written",
                              "resume=true continues a training run from its last complete checkpoint; "
                              "any other run starts again with overwrite=true"), fresh)
    except CrossrecError as exc:
        fail(cfg, exc, fresh)
    except Exception as exc:  # a disk fault that a writer did not name: still one line, the path if known
        fault = io_fault(exc, getattr(exc, "filename", None) or run_dir(cfg), f"the output of crossrec {command}")
        if fault is None:
            raise
        fail(cfg, fault, fresh)
    finally:
        if lock is not None:
            lock.release()
        distributed.close()


def fail(cfg: DictConfig, exc: CrossrecError, fresh: bool = False) -> NoReturn:
    """Print ``exc`` as its one line (with the traceback under ``debug=true``) and exit with its
    code. ``fresh``: the run started in a folder without a run; when it stops having written only
    its config.yaml (refused input), that goes too, so the corrected command runs in the same folder."""
    if fresh and run_files(run_dir(cfg)) == ["config.yaml"]:
        (run_dir(cfg) / "config.yaml").unlink(missing_ok=True)
    if cfg.get("debug", False):
        traceback.print_exc()
    print(exc.one_line(), file=sys.stderr)
    sys.stderr.flush()
    sys.exit(exc.exit_code)


def join_processes(cfg: DictConfig, recipe: Callable[[DictConfig], dict[str, Any]]) -> None:
    """One of several processes (torchrun): refuse a command that cannot share its work (its
    module does not set ``RUNS_DISTRIBUTED``), join the process group, and take rank 0's run
    directory (each process's Hydra chose its own)."""
    from crossrec_cli.models.backbone import resolve_device

    module = sys.modules[recipe.__module__]
    if not getattr(module, "RUNS_DISTRIBUTED", False):
        name = recipe.__module__.rsplit(".", 1)[-1].replace("_", " ")
        raise CrossrecError("torchrun", f"crossrec {name} runs in one process only",
                            "launch it without torchrun (or with --nproc_per_node 1)")
    distributed.init(resolve_device(str(cfg.device)))
    with open_dict(cfg):
        cfg.runtime.run_dir = distributed.broadcast(str(cfg.runtime.run_dir))
