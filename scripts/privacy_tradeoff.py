#!/usr/bin/env python3
"""Private training's trade-off: test NDCG@10 of the same recommender trained with privacy=dp at
several epsilons and without (privacy=none), per domain and seed; one small record per run under
docs/fairness-records/privacy/, and docs/fairness.md's "Private training" table rendered from them.

    python scripts/privacy_tradeoff.py run --domain movies --seed 0 --epsilon 8   # (or none)
    python scripts/privacy_tradeoff.py table        # docs/fairness.md's table from the records

tests/test_privacy.py renders the table from the committed records and compares it with the page.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECORDS = REPO / "docs" / "fairness-records" / "privacy"
PAGE = REPO / "docs" / "fairness.md"
BEGIN, END = "<!-- privacy table: begin -->", "<!-- privacy table: end -->"
# the recommender every run trains: SASRec (item ids, full softmax) with non-overlapping windows
# (each user's training windows are one privacy unit; per-user gradients cost a pass per window)
BASE = ("experiment=sasrec", "trainer.window_stride=null")
# epochs per domain, private or not: on music's 17,632 items a private step (each user's gradient
# of every item embedding) took ~15 s on one shared CPU thread, so music trains one epoch
EPOCHS = {"movies": 10, "music": 1}
EPSILONS = ("none", "8", "4", "1")


def command(domain: str, seed: int | str, epsilon: str) -> list[str]:
    """The crossrec finetune arguments of one run."""
    private = [] if epsilon == "none" else ["privacy=dp", f"privacy.epsilon={epsilon}"]
    return ["finetune", f"domain={domain}", *BASE, f"trainer.epochs={EPOCHS.get(domain, '<epochs>')}", "progress=false",
            f"seed={seed}", *private]


def record_path(domain: str, seed: int, epsilon: str) -> Path:
    return RECORDS / f"{domain}-eps{epsilon}-seed{seed}.json"


def run(domain: str, seed: int, epsilon: str, outputs: Path) -> Path:
    """Train and test one run; its record (the metrics that matter) under RECORDS."""
    args = command(domain, seed, epsilon)
    run_dir = outputs / f"{domain}-eps{epsilon}-seed{seed}"
    subprocess.run([sys.executable, "-m", "crossrec_cli", *args, f"hydra.run.dir={run_dir}", "overwrite=true"], cwd=REPO,
                   check=True)
    m = json.loads((run_dir / "metrics.json").read_text())
    test, valid = m["test"][domain], m["valid"][domain]
    rec = {
        "command": "crossrec " + " ".join(args),
        "domain": domain, "seed": seed, "epsilon_target": None if epsilon == "none" else float(epsilon),
        "test": {k: round(test[k], 6) for k in ("ndcg@10", "recall@10")},
        "valid": {"ndcg@10": round(valid["ndcg@10"], 6)},
        "best_epoch": m["best_epoch"], "epochs_run": m["epochs_run"],
        "seconds_per_epoch": round(m["seconds_per_epoch"], 1), "num_threads": m.get("num_threads"),
        "privacy": m.get("privacy"),
    }
    RECORDS.mkdir(parents=True, exist_ok=True)
    path = record_path(domain, seed, epsilon)
    path.write_text(json.dumps(rec, indent=1) + "\n")
    return path


def _mean_sd(values: list[float], digits: int = 4) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def render(records: list[dict]) -> str:
    """The markdown table: per domain and epsilon, test NDCG@10 / recall@10 (mean ± sd over seeds),
    the share of the non-private NDCG@10 kept, the spent epsilon and the noise multiplier."""
    lines = ["| domain | epsilon (target) | seeds | test NDCG@10 | test recall@10 | NDCG@10 kept | epsilon spent "
             "| noise multiplier | best epoch |", "|---|---|---|---|---|---|---|---|---|"]
    domains = sorted({r["domain"] for r in records})
    for domain in domains:
        rows = [r for r in records if r["domain"] == domain]
        plain = [r["test"]["ndcg@10"] for r in rows if r["epsilon_target"] is None]
        for eps in EPSILONS:
            group = sorted((r for r in rows if (r["epsilon_target"] is None) == (eps == "none")
                            and (eps == "none" or r["epsilon_target"] == float(eps))), key=lambda r: r["seed"])
            if not group:
                continue
            ndcg = [r["test"]["ndcg@10"] for r in group]
            kept = f"{statistics.mean(ndcg) / statistics.mean(plain):.0%}" if plain else "-"
            spent = _mean_sd([r["privacy"]["epsilon"] for r in group], 2) if eps != "none" else "-"
            noise = f"{group[0]['privacy']['noise_multiplier']:.3f}" if eps != "none" else "-"
            lines.append(f"| {domain} | {'none (privacy=none)' if eps == 'none' else eps} | "
                         f"{','.join(str(r['seed']) for r in group)} | {_mean_sd(ndcg)} | "
                         f"{_mean_sd([r['test']['recall@10'] for r in group])} | {kept} | {spent} | {noise} | "
                         f"{', '.join(str(r['best_epoch']) for r in group)} |")
    runs = "crossrec " + " ".join(command("<domain>", "<seed>", "none"))
    epochs = ", ".join(f"{d} {e}" for d, e in EPOCHS.items())
    return "\n".join([f"Runs: `{runs} [privacy=dp privacy.epsilon=<epsilon>]` (epochs: {epochs}), delta 1e-5, "
                      "max_grad_norm 1.0; test split, full ranking.", "", *lines])


def load_records() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(RECORDS.glob("*.json"))]


def page_with_table(text: str, table: str) -> str:
    """``text`` with the block between the markers replaced by ``table``."""
    a, b = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[:a] + "\n" + table + "\n" + text[b:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    r = sub.add_parser("run", help="train and test one run, write its record")
    r.add_argument("--domain", required=True)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--epsilon", default="none", choices=EPSILONS)
    r.add_argument("--outputs", type=Path, default=REPO / "outputs" / "privacy")
    sub.add_parser("table", help="render docs/fairness.md's private-training table from the records")
    args = ap.parse_args()
    if args.what == "run":
        print(run(args.domain, args.seed, args.epsilon, args.outputs))
    else:
        PAGE.write_text(page_with_table(PAGE.read_text(), render(load_records())))
        print(PAGE)


if __name__ == "__main__":
    main()
