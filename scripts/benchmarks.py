#!/usr/bin/env python3
"""The benchmark table of docs/benchmarks.md: every model on bundled movies and music, seeds.

    python scripts/benchmarks.py run   [--domains movies,music] [--seeds 0,1,2] [--models a,b]
    python scripts/benchmarks.py table [--out docs/benchmarks.md]

`run` trains / scores each (model, domain, seed) through the real CLI into
outputs/benchmarks/<domain>/<model>/seed<k>/ (a finished run is skipped and an interrupted one
resumed, so the command can be repeated after an interruption), early-stopping on valid NDCG@10 under crossrec's
default protocol (seen items stay in the ranking, as in RecBole's sequential evaluation), then
re-scores each trained run with seen items removed (`crossrec evaluate run=... eval.exclude_seen=true`,
the setting of UniSRec / Recformer) into `<run>/seen_removed/`.
`table` first copies every result file (each run's metrics.json, outputs/reference/<domain>.json
written by `scripts/reference_recbole.py` for RecBole's SASRec on the same split, the transfer,
genre-split, item-vector and preference results) into docs/benchmark-records/, which is committed,
then writes a Markdown table of test Recall@10 / NDCG@10 / NDCG@50, mean ± std over seeds, from
those records alone: a fresh checkout regenerates the same table without re-running anything.
docs/benchmark-records/carried.json holds the rows whose run directories were not kept (means and
standard deviations over seeds 0..n-1); a new run of such a row adds seed n and beyond and is
pooled with them. Each training job runs with OMP_NUM_THREADS=1 so that seconds per epoch compare
across rows.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "crossrec")
OUTPUTS = REPO / "outputs"
ROOT = OUTPUTS / "benchmarks"
RECORDS = REPO / "docs" / "benchmark-records"  # committed copies of the result files under outputs/
# result files under outputs/ that the table reads (copied to RECORDS, same relative paths)
RESULTS = ("benchmarks/*/*/seed*/metrics.json", "benchmarks/*/*/seed*/seen_removed/metrics.json", "reference/*.json",
           "transfer/*/seed*/metrics.json", "genre_split/runs/*/metrics.json",
           "genre_split/runs/*/zeroshot_*/metrics.json", "vectors/runs/*/seed*/metrics.json",
           "bench_preference.json")

DOT = "model.score=dot"
# name -> (label, command and overrides); every row runs under the same protocol
MODELS: dict[str, tuple[str, list[str]]] = {
    "popularity": ("popularity", ["evaluate", "model=popularity"]),
    "text_zeroshot": ("text zero-shot (MiniLM, untrained; defaults: centred, recency 0.9)",
                      ["evaluate", "model=text_zeroshot", "backbone=minilm"]),
    "text_zeroshot_raw": ("text zero-shot, raw LM vectors `model.text_norm=none model.recency=0.8` (the default before)",
                          ["evaluate", "model=text_zeroshot", "backbone=minilm", "model.text_norm=none",
                           "model.recency=0.8"]),
    "sasrec": ("SASRec (ids) `experiment=sasrec`: RecBole's hyperparameters, overlapping windows of 10 targets",
               ["finetune", "experiment=sasrec"]),
    # rows of the preset before it took trainer.window_stride=10 (windows that do not overlap)
    "sasrec_nonoverlap": ("SASRec, windows that do not overlap `trainer.window_stride=null` (the preset before)",
                          ["finetune", "experiment=sasrec", "trainer.window_stride=null"]),
    "sasrec_recbole": ("SASRec, RecBole's blocks: no dropout inside the feed-forward, positions from the oldest item, "
                       "windows that do not overlap `model.ffn_dropout=0 model.positions=start trainer.window_stride=null`",
                       ["finetune", "experiment=sasrec", "model.ffn_dropout=0", "model.positions=start",
                        "trainer.window_stride=null"]),
    "sasrec_noclip": ("SASRec without gradient clipping, as RecBole, windows that do not overlap "
                      "`trainer.grad_clip=0 trainer.window_stride=null`",
                      ["finetune", "experiment=sasrec", "trainer.grad_clip=0", "trainer.window_stride=null"]),
    "sasrec_b256": ("SASRec, `trainer.batch_size=256`", ["finetune", "experiment=sasrec", "trainer.batch_size=256"]),
    "text_cosine": ("frozen MiniLM + towers (defaults: `model.score=auto`, cosine for text)", ["finetune"]),
    "text_center_cosine": ("frozen MiniLM + towers, centred LM vectors `model.text_norm=center` (cosine)",
                           ["finetune", "model.text_norm=center"]),
    "text_prior2": ("frozen MiniLM + towers + the text zero-shot scorer in every logit `model.text_prior=2` (cosine)",
                    ["finetune", "model.text_prior=2"]),
    "text_id_cosine": ("frozen MiniLM + ids `model.item_ids=true` (cosine)", ["finetune", "model.item_ids=true"]),
    "text_kg_cosine": ("frozen MiniLM + KG, gated `fusion=kg` (cosine)", ["finetune", "fusion=kg"]),
    # rows made when dot products were the default score for every item tower (DOT pins it)
    "text": ("frozen MiniLM + towers, dot", ["finetune", DOT]),
    "text_dim128": ("frozen MiniLM + towers, dot, `model.dim=128`", ["finetune", DOT, "model.dim=128"]),
    "text_id": ("frozen MiniLM + ids `model.item_ids=true`, dot", ["finetune", DOT, "model.item_ids=true"]),
    "text_kg": ("frozen MiniLM + KG, gated `fusion=kg`, dot", ["finetune", DOT, "fusion=kg"]),
    "text_id_kg": ("frozen MiniLM + ids + KG, gated `fusion=kg model.features=[text,id,kg]`, dot",
                   ["finetune", DOT, "fusion=kg", "model.features=[text,id,kg]"]),
    "unisrec_text": ("UniSRec inductive `experiment=unisrec_text`", ["finetune", "experiment=unisrec_text"]),
    # music with the transfer experiment's trainer (sampled softmax, 1,024 negatives) and centred LM
    # vectors: artist name + tags (the bundled text) against the name alone
    "text_sampled": ("frozen MiniLM, name + tags, dot, sampled softmax `trainer.loss=sampled trainer.n_negatives=1024 "
                     "trainer.patience=5 model.text_norm=center`",
                     ["finetune", DOT, "trainer.loss=sampled", "trainer.n_negatives=1024", "trainer.patience=5",
                      "model.text_norm=center"]),
    "text_sampled_names": ("the same, artist name only `+data.overrides.text_fields=[name]` (music)",
                           ["finetune", DOT, "trainer.loss=sampled", "trainer.n_negatives=1024", "trainer.patience=5",
                            "model.text_norm=center", "+data.overrides.text_fields=[name]"]),
    "unisrec_text_id": ("UniSRec transductive `experiment=unisrec_text_id`", ["finetune", "experiment=unisrec_text_id"]),
}

# the fusion grid: item features x fusion method, dot scores, every other setting at its default;
# text alone and three cells are rows of the table above (text_id = sum, text_kg / text_id_kg = gated)
FUSION_FEATURES = {"text": "[text]", "text_id": "[text,id]", "text_kg": "[text,kg]", "text_id_kg": "[text,id,kg]"}
FUSION_METHODS = ("sum", "concat", "gated", "attention")
FUSION_CELLS: dict[tuple[str, str], str] = {("text", "sum"): "text", ("text_id", "sum"): "text_id",
                                            ("text_kg", "gated"): "text_kg", ("text_id_kg", "gated"): "text_id_kg"}
for _feats, _list in FUSION_FEATURES.items():
    for _method in FUSION_METHODS[1:]:
        if _feats != "text" and (_feats, _method) not in FUSION_CELLS:
            FUSION_CELLS[(_feats, _method)] = key = f"{_feats}_{_method}"
            MODELS[key] = (f"{_feats.replace('_', ' + ')}, `fusion={_method}`, dot",
                           ["finetune", DOT, f"fusion={_method}", f"model.features={_list}"])
FUSION_ONLY = {k for k in FUSION_CELLS.values() if k not in ("text", "text_id", "text_kg", "text_id_kg")}


def run_one(model: str, domain: str, seed: int) -> Path:
    out = ROOT / domain / model / f"seed{seed}"
    done = (out / "metrics.json").is_file() and "test" in json.loads((out / "metrics.json").read_text())
    if not done:
        args = MODELS[model][1]
        cmd = [CLI, *args, f"domain={domain}", f"seed={seed}", f"hydra.run.dir={out}"]
        cmd += ["progress=false"] if args_train(model) else []
        if (out / "config.yaml").is_file():  # started before, interrupted or killed: continue from its last
            # checkpoint exactly (from the start when it has none); an evaluation starts again (its run moved aside)
            cmd.append("resume=true" if args_train(model) else "overwrite=true")
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
        print(f"{domain} {model} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
    if not (out / "seen_removed" / "metrics.json").is_file():
        again = [f"run={out}"] if args_train(model) else [*MODELS[model][1][1:], f"domain={domain}"]
        again += ["overwrite=true"] if (out / "seen_removed" / "config.yaml").is_file() else []  # an interrupted one
        subprocess.run([CLI, "evaluate", *again, "eval.exclude_seen=true", f"hydra.run.dir={out / 'seen_removed'}"],
                       check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return out


def args_train(model: str) -> bool:
    return MODELS[model][1][0] == "finetune"


def sync() -> int:
    """Copy each result file under outputs/ into RECORDS (same relative path) when it is new or changed."""
    copied = 0
    for pattern in RESULTS:
        for src in sorted(OUTPUTS.glob(pattern)):
            dst = RECORDS / src.relative_to(OUTPUTS)
            m = json.loads(src.read_text()) if src.name == "metrics.json" else {}
            if src.name == "metrics.json" and "test" not in m and m.get("status") != "complete":
                continue  # an interrupted run: nothing to record yet
            if ".replaced-" in str(src.relative_to(OUTPUTS)):
                continue  # a run moved aside by overwrite=true: the run in its place is the record
            if not dst.is_file() or dst.read_bytes() != src.read_bytes():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
                copied += 1
    return copied


@dataclass(frozen=True)
class Agg:
    """Mean and sample standard deviation over n seeds; two aggregates of disjoint seeds pool exactly."""

    n: int
    mean: float
    sd: float | None = None

    @classmethod
    def of(cls, values: list[float]) -> Agg | None:
        if not values:
            return None
        return cls(len(values), statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None)

    def __add__(self, other: Agg | None) -> Agg:
        if other is None:
            return self
        n = self.n + other.n
        mean = (self.n * self.mean + other.n * other.mean) / n
        squares = sum((a.n - 1) * (a.sd or 0.0) ** 2 + a.n * a.mean ** 2 for a in (self, other))
        return Agg(n, mean, math.sqrt(max(squares - n * mean ** 2, 0.0) / (n - 1)))

    def __str__(self) -> str:
        return f"{self.mean:.4f}" if self.n == 1 or self.sd is None else f"{self.mean:.4f} ± {self.sd:.4f}"


def _metrics(path: Path, domain: str) -> dict | None:
    if not path.is_file():
        return None
    m = json.loads(path.read_text())
    if "test" not in m:  # interrupted
        return None
    return m["test"][domain] | {"seconds_per_epoch": m.get("seconds_per_epoch"), "best_epoch": m.get("best_epoch"),
                                "valid_ndcg@10": m["valid"][domain].get("ndcg@10")}


def _fmt(values: list[float] | Agg | None) -> str:
    agg = values if isinstance(values, Agg) or values is None else Agg.of(values)
    return "–" if agg is None else str(agg)


def _carried() -> dict:
    path = RECORDS / "carried.json"
    return json.loads(path.read_text()) if path.is_file() else {"domains": {}, "sections": {}}


COLUMNS = ("valid_ndcg@10", "recall@10", "ndcg@10", "ndcg@50", "seen_removed", "best_epoch", "seconds_per_epoch")


def _pool(carried: dict, runs: list[dict]) -> dict[str, Agg]:
    """Per column: the carried aggregate (seeds 0..n-1) pooled with the values of later ``runs``."""
    cols = {}
    for col in COLUMNS:
        new = Agg.of([r[col] for r in runs if r.get(col) is not None])
        prev = Agg(carried["n"], *carried[col]) if col in carried else None
        if prev or new:
            cols[col] = (prev + new) if prev else new
    return cols


def _model(domain: str, model: str, carried: dict) -> tuple[int, dict[str, Agg], str | None]:
    """Seeds, per-column aggregates and data fingerprint of one (domain, model): the carried
    aggregate of seeds 0..n-1 pooled with the recorded runs of the later seeds."""
    old = carried["domains"].get(domain, {}).get("models", {}).get(model, {})
    first = old.get("n", 0)
    runs = [r for r in sorted((RECORDS / "benchmarks" / domain / model).glob("seed*"))
            if int(r.name.removeprefix("seed")) >= first and _metrics(r / "metrics.json", domain)]
    ms = [_metrics(r / "metrics.json", domain) for r in runs]
    for m, r in zip(ms, runs):
        kept = _metrics(r / "seen_removed" / "metrics.json", domain)
        if kept:
            m["seen_removed"] = kept["ndcg@10"]
    cols = _pool(old, ms)
    sha = old.get("sha256")
    if runs:
        sha = json.loads((runs[0] / "metrics.json").read_text())["dataset"][domain]["sha256"][:16]
    return first + len(runs), cols, sha


def table(out: Path) -> None:
    print(f"recorded {sync()} new result files in {RECORDS.relative_to(REPO)}")
    carried = _carried()
    lines = ["# Benchmarks", "",
             "Generated by `python scripts/benchmarks.py table` from the result files of "
             "`python scripts/benchmarks.py run` (and `scripts/reference_recbole.py` for RecBole's SASRec), "
             "recorded in `docs/benchmark-records/`. "
             "Leave-one-out by time, full ranking over every item of the domain, test split, mean ± std over seeds "
             "(n = seeds). Training early-stops on valid NDCG@10 under crossrec's default protocol (already-seen "
             "items stay in the ranking, as in RecBole's evaluation of sequential models); the column "
             "\"seen removed\" re-scores the same weights with `eval.exclude_seen=true`. "
             "Seconds per epoch are training only, "
             "one thread, on a shared 2-core CPU. Rows run before the records were kept come from "
             "`docs/benchmark-records/carried.json` (their means and deviations), pooled with any later seeds.", ""]
    recorded = {p.name for p in (RECORDS / "benchmarks").iterdir() if p.is_dir()} if (RECORDS / "benchmarks").is_dir() else set()
    for domain in sorted(recorded | set(carried["domains"])):
        lines += [f"## {domain}", "",
                  "| model | n | valid NDCG@10 | R@10 | NDCG@10 | NDCG@50 | NDCG@10 (seen removed) | best epoch | s/epoch |",
                  "|---|---|---|---|---|---|---|---|---|"]
        ref = _reference(domain, carried)
        if ref:
            lines.append(_row("RecBole 1.2.1 SASRec (reference)", *ref))
        shas: dict[str, list[str]] = {}
        for model, (label, _) in MODELS.items():
            if model in FUSION_ONLY:
                continue
            n, cols, sha = _model(domain, model, carried)
            if not n:
                continue
            shas.setdefault(sha, []).append(model)
            lines.append(_row(label, n, cols))
        data = _data(domain, carried)
        if shas and data:
            if len(shas) == 1:
                digest = f"sha256 `{next(iter(shas))}`"
            else:  # the same interactions, item text changed between runs (the fingerprint covers both)
                digest = "; ".join(f"sha256 `{h}` for {', '.join(ms)}" for h, ms in shas.items())
            lines += ["", f"Data: {data['users']:,} users, {data['items']:,} items, {data['interactions']:,} interactions, "
                          f"{digest}.", ""]
        lines += _side_by_side(domain) + _fusion(domain, carried)
    lines += _multimodal(carried) + _transfer(carried) + _genre_split(carried) + _preference(carried)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


def _data(domain: str, carried: dict) -> dict | None:
    for path in sorted((RECORDS / "benchmarks" / domain).glob("*/seed*/metrics.json")):
        return json.loads(path.read_text())["dataset"][domain]
    return carried["domains"].get(domain, {}).get("data")


def _carried_cells(row: str | None, k: int) -> tuple[int, list[Agg | None]]:
    """A carried Markdown row's n and its first ``k`` value cells (mean ± std) as aggregates."""
    if row is None:
        return 0, [None] * k
    cells = [c.strip() for c in row.strip().strip("|").split("|")]
    n = int(cells[1])
    values = [[float(x) for x in c.split(" ± ")] if c != "–" else None for c in cells[2:2 + k]]
    return n, [Agg(n, *v) if v else None for v in values]


def _section(carried: dict, title: str, rows: list[str], *head: str) -> list[str]:
    """Section ``title`` (``head``: its text and table header): the carried rows in their order, each
    replaced by the row of ``rows`` with the same first cell, then the other ``rows``; nothing when
    both are empty."""
    fresh = {r.split("|")[1].strip(): r for r in rows}
    old = carried["sections"].get(title, {}).get("rows", {})
    rows = [fresh.get(k, r) for k, r in old.items()] + [r for k, r in fresh.items() if k not in old]
    return [title, "", *head, *rows, ""] if rows else []


def _mean_epoch(epochs: list) -> str:
    """The mean best epoch over seeds, rounded ("–" when no seed has one)."""
    known = [e for e in epochs if e is not None]
    return str(round(sum(known) / len(known))) if known else "–"


def _transfer(carried: dict) -> list[str]:
    """Rows from ``crossrec transfer experiment=<name>`` run directories under
    outputs/transfer/<name>/seed<k> (target test: zero-shot, adapted, control, lift)."""
    root = RECORDS / "transfer"
    title = "## Transfer (`crossrec transfer experiment=<name>`)"
    rows = []
    for exp in sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        recs = [json.loads(f.read_text()) for f in sorted((root / exp).glob("seed*/metrics.json"))]
        recs = [r for r in recs if r.get("status") == "complete"]
        if not recs:
            continue

        def arm(r: dict, name: str) -> float | None:
            t = r["transfer"].get(name, {}).get("test")
            return None if t is None else t.get(r["target"], t).get("ndcg@10")

        cells = []
        for name in ("zero_shot", "adapted", "control"):
            vals = [v for v in (arm(r, name) for r in recs) if v is not None]
            cells.append(_fmt(vals) if vals else "–")
        lift = [r["lift"]["ndcg@10"] for r in recs if isinstance(r.get("lift"), dict) and "ndcg@10" in r["lift"]]
        epochs = " / ".join(_mean_epoch([r["phases"].get(p, {}).get("best_epoch") for r in recs])
                            for p in ("source", "adapted", "control"))
        name = f"`{exp.removesuffix('_dot')}`" + (" `model.score=dot`" if exp.endswith("_dot") else "")
        rows.append(f"| {name} ({recs[0]['source'][0]} -> {recs[0]['target']}) | {len(recs)} | " + " | ".join(cells)
                    + f" | {_pct(lift)} | {epochs} |")
    return _section(carried, title, rows,
            "Target test NDCG@10 of the model trained on the source only (zero-shot), then adapted on the target, "
            "and of a control trained on the target only; lift = adapted / control - 1. Untrained references on the "
            "target are in its table above.", "",
            "| experiment | n | zero-shot | adapted | control | lift | best epochs, mean over seeds (source / adapted / control) |",
            "|---|---|---|---|---|---|---|")


def _fusion(domain: str, carried: dict) -> list[str]:
    """The fusion grid of ``domain``: test NDCG@10 / R@10 and s/epoch per (features, method), over seeds."""
    cells: dict[tuple[str, str], tuple[int, dict[str, Agg]]] = {}
    for cell, model in FUSION_CELLS.items():
        n, cols, _ = _model(domain, model, carried)
        if n:
            cells[cell] = (n, cols)
    if not any(f != "text" for f, _ in cells):
        return []
    lines = [f"### {domain}: fusion (`fusion=<method> model.features=[...]`)", "",
             "Test NDCG@10 / Recall@10 (mean ± std over n seeds) and seconds per epoch, every cell with dot-product "
             "scores (`model.score=dot`, the default when the grid was run); `sum` is the model's own "
             "item tower (text + id summed), `gated` is what `fusion=kg` chooses.", "",
             "| features | " + " | ".join(FUSION_METHODS) + " |", "|---|" + "---|" * len(FUSION_METHODS)]
    for feats in FUSION_FEATURES:
        row = []
        for method in FUSION_METHODS:
            if (feats, method) not in cells:
                row.append("–")
                continue
            n, cols = cells[(feats, method)]
            row.append(f"{_fmt(cols.get('ndcg@10'))} / {_fmt(cols.get('recall@10'))}, "
                       f"{cols['seconds_per_epoch'].mean:.1f} s (n={n})")
        lines.append(f"| {feats.replace('_', ' + ')} | " + " | ".join(row) + " |")
    return lines + [""]


def _multimodal(carried: dict) -> list[str]:
    """Text fused with a per-item vector file (outputs/vectors/runs/<name>/seed<k>, made with
    scripts/make_item_vectors.py and the command in its docstring): test metrics and mean gates."""
    root = RECORDS / "vectors" / "runs"
    title = "## Multimodal: text + a per-item vector file (movies)"
    rows = []
    for run in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        recs = [json.loads(f.read_text()) for f in sorted(run.glob("seed*/metrics.json"))]
        recs = [r for r in recs if "test" in r]
        if not recs:
            continue
        dom = next(iter(recs[0]["test"]))
        gates = {f: statistics.mean(r["fusion_gates"][dom][f] for r in recs) for f in recs[0].get("fusion_gates", {}).get(dom, {})}
        rows.append(f"| {' + '.join(recs[0]['features'])}, {recs[0]['fusion']} | {len(recs)} "
                    f"| {_fmt([r['test'][dom]['ndcg@10'] for r in recs])} | {_fmt([r['test'][dom]['recall@10'] for r in recs])} "
                    f"| {', '.join(f'{f} {g:.2f}' for f, g in gates.items()) or '–'} "
                    f"| {statistics.mean(r['seconds_per_epoch'] for r in recs):.1f} |")
    return _section(carried, title, rows,
            "`python scripts/make_item_vectors.py`: ml-100k's genre indicators and scaled release year per movie, "
            "declared as `vectors: {meta: ...}` in a copy of the movies domain, fused with the item text "
            "(`'model.features=[text,vectors:meta]' fusion=gated model.score=dot`); compare with the dot-score text row "
            "of the movies table. Gates: each feature's mean gate over the catalogue, mean over seeds.", "",
            "| features, fusion | n | test NDCG@10 | test R@10 | mean gate | s/epoch |", "|---|---|---|---|---|---|")


def _pct(values: list[float]) -> str:
    """Relative changes as signed percentages (mean ± std over seeds)."""
    if not values:
        return "–"
    pct = [100 * v for v in values]
    return f"{pct[0]:+.1f} %" if len(pct) == 1 else f"{statistics.mean(pct):+.1f} ± {statistics.stdev(pct):.1f} %"


ALIGN_ROW = ", LM vectors of 'other' shifted to the training mean (`eval.zero_shot_align`)"
PRIOR_ROW = ", aligned + 2 x text_zeroshot (`eval.zero_shot_prior=2`): `crossrec evaluate`'s default"
AUTO_ROW = ", aligned + w x text_zeroshot, w chosen on the validation examples of 'other' (`eval.zero_shot_prior=auto`)"


def _genre_split(carried: dict) -> list[str]:
    """Zero-shot rows from scripts/zeroshot_genre_split.py (outputs/genre_split/runs)."""
    runs = RECORDS / "genre_split" / "runs"
    title = "## Zero-shot transfer: ml-100k 'action' -> 'other' genres"
    test = lambda p: json.loads(p.read_text())["test"]  # noqa: E731
    rows = []
    for base, label in (("popularity", "popularity"), ("text_zeroshot", "text_zeroshot (defaults: centred, recency 0.9)"),
                        ("text_zeroshot_raw", "text_zeroshot, raw LM vectors, recency 0.8 (the default before)")):
        if (runs / f"{base}_kept" / "metrics.json").is_file():
            t = test(runs / f"{base}_kept" / "metrics.json")["other"]
            rows.append(f"| {label} (untrained) | 1 | {t['ndcg@10']:.4f} | {t['recall@10']:.4f} | – |")
    groups: dict[str, list[tuple[int, Path, str]]] = {}
    for run in sorted(runs.glob("*_kept_s*")):
        name, seed, extra = re.fullmatch(r"(.*)_kept_s(\d+)(.*)", run.name).groups()
        label = f"trained: {name}{extra.replace('_', ' ', 1)}".replace("-", "=")
        for zero, suffix in (("zeroshot_other", ""), ("zeroshot_other_aligned", ALIGN_ROW),
                             ("zeroshot_other_prior", PRIOR_ROW), ("zeroshot_other_auto", AUTO_ROW)):
            if (run / zero / "metrics.json").is_file():
                groups.setdefault(label + suffix, []).append((int(seed), run, zero))
    old_rows = carried["sections"].get(title, {}).get("rows", {})
    for label in dict.fromkeys([*(k for k in old_rows if k.startswith("trained: ")), *groups]):
        n, old = _carried_cells(old_rows.get(label), 3)  # seeds 0..n-1 were carried
        rs = [(r, zero) for seed, r, zero in groups.get(label, []) if seed >= n]
        if not rs:
            continue  # the carried row stands as it is
        z = [test(r / zero / "metrics.json")["other"] for r, zero in rs]
        rs = [r for r, _ in rs]
        own = [test(r / "metrics.json")["action"]["ndcg@10"] for r in rs]
        cells = [Agg.of(v) + c if c else Agg.of(v) for v, c in zip(([m["ndcg@10"] for m in z], [m["recall@10"] for m in z], own), old)]
        rows.append(f"| {label} | {n + len(rs)} | " + " | ".join(map(str, cells)) + " |")
    return _section(carried, title, rows,
            "`python scripts/zeroshot_genre_split.py`: trained on action / adventure / sci-fi / thriller / war / crime "
            "movies, ranked on every other movie (no shared item); seen items kept. A trained row is the model alone "
            "(`eval.zero_shot_prior=0 eval.zero_shot_align=false`); \"shifted\": the LM vectors of `other` moved to "
            "the mean of `action`'s before the projection; \"aligned + 2 x text_zeroshot\": also the untrained text "
            "scorer's cosine twice in every logit, how `crossrec evaluate run=... domain=other` ranks a domain the run "
            "never saw.", "",
            "| model | n | other test NDCG@10 (zero-shot) | other test R@10 | action test NDCG@10 (in-domain) |",
            "|---|---|---|---|---|")


def _preference(carried: dict) -> list[str]:
    """Test AUC rows from scripts/bench_preference.py --out outputs/bench_preference.json."""
    title = "## Preference (bundled movies, test AUC)"
    path = RECORDS / "bench_preference.json"
    rows, header = [], carried["sections"].get(title, {}).get("header")
    if path.is_file():
        recs = json.loads(path.read_text())["rows"]
        sizes = sorted({r["train_n"] for r in recs if r["train_n"]})
        header = "| model | " + " | ".join(f"n={n}" if n else "zero-shot" for n in [0, *sizes]) + " |"
        zero = [r["auc"] for r in recs if r["train_n"] == 0]
        for model in sorted({r["model"] for r in recs if r["train_n"]}):
            cells = [_fmt([r["auc"] for r in recs if r["model"] == model and r["train_n"] == n]) for n in sizes]
            rows.append(f"| {model} | {_fmt(zero[:1])} | " + " | ".join(cells) + " |")
    return _section(carried, title, rows, "`python scripts/bench_preference.py`: like/dislike prediction, mean ± std "
                    "over seeds.", "", header or "", "|---|" + "---|" * ((header or "||").count("|") - 2))


def _row(label: str, n: int, cols: dict[str, Agg]) -> str:
    """One Markdown row from per-column aggregates over ``n`` seeds."""
    col = lambda k: _fmt(cols.get(k))  # noqa: E731
    timing = (f"{cols['best_epoch'].mean:.0f} | {cols['seconds_per_epoch'].mean:.1f}"
              if "best_epoch" in cols and "seconds_per_epoch" in cols else "– | –")
    return (f"| {label} | {n} | {col('valid_ndcg@10')} | {col('recall@10')} | {col('ndcg@10')} "
            f"| {col('ndcg@50')} | {col('seen_removed')} | {timing} |")


def _reference_runs(domain: str) -> list[dict]:
    """RecBole runs (one per seed) from every scripts/reference_recbole.py JSON of ``domain`` with
    seen items kept (``<domain>.json`` and e.g. ``<domain>.recbole_seed1.json`` from a run per seed)."""
    by_seed: dict[int, dict] = {}
    for path in sorted((RECORDS / "reference").glob(f"{domain}*.json")):
        ref = json.loads(path.read_text())
        if ref.get("domain") != domain or ref.get("exclude_seen"):
            continue
        for r in ref.get("runs", []):
            if r.get("tool") == "recbole":
                by_seed.setdefault(int(r["seed"]), r)
    return [by_seed[k] for k in sorted(by_seed)]


def _side_by_side(domain: str) -> list[str]:
    """Per seed that scripts/reference_recbole.py ran for both tools: RecBole's and crossrec's valid / test NDCG@10, the relative test gap, s/epoch and best epoch."""
    path = RECORDS / "reference" / f"{domain}.json"
    ref = json.loads(path.read_text()) if path.is_file() else {}
    by = {(r["tool"], int(r["seed"])): r for r in ref.get("runs", [])}
    seeds = sorted(k for t, k in by if t == "recbole" and ("crossrec", k) in by)
    if ref.get("exclude_seen") or not seeds:
        return []
    lines = [f"### {domain}: RecBole and crossrec side by side (`scripts/reference_recbole.py --domain {domain}`)", "",
             f"Each seed runs RecBole 1.2.1's SASRec (its defaults) and `crossrec finetune "
             f"{' '.join(ref['crossrec_overrides'])}` on the same split (data sha256 "
             f"`{ref['dataset']['sha256'][:16]}`), one thread each; gap = crossrec / RecBole - 1 on test NDCG@10. "
             "Seconds per epoch are wall time on a shared 2-core CPU: they grow with the jobs running alongside "
             "(a seed's two tools, or several seeds, may run at once), so compare them within a row.", "",
             "| seed | RecBole valid / test NDCG@10 | crossrec valid / test NDCG@10 | gap | s/epoch RecBole / crossrec "
             "| best epoch RecBole / crossrec |", "|---|---|---|---|---|---|"]
    for k in seeds:
        rb, cr = by[("recbole", k)], by[("crossrec", k)]
        gap = cr["test"]["ndcg@10"] / rb["test"]["ndcg@10"] - 1
        lines.append(f"| {k} | {rb['valid']['ndcg@10']:.4f} / {rb['test']['ndcg@10']:.4f} "
                     f"| {cr['valid']['ndcg@10']:.4f} / {cr['test']['ndcg@10']:.4f} | {gap:+.1%} "
                     f"| {rb['seconds_per_epoch']:.1f} / {cr['seconds_per_epoch']:.1f} | {rb['best_epoch']} / {cr['best_epoch']} |")
    if len(seeds) > 1:
        mean = lambda tool, part: Agg.of([by[(tool, k)][part]["ndcg@10"] for k in seeds])  # noqa: E731
        lines.append(f"| mean ± std (n={len(seeds)}) | {mean('recbole', 'valid')} / {mean('recbole', 'test')} "
                     f"| {mean('crossrec', 'valid')} / {mean('crossrec', 'test')} "
                     f"| {mean('crossrec', 'test').mean / mean('recbole', 'test').mean - 1:+.1%} | | |")
    return lines + [""]


def _reference(domain: str, carried: dict) -> tuple[int, dict[str, Agg]] | None:
    """RecBole's SASRec: carried seeds 0..n-1 pooled with scripts/reference_recbole.py's later seeds;
    once that script's records hold seeds 0..n-1 themselves, its records alone."""
    old = carried["domains"].get(domain, {}).get("models", {}).get("reference", {})
    first = old.get("n", 0)
    runs = _reference_runs(domain)
    if {int(r["seed"]) for r in runs} >= set(range(first)):
        old, first = {}, 0
    runs = [r for r in runs if int(r["seed"]) >= first]
    tests = [r.get("test", {}) | {"best_epoch": r.get("best_epoch"), "seconds_per_epoch": r.get("seconds_per_epoch"),
                                  "valid_ndcg@10": r.get("valid", {}).get("ndcg@10")} for r in runs]
    return (first + len(runs), _pool(old, tests)) if first + len(runs) else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["run", "table"])
    ap.add_argument("--domains", default="movies,music")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--out", default=str(REPO / "docs" / "benchmarks.md"))
    ap.add_argument("--jobs", type=int, default=1, help="runs at once, one thread each (2 cores: 2)")
    a = ap.parse_args()
    if a.action == "run":
        runs = [(model, domain, int(seed)) for domain in a.domains.split(",") for seed in a.seeds.split(",")
                for model in a.models.split(",")]
        with ThreadPoolExecutor(a.jobs) as pool:
            list(pool.map(lambda r: run_one(*r), runs))
    table(Path(a.out))


if __name__ == "__main__":
    main()
