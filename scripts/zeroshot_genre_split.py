#!/usr/bin/env python3
"""Zero-shot transfer on a genre split of the bundled MovieLens-100K.

ml-100k is cut into two domains that share no item: `action` (Action, Adventure, Sci-Fi,
Thriller, War, Crime) and `other` (every other movie). A model trained on `action` only ranks
`other` movies it never saw (`crossrec evaluate run=<action run> domain=other`); it should not
fall below the untrained text scorer (`crossrec evaluate model=text_zeroshot domain=other`).

    python scripts/zeroshot_genre_split.py [--seeds 0] [--configs text,unisrec_text] [--exclude-seen]

Prints, for each trained configuration: its valid/test NDCG@10 on `action` (in-domain), its
zero-shot test NDCG@10 / Recall@10 on `other` by the model alone (`eval.zero_shot_prior=0
eval.zero_shot_align=false`, in <run>/zeroshot_other), with the LM vectors of `other` shifted to
the mean of `action`'s (`eval.zero_shot_prior=0`, <run>/zeroshot_other_aligned) and as `crossrec
evaluate` ranks a domain a run never saw by default, aligned and plus 2 x the text zero-shot
scorer (<run>/zeroshot_other_prior), with that weight chosen on the validation examples of
`other` (`eval.zero_shot_prior=auto`, <run>/zeroshot_other_auto), and the text zero-shot and popularity baselines on `other`. Everything runs through the real CLI; run folders land in outputs/genre_split/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "crossrec")
BUNDLED = REPO / "crossrec_cli" / "data" / "bundled" / "ml-100k"
ACTION = {"Action", "Adventure", "Sci-Fi", "Thriller", "War", "Crime"}
OUT = REPO / "outputs" / "genre_split"
CONFIGS = {
    "text": [],
    "text_dot": ["model.score=dot"],  # the text model's default before cosine
    "unisrec_text": ["experiment=unisrec_text"],
}


# the trained model alone; then with its LM vectors aligned to the training mean; then as
# `crossrec evaluate` ranks a domain a run never saw by default (aligned, + 2 x the text scorer)
ALONE = ["eval.zero_shot_prior=0", "eval.zero_shot_align=false"]


def write_genre_domains(root: Path) -> Path:
    """Two RecBole domains `action` / `other` cut from the bundled ml-100k files, plus their YAMLs."""
    items = (BUNDLED / "ml-100k.item").read_text().splitlines()
    inter = (BUNDLED / "ml-100k.inter").read_text().splitlines()
    side = {r.split("\t")[0]: "action" if ACTION & set(r.split("\t")[3].split()) else "other" for r in items[1:]}
    for name in ("action", "other"):
        data = root / "data" / name
        data.mkdir(parents=True, exist_ok=True)
        (data / f"{name}.item").write_text("\n".join([items[0]] + [r for r in items[1:] if side[r.split("\t")[0]] == name]) + "\n")
        (data / f"{name}.inter").write_text("\n".join([inter[0]] + [r for r in inter[1:] if side[r.split("\t")[1]] == name]) + "\n")
        (root / "domain").mkdir(exist_ok=True)
        (root / "domain" / f"{name}.yaml").write_text(
            f"name: {name}\nformat: recbole\npath: {data}\ndataset: {name}\n"
            "text_fields: [movie_title, release_year, class]\n"
            'text_template: "{movie_title} ({release_year}). Genres: {class}"\n')
    return root


def cli(*args: str, out: Path) -> dict:
    if not (out / "metrics.json").is_file():
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        quiet = ["progress=false"] if args[0] == "finetune" else []
        again = ["overwrite=true"] if (out / "config.yaml").is_file() else []  # an interrupted run starts again
        subprocess.run([CLI, *args, f"hydra.searchpath=[file://{OUT}]", *quiet, *again, f"hydra.run.dir={out}"],
                       check=True, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    return json.loads((out / "metrics.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--exclude-seen", action="store_true")
    ap.add_argument("--override", action="append", default=[], help="extra override for the trained runs")
    a = ap.parse_args()
    write_genre_domains(OUT)
    ev = [f"eval.exclude_seen={str(a.exclude_seen).lower()}"]
    tag = "ex" if a.exclude_seen else "kept"
    table = Table(title=f"zero-shot on ml-100k 'other' genres after training on 'action' (seen items {'removed' if a.exclude_seen else 'kept'})")
    for col in ("model", "seed", "action valid N@10", "action test N@10", "other test N@10", "other test R@10",
                "other N@10, default (aligned, + 2 x text prior)"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for base in ("popularity", "text_zeroshot"):
        m = cli("evaluate", f"model={base}", "domain=other", *ev, out=OUT / "runs" / f"{base}_{tag}")
        table.add_row(base, "–", "", "", f"{m['test']['other']['ndcg@10']:.4f}", f"{m['test']['other']['recall@10']:.4f}", "")
    for name in a.configs.split(","):
        for seed in a.seeds.split(","):
            extra = "".join("_" + o.replace("=", "-") for o in a.override)  # '=' would break hydra.run.dir
            run = OUT / "runs" / f"{name}_{tag}_s{seed}{extra}"
            m = cli("finetune", "domain=action", f"seed={seed}", *CONFIGS[name], *a.override, *ev, out=run)
            z = cli("evaluate", f"run={run}", "domain=other", *ev, *ALONE, out=run / "zeroshot_other")
            cli("evaluate", f"run={run}", "domain=other", *ev, "eval.zero_shot_prior=0", out=run / "zeroshot_other_aligned")
            zp = cli("evaluate", f"run={run}", "domain=other", *ev, out=run / "zeroshot_other_prior")
            cli("evaluate", f"run={run}", "domain=other", *ev, "eval.zero_shot_prior=auto", out=run / "zeroshot_other_auto")
            table.add_row(name + (" " + " ".join(a.override) if a.override else ""), seed,
                          f"{m['valid']['action']['ndcg@10']:.4f}", f"{m['test']['action']['ndcg@10']:.4f}",
                          f"{z['test']['other']['ndcg@10']:.4f}", f"{z['test']['other']['recall@10']:.4f}",
                          f"{zp['test']['other']['ndcg@10']:.4f}")
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
