"""The `crossrec` command line: help, composed config, one-line input errors, multirun, run dirs,
and a corpus of malformed input files (tests/fixtures/bad/) that must each fail with one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

CROSSREC = Path(sys.executable).parent / "crossrec"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "bad"
COMMANDS = ["pretrain", "finetune", "transfer", "evaluate", "recommend", "explain", "export", "serve", "data", "report"]
# a fixture without its own domain.yaml is read as RecBole files bad.item / bad.inter
DEFAULT_DOMAIN = "name: {name}\nformat: recbole\npath: {folder}\ndataset: bad\ntext_fields: [movie_title, release_year, class]\n"


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "OC_CAUSE")}
    env["CROSSREC_CACHE"] = str(tmp_path / "cache")  # the vector cache stays out of ~/.cache
    return env


def crossrec(args: list[str], tmp_path: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CROSSREC), *args],
        check=False,
        cwd=tmp_path,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_error_line(code: int, stderr: str, *needles: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert code == 2, stderr
    assert lines[0].startswith("error: "), stderr
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def write_domains(search_dir: Path, names: list[str]) -> Path:
    """``<search_dir>/domain/<fixture>.yaml`` for each fixture, ready for hydra.searchpath."""
    (search_dir / "domain").mkdir(parents=True, exist_ok=True)
    for name in names:
        own = FIXTURES / name / "domain.yaml"
        text = own.read_text() if own.is_file() else DEFAULT_DOMAIN
        text = (
            text.replace("{name}", name)
            .replace("{folder}", str(FIXTURES / name))
            .replace("{fixtures}", str(FIXTURES))
        )
        (search_dir / "domain" / f"{name}.yaml").write_text(text)
    return search_dir


def searchpath(search_dir: Path) -> str:
    return f"hydra.searchpath=[file://{search_dir}]"


# ----- help, --cfg job, input errors ---------------------------------------------------------------


@pytest.mark.parametrize("args", [["--help"], ["-h"], []])
def test_help_lists_commands(tmp_path, args):
    proc = crossrec(args, tmp_path)
    assert proc.returncode == 0 and proc.stderr == ""
    listed = [line.split()[0] for line in proc.stdout.splitlines() if line.startswith("  ")]
    assert listed == COMMANDS


def test_cfg_job_prints_the_composed_config(tmp_path):
    proc = crossrec(
        ["evaluate", "domain=music", "backbone=tiny", "eval.topk=[1,5]", "--cfg", "job"], tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["domain"]["name"] == "music" and cfg["domain"]["format"] == "lastfm"
    assert cfg["backbone"]["name"] == "tiny" and cfg["backbone"]["config"]["num_hidden_layers"] == 2
    assert cfg["model"]["name"] == "popularity"  # the default from conf/evaluate.yaml
    assert cfg["eval"]["topk"] == [1, 5] and cfg["seed"] == 0
    assert "hydra" not in cfg  # job config only
    assert not (tmp_path / "outputs").exists()  # printing the config runs nothing


def case(args: list[str], needles: list[str], **kw):
    return pytest.param(args, needles, id=" ".join(args) or "no args", **kw)


@pytest.mark.parametrize(
    "args,needles",
    [
        case(["nosuch"], ["'nosuch'", "unknown command"]),
        case(["data"], ["crossrec data", "data stats"]),
        case(["evaluate", "nosuchkey=1"], ["nosuchkey"]),
        case(
            ["evaluate", "domain=nope"], ["config key domain:", "domain/nope", "available: movies"]
        ),
        case(
            ["evaluate", "domain.path=/nonexistent/crossrec-data"],
            ["/nonexistent/crossrec-data", "does not exist"],
        ),
        case(
            ["evaluate", "eval.candidates=/nonexistent/cands.tsv"],
            ["/nonexistent/cands.tsv", "does not exist"],
        ),
        case(
            ["evaluate", "eval.topk=x"],
            ["eval.topk", "expected a non-empty list of positive integers"],
        ),
    ],
)
def test_input_errors_are_one_line_exit_2(tmp_path, args, needles):
    proc = crossrec([*args, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert_one_error_line(proc.returncode, proc.stderr, *needles)


# ----- multirun and run directories -----------------------------------------------------------------


def read_metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def test_multirun_smoke_writes_one_run_dir_per_model(tmp_path):
    sweep = tmp_path / "multi"
    proc = crossrec(
        [
            "evaluate",
            "-m",
            "model=popularity,text_zeroshot",
            "backbone=tiny",
            "experiment=smoke",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    runs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in runs] == ["0", "1"]
    assert [read_metrics(p)["model"] for p in runs] == ["popularity", "text_zeroshot"]
    records = [read_metrics(p) for p in runs]
    assert all(r["dataset"]["movies"]["users"] == 40 for r in records)  # smoke: first 40 users
    assert records[1]["backbone"] == "tiny"
    assert all(
        (p / "config.yaml").is_file() and (p / ".hydra" / "overrides.yaml").is_file() for p in runs
    )


def test_runs_started_together_get_their_own_run_dirs(tmp_path):
    # default run dir: outputs/<command>/<second>_<per-process id>, relative to the working dir
    sp = write_domains(tmp_path / "conf", ["control"])
    procs = [
        subprocess.Popen(
            [str(CROSSREC), "evaluate", "domain=control", searchpath(sp), f"seed={seed}"],
            cwd=tmp_path,
            env=cli_env(tmp_path),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    runs = sorted((tmp_path / "outputs" / "evaluate").iterdir())
    assert len(runs) == 2
    assert sorted(read_metrics(r)["seed"] for r in runs) == [1, 2]  # neither overwrote the other


# ----- malformed input corpus -----------------------------------------------------------------------

# Each fixture is the small real-data domain in tests/fixtures/bad/control with one thing broken
# (see tests/fixtures/bad/README.md). (fixture, text the single error line must contain)
CORPUS = [
    ("wrong_separator", "wrong_separator/bad.inter:1: header has one column but contains ','"),
    ("untyped_header", "untyped_header/bad.inter:1:1: header field 'user_id' has no type"),
    (
        "unknown_type",
        "unknown_type/bad.inter:1:3: header field 'rating:number' has unknown type 'number'",
    ),
    ("duplicate_header", "duplicate_header/bad.inter:1:4: duplicate header field 'rating'"),
    ("empty_header_field", "empty_header_field/bad.inter:1:5: header field '' has no type"),
    ("bad_float", "bad_float/bad.inter:6:3: field 'rating' has '3.x'; expected a number"),
    ("ragged_row", "ragged_row/bad.inter:8: row has 3 fields; expected 4"),
    ("empty_file", "empty_file/bad.inter:1: file is empty"),
    ("blank_first_line", "blank_first_line/bad.inter:1: first line is blank; expected the header"),
    ("header_only", "header_only/bad.inter:1: file has a header but no rows"),
    ("bom", "bom/bad.item:1: file starts with a UTF-8 byte-order mark"),
    ("non_utf8", "non_utf8/bad.item:15:20: byte 0xe9 is not valid utf-8"),
    ("unknown_item", "unknown_item/bad.inter:10: unknown item id '99999'"),
    ("duplicate_item", "duplicate_item/bad.item:22: duplicate item id '3'"),
    ("empty_item_id", "empty_item_id/bad.item:3:1: empty item id"),
    ("missing_item_file", "missing_item_file/bad.item: file does not exist"),
    ("missing_user_column", "missing_user_column/bad.inter:1: missing column 'user_id'"),
    ("missing_text_column", "missing_text_column/bad.item:1: text field 'plot' is not a column"),
    ("empty_text", "empty_text/bad.item:5: item '4' has no text"),
    ("bad_template", "domain.bad_template.text_template: cannot render template"),
    (
        "nan_timestamp",
        "nan_timestamp/bad.inter:13:4: field 'timestamp' has 'nan'; expected a finite number",
    ),
    ("inf_rating", "inf_rating/bad.inter:4:3: field 'rating' has 'inf'; expected a finite number"),
    ("empty_timestamp", "empty_timestamp/bad.inter:5:4: field 'timestamp' has ''"),
    ("unknown_domain_key", "unknown_domain_key.yaml.text_feilds: unknown domain key"),
    ("unknown_filter_key", "unknown_filter_key.yaml.filters.min_ratting: unknown filter key"),
    ("unknown_format", "unknown_format.yaml.format: unknown format 'csv'"),
    ("missing_folder", "missing_folder/no/such/folder: domain folder does not exist"),
    (
        "filters_remove_all",
        "domain.filters_remove_all.filters: no interactions left after filtering",
    ),
    ("invalid_yaml", "invalid_yaml.yaml:5:16: not valid YAML: while scanning a quoted scalar"),
    ("lastfm_bad_weight", "lastfm_bad_weight/user_artists.dat:5:3: field 'weight' has '12k'"),
    ("lastfm_ragged_artist", "lastfm_ragged_artist/artists.dat:7: row has 3 fields"),
    ("lastfm_order_time", "domain.lastfm_order_time.order: Last.fm hetrec2011 has no timestamps"),
    ("empty_user_id", "empty_user_id/bad.inter:7:1: empty user id"),
    (
        "text_fields_not_list",
        "text_fields_not_list.yaml.text_fields: expected a list of strings, got 'movie_title'; "
        "write a list",
    ),
    ("filters_not_mapping", "filters_not_mapping.yaml.filters: expected a mapping, got 5"),
    (
        "max_users_not_int",
        "max_users_not_int.yaml.filters.max_users: expected an integer or null, got 'ten'",
    ),
    ("order_seed_not_int", "order_seed_not_int.yaml.order_seed: expected an integer, got 'abc'"),
]
CORPUS_NAMES = ["control"] + [c.values[0] if hasattr(c, "values") else c[0] for c in CORPUS]

# `crossrec` spends ~1.5 s importing torch before it reads a file; 38 separate processes would
# take most of a minute on a 2-core runner. This runner imports the CLI once and forks a child per
# case: each child runs the same `crossrec_cli.cli.main` with its own stdout/stderr files and exit
# status, as the console script would. test_fork_runner_matches_the_real_command checks that.
FORK_RUNNER = r"""
import json, os, sys, traceback
from crossrec_cli import cli
import crossrec_cli.commands.evaluate  # noqa: F401  (torch, hydra: imported once, before forking)

def child(argv, out, err):
    os.dup2(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 1)
    os.dup2(os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
    code = 0
    try:
        cli.main(argv)
    except SystemExit as exc:  # the interpreter's own handling of sys.exit
        code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

jobs, width = json.loads(sys.argv[1]), int(sys.argv[2])
running, codes = {}, {}
for name, argv, out, err in jobs:
    while len(running) >= width:
        pid, status = os.wait()
        codes[running.pop(pid)] = os.waitstatus_to_exitcode(status)
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        child(argv, out, err)
    running[pid] = name
while running:
    pid, status = os.wait()
    codes[running.pop(pid)] = os.waitstatus_to_exitcode(status)
print(json.dumps(codes))
"""


def corpus_argv(name: str, sp: Path, runs: Path) -> list[str]:
    return [
        "evaluate",
        "model=popularity",
        f"domain={name}",
        searchpath(sp),
        f"hydra.run.dir={runs / name}",
    ]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, tuple[int, str, Path]]:
    """Run every fixture once: name -> (exit code, stderr, run dir)."""
    tmp = tmp_path_factory.mktemp("corpus")
    sp, runs, logs = write_domains(tmp / "conf", CORPUS_NAMES), tmp / "runs", tmp / "logs"
    logs.mkdir()
    if not hasattr(os, "fork"):  # no fork (Windows): one real process per case
        out = {}
        for n in CORPUS_NAMES:
            proc = crossrec(corpus_argv(n, sp, runs), tmp)
            out[n] = (proc.returncode, proc.stderr, runs / n)
        return out
    jobs = [
        (n, corpus_argv(n, sp, runs), str(logs / f"{n}.out"), str(logs / f"{n}.err"))
        for n in CORPUS_NAMES
    ]
    width = str(max(1, min(4, os.cpu_count() or 1)))
    proc = subprocess.run(
        [sys.executable, "-c", FORK_RUNNER, json.dumps(jobs), width],
        check=False,
        cwd=tmp,
        env=cli_env(tmp),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    codes = json.loads(proc.stdout.strip().splitlines()[-1])
    return {n: (codes[n], (logs / f"{n}.err").read_text(), runs / n) for n in CORPUS_NAMES}


def test_corpus_control_runs(corpus):
    code, stderr, run = corpus["control"]
    assert code == 0, stderr
    assert read_metrics(run)["dataset"]["control"] | {"sha256": None} == {
        "users": 6,
        "items": 20,
        "interactions": 56,
        "sha256": None,
        "split": "leave-one-out",
    }


@pytest.mark.parametrize("name,expected", CORPUS)
def test_malformed_input_is_one_error_line(corpus, name, expected):
    code, stderr, run = corpus[name]
    assert_one_error_line(code, stderr, expected)
    assert not (run / "metrics.json").exists()


def test_fork_runner_matches_the_real_command(corpus, tmp_path):
    sp = write_domains(tmp_path / "conf", ["ragged_row"])
    proc = crossrec(corpus_argv("ragged_row", sp, tmp_path / "runs"), tmp_path)
    code, stderr, _ = corpus["ragged_row"]
    assert (proc.returncode, proc.stderr) == (code, stderr)


def test_every_fixture_is_in_the_table():
    folders = {p.name for p in FIXTURES.iterdir() if p.is_dir()}
    assert folders == set(CORPUS_NAMES)
