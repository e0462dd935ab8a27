#!/usr/bin/env python3
"""RecBole's SASRec beside crossrec's ID-only SASRec, on the very same leave-one-out split.

    make reference-recbole                       # once: RecBole 1.2.1 in .venv-recbole/
    .venv/bin/python scripts/reference_recbole.py --domain movies --seeds 0,1,2
    .venv/bin/python scripts/reference_recbole.py --domain music --skip-crossrec

For each domain: crossrec's own loader and ``make_split`` give the split; it is exported as
RecBole atomic files (``<domain>.inter`` with ``timestamp`` = the item's position in crossrec's
per-user order: training sequence, valid target, test target; ``<domain>.item`` with the whole
catalogue, so both tools rank the same items). RecBole's time-ordered leave-one-out
(``eval_args: {split: {LS: valid_and_test}, order: TO, mode: full}``) then rebuilds crossrec's
split; this is checked twice, against a re-implementation of RecBole's rule and against the
examples RecBole actually built, for every user. One known difference, reported and checked:
RecBole's leave-one-out splits a user's augmented examples (n interactions -> n-1 examples), so
a user with exactly 3 interactions gets a test example but no valid one (its valid target
becomes a training example); users with 1-2 interactions only train in both tools.

Then, one after the other with OMP_NUM_THREADS=1 each (so s/epoch compare): RecBole 1.2.1 SASRec
with its defaults (scripts/_recbole_sasrec.py in .venv-recbole) and ``crossrec finetune
experiment=sasrec`` through the real CLI, per seed. Masking: RecBole ranks every item (seen ones
included) for sequential models, so the default compares with crossrec's
``eval.exclude_seen=false``; ``--exclude-seen`` masks each example's history in both.
Cost: RecBole trains every prefix of every sequence as its own 50-position example (97k per epoch
on movies), about 200 s per epoch on one CPU thread against crossrec's ~7 s; movies seed 0 took
85 minutes to early-stop (25 epochs).

Prints one table per domain (valid/test Recall and NDCG @10/@50, s/epoch, best epoch; mean ± std
over seeds; crossrec's relative test NDCG@10 gap) and writes it as JSON (``--out``, default
outputs/reference/<domain>.json, with --exclude-seen <domain>.seen_removed.json), again after
every finished run, so an interruption loses at most the run in progress. Runs are kept across
invocations: a (tool, seed) already in that JSON, or else in its committed copy under
docs/benchmark-records/reference/ (``scripts/benchmarks.py table`` copies it there), for the same
data, masking, RecBole config and crossrec overrides, is not run again (``--rerun`` runs it
anew). So ``--seeds 0,1,2`` can be spread over several sittings, or over parallel invocations with one
seed each (a save keeps the runs another invocation saved meanwhile), and the table still lists
both tools, each seed run back to back by this script. --skip-recbole / --skip-crossrec run one tool
only. Run directories: outputs/reference/<domain>/{recbole,crossrec}/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "crossrec_cli" / "conf"
RECBOLE_PY = REPO / ".venv-recbole" / "bin" / "python"
RUNNER = Path(__file__).resolve().parent / "_recbole_sasrec.py"
CROSSREC = str(Path(sys.executable).parent / "crossrec")
RECORDS = REPO / "docs" / "benchmark-records" / "reference"  # committed copies (scripts/benchmarks.py table)
METRICS = ("recall@10", "ndcg@10", "recall@50", "ndcg@50")
MAX_LEN = 50  # RecBole's MAX_ITEM_LIST_LENGTH = crossrec sasrec's model.max_history
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# RecBole 1.2.1 SASRec defaults (properties/model/SASRec.yaml, overall.yaml), spelled out; only
# the split, metrics, filtering and device are chosen here.
RECBOLE_CONFIG = {
    "hidden_size": 64, "inner_size": 256, "n_layers": 2, "n_heads": 2,
    "hidden_dropout_prob": 0.5, "attn_dropout_prob": 0.5, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
    "initializer_range": 0.02, "loss_type": "CE", "train_neg_sample_args": None,
    "learner": "adam", "learning_rate": 0.001, "weight_decay": 0.0, "train_batch_size": 2048,
    "epochs": 300, "eval_step": 1, "stopping_step": 10, "MAX_ITEM_LIST_LENGTH": MAX_LEN,
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
    "metrics": ["Recall", "NDCG"], "topk": [10, 50], "valid_metric": "NDCG@10", "eval_batch_size": 4096,
    "reproducibility": True, "use_gpu": False, "show_progress": False, "save_dataset": False,
    "load_col": {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id"]},
    "user_inter_num_interval": "[0,inf)", "item_inter_num_interval": "[0,inf)",
    "val_interval": None, "rm_dup_inter": None, "filter_inter_by_user_or_item": True,
}


# ---------------------------------------------------------------- split, export, check


def load_split(name: str, overrides: list[str] = ()):
    """(domain, split) through crossrec's own code, composed like ``crossrec finetune domain=NAME``."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from crossrec_cli.data import DomainSpec, load_domain, make_split

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="finetune", overrides=[f"domain={name}", *overrides])
    base = OmegaConf.create(OmegaConf.to_container(cfg.domain, resolve=True))  # as load_domains does
    raw = OmegaConf.to_container(OmegaConf.merge(base, OmegaConf.to_container(cfg.data.overrides, resolve=True)))
    spec = DomainSpec.from_dict(raw, where=str(CONF / "domain" / f"{name}.yaml"))
    domain = load_domain(spec)
    return domain, make_split(domain, spec.order, spec.order_seed)


def user_sequences(split) -> dict[int, list[int]]:
    """Each user's items in crossrec's order: training sequence, then valid and test target."""
    if split.kind != "leave-one-out":
        raise SystemExit(f"error: the split is {split.kind!r}; a RecBole export reproduces leave-one-out only")
    seqs = {int(u): s.tolist() for u, s in zip(split.train_users, split.train_seqs)}
    if len(seqs) != len(split.train_seqs):
        raise SystemExit("error: more than one training sequence per user; not a leave-one-out split")
    for ev in (split.valid, split.test):
        for u, hist, t in zip(ev.users.tolist(), ev.histories, ev.targets.tolist()):
            assert hist.tolist() == seqs[u], f"user {u}: history is not the user's sequence so far"
            seqs[u].append(t)
    return seqs


def export_atomic(split, n_items: int, folder: Path, dataset: str) -> Path:
    """Write ``folder/<dataset>.inter`` (user and item tokens = crossrec indices, timestamp =
    position in the user's order) and ``folder/<dataset>.item`` (every catalogue item)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u, seq in sorted(user_sequences(split).items()):
        lines += [f"{u}\t{i}\t{p}" for p, i in enumerate(seq)]
    path = folder / f"{dataset}.inter"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / f"{dataset}.item").write_text("item_id:token\n" + "".join(f"{i}\n" for i in range(n_items)), encoding="utf-8")
    return path


def recbole_examples(inter_path: Path, max_len: int = MAX_LEN) -> dict[str, list[tuple]]:
    """The (user, target, history) examples RecBole 1.2.1 builds from ``inter_path``: sort by
    user and time, one example per interaction after the first (history = up to ``max_len``
    previous items), then per user the last example -> test, the one before -> valid, keeping
    at least one for training (``Dataset._split_index_by_leave_one_out``, 2 left out)."""
    rows = [line.split("\t") for line in inter_path.read_text(encoding="utf-8").splitlines()[1:]]
    seqs: dict[str, list[str]] = {}
    for u, i, _ in sorted(rows, key=lambda r: (r[0], float(r[2]))):
        seqs.setdefault(u, []).append(i)
    out: dict[str, list[tuple]] = {"train": [], "valid": [], "test": []}
    for u, seq in seqs.items():
        ex = [(u, seq[p], tuple(seq[max(0, p - max_len):p])) for p in range(1, len(seq))]
        left = min(2, len(ex) - 1) if ex else 0
        out["train"] += ex[: len(ex) - left]
        out["valid"] += ex[len(ex) - left:][:-1] if left == 2 else []
        out["test"] += ex[-1:] if left >= 1 else []
    return out


def crossrec_examples(split, max_len: int = MAX_LEN) -> dict[str, list[tuple]]:
    """crossrec's split in the same (user, target, last ``max_len`` history items) tokens."""
    def tok(u, t, hist):
        return (str(u), str(t), tuple(str(x) for x in hist[max(0, len(hist) - max_len):]))

    train = [tok(split.train_users[s], split.train_seqs[s][p], split.train_seqs[s][:p].tolist())
             for s, p in split.train_pairs.tolist()]
    return {"train": train, **{part: [tok(u, t, h.tolist()) for u, h, t in zip(ev.users, ev.histories, ev.targets)]
                               for part, ev in (("valid", split.valid), ("test", split.test))}}


def compare(ours: dict[str, list], theirs: dict[str, list], split) -> dict[str, dict]:
    """Per part: examples in each, identical ones, and the users of the differing ones. Fails
    unless test is identical and every other difference is a user with exactly 3 interactions."""
    three = {str(u) for u, s in zip(split.train_users.tolist(), split.train_seqs) if len(s) == 1}
    three &= {str(u) for u in split.valid.users.tolist()}
    report = {}
    for part in theirs:
        a, b = Counter(ours[part]), Counter(theirs[part])
        diff = sorted({e[0] for e in (a - b) + (b - a)}, key=int)
        report[part] = {"crossrec": len(ours[part]), "recbole": len(theirs[part]),
                        "same": sum((a & b).values()), "differ_users": diff}
        allowed = set() if part == "test" else three
        if not set(diff) <= allowed:
            raise SystemExit(f"error: RecBole's {part} examples differ from crossrec's for users {diff[:10]}")
    report["users_with_3_interactions"] = sorted(three, key=int)
    return report


# ---------------------------------------------------------------- the two runs


def run_logged(cmd: list[str], cwd: Path, env: dict, log: Path) -> None:
    with log.open("w", encoding="utf-8") as f:
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-40:])
        raise SystemExit(f"{tail}\nerror: {' '.join(cmd)} exited {proc.returncode} (log: {log})")


def run_recbole(name: str, data_dir: Path, seed: int, out: Path, overrides: dict, mask_seen: bool) -> dict:
    if not RECBOLE_PY.exists():
        raise SystemExit(f"error: {RECBOLE_PY} missing; run `make reference-recbole` first")
    out.mkdir(parents=True, exist_ok=True)
    config = {**RECBOLE_CONFIG, "seed": seed, "data_path": str(data_dir.parent),
              "checkpoint_dir": str(out / "saved"), **overrides}
    job = {"dataset": name, "config": config, "out": str(out / "result.json"), "mask_seen": mask_seen}
    (out / "job.json").write_text(json.dumps(job, indent=1), encoding="utf-8")
    env = {**os.environ, **THREADS}  # the runner saves weights only: torch.load stays weights_only
    run_logged([str(RECBOLE_PY), str(RUNNER), str(out / "job.json")], out, env, out / "recbole.out")
    res = json.loads((out / "result.json").read_text(encoding="utf-8"))
    return {"tool": "recbole", "seed": seed, "valid": {k: res["valid"][k] for k in METRICS},
            "test": {k: res["test"][k] for k in METRICS}, "seconds_per_epoch": res["seconds_per_epoch"],
            "best_epoch": res["best_epoch"], "epochs_run": res["epochs_run"], "wall_seconds": res["wall_seconds"],
            "run_dir": str(out), "items": res["items"],
            "examples": {part: [(u, t, tuple(h)) for u, t, h in ex] for part, ex in res["examples"].items()}}


def crossrec_experiment() -> list[str]:
    """``experiment=sasrec``, or what it stands for where that file does not exist yet."""
    if (CONF / "experiment" / "sasrec.yaml").is_file():
        return ["experiment=sasrec"]
    return ["backbone=none", "model.item_ids=true"]


def run_crossrec(name: str, seed: int, out: Path, overrides: list[str], mask_seen: bool) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [CROSSREC, "finetune", f"domain={name}", *crossrec_experiment(), f"seed={seed}",
           f"eval.exclude_seen={str(mask_seen).lower()}", "progress=false", f"hydra.run.dir={out}", *overrides]
    t0 = time.perf_counter()
    run_logged(cmd, REPO, {**os.environ, **THREADS}, out / "crossrec.out")
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    return {"tool": "crossrec", "seed": seed, "valid": {k: m["valid"][name][k] for k in METRICS},
            "test": {k: m["test"][name][k] for k in METRICS}, "seconds_per_epoch": m["seconds_per_epoch"],
            "best_epoch": m["best_epoch"], "epochs_run": m.get("epochs_run"),
            "wall_seconds": time.perf_counter() - t0, "run_dir": str(out), "command": " ".join(cmd[1:])}


# ---------------------------------------------------------------- summary and table

COLUMNS = [("valid R@10", "valid", "recall@10"), ("valid N@10", "valid", "ndcg@10"),
           ("test R@10", "test", "recall@10"), ("test N@10", "test", "ndcg@10"),
           ("test R@50", "test", "recall@50"), ("test N@50", "test", "ndcg@50"),
           ("s/epoch", None, "seconds_per_epoch"), ("best epoch", None, "best_epoch")]
LABELS = {"recbole": "RecBole SASRec", "crossrec": "crossrec SASRec"}


def value(run: dict, part: str | None, key: str) -> float:
    return float(run[part][key] if part else run[key])


def summarize(runs: list[dict]) -> dict:
    """Per tool and column: mean and sample std over seeds; crossrec's relative test NDCG@10 gap."""
    out: dict = {}
    for tool in LABELS:
        mine = [r for r in runs if r["tool"] == tool]
        if mine:
            out[tool] = {label: {"mean": statistics.fmean(v := [value(r, p, k) for r in mine]),
                                 "std": statistics.stdev(v) if len(v) > 1 else 0.0, "n": len(v)}
                         for label, p, k in COLUMNS}
    if "recbole" in out and "crossrec" in out:
        rb, cr = out["recbole"]["test N@10"]["mean"], out["crossrec"]["test N@10"]["mean"]
        out["gap_test_ndcg@10"] = (cr - rb) / rb if rb else None
    return out


def fmt(label: str, x: float) -> str:
    return f"{x:.1f}" if label == "s/epoch" else f"{x:.0f}" if label == "best epoch" else f"{x:.4f}"


def table(record: dict) -> Table:
    t = Table(title=f"SASRec · {record['domain']} · same leave-one-out split · full ranking over "
                    f"{record['dataset']['items']:,} items · seen items {'masked' if record['exclude_seen'] else 'ranked'}")
    t.add_column("tool")
    t.add_column("seed", justify="right")
    for label, _, _ in COLUMNS:
        t.add_column(label, justify="right")
    summary = record["summary"]
    for tool, label in LABELS.items():
        mine = sorted((r for r in record["runs"] if r["tool"] == tool), key=lambda r: r["seed"])
        for r in mine:
            t.add_row(label, str(r["seed"]), *(fmt(c, value(r, p, k)) for c, p, k in COLUMNS))
        if len(mine) > 1:
            t.add_row(label, "mean±std", *(f"{fmt(c, summary[tool][c]['mean'])}±{fmt(c, summary[tool][c]['std'])}"
                                            for c, _, _ in COLUMNS), style="bold")
    gap = summary.get("gap_test_ndcg@10")
    if gap is not None:
        t.caption = f"crossrec vs RecBole, test NDCG@10 (mean over seeds): {gap:+.1%}"
    return t


# ---------------------------------------------------------------- main


def parse_kv(items: list[str], where: str) -> dict:
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: {where} {item!r}: expected key=value")
        out[key] = yaml.safe_load(raw)
    return out


def same_setup(old: dict, record: dict) -> bool:
    """Whether an earlier JSON ran what ``record`` runs: same data, masking and both configs."""
    return all(old.get(k) == record[k] for k in ("exclude_seen", "recbole_config", "crossrec_overrides")) \
        and old.get("dataset", {}).get("sha256") == record["dataset"]["sha256"]


def kept_runs(out: Path, record: dict) -> tuple[list[dict], Path | None]:
    """Runs of an earlier JSON of the same setup: ``out`` itself, else its committed copy."""
    for path in (out, RECORDS / out.name):
        if path.is_file():
            old = json.loads(path.read_text(encoding="utf-8"))
            if same_setup(old, record):
                return old.get("runs", []), path
    return [], None


def on_disk(out: Path, record: dict) -> list[dict]:
    """The runs ``out`` holds now if it is of the same setup (else none)."""
    if not out.is_file():
        return []
    old = json.loads(out.read_text(encoding="utf-8"))
    return old.get("runs", []) if same_setup(old, record) else []


def save(record: dict, out: Path) -> None:
    """Write ``record`` (with its summary) whole, through a temporary file: never half-written.
    Runs that ``out`` holds and ``record`` lacks (saved meanwhile by an invocation running other
    seeds of the same setup in parallel) are kept."""
    mine = {(r["tool"], int(r["seed"])) for r in record["runs"]}
    record["runs"] = sorted([*record["runs"], *(r for r in on_disk(out, record) if (r["tool"], int(r["seed"])) not in mine)],
                            key=lambda r: (int(r["seed"]), r["tool"] != "recbole"))
    record["summary"] = summarize(record["runs"])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
    tmp.replace(out)


def run_seeds(name: str, n_items: int, split, data_dir: Path, work: Path, rb_over: dict,
              args: argparse.Namespace, console: Console, record: dict, out: Path) -> None:
    """Per seed: RecBole, then crossrec (one after the other, never in parallel); each finished
    run replaces any earlier run of its (tool, seed) in ``record``, which is saved at once."""
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    rb_len = int(rb_over.get("MAX_ITEM_LIST_LENGTH", MAX_LEN))
    have = {(r["tool"], int(r["seed"])) for r in record["runs"]}

    def add(run: dict) -> None:
        record["runs"] = [r for r in record["runs"] if (r["tool"], int(r["seed"])) != (run["tool"], run["seed"])]
        record["runs"].append(run)
        save(record, out)

    for seed in args.seeds:
        for tool, skipped in (("recbole", args.skip_recbole), ("crossrec", args.skip_crossrec)):
            if skipped or ((tool, seed) in have and not args.rerun):
                continue
            console.print(f"{LABELS[tool]}, seed {seed} ...")
            if tool == "recbole":
                r = run_recbole(name, data_dir, seed, work / "recbole" / f"{stamp}_seed{seed}", rb_over, args.exclude_seen)
                if r["items"] != n_items:
                    raise SystemExit(f"error: RecBole ranks {r['items']} items, crossrec {n_items}")
                r["split_check"] = compare(crossrec_examples(split, rb_len), r.pop("examples"), split)
            else:
                r = run_crossrec(name, seed, work / "crossrec" / f"{stamp}_seed{seed}",
                                 args.crossrec_override, args.exclude_seen)
            add(r)


def reference(name: str, args: argparse.Namespace, console: Console) -> dict:
    domain, split = load_split(name, [*crossrec_experiment(), *args.crossrec_override])
    work = REPO / "outputs" / "reference" / name
    inter = export_atomic(split, domain.n_items, work / "recbole_data" / name, name)
    check = compare(crossrec_examples(split), recbole_examples(inter), split)
    console.print(f"[bold]{name}[/]: {domain.n_users:,} users, {domain.n_items:,} items, {domain.n_interactions:,} "
                  f"interactions -> {inter.relative_to(REPO)}; RecBole's rule gives "
                  + ", ".join(f"{p} {check[p]['same']}/{check[p]['crossrec']} identical" for p in ("train", "valid", "test"))
                  + f"; users with exactly 3 interactions: {len(check['users_with_3_interactions'])}")
    out = Path(args.out.format(domain=name))
    rb_over = parse_kv(args.recbole_override, "--recbole-override")
    record = {"domain": name, "dataset": domain.fingerprint(), "split": "leave-one-out",
              "exclude_seen": args.exclude_seen, "split_check": check, "recbole_config": {**RECBOLE_CONFIG, **rb_over},
              "crossrec_overrides": [*crossrec_experiment(), *args.crossrec_override], "runs": []}
    record["runs"], source = kept_runs(out, record)
    if source is not None:
        console.print(f"kept from {source}: " + ", ".join(f"{r['tool']} seed {r['seed']}" for r in record["runs"]))
    run_seeds(name, domain.n_items, split, inter.parent, work, rb_over, args, console, record, out)
    save(record, out)
    console.print(table(record))
    console.print(f"written: {out}")
    return record


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--domain", action="append", default=[], help="domain name(s): repeat or comma-separate (default movies)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument("--skip-recbole", action="store_true")
    p.add_argument("--skip-crossrec", action="store_true")
    p.add_argument("--rerun", action="store_true", help="run the seeds again even where a kept JSON has them")
    p.add_argument("--exclude-seen", action="store_true", help="mask each example's history in both tools")
    p.add_argument("--recbole-override", action="append", default=[], metavar="KEY=VALUE", help="RecBole config (YAML value)")
    p.add_argument("--crossrec-override", action="append", default=[], metavar="KEY=VALUE", help="Hydra override for crossrec")
    p.add_argument("--out", help="JSON file, {domain} replaced (default outputs/reference/{domain}.json, "
                   "with --exclude-seen outputs/reference/{domain}.seen_removed.json)")
    args = p.parse_args(argv)
    args.domain = [d for item in (args.domain or ["movies"]) for d in item.split(",") if d]
    args.seeds = [int(s) for s in args.seeds.split(",") if s != ""]
    args.out = args.out or f"outputs/reference/{{domain}}{'.seen_removed' if args.exclude_seen else ''}.json"
    if len(args.domain) > 1 and "{domain}" not in args.out:
        p.error("--out needs a {domain} placeholder with several domains")
    console = Console(width=None if sys.stdout.isatty() else 200)  # whole table in logs
    for name in args.domain:
        reference(name, args, console)


if __name__ == "__main__":
    main()
