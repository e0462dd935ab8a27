"""Test NDCG@10 clean vs each perturbation, mean ± std over seeds, from `crossrec evaluate run=...
robustness=[...]` run folders.

    .venv/bin/python scripts/robustness_table.py LABEL=EVAL_DIR[,EVAL_DIR...] ... [--metric ndcg@10]

e.g. ``plain=outputs/adversarial/robustness/plain,outputs/adversarial/robustness/plain_seed1``.
Each evaluation folder's metrics.json names the trained run it scored (``run``); that run's
``seconds_per_epoch`` and ``epochs_run`` are shown beside (they measure training, on a machine
shared with other jobs: compare within one table only).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("groups", nargs="+", help="LABEL=DIR[,DIR...]")
    ap.add_argument("--metric", default="ndcg@10")
    args = ap.parse_args()
    rows, perturbations = [], []
    for group in args.groups:
        label, _, dirs = group.partition("=")
        clean, per, secs, epochs, seeds = [], {}, [], [], []
        for d in dirs.split(","):
            m = json.loads((Path(d) / "metrics.json").read_text())
            dom = next(iter(m["test"]))
            clean.append(m["test"][dom][args.metric])
            for name, r in m["robustness"][dom].items():
                per.setdefault(name, []).append(r["metrics"][args.metric])
                if name not in perturbations:
                    perturbations.append(name)
            run = json.loads((Path(m["run"]) / "metrics.json").read_text())
            secs.append(run["seconds_per_epoch"])
            epochs.append(run["epochs_run"])
            seeds.append(run["seed"])
        rows.append((label, seeds, clean, per, secs, epochs))
    head = ["model", "seeds", "clean", *perturbations, "s/epoch", "epochs"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for label, seeds, clean, per, secs, epochs in rows:
        cells = [label, ",".join(map(str, seeds)), _ms(clean), *(_ms(per.get(p, [])) for p in perturbations),
                 f"{statistics.mean(secs):.1f}", f"{statistics.mean(epochs):.0f}"]
        print("| " + " | ".join(cells) + " |")
    print(f"\nrelative drop of the mean {args.metric} from clean:")
    for label, _, clean, per, _, _ in rows:
        base = statistics.mean(clean)
        print(f"  {label:<8} " + "  ".join(f"{p} {100 * (statistics.mean(per[p]) / base - 1):+.0f}%"
                                          for p in perturbations if p in per))


if __name__ == "__main__":
    main()
