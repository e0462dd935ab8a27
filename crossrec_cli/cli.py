"""``crossrec <command> [hydra overrides]``: the command-line layer, the only place that knows
Hydra. Each command is a plain recipe ``crossrec_cli.commands.<name>.run(cfg) -> dict``; this
module composes its config (``@hydra.main`` here, ``compose`` for tests and scripts), fills
``cfg.runtime`` (run directory, config directories, the domain selection as a list) and calls it.
"""

from __future__ import annotations

import importlib
import logging
import re
import sys
import uuid
from pathlib import Path
from typing import Any

COMMANDS = {
    "pretrain": "domain-adaptive pretraining of the item tower on item texts",
    "finetune": "train the recommender on one or more domains, early-stopped on valid NDCG",
    "transfer": "source -> target transfer with zero-shot, adapted and control runs",
    "evaluate": "evaluate a baseline or a trained run directory on any domain",
    "recommend": "top-k items per user from a trained run or a baseline (recommendations.jsonl)",
    "explain": "why a trained run recommends what it does: attributions, attention, HTML page",
    "export": "a trained run as ONNX graphs + item matrices, checked against PyTorch (export/)",
    "serve": "an HTTP JSON recommender over a trained run or an export; new items from their text",
    "data": "dataset tools: `crossrec data stats domain=X`",
    "report": "collect every metrics.json under a folder: CSV, table, HTML with plots",
}
# Hydra flags that only print (no run directory to hold)
PRINT_ONLY = {"--cfg", "-c", "--info", "-i", "--help", "-h", "--hydra-help", "--shell-completion", "-sc"}
# a per-process suffix keeps run directories of commands started in the same second apart
_UID = uuid.uuid4().hex[:6]


def usage() -> str:
    lines = ["usage: crossrec <command> [key=value ...] [-m] [--cfg job]", "", "commands:"]
    lines += [f"  {name:<9} {text}" for name, text in COMMANDS.items()]
    lines += ["", "Overrides are Hydra's: e.g. crossrec finetune domain=music adapter=lora trainer.epochs=3"]
    return "\n".join(lines)


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("crossrec_uid"):
        OmegaConf.register_new_resolver("crossrec_uid", lambda: _UID)


def _shown(config_name: str) -> str:
    """A command's config name as typed on the command line (data_stats -> data stats)."""
    return config_name.replace("_", " ")


def _precheck(config_name: str, overrides: list[str]) -> None:
    """Compose the config once so a bad override is one line, not Hydra's multi-line report:
    ``error: config key <override key>: ...``, or ``error: <file>:<line>:<col>: ...`` for a
    config file that is not valid YAML; a key added that the command does not have
    (``check_added_keys``) is refused here too, before the run directory is touched."""
    from hydra import compose, initialize_config_dir

    from crossrec_cli.commands._common import CONF_DIR
    from crossrec_cli.errors import CrossrecError

    plain = [o for o in overrides if not o.startswith("hydra.") or o.startswith("hydra.searchpath")]
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3", job_name=config_name):
            composed = compose(config_name=config_name, overrides=plain)
            check = getattr(importlib.import_module(f"crossrec_cli.commands.{config_name}"), "check_overrides", None)
            problem = check(composed, plain) if check is not None else None  # a command's own rule
            if problem is not None:
                print(problem.one_line(), file=sys.stderr)
                sys.exit(2)
            check_added_keys(config_name, plain)
    except CrossrecError as exc:
        print(exc.one_line(), file=sys.stderr)
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    except Exception as exc:  # Hydra's composition and override-parsing errors, YAML errors
        text = str(exc).strip() or type(exc).__name__
        cause = str(exc.__cause__).strip().splitlines()[:1] if exc.__cause__ else []
        yaml_at = re.search(r'in "([^"]+)", line (\d+)(?:, column (\d+))?', "\n".join([text, *cause]))
        if yaml_at:  # a config file (e.g. conf/domain/<name>.yaml) that YAML cannot read
            problem = "; ".join(t.strip() for t in text.splitlines() if t.strip() and 'in "' not in t)
            col = int(yaml_at.group(3)) if yaml_at.group(3) else None
            err = CrossrecError(yaml_at.group(1), f"not valid YAML: {problem}", "fix the file's syntax",
                                int(yaml_at.group(2)), col)
            print(err.one_line(), file=sys.stderr)
            sys.exit(2)
        # the override at fault: the first quoted word that is an override's key or names its
        # config group ('domain/nope' -> domain), else one inside an override's value ('[1')
        keys = {o.split("=", 1)[0].lstrip("+~").split("@")[0]: o.partition("=")[2] for o in plain}
        quoted = re.findall(r"'([^']+)'", re.sub(r"^In '[^']+': ", "", text))
        where = next((q.split("/")[0] for q in quoted if q.split("/")[0] in keys), None)
        where = where or next((k for q in quoted for k, v in keys.items() if q in v), None)
        where = where or (quoted[0].split("/")[0] if quoted else "overrides")
        lines = [t.strip() for t in text.splitlines() if t.strip()]
        opts = re.search(r"Available options in '[^']+':\n(.*?)(?:\nConfig search path|$)", text, re.S)
        options = opts.group(1).split() if opts else []  # one tab-indented name a line
        problem = "; ".join([re.sub(r"^In '[^']+': ", "", lines[0]), *cause])
        hint = f"available: {', '.join(options)}" if options else next(
            (t for t in lines[1:] if not t.startswith(("Config search path", "provider="))),
            f"check `crossrec {config_name} --cfg job`")
        if "No match in the defaults list" in text:  # a config group this command does not have
            takers = sorted(f.stem for f in Path(CONF_DIR).glob("*.yaml")
                            if re.search(rf"^\s*-\s*{re.escape(where)}\s*:", f.read_text(), re.M))
            name = _shown(config_name)
            problem = f"crossrec {name} has no {where} choice"
            hint = f"{where}= applies to: {', '.join('crossrec ' + t for t in takers)}" if takers else hint
        print(f"error: config key {where}: {problem}; {hint}".replace("\n", " "), file=sys.stderr)
        sys.exit(2)


def added_keys(overrides: list[str]) -> dict[str, str]:
    """``+key=value`` and ``++key=value`` overrides -> {override: key}. Hydra's own keys
    (``+hydra.*``) and a ``_target_`` (judged by the target allowlist, later and with its own
    message) are left out."""
    out = {}
    for o in overrides:
        key = o.lstrip("+").split("=", 1)[0].split("@")[0]
        if o.startswith("+") and "=" in o and not key.startswith("hydra.") and "_target_" not in key:
            out[o] = key
    return out


def check_added_keys(config_name: str, overrides: list[str]) -> None:
    """A key that ``overrides`` add must be one the command's config has without them or one its
    section's schema declares (``config_keys.check_added``); else a CrossrecError. Composes the config
    without the additions, so Hydra must be initialised (``initialize_config_dir`` or the app)."""
    from hydra import compose as hydra_compose
    from omegaconf import OmegaConf

    from crossrec_cli.config_keys import check_added

    added = added_keys(overrides)
    if not added:
        return
    base = hydra_compose(config_name=config_name, overrides=[o for o in overrides if o not in added])
    plain = OmegaConf.to_container(base)
    for key in added.values():
        check_added(plain, key, _shown(config_name))


def _selection(overrides: list[str], group: str = "domain") -> list[str] | None:
    """The names of a ``domain=NAME`` / ``domain=[A,B]`` override (Hydra merges a list selection
    into one node, so the names are read from the override itself); None without one."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for ov in OverridesParser.create().parse_overrides(list(overrides)):
        if ov.key_or_group == group and ov.package is None and not ov.is_delete():
            value = ov.value()
            return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
    return None


def concurrent_jobs(hc: Any) -> int:
    """How many runs the launcher runs at once on this machine (``num_threads=auto`` divides
    the cores among them): joblib's ``n_jobs``; submitit_local: every job at once, or
    cores / ``cpus_per_task``; a Slurm job has its own CPUs; the basic launcher runs one by one."""
    from hydra.types import RunMode

    from crossrec_cli.commands._common import cores

    launcher = hc.launcher if hc.mode == RunMode.MULTIRUN else {}
    jobs = LAUNCHER_JOBS.get(str(launcher.get("_target_", "")).rpartition(".")[2])
    return jobs(launcher, cores()) if jobs else 1


def _joblib_jobs(launcher: Any, cores: int) -> int:
    n = int(launcher.get("n_jobs") or -1)
    return n if n > 0 else max(1, cores + 1 + n)  # joblib: -1 = one job per core


def _submitit_local_jobs(launcher: Any, cores: int) -> int:
    cpus = launcher.get("cpus_per_task")
    return max(1, cores // int(cpus)) if cpus else cores


# launcher class -> the runs it starts at once on this machine (any other: one at a time; a
# Slurm job has its own CPUs)
LAUNCHER_JOBS = {"JoblibLauncher": _joblib_jobs, "LocalLauncher": _submitit_local_jobs}


def set_runtime(cfg: Any, run_dir: str | Path, config_dirs: list[Path], overrides: list[str],
                concurrent: int = 1) -> Any:
    """Fill ``cfg.runtime`` for the recipes: ``run_dir``, ``config_dirs`` (domain file lookup,
    search path first), ``domains`` (the selection as a list) and ``domain_given`` (whether the
    command line chose it). With several domains ``cfg.domain`` becomes ``{name: that domain's
    file}``, so the saved config.yaml shows each domain as it is, not Hydra's merge of them."""
    from omegaconf import open_dict

    from crossrec_cli.commands._common import read_domain_file

    chosen = _selection(overrides)
    given = chosen is not None
    if chosen is None:
        node = cfg.get("domain")
        chosen = [str(node.name)] if node is not None and node.get("name") is not None else []
    with open_dict(cfg):
        cfg.runtime = {"run_dir": str(run_dir), "config_dirs": [str(d) for d in config_dirs],
                       "domains": chosen, "domain_given": given, "concurrent_jobs": concurrent}
        if len(chosen) > 1:
            cfg.domain = {n: read_domain_file(n, config_dirs)[0] for n in chosen}
        methods = _selection(overrides, "adversarial")
        if methods and len(methods) > 1 and "adversarial" in cfg:  # several methods: each keeps its own keys
            cfg.adversarial = {"name": methods, **{n: _group_file("adversarial", n, config_dirs) for n in methods}}
    return cfg


def _group_file(group: str, name: str, dirs: list[Path]) -> dict:
    """``<group>/<name>.yaml`` from the first config directory that has it, without ``name``."""
    import yaml

    for d in dirs:
        path = Path(d) / group / f"{name}.yaml"
        if path.is_file():
            data = yaml.safe_load(path.read_text()) or {}
            return {k: v for k, v in data.items() if k != "name"}
    return {}


def _source_dirs(config_sources: Any) -> list[Path]:
    """Hydra's config sources (search path first, the package's conf after) as directories."""
    import importlib.resources

    dirs = []
    for src in config_sources:
        if src.provider == "hydra":  # Hydra's own configs hold no domain files
            continue
        if src.schema == "file":
            dirs.append(Path(src.path))
        elif src.schema == "pkg":
            dirs.append(Path(str(importlib.resources.files(src.path.replace("/", ".")))))
    return dirs


def _searchpath_dirs(overrides: list[str]) -> list[Path]:
    """``hydra.searchpath=[file://DIR,...]`` of ``overrides``, then the package's conf."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from crossrec_cli.commands._common import CONF_DIR

    given = [o for o in overrides if o.startswith("hydra.searchpath=")]
    entries = [str(e) for ov in OverridesParser.create().parse_overrides(given) for e in ov.value()]
    dirs = [Path(e[len("file://"):]) for e in entries if e.startswith("file://")]
    return [*dirs, Path(CONF_DIR)]


def compose(command: str, overrides: list[str] | tuple[str, ...] = (), run_dir: str | Path = ".",
            config_dir: str | Path | None = None) -> Any:
    """The config ``crossrec <command> <overrides>`` would run with, ``runtime`` filled, for
    calling a recipe in-process: ``finetune.run(compose("finetune", [...], tmp_path))``.
    ``config_dir``: another primary config folder (a test's stand-in app). A key that an override
    adds and the command does not have (``+eval.foo=1``) is a CrossrecError."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from crossrec_cli.commands._common import CONF_DIR

    _register_resolvers()
    name = "data_stats" if command == "data" else command
    overrides = _aliases(list(overrides))
    plain = [o for o in overrides if not o.startswith("hydra.") or o.startswith("hydra.searchpath")]
    with initialize_config_dir(config_dir=str(config_dir or CONF_DIR), version_base="1.3", job_name=name):
        cfg = hydra_compose(config_name=name, overrides=plain)
        check_added_keys(name, plain)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    return set_runtime(cfg, run_dir, _searchpath_dirs(overrides), overrides)


def run_command(command: str, overrides: list[str] | tuple[str, ...] = (), run_dir: str | Path = ".") -> Any:
    """``crossrec <command> <overrides>`` in this process: compose, check, run; returns the
    metrics record (a bad value is the same one-line error and exit code 2 as on the command line)."""
    from crossrec_cli.commands._common import run_recipe
    from crossrec_cli.errors import CrossrecError

    name = "data_stats" if command == "data" else command
    try:
        cfg = compose(command, overrides, run_dir)
    except CrossrecError as exc:
        print(exc.one_line(), file=sys.stderr)
        sys.exit(exc.exit_code)
    return run_recipe(cfg, recipe(name))


def recipe(config_name: str):
    """``crossrec_cli.commands.<config_name>.run``."""
    return importlib.import_module(f"crossrec_cli.commands.{config_name}").run


def _launch(config_name: str) -> None:
    """Run one command as a Hydra app (multirun, sweeps and ``--cfg`` included)."""
    import hydra
    from hydra.core.hydra_config import HydraConfig

    from crossrec_cli.commands._common import CONF_DIR, run_recipe
    from crossrec_cli.errors import CrossrecError

    run = recipe(config_name)

    @hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=config_name)
    def app(cfg: Any) -> float | None:
        hc = HydraConfig.get()
        searchpath = [o for o in hc.overrides.hydra if o.startswith("hydra.searchpath")]
        try:  # what _precheck did not see: each job of a sweep (-m), a run with Hydra flags
            check_added_keys(config_name, [*searchpath, *hc.overrides.task])
        except CrossrecError as exc:
            print(exc.one_line(), file=sys.stderr)
            sys.exit(exc.exit_code)
        set_runtime(cfg, hc.runtime.output_dir, _source_dirs(hc.runtime.config_sources), list(hc.overrides.task),
                    concurrent_jobs(hc))
        return objective(cfg, run_recipe(cfg, run))

    app()


def objective(cfg: Any, record: Any) -> float | None:
    """What an optimising sweeper maximises: the mean over domains of the validation metric
    named by ``trainer.monitor`` (never a test metric); None when the run has none."""
    monitor = (cfg.get("trainer") or {}).get("monitor") if hasattr(cfg, "get") else None
    valid = record.get("valid") if isinstance(record, dict) else None
    if not monitor or not valid:
        return None
    vals = [m[monitor] for m in valid.values() if isinstance(m, dict) and monitor in m]
    return float(sum(vals) / len(vals)) if vals else None


# short spellings an issue or the README promised, rewritten to the full key
ALIASES = {"train_samples": "task.train_samples"}


def _aliases(argv: list[str]) -> list[str]:
    """``train_samples=N`` -> ``task.train_samples=N`` (the key lives in the task group)."""
    out = []
    for a in argv:
        key, eq, value = a.partition("=")
        out.append(f"{ALIASES[key]}={value}" if eq and key in ALIASES else a)
    return out


def _resume_overrides(argv: list[str]) -> list[str]:
    """``resume=<run dir>`` continues in that directory: it becomes ``hydra.run.dir``."""
    for a in argv:
        if a.startswith("resume=") and a.split("=", 1)[1] not in ("", "true", "True", "null", "false"):
            if not any(x.startswith("hydra.run.dir=") for x in argv):
                return [*argv, f"hydra.run.dir={a.split('=', 1)[1]}"]
    return argv


def _one_of_several(argv: list[str]) -> list[str]:
    """Under torchrun (``WORLD_SIZE`` > 1) rank 0's Hydra makes the run directory and the
    recipe tells the others where it is (``_common.join_processes``); every other process runs
    Hydra in a scratch folder of its own, so only rank 0 writes ``.hydra/`` and the log file.
    Sweeps (``-m``) run in one process."""
    from crossrec_cli.training import distributed

    if not distributed.launched():
        return argv
    if any(a in ("-m", "--multirun") for a in argv):
        print("error: config key torchrun: a sweep (-m) runs in one process; launch it without torchrun, "
              "or run each job under torchrun", file=sys.stderr)
        sys.exit(2)
    if distributed.is_main():
        return argv
    import atexit
    import shutil
    import tempfile

    scratch = tempfile.mkdtemp(prefix=f"crossrec-rank{distributed.rank()}-")
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    return [a for a in argv if not a.startswith("hydra.run.dir=")] + [f"hydra.run.dir={scratch}",
                                                                        "hydra.output_subdir=null"]


def _hold_run_dir(config_name: str, argv: list[str]) -> None:
    """Lock and claim (``rundir``) the run or sweep folder named on the command line before
    Hydra writes its ``.hydra/`` into it, so a refused run changes no file there. Hydra's own
    folder names (a time stamp and a per-process suffix) are new by construction; the recipe
    locks and claims every run folder again (``_common.run_recipe``), a sweep's job folders too."""
    from crossrec_cli.errors import CrossrecError
    from crossrec_cli.rundir import RunLock, claim
    from crossrec_cli.training import distributed

    sweep = any(a in ("-m", "--multirun") for a in argv)
    key = "hydra.sweep.dir=" if sweep else "hydra.run.dir="
    given = [a[len(key):] for a in argv if a.startswith(key)]
    if not given or "${" in given[-1] or not distributed.is_main():  # other ranks: rank 0's lock
        return
    values = dict(a.split("=", 1) for a in argv if a.startswith(("resume=", "overwrite=")))
    resume = values.get("resume", "null") not in ("", "null", "None", "false", "False")
    overwrite = values.get("overwrite", "false") in ("true", "True")
    folder = Path(given[-1]).expanduser()
    try:
        RunLock(folder).acquire()  # held until this process exits
        claim(folder, resume, overwrite, _shown(config_name), sweep=sweep)
    except CrossrecError as exc:
        print(exc.one_line(), file=sys.stderr)
        sys.exit(exc.exit_code)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    cmd = argv.pop(0)
    if cmd not in COMMANDS:
        print(f"error: command {cmd!r}: unknown command; expected one of {', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(2)
    if cmd == "report":  # not a Hydra app: a folder and two flags
        from crossrec_cli.commands.report import main as report

        report(argv)
        return
    config_name = cmd
    if cmd == "data":
        if not argv or argv[0] != "stats":
            print("error: crossrec data: expected a subcommand; use `crossrec data stats domain=X`", file=sys.stderr)
            sys.exit(2)
        argv.pop(0)
        config_name = "data_stats"
    _register_resolvers()
    # a log line the disk refuses is dropped, not printed as logging's traceback: the next file
    # the run writes fails with the one-line error that names the path
    logging.raiseExceptions = False
    argv = _resume_overrides(_aliases(argv))
    if not any(a.startswith("-") for a in argv):
        _precheck(config_name, argv)
    if not PRINT_ONLY & set(argv):
        _hold_run_dir(config_name, argv)
    argv = _one_of_several(argv)
    sys.argv = [f"crossrec-{cmd}", *argv]
    _launch(config_name)


if __name__ == "__main__":
    main()
