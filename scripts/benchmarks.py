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
`table` reads those run directories, and outputs/reference/<domain>.json written by
`scripts/reference_recbole.py` (RecBole's SASRec on the same split), and writes a Markdown table
of test Recall@10 / NDCG@10 / NDCG@50, mean ± std over seeds. Each training job runs with
OMP_NUM_THREADS=1 so that seconds per epoch compare across rows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "crossrec")
ROOT = REPO / "outputs" / "benchmarks"

DOT = "model.score=dot"
# name -> (label, command and overrides); every row runs under the same protocol
MODELS: dict[str, tuple[str, list[str]]] = {
    "popularity": ("popularity", ["evaluate", "model=popularity"]),
    "text_zeroshot": ("text zero-shot (MiniLM, untrained; defaults: centred, recency 0.9)",
                      ["evaluate", "model=text_zeroshot", "backbone=minilm"]),
    "text_zeroshot_raw": ("text zero-shot, raw LM vectors `model.text_norm=none model.recency=0.8` (the default before)",
                          ["evaluate", "model=text_zeroshot", "backbone=minilm", "model.text_norm=none",
                           "model.recency=0.8"]),
    "sasrec": ("SASRec (ids) `experiment=sasrec`", ["finetune", "experiment=sasrec"]),
    "sasrec_stride10": ("SASRec, overlapping windows `trainer.window_stride=10`",
                        ["finetune", "experiment=sasrec", "trainer.window_stride=10"]),
    "sasrec_stride10_b256": ("SASRec, `trainer.window_stride=10 trainer.batch_size=256`",
                             ["finetune", "experiment=sasrec", "trainer.window_stride=10", "trainer.batch_size=256"]),
    "text_cosine": ("frozen MiniLM + towers (defaults: `model.score=auto`, cosine for text)", ["finetune"]),
    "text_center_cosine": ("frozen MiniLM + towers, centred LM vectors `model.text_norm=center` (cosine)",
                           ["finetune", "model.text_norm=center"]),
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
        if (out / "metrics.json").is_file():  # interrupted: continue it exactly
            cmd.append(f"resume={out}")
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
        print(f"{domain} {model} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
    if not (out / "seen_removed" / "metrics.json").is_file():
        again = [f"run={out}"] if args_train(model) else [*MODELS[model][1][1:], f"domain={domain}"]
        subprocess.run([CLI, "evaluate", *again, "eval.exclude_seen=true", f"hydra.run.dir={out / 'seen_removed'}"],
                       check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return out


def args_train(model: str) -> bool:
    return MODELS[model][1][0] == "finetune"


def _metrics(path: Path, domain: str) -> dict | None:
    if not path.is_file():
        return None
    m = json.loads(path.read_text())
    if "test" not in m:  # interrupted
        return None
    return m["test"][domain] | {"seconds_per_epoch": m.get("seconds_per_epoch"), "best_epoch": m.get("best_epoch"),
                                "valid_ndcg@10": m["valid"][domain].get("ndcg@10")}


def _fmt(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def table(out: Path) -> None:
    lines = ["# Benchmarks", "",
             "Generated by `python scripts/benchmarks.py table` from the run directories of "
             "`python scripts/benchmarks.py run` (and `scripts/reference_recbole.py` for RecBole's SASRec). "
             "Leave-one-out by time, full ranking over every item of the domain, test split, mean ± std over seeds "
             "(n = seeds). Training early-stops on valid NDCG@10 under crossrec's default protocol (already-seen "
             "items stay in the ranking, as in RecBole's evaluation of sequential models); the column "
             "\"seen removed\" re-scores the same weights with `eval.exclude_seen=true`. "
             "Seconds per epoch are training only, "
             "one thread, on a shared 2-core CPU.", ""]
    for domain in sorted(p.name for p in ROOT.iterdir() if p.is_dir()) if ROOT.is_dir() else []:
        fp = None
        lines += [f"## {domain}", "",
                  "| model | n | valid NDCG@10 | R@10 | NDCG@10 | NDCG@50 | NDCG@10 (seen removed) | best epoch | s/epoch |",
                  "|---|---|---|---|---|---|---|---|---|"]
        ref = _reference_runs(domain)
        if ref:
            lines.append(_reference_row(ref))
        shas: dict[str, list[str]] = {}
        for model, (label, _) in MODELS.items():
            if model in FUSION_ONLY:
                continue
            runs = sorted((ROOT / domain / model).glob("seed*"))
            ms = [m for m in (_metrics(r / "metrics.json", domain) for r in runs) if m]
            if not ms:
                continue
            fp = json.loads((runs[0] / "metrics.json").read_text())["dataset"][domain]
            shas.setdefault(fp["sha256"][:16], []).append(model)
            kept = [m["ndcg@10"] for m in (_metrics(r / "seen_removed" / "metrics.json", domain) for r in runs) if m]
            lines.append(_row(label, [m["valid_ndcg@10"] for m in ms], ms, kept))
        if fp:
            if len(shas) == 1:
                digest = f"sha256 `{next(iter(shas))}`"
            else:  # the same interactions, item text changed between runs (the fingerprint covers both)
                digest = "; ".join(f"sha256 `{h}` for {', '.join(ms)}" for h, ms in shas.items())
            lines += ["", f"Data: {fp['users']:,} users, {fp['items']:,} items, {fp['interactions']:,} interactions, "
                          f"{digest}.", ""]
        lines += _fusion(domain)
    lines += _multimodal() + _transfer() + _genre_split() + _preference()
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


def _transfer() -> list[str]:
    """Rows from ``crossrec transfer experiment=<name>`` run directories under
    outputs/transfer/<name>/seed<k> (target test: zero-shot, adapted, control, lift)."""
    root = REPO / "outputs" / "transfer"
    if not root.is_dir():
        return []
    lines = ["## Transfer (`crossrec transfer experiment=<name>`)", "",
             "Target test NDCG@10 of the model trained on the source only (zero-shot), then adapted on the target, "
             "and of a control trained on the target only; lift = adapted / control - 1. Untrained references on the "
             "target are in its table above.", "",
             "| experiment | n | zero-shot | adapted | control | lift | best epochs (source / adapted / control) |",
             "|---|---|---|---|---|---|---|"]
    for exp in sorted(p.name for p in root.iterdir() if p.is_dir()):
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
        epochs = " / ".join(str(recs[0]["phases"].get(p, {}).get("best_epoch", "–")) for p in ("source", "adapted", "control"))
        name = f"`{exp.removesuffix('_dot')}`" + (" `model.score=dot`" if exp.endswith("_dot") else "")
        lines.append(f"| {name} ({recs[0]['source'][0]} -> {recs[0]['target']}) | {len(recs)} | " + " | ".join(cells)
                     + f" | {_pct(lift)} | {epochs} |")
    return lines + [""]


def _fusion(domain: str) -> list[str]:
    """The fusion grid of ``domain``: test NDCG@10 / R@10 and s/epoch per (features, method), over seeds."""
    cells: dict[tuple[str, str], list[dict]] = {}
    for cell, model in FUSION_CELLS.items():
        ms = [m for m in (_metrics(r / "metrics.json", domain) for r in sorted((ROOT / domain / model).glob("seed*"))) if m]
        if ms:
            cells[cell] = ms
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
            ms = cells.get((feats, method))
            row.append("–" if not ms else
                       f"{_fmt([m['ndcg@10'] for m in ms])} / {_fmt([m['recall@10'] for m in ms])}, "
                       f"{statistics.mean(m['seconds_per_epoch'] for m in ms):.1f} s (n={len(ms)})")
        lines.append(f"| {feats.replace('_', ' + ')} | " + " | ".join(row) + " |")
    return lines + [""]


def _multimodal() -> list[str]:
    """Text fused with a per-item vector file (outputs/vectors/runs/<name>/seed<k>, made with
    scripts/make_item_vectors.py and the command in its docstring): test metrics and mean gates."""
    root = REPO / "outputs" / "vectors" / "runs"
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
    if not rows:
        return []
    return ["## Multimodal: text + a per-item vector file (movies)", "",
            "`python scripts/make_item_vectors.py`: ml-100k's genre indicators and scaled release year per movie, "
            "declared as `vectors: {meta: ...}` in a copy of the movies domain, fused with the item text "
            "(`'model.features=[text,vectors:meta]' fusion=gated model.score=dot`); compare with the dot-score text row "
            "of the movies table. Gates: each feature's mean gate over the catalogue, mean over seeds.", "",
            "| features, fusion | n | test NDCG@10 | test R@10 | mean gate | s/epoch |", "|---|---|---|---|---|---|",
            *rows, ""]


def _pct(values: list[float]) -> str:
    """Relative changes as signed percentages (mean ± std over seeds)."""
    if not values:
        return "–"
    pct = [100 * v for v in values]
    return f"{pct[0]:+.1f} %" if len(pct) == 1 else f"{statistics.mean(pct):+.1f} ± {statistics.stdev(pct):.1f} %"


def _genre_split() -> list[str]:
    """Zero-shot rows from scripts/zeroshot_genre_split.py (outputs/genre_split/runs)."""
    runs = REPO / "outputs" / "genre_split" / "runs"
    if not runs.is_dir():
        return []
    test = lambda p: json.loads(p.read_text())["test"]  # noqa: E731
    lines = ["## Zero-shot transfer: ml-100k 'action' -> 'other' genres", "",
             "`python scripts/zeroshot_genre_split.py`: trained on action / adventure / sci-fi / thriller / war / crime "
             "movies, ranked on every other movie (no shared item); seen items kept.", "",
             "| model | n | other test NDCG@10 (zero-shot) | other test R@10 | action test NDCG@10 (in-domain) |",
             "|---|---|---|---|---|"]
    for base, label in (("popularity", "popularity"), ("text_zeroshot", "text_zeroshot (defaults: centred, recency 0.9)"),
                        ("text_zeroshot_raw", "text_zeroshot, raw LM vectors, recency 0.8 (the default before)")):
        if (runs / f"{base}_kept" / "metrics.json").is_file():
            t = test(runs / f"{base}_kept" / "metrics.json")["other"]
            lines.append(f"| {label} (untrained) | 1 | {t['ndcg@10']:.4f} | {t['recall@10']:.4f} | – |")
    groups: dict[str, list[Path]] = {}
    for run in sorted(runs.glob("*_kept_s*")):
        if (run / "zeroshot_other" / "metrics.json").is_file():
            name, _, rest = run.name.partition("_kept_s")
            groups.setdefault(name + rest[1:].replace("_", " ", 1), []).append(run)
    for label, rs in groups.items():
        z = [test(r / "zeroshot_other" / "metrics.json")["other"] for r in rs]
        own = [test(r / "metrics.json")["action"]["ndcg@10"] for r in rs]
        lines.append(f"| trained: {label.strip().replace('-', '=')} | {len(rs)} | {_fmt([m['ndcg@10'] for m in z])} "
                     f"| {_fmt([m['recall@10'] for m in z])} | {_fmt(own)} |")
    return lines + [""]


def _preference() -> list[str]:
    """Test AUC rows from scripts/bench_preference.py --out outputs/bench_preference.json."""
    path = REPO / "outputs" / "bench_preference.json"
    if not path.is_file():
        return []
    rows = json.loads(path.read_text())["rows"]
    sizes = sorted({r["train_n"] for r in rows if r["train_n"]})
    lines = ["## Preference (bundled movies, test AUC)", "",
             "`python scripts/bench_preference.py`: like/dislike prediction, mean ± std over seeds.", "",
             "| model | " + " | ".join(f"n={n}" if n else "zero-shot" for n in [0, *sizes]) + " |",
             "|---|" + "---|" * (len(sizes) + 1)]
    zero = [r["auc"] for r in rows if r["train_n"] == 0]
    for model in sorted({r["model"] for r in rows if r["train_n"]}):
        cells = [_fmt([r["auc"] for r in rows if r["model"] == model and r["train_n"] == n]) for n in sizes]
        lines.append(f"| {model} | {_fmt(zero[:1])} | " + " | ".join(cells) + " |")
    return lines + [""]


def _row(label: str, valid_ndcg: list[float], tests: list[dict], seen_removed: list[float]) -> str:
    """One Markdown row; ``tests`` are per-seed test metrics with best_epoch / seconds_per_epoch."""
    col = lambda k: _fmt([t[k] for t in tests if k in t])  # noqa: E731
    epochs = [t["best_epoch"] for t in tests if t.get("best_epoch")]
    secs = [t["seconds_per_epoch"] for t in tests if t.get("seconds_per_epoch")]
    timing = f"{statistics.mean(epochs):.0f} | {statistics.mean(secs):.1f}" if epochs and secs else "– | –"
    return (f"| {label} | {len(tests)} | {_fmt(valid_ndcg)} | {col('recall@10')} | {col('ndcg@10')} "
            f"| {col('ndcg@50')} | {_fmt(seen_removed)} | {timing} |")


def _reference_runs(domain: str) -> list[dict]:
    """RecBole runs (one per seed) from every scripts/reference_recbole.py JSON of ``domain`` with
    seen items kept (``<domain>.json`` and e.g. ``<domain>.recbole_seed1.json`` from a run per seed)."""
    by_seed: dict[int, dict] = {}
    for path in sorted((REPO / "outputs" / "reference").glob(f"{domain}*.json")):
        ref = json.loads(path.read_text())
        if ref.get("domain") != domain or ref.get("exclude_seen"):
            continue
        for r in ref.get("runs", []):
            if r.get("tool") == "recbole":
                by_seed.setdefault(int(r["seed"]), r)
    return [by_seed[k] for k in sorted(by_seed)]


def _reference_row(runs: list[dict]) -> str:
    """RecBole's SASRec row from scripts/reference_recbole.py's runs (per-seed test metrics)."""
    tests = [r.get("test", {}) | {"best_epoch": r.get("best_epoch"), "seconds_per_epoch": r.get("seconds_per_epoch")}
             for r in runs]
    valid = [r["valid"]["ndcg@10"] for r in runs if "ndcg@10" in r.get("valid", {})]
    return _row("RecBole 1.2.1 SASRec (reference)", valid, tests, [])


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
