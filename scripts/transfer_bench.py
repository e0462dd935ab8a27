#!/usr/bin/env python3
"""The transfer table of docs/transfer.md: the arms of scripts/transfer_arms.yaml, seeds.

    python scripts/transfer_bench.py run [--food-kitchen DIR] [--arms a,b] [--seeds 0,1,2] [--jobs 2]
    python scripts/transfer_bench.py table

`run` executes each arm's steps (crossrec command lines, nothing else) into
outputs/transfer-bench/<arm>/seed<k>/<step>/ and copies each step's metrics.json into
docs/transfer-records/<arm>/seed<k>/<step>.json (committed). A step whose metrics.json exists is
skipped; an interrupted training step resumes (resume=true), so the command can be repeated.
With --jobs N, N (arm, seed) units run side by side, each with OMP_NUM_THREADS=1; a unit that
reads another arm's run waits for it. `table` writes docs/transfer.md's tables and plot from the
records alone: a fresh checkout regenerates them without the data or a run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "crossrec")
ROOT = REPO / "outputs" / "transfer-bench"
RECORDS = REPO / "docs" / "transfer-records"
ARMS = Path(__file__).with_name("transfer_arms.yaml")
REF = re.compile(r"\{run:([a-z0-9_]+):([a-z0-9_]+)\}")


def plan() -> dict[str, dict]:
    """Every arm of every benchmark of transfer_arms.yaml, each with its benchmark's overrides."""
    arms: dict[str, dict] = {}
    for name, bench in yaml.safe_load(ARMS.read_text()).items():
        for arm, body in bench["arms"].items():
            if arm in arms:
                raise SystemExit(f"{ARMS}: arm {arm!r} is in two benchmarks")
            arms[arm] = {**body, "overrides": list(bench.get("overrides") or []), "benchmark": name}
    return arms


def run_dir(arm: str, seed: int, step: str, arms: dict) -> Path:
    return ROOT / arm / (f"seed{seed}" if arms[arm].get("seeded", True) else "once") / step


def record_path(arm: str, seed: int, step: str, arms: dict) -> Path:
    return RECORDS / arm / (f"seed{seed}" if arms[arm].get("seeded", True) else "once") / f"{step}.json"


def command(arm: str, step: str, seed: int, data: str | None, arms: dict) -> list[str]:
    def fill(text: str) -> str:
        text = REF.sub(lambda m: str(run_dir(m.group(1), seed, m.group(2), arms)), text)
        return text.format(seed=seed, data=data, repo=REPO)

    args = [fill(a) for a in arms[arm]["steps"][step]]
    quiet = ["progress=false"] if args[0] in ("finetune", "transfer", "pretrain") else []  # no bars in a log file
    return [CLI, *args, *(fill(o) for o in arms[arm]["overrides"]), *quiet]


def run_unit(arm: str, seed: int, data: str | None, arms: dict, env: dict, done: dict) -> None:
    for dep in {m.group(1) for s in arms[arm]["steps"].values() for a in s for m in REF.finditer(a)} - {arm}:
        done[(dep, seed)].wait()
    for step in arms[arm]["steps"]:
        out = run_dir(arm, seed, step, arms)
        if not (out / "metrics.json").is_file() or json.loads((out / "metrics.json").read_text()).get("status") == "interrupted":
            cmd = command(arm, step, seed, data, arms) + [f"hydra.run.dir={out}"]
            if (out / "config.yaml").is_file():  # started before: a training step continues, any other starts again
                cmd.append("resume=true" if cmd[1] in ("finetune", "transfer", "pretrain") else "overwrite=true")
            out.mkdir(parents=True, exist_ok=True)
            print(f"[{arm} seed {seed}] {step}: {' '.join(cmd[1:])}", flush=True)
            with open(out.parent / f"{step}.out", "w") as log:
                rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
            if rc != 0:
                print(f"[{arm} seed {seed}] {step} exited {rc}: see {out.parent / f'{step}.out'}", flush=True)
                done[(arm, seed)].set()
                return
        dest = record_path(arm, seed, step, arms)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "metrics.json", dest)
    done[(arm, seed)].set()


def run(args: argparse.Namespace) -> None:
    arms = plan()
    chosen = args.arms.split(",") if args.arms else list(arms)
    unknown = [a for a in chosen if a not in arms]
    if unknown:
        raise SystemExit(f"--arms: {', '.join(unknown)} not in {ARMS.name} (arms: {', '.join(arms)})")
    needs = sorted({arms[a]["benchmark"] for a in chosen if "{data}" in " ".join(arms[a]["overrides"])})
    if needs and not args.food_kitchen:
        raise SystemExit(f"--food-kitchen: the arms of {', '.join(needs)} read the benchmark's folder; pass it")
    seeds = [int(s) for s in args.seeds.split(",")]
    units = [(a, s) for s in seeds for a in chosen if arms[a].get("seeded", True) or s == seeds[0]]
    done = {(a, s): threading.Event() for a in arms for s in seeds}
    for a, s in done:  # an arm not run now counts as done (its runs are on disk, or the step fails in one line)
        if (a, s) not in units:
            done[(a, s)].set()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1" if args.jobs > 1 else "2")}
    with ThreadPoolExecutor(args.jobs) as pool:
        for f in [pool.submit(run_unit, a, s, args.food_kitchen, arms, env, done) for a, s in units]:
            f.result()
    table(args)


# ---- the table -------------------------------------------------------------------------------

def records() -> dict[tuple[str, str], list[dict]]:
    """(arm, step) -> every seed's metrics record."""
    out: dict[tuple[str, str], list[dict]] = {}
    for path in sorted(RECORDS.glob("*/*/*.json")):
        out.setdefault((path.parts[-3], path.stem), []).append(json.loads(path.read_text()))
    return out


def cell(recs: list[dict], domain: str, metric: str, part: str = "test", where: str | None = None) -> str:
    vals = []
    for r in recs:
        src = r["transfer"][where] if where else r
        if domain in src.get(part, {}) and metric in src[part][domain]:
            vals.append(src[part][domain][metric])
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.4f} (n=1)"
    return f"{statistics.mean(vals):.4f} ± {statistics.stdev(vals):.4f} (n={len(vals)})"


ROWS = [  # (label, arm, step, where in a transfer record)
    ("popularity", "popularity", "full", None),
    ("untrained text scorer (`model=text_zeroshot`, MiniLM)", "text_zeroshot", "full", None),
    ("Food model, single-domain histories (defaults)", "food", "full", None),
    ("Food model, mixed histories (`context=kitchen`)", "food_mixed", "full", None),
    ("Food model, `experiment=lm_space`", "food_lm_space", "full", None),
    ("Food model, `experiment=lm_space model.readout=pool`", "food_lm_pool", "full", None),
    ("Food model, `experiment=lm_space`, mixed histories", "food_lm_space_mixed", "full", None),
    ("Food model, `experiment=lm_space model.readout=pool model.general_loss=1`", "food_lm_general", "full", None),
    ("Food model, the same with `model.general_items=plain`", "food_lm_plain", "full", None),
    ("Food model, UniSRec's pre-training (`experiment=unisrec_pretrain`)", "food_unisrec", "full", None),
    ("Kitchen model, single-domain histories (`trainer.loss=sampled_logq`)", "kitchen", "full", None),
    ("Kitchen model, single-domain histories, full softmax (`trainer.loss=full`)", "kitchen_full", "full", None),
    ("Kitchen model, mixed histories (`context=food`, `trainer.loss=sampled_logq`)", "kitchen_mixed", "full", None),
]
PUBLISHED = [(label, arm, "published", None) for label, arm, _, _ in ROWS]
ZERO_SHOT = [
    ("untrained text scorer", "text_zeroshot", "full", None),
    ("untrained text scorer, the recency Food's validation picks (below)", "text_recency", "food_pick", None),
    ("Food model (defaults) alone", "food", "to_kitchen_alone", None),
    ("Food model (defaults) as shipped (+ 2 x text scorer, aligned)", "food", "to_kitchen_shipped", None),
    ("Food model `experiment=lm_space` alone", "food_lm_space", "to_kitchen_alone", None),
    ("Food model `experiment=lm_space` as shipped", "food_lm_space", "to_kitchen_shipped", None),
    ("Food model `experiment=lm_space model.readout=pool` alone", "food_lm_pool", "to_kitchen_alone", None),
    ("Food model `experiment=lm_space model.readout=pool` as shipped", "food_lm_pool", "to_kitchen_shipped", None),
    ("Food model `lm_space`, pool, `general_loss=1` alone", "food_lm_general", "to_kitchen_alone", None),
    ("Food model `lm_space`, pool, `general_loss=1` as shipped", "food_lm_general", "to_kitchen_shipped", None),
    ("Food model `lm_space`, pool, `general_loss=1`, `general_items=plain` alone", "food_lm_plain", "to_kitchen_alone",
     None),
    ("Food model `lm_space`, pool, `general_loss=1`, `general_items=plain` as shipped", "food_lm_plain",
     "to_kitchen_shipped", None),
    ("Food model `experiment=unisrec_pretrain` alone", "food_unisrec", "to_kitchen_alone", None),
]
ZERO_SHOT_FOOD = [
    ("untrained text scorer", "text_zeroshot", "full", None),
    ("Kitchen model (`trainer.loss=sampled_logq`) alone", "kitchen", "to_food_alone", None),
    ("Kitchen model (`trainer.loss=sampled_logq`) as shipped", "kitchen", "to_food_shipped", None),
]
ZERO_SHOT_FOOD_ALL = [("untrained text scorer", "text_zeroshot", "all", None),
                      ("Kitchen model (`trainer.loss=sampled_logq`) alone", "kitchen", "to_food_all_alone", None),
                      ("Kitchen model (`trainer.loss=sampled_logq`) as shipped", "kitchen", "to_food_all_shipped", None)]
# the same rows on every Kitchen user (eval.test_users=all): the steps of the same arms that rank them
ZERO_SHOT_ALL = [(label, "text_recency_all" if arm == "text_recency" else arm,
                  "all" if step == "full" else step.replace("to_kitchen_", "to_kitchen_all_"), where)
                 for label, arm, step, where in ZERO_SHOT]
FEW_SHOT = [
    ("10 % of Kitchen users, from scratch (control)", "kitchen_10pct_from_food", "full", "control"),
    ("10 % of Kitchen users, from the Food model (`transfer init_from=`)", "kitchen_10pct_from_food", "full", "adapted"),
    ("1 % of Kitchen users, from scratch (control)", "kitchen_1pct_from_food", "full", "control"),
    ("1 % of Kitchen users, from the Food model", "kitchen_1pct_from_food", "full", "adapted"),
    ("10 % of Kitchen users, UniSRec from scratch (`experiment=unisrec_finetune`, every part trains)",
     "kitchen_10pct_unisrec", "full", "control"),
    ("10 % of Kitchen users, UniSRec pre-trained on Food, its MoE adaptor fine-tuned (`freeze=[user]`)",
     "kitchen_10pct_unisrec", "full", "adapted"),
]
FEW_SHOT_FOOD = [
    ("10 % of Food users, from scratch (control)", "food_10pct_from_kitchen", "full", "control"),
    ("10 % of Food users, from the Kitchen model (`transfer init_from=`)", "food_10pct_from_kitchen", "full", "adapted"),
]
# time to quality: (label, arm) pairs of one domain's runs that differ in how they train, the first the reference
SPEED = [("kitchen", [("full softmax (`trainer.loss=full`)", "kitchen_full"),
                      ("sampled, logQ-corrected (`trainer.loss=sampled_logq`)", "kitchen")])]

MOVIES_MUSIC = [
    ("popularity", "mm_popularity", "full", None),
    ("untrained text scorer (`model=text_zeroshot`, MiniLM)", "mm_text_zeroshot", "full", None),
    ("movies model (defaults), on movies", "movies", "full", None),
    ("music model (defaults), on music", "music", "full", None),
    ("movies model `experiment=lm_space`, on movies", "movies_lm_space", "full", None),
    ("music model `experiment=lm_space`, on music", "music_lm_space", "full", None),
    ("movies model `lm_space`, pool, `general_loss=1`, on movies", "movies_lm_general", "full", None),
    ("music model `lm_space`, pool, `general_loss=1`, on music", "music_lm_general", "full", None),
    ("zero-shot: movies model (defaults) alone, on music", "movies", "to_music_alone", None),
    ("zero-shot: movies model (defaults) as shipped, on music", "movies", "to_music_shipped", None),
    ("zero-shot: music model (defaults) alone, on movies", "music", "to_movies_alone", None),
    ("zero-shot: music model (defaults) as shipped, on movies", "music", "to_movies_shipped", None),
    ("zero-shot: movies model `lm_space` alone, on music", "movies_lm_space", "to_music_alone", None),
    ("zero-shot: movies model `lm_space` as shipped, on music", "movies_lm_space", "to_music_shipped", None),
    ("zero-shot: music model `lm_space` alone, on movies", "music_lm_space", "to_movies_alone", None),
    ("zero-shot: music model `lm_space` as shipped, on movies", "music_lm_space", "to_movies_shipped", None),
    ("zero-shot: movies model `lm_space`, pool, `general_loss=1` alone, on music", "movies_lm_general", "to_music_alone", None),
    ("zero-shot: movies model `lm_space`, pool, `general_loss=1` as shipped, on music", "movies_lm_general",
     "to_music_shipped", None),
    ("zero-shot: music model `lm_space`, pool, `general_loss=1` alone, on movies", "music_lm_general", "to_movies_alone", None),
    ("zero-shot: music model `lm_space`, pool, `general_loss=1` as shipped, on movies", "music_lm_general",
     "to_movies_shipped", None),
    ("10 % of music users, from scratch (control)", "music_10pct_from_movies", "full", "control"),
    ("10 % of music users, from the movies model", "music_10pct_from_movies", "full", "adapted"),
    ("10 % of movies users, from scratch (control)", "movies_10pct_from_music", "full", "control"),
    ("10 % of movies users, from the music model", "movies_10pct_from_music", "full", "adapted"),
    ("1 % of music users, from scratch (control)", "music_1pct_from_movies", "full", "control"),
    ("1 % of music users, from the movies model", "music_1pct_from_movies", "full", "adapted"),
    ("1 % of movies users, from scratch (control)", "movies_1pct_from_music", "full", "control"),
    ("1 % of movies users, from the music model", "movies_1pct_from_music", "full", "adapted"),
    ("movies model, UniSRec's pre-training (`experiment=unisrec_pretrain`), on movies", "movies_unisrec", "full", None),
    ("zero-shot: movies model `unisrec_pretrain` alone, on music", "movies_unisrec", "to_music_alone", None),
    ("10 % of music users, UniSRec from scratch (`experiment=unisrec_finetune`, every part trains)",
     "music_10pct_unisrec", "full", "control"),
    ("10 % of music users, UniSRec pre-trained on movies, its MoE adaptor fine-tuned (`freeze=[user]`)",
     "music_10pct_unisrec", "full", "adapted"),
]

# docs/transfer-share.png: NDCG@10 against the share of the target's training users, per
# (target, source): the few-shot arms at each share ("<target>_<n>pct_from_<source>"), the
# target's own model at 100 %, the source model alone at 0 (zero-shot), the untrained text scorer
SHARES = [("kitchen", "food", "text_zeroshot"), ("food", "kitchen", "text_zeroshot"), ("music", "movies", "mm_text_zeroshot"),
          ("movies", "music", "mm_text_zeroshot")]
PLOT = REPO / "docs" / "transfer-share.png"


def section(title: str, rows: list, recs: dict, domains: list[str], metrics: list[str]) -> list[str]:
    head = [f"### {title}", "", "| scorer | " + " | ".join(f"{d} {m}" for d in domains for m in metrics) + " |",
            "|---|" + "---|" * (len(domains) * len(metrics))]
    for label, arm, step, where in rows:
        got = recs.get((arm, step))
        if not got:
            continue
        head.append(f"| {label} | " + " | ".join(cell(got, d, m, where=where) for d in domains for m in metrics) + " |")
    if len(head) == 4:  # no row has records yet
        return []
    return head + [""]


INTRO = """# Transfer across domains

What a model learns in one domain, measured on another, on real Amazon cross-domain data:
LLMCDSR's Food-Kitchen benchmark (`format: cdsr`, `docs/domains/food-kitchen/`; Amazon review data,
research use only, not shipped: bring your own copy). Every figure below is a test-split figure
regenerated by `python scripts/transfer_bench.py table` from the per-seed records in
`docs/transfer-records/`; `python scripts/transfer_bench.py run --food-kitchen DIR` runs the arms of
`scripts/transfer_arms.yaml` (crossrec command lines, nothing else). Frozen MiniLM, default
settings unless an arm says otherwise; mean ± standard deviation over seeds (n = seeds).

The benchmark, as published: Grocery & Gourmet Food (A, 8,661 items) and Home & Kitchen (B,
27,637 items); 5,472 Food-only, 38,191 Kitchen-only and 7,501 overlapping training users, one
time-ordered line each (the overlapping users' lines mix both domains); 960 validation and 937
test users never trained on, each a mixed history whose last item is the target. Each side is a
crossrec domain (`food`, `kitchen`) with one `shared_user_space`; an example belongs to its
target's domain. A single-domain model reads the target domain's items of a history; a
mixed-history model (`context=kitchen`, or `mixed_history=true` with both domains) reads the
whole line, the other domain's items as context, and still ranks the target domain only.
Two protocols: full ranking over the target domain's items (crossrec's), and the published one:
the target + 999 negatives from its domain, drawn with numpy's legacy generator seeded 42,
validation lines first (`eval.candidates=published`). Ties rank by item order in both; the
popularity row of the published protocol is the release's own check, and comes out exactly
(Recall@10 = HR@10 with one target). Validation (early stopping) always ranks the full catalogue, and its targets are
far more popular than the test's, so validation is a weak stand-in for test (as the release
notes).

"The model alone" is a trained model with nothing added (`eval.zero_shot_prior=0
eval.zero_shot_align=false`); "as shipped" is `crossrec evaluate run=...` with its defaults on a
domain the run never saw (+ 2 x the untrained text scorer in every logit, aligned catalogue means).
`experiment=lm_space` gives towers that start as the untrained text scorer and learn corrections
from zero in the language model's space (`model.projection=residual model.readout=residual
model.text_norm=center model.dim=384`; the user's text-scorer part learns its recency too).
`model.readout=pool` on top of it makes the user a learned weighting of its own history's item
vectors (attention from the transformer's state plus a bias per distance back: distance x the log
of a learned recency, from the text scorer's, plus a free offset per distance, from zero): on a
domain the model never saw, what it learned can only
re-weight that domain's items, never carry the training catalogue's directions into it. The item
side's learned correction (`projection=residual`) belongs to the catalogues it was learned on: a
domain the model never trained on is read in the language model's space (metrics.json
`zero_shot_items` names it), because the Food-learned correction lowered Kitchen's scores.

The user side has such a part too: a readout's domain-general user (`Readout.general`), the part
with no transformer that reads any catalogue the same way: readout=residual's text-scorer user at
its learned recency; readout=pool's weighting by distance back and by each item's likeness to the
newest one (`like_newest`, learned). `model.general_loss=1` trains it alone beside the model (its
own next-item loss), and a domain the model never trained on ranks its users through it
(metrics.json `zero_shot_users`): what Food teaches about how interest moves along a sequence,
not which Food items follow which. `model.general_items=plain` trains that part on the training
domain read in the language model's space, as it will read a new domain (by default it reads the
towers' corrected items).

Kitchen's test split holds a few hundred examples, of which the text scorer ranks about ten in its
top 10: a zero-shot ratio on it moves by 10 % per example. Every Kitchen user is unseen by a model
trained on Food alone, so `eval.test_users=all` also ranks each Kitchen training user's last item
from the ones before (no scorer here read a Kitchen interaction): twenty times the examples. It
is refused for any scorer that read the domain's interactions (popularity, a run on its own domain).

The untrained text scorer has one setting, its recency (how much more the newest item weighs);
the default (0.9) was chosen on movies and music. The sweep below shows what it is worth on each
Amazon side, and the zero-shot table carries the recency Food's validation picks onto Kitchen: a
one-number transfer, the least a model trained on Food should match.

Movies <-> music: the bundled MovieLens-100K and Last.fm domains (no shared users, leave-one-out
by time, `python scripts/transfer_bench.py run` without `--food-kitchen`), the same arms where
they apply: each domain's model on its own domain, on the other zero-shot (alone and as shipped),
and 10 % of one domain's users from the other's model.

Few-shot: `crossrec transfer init_from=<the Food run> source=food target=kitchen
target_fraction=0.1` adapts the Food model on a seeded 10 % of Kitchen's training users
("adapted") and trains the same model from its initialisation on the same users ("control");
both rank every Kitchen test example.

Kitchen's catalogue (27,637 items) trains with the sampled, logQ-corrected softmax
(`trainer.loss=sampled_logq`: the batch's targets + 256 uniform negatives, each logit minus the log of
its expected count among them); the arm `kitchen_full` is the same model with the full softmax, for
what sampling costs in quality and saves in time (the time-to-quality table).

UniSRec (Hou et al., KDD 2022) as crossrec runs it: `crossrec finetune experiment=unisrec_pretrain`
on the source (frozen MiniLM vectors, a mixture-of-experts whitening adaptor, a transformer user
tower, cosine / 0.07; the next-item loss + 0.001 x the sequence-sequence contrastive loss, a
history against its item-drop view), then `crossrec transfer init_from=<that run>
experiment=unisrec_finetune`, which keeps the pre-trained user tower (`freeze=[user]`) and fine-tunes
the adaptor on the target's users; its control is the same model from scratch, every part training.
Unlike the paper: one source domain per run here (the paper pre-trains on five Amazon domains at
once; `domain=[a,b,...]` does that), the next-item loss is a softmax over the domain's items (the
paper's over the batch's items), and the views drop items only (the paper's also drop words).
"""


def gains(recs: dict, pairs: list[tuple[str, str, str, str, str]]) -> list[str]:
    """Relative change of arm B over arm A on each domain's test NDCG@10 (seed means)."""
    out = []
    for label, a, b, step, dom in pairs:
        ra, rb = recs.get((a, step)), recs.get((b, step))
        va = [r["test"][dom]["ndcg@10"] for r in ra or [] if dom in r.get("test", {})]
        vb = [r["test"][dom]["ndcg@10"] for r in rb or [] if dom in r.get("test", {})]
        if va and vb:
            ma, mb = statistics.mean(va), statistics.mean(vb)
            out.append(f"- {label}: {mb:.4f} against {ma:.4f} ({(mb - ma) / ma:+.1%}; n={len(vb)} / {len(va)})")
    return out


def few_shot_lift(recs: dict, arm: str, dom: str, label: str) -> list[str]:
    """Adapted over control of a transfer arm, test NDCG@10 (seed means)."""
    got = recs.get((arm, "full")) or []
    ad = [r["transfer"]["adapted"]["test"][dom]["ndcg@10"] for r in got]
    co = [r["transfer"]["control"]["test"][dom]["ndcg@10"] for r in got]
    if not ad:
        return []
    ma, mc = statistics.mean(ad), statistics.mean(co)
    return [f"- {label}: {ma:.4f} against {mc:.4f} from scratch ({(ma - mc) / mc:+.1%}; n={len(ad)})"]


SWEEPS = {"split": ("text_recency", "full"), "all": ("text_recency_all", "all")}  # (sweep arm, text_zeroshot's step)


def recency_runs(recs: dict, users: str = "split") -> dict[float, dict]:
    """The untrained text scorer's record per recency (``model.recency``): the sweep's steps and
    the text_zeroshot arm (its default); ``users``: the test users of the split, or ``all``."""
    sweep, default = SWEEPS[users]
    got = [r for (arm, step), rs in recs.items() for r in rs
           if ((arm == sweep and step != "food_pick") or (arm, step) == ("text_zeroshot", default)) and "recency" in r]
    return {float(r["recency"]): r for r in got}


def recency_sweep(recs: dict, users: str = "split") -> list[str]:
    """Valid and test NDCG@10 of the text scorer per recency, on each domain."""
    runs = recency_runs(recs, users)
    if len(runs) < 2:
        return []
    title = "" if users == "split" else ", every user of each domain (`eval.test_users=all`)"
    out = [f"### The untrained text scorer's one setting: recency (`model.recency`; NDCG@10, full ranking{title})", "",
           "| recency | food valid | food test | kitchen valid | kitchen test |", "|---|---|---|---|---|"]
    for r in sorted(runs, reverse=True):
        rec = runs[r]
        out.append(f"| {r:g}{' (default)' if r == 0.9 else ''} | " + " | ".join(
            f"{rec[part][d]['ndcg@10']:.4f}" for d in ("food", "kitchen") for part in ("valid", "test")) + " |")
    return out + [""]


def source_recency(recs: dict, source: str, users: str = "split") -> tuple[float, dict] | None:
    """The recency the source domain's validation NDCG@10 picks, and that scorer's record: a
    setting learned on the source, used on the target (zero-shot: no target interaction read)."""
    runs = {r: rec for r, rec in recency_runs(recs, users).items() if source in rec.get("valid", {})}
    if len(runs) < 2:
        return None
    best = max(runs, key=lambda r: (runs[r]["valid"][source]["ndcg@10"], r))
    return best, runs[best]


def zero_shot_ratios(recs: dict, base: tuple[str, str], dom: str, names: tuple[str, str],
                     models: list[tuple[str, str]], users: str = "") -> list[str]:
    """Each model's zero-shot steps on ``dom`` (``to_<dom>_alone`` / ``_shipped``), test NDCG@10
    (seed mean) as a multiple of the untrained text scorer's (``base``): the bar a model trained
    elsewhere has to clear. ``names``: how the target and the source read in a line; ``users``:
    "all" for the steps that rank every user (``to_<dom>_all_alone``)."""
    ref = [r["test"][dom]["ndcg@10"] for r in recs.get(base, []) if dom in r.get("test", {})]
    if not ref:
        return []
    out = []
    for name, arm in models:
        for how in ("alone", "shipped"):
            step = f"to_{dom}_{users + '_' if users else ''}{how}"
            got = [r["test"][dom]["ndcg@10"] for r in recs.get((arm, step), []) if dom in r.get("test", {})]
            if got:
                m = statistics.mean(got)
                out.append(f"- {names[0]} zero-shot{' (every user)' if users else ''}, {names[1]} model {name} {how}: {m:.4f}, "
                           f"{m / statistics.mean(ref):.2f}x the untrained text scorer's {statistics.mean(ref):.4f} "
                           f"(n={len(got)})")
    return out


def resolution(recs: dict, step: tuple[str, str], dom: str) -> list[str]:
    """How many test targets the untrained text scorer's top 10 holds on ``dom``: the scale at which
    a zero-shot difference on that test split is one example."""
    got = recs.get(step) or []
    if not got or dom not in got[0].get("test", {}):
        return []
    t = got[0]["test"][dom]
    hits = round(t["recall@10"] * t["examples"])
    return [f"- {dom} test: {t['examples']} examples, of which the untrained text scorer ranks {hits} in its top 10; "
            f"one example more or less moves a zero-shot ratio by about {1 / max(hits, 1):.0%}"]


def _stat(vals: list[float]) -> tuple[float, float] | None:
    return (statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0) if vals else None


def share_points(recs: dict, target: str, source: str) -> dict[str, dict[float, tuple[float, float]]]:
    """Test NDCG@10 (mean, sd over seeds) on ``target`` per share of its training users: "source"
    (initialised from the source model; 0 = the source model alone, zero-shot) and "scratch" (the
    transfer arm's control; 1 = the target's own model, trained on all of them)."""
    def ndcg(rs: list[dict], where: str | None = None) -> list[float]:
        return [(r["transfer"][where] if where else r)["test"][target]["ndcg@10"] for r in rs
                if target in (r["transfer"][where] if where else r).get("test", {})]

    out: dict[str, dict[float, tuple[float, float]]] = {"source": {}, "scratch": {}}
    for (arm, step), rs in recs.items():
        m = re.fullmatch(rf"{target}_(\d+)pct_from_{source}", arm)
        if m and step == "full":
            share = int(m.group(1)) / 100
            for line, where in (("source", "adapted"), ("scratch", "control")):
                if got := _stat(ndcg(rs, where)):
                    out[line][share] = got
    if got := _stat(ndcg(recs.get((target, "full"), []))):
        out["scratch"][1.0] = got
    if got := _stat(ndcg(recs.get((source, f"to_{target}_alone"), []))):
        out["source"][0.0] = got
    return out


def share_plot(recs: dict, out: Path) -> bool:
    """NDCG@10 against the share of target data, with and without the source; False: no points."""
    panels = [(t, s, base, share_points(recs, t, s)) for t, s, base in SHARES]
    panels = [p for p in panels if len(p[3]["source"]) + len(p[3]["scratch"]) > 1]
    if not panels:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    zero = 0.003  # where share 0 (zero-shot) sits on the log axis
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (target, source, base, pts) in zip(axes[0], panels):
        for line, label, style in (("source", f"from the {source} model", "o-"), ("scratch", "from scratch", "s--")):
            xs = sorted(pts[line])
            if xs:
                ax.errorbar([x or zero for x in xs], [pts[line][x][0] for x in xs], [pts[line][x][1] for x in xs],
                            fmt=style, capsize=3, label=label)
        text = _stat([r["test"][target]["ndcg@10"] for r in recs.get((base, "full"), []) if target in r.get("test", {})])
        if text:
            ax.axhline(text[0], color="grey", linestyle=":", label="untrained text scorer")
        ax.set_xscale("log")
        ax.set_xticks([zero, 0.01, 0.1, 1.0], ["0\n(zero-shot)", "1 %", "10 %", "100 %"])
        ax.set_title(f"{target} (source: {source})")
        ax.set_xlabel(f"share of the {target} training users")
        ax.set_ylabel("test NDCG@10")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return True


def share_section(recs: dict) -> list[str]:
    """The plot's points as one table (seed means; n per point in the tables above)."""
    cols = [(0.0, "source", "0 (source model alone)"), (0.01, "source", "1 % from source"),
            (0.01, "scratch", "1 % from scratch"), (0.1, "source", "10 % from source"),
            (0.1, "scratch", "10 % from scratch"), (1.0, "source", "100 % from source"),
            (1.0, "scratch", "100 % (target's own model)")]
    rows = []
    for target, source, _ in SHARES:
        pts = share_points(recs, target, source)
        if len(pts["source"]) + len(pts["scratch"]) > 1:
            rows.append(f"| {target} (source: {source}) | " + " | ".join(
                f"{pts[line][x][0]:.4f}" if x in pts[line] else "–" for x, line, _ in cols) + " |")
    if not rows:
        return []
    return ["| target | " + " | ".join(c for _, _, c in cols) + " |", "|---|" + "---|" * len(cols), *rows, ""]


def epochs_to(history: list[dict], level: float) -> int | None:
    """Epochs until validation NDCG@10 first reaches ``level`` (None: never)."""
    return next((h["epoch"] for h in history if h["valid_ndcg@10"] >= level), None)


def epoch_seconds(run: dict) -> float:
    """A run's median seconds per epoch (training + validation): an epoch slowed by a pause or a
    busy machine moves it less than the mean."""
    return statistics.median(h["train_seconds"] + h.get("eval_seconds", 0.0) for h in run["history"])


def speed_section(recs: dict) -> list[str]:
    """Time to quality of runs that differ in how they train (SPEED): per arm, seed means of the
    final test NDCG@10, the median seconds per epoch, the epoch validation peaked, the epochs to
    95 % of the best validation NDCG@10 (the run's own, and the reference's: the first arm), and
    the time to the reference's = those epochs x the median epoch."""
    out = []
    for dom, arms in SPEED:
        runs = {arm: [r for r in recs.get((arm, "full"), []) if r.get("history")] for _, arm in arms}
        if not all(runs.values()):
            continue
        ref_best = statistics.mean(max(h["valid_ndcg@10"] for h in r["history"]) for r in runs[arms[0][1]])
        ref_time = None
        out += [f"### Time to quality on {dom} (validation NDCG@10 by epoch; final = test)", "",
                f"| training | test ndcg@10 | median s / epoch | best epoch | epochs to 95 % of its best valid | epochs to 95 % "
                f"of the first row's best valid ({ref_best:.4f}) | time to it | speed-up |", "|---|---|---|---|---|---|---|---|"]
        for label, arm in arms:
            rs = runs[arm]
            own = [epochs_to(r["history"], 0.95 * max(h["valid_ndcg@10"] for h in r["history"])) for r in rs]
            ref = [epochs_to(r["history"], 0.95 * ref_best) for r in rs]
            t = None if None in ref else statistics.mean(e * epoch_seconds(r) for e, r in zip(ref, rs))
            ref_time = t if arm == arms[0][1] else ref_time
            out.append(f"| {label} | {cell(rs, dom, 'ndcg@10')} | {statistics.mean(epoch_seconds(r) for r in rs):.0f} "
                       f"| {statistics.mean(r['best_epoch'] for r in rs):g} | {statistics.mean(own):g} | "
                       + (f"{statistics.mean(ref):g} | {t:.0f} s" if t is not None else "not reached | –") + " | "
                       + (f"{ref_time / t:.1f}x" if t and ref_time else "–") + " |")
        out += ["", "The arms ran side by side (one thread each) on the same machine; seconds per epoch are each "
                "run's median over its epochs.", ""]
    return out


def table(args: argparse.Namespace, out: Path | None = None) -> None:
    recs = records()
    for users, (sweep, _) in SWEEPS.items():
        picked = source_recency(recs, "food", users)
        if picked:  # a row of the zero-shot table, made from the sweep's records
            recs[(sweep, "food_pick")] = [picked[1]]
    parts = [
        INTRO,
        "## Tables",
        "",
        *section("Food-Kitchen, full ranking over the target domain's items (test)", ROWS, recs, ["food", "kitchen"],
                 ["ndcg@10", "recall@10"]),
        *section("Food-Kitchen, the published candidates (target + 999 negatives, seed 42; test)", PUBLISHED, recs,
                 ["food", "kitchen"], ["ndcg@10", "recall@10"]),
        *section("Food -> Kitchen zero-shot: trained on Food only, ranking Kitchen (full ranking, test)", ZERO_SHOT, recs,
                 ["kitchen"], ["ndcg@10", "recall@10"]),
        *section("Food -> Kitchen zero-shot, every Kitchen user (`eval.test_users=all`: the test split's Kitchen "
                 "examples + each training user's last Kitchen item; full ranking)", ZERO_SHOT_ALL, recs, ["kitchen"],
                 ["ndcg@10", "recall@10"]),
        *section("Food -> Kitchen few-shot (full ranking, test)", FEW_SHOT, recs, ["kitchen"], ["ndcg@10", "recall@10"]),
        *(section("Kitchen -> Food zero-shot: trained on Kitchen only, ranking Food (full ranking, test)",
                  ZERO_SHOT_FOOD, recs, ["food"], ["ndcg@10", "recall@10"]) if ("kitchen", "full") in recs else []),
        *(section("Kitchen -> Food zero-shot, every Food user (`eval.test_users=all`; full ranking)", ZERO_SHOT_FOOD_ALL,
                  recs, ["food"], ["ndcg@10", "recall@10"]) if ("kitchen", "full") in recs else []),
        *section("Kitchen -> Food few-shot (full ranking, test)", FEW_SHOT_FOOD, recs, ["food"], ["ndcg@10", "recall@10"]),
        *speed_section(recs),
        *recency_sweep(recs),
        *recency_sweep(recs, "all"),
        *section("Movies <-> music, the bundled domains (no shared users; leave-one-out, full ranking, test)",
                 MOVIES_MUSIC, recs, ["movies", "music"], ["ndcg@10", "recall@10"]),
        *(["### NDCG@10 against the share of the target's training users", "",
           "![test NDCG@10 against the share of target users, from the source model and from scratch]"
           "(transfer-share.png)", "",
           "At 0 the source model alone ranks the target zero-shot; at 100 % \"from scratch\" is the target's own "
           "model; in between, `crossrec transfer init_from=<source run> target_fraction=<share>` (from the source "
           "model) and its control (from scratch), both on the same seeded users. Test NDCG@10, seed means "
           "(the tables above give n and the spread):", "", *share_section(recs)]
          if share_plot(recs, (out or REPO / "docs" / "transfer.md").with_name(PLOT.name)) else []),
        "## What the records say (test NDCG@10, seed means)",
        "",
        *gains(recs, [
            ("Food, mixed histories over single-domain (defaults)", "food", "food_mixed", "full", "food"),
            ("Food, mixed histories over single-domain (lm_space)", "food_lm_space", "food_lm_space_mixed", "full", "food"),
            ("Food, lm_space over the defaults", "food", "food_lm_space", "full", "food"),
            ("Food, published candidates, mixed over single-domain", "food", "food_mixed", "published", "food"),
            ("Kitchen, mixed histories over single-domain", "kitchen", "kitchen_mixed", "full", "kitchen"),
            ("Kitchen, published candidates, mixed over single-domain", "kitchen", "kitchen_mixed", "published", "kitchen"),
            ("Kitchen, sampled logQ softmax over the full softmax", "kitchen_full", "kitchen", "full", "kitchen"),
        ]),
        *few_shot_lift(recs, "kitchen_10pct_from_food", "kitchen", "Kitchen at 10 % of its users, from the Food model"),
        *few_shot_lift(recs, "food_10pct_from_kitchen", "food", "Food at 10 % of its users, from the Kitchen model"),
        *few_shot_lift(recs, "kitchen_10pct_unisrec", "kitchen", "Kitchen at 10 % of its users, UniSRec pre-trained on Food "
                       "(adaptor fine-tuned)"),
        *few_shot_lift(recs, "music_10pct_unisrec", "music", "music at 10 % of its users, UniSRec pre-trained on movies "
                       "(adaptor fine-tuned)"),
        *zero_shot_ratios(recs, ("text_zeroshot", "full"), "food", ("Food", "Kitchen"), [("(sampled_logq)", "kitchen")]),
        *zero_shot_ratios(recs, ("text_zeroshot", "all"), "food", ("Food", "Kitchen"), [("(sampled_logq)", "kitchen")],
                          users="all"),
        *zero_shot_ratios(recs, ("text_zeroshot", "full"), "kitchen", ("Kitchen", "Food"),
                          [("(defaults)", "food"), ("(lm_space)", "food_lm_space"), ("(lm_space, pool)", "food_lm_pool"),
                           ("(lm_space, pool, general_loss)", "food_lm_general"),
                           ("(lm_space, pool, general_loss, general_items=plain)", "food_lm_plain")]),
        *zero_shot_ratios(recs, ("text_zeroshot", "all"), "kitchen", ("Kitchen", "Food"),
                          [("(defaults)", "food"), ("(lm_space, pool, general_loss)", "food_lm_general"),
                           ("(lm_space, pool, general_loss, general_items=plain)", "food_lm_plain")], users="all"),
        *zero_shot_ratios(recs, ("mm_text_zeroshot", "full"), "music", ("music", "movies"),
                          [("(defaults)", "movies"), ("(lm_space)", "movies_lm_space"), ("(lm_space, pool, general_loss)", "movies_lm_general")]),
        *zero_shot_ratios(recs, ("mm_text_zeroshot", "full"), "movies", ("movies", "music"),
                          [("(defaults)", "music"), ("(lm_space)", "music_lm_space"), ("(lm_space, pool, general_loss)", "music_lm_general")]),
        *resolution(recs, ("text_zeroshot", "full"), "kitchen"),
        *few_shot_lift(recs, "music_10pct_from_movies", "music", "music at 10 % of its users, from the movies model"),
        *few_shot_lift(recs, "movies_10pct_from_music", "movies", "movies at 10 % of its users, from the music model"),
        "",
    ]
    out = out or REPO / "docs" / "transfer.md"
    out.write_text("\n".join(parts))
    print(out.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--food-kitchen", default=None, help="the Food-Kitchen folder (format cdsr), for its arms")
    r.add_argument("--arms", default=None)
    r.add_argument("--seeds", default="0,1,2")
    r.add_argument("--jobs", type=int, default=2)
    sub.add_parser("table")
    args = p.parse_args()
    run(args) if args.cmd == "run" else table(args)


if __name__ == "__main__":
    main()
