"""Group-fair training on bundled movies: the plain model against adversarial=fair (per attribute)
and fairness.reweight=group, by test NDCG@10, the group gaps and the user vectors' leakage AUC.

    python scripts/fairness_training.py record ARM RUN_DIR --command "crossrec finetune ..."
    python scripts/fairness_training.py render    # docs/fairness.md's table from the committed records

``record`` keeps, from a finished finetune run's metrics.json, the figures the table reads
(docs/fairness-records/training/<ARM>-seed<N>.json); ``render`` writes the table between the
markers of docs/fairness.md, one row per arm, each figure the mean over the arm's seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RECORDS = REPO / "docs" / "fairness-records" / "training"
DOC = REPO / "docs" / "fairness.md"
BEGIN, END = "<!-- fair training table: begin -->", "<!-- fair training table: end -->"
ARMS = ["plain", "fair_gender", "fair_age", "fair_age_w5", "reweight_gender"]  # the table's order
BASE = "plain"


def extract(arm: str, command: str, metrics: dict) -> dict:
    """The record of one run: its first domain's test NDCG@10 / recall@10, per-group NDCG@10 and
    gap, the leakage AUC of each attribute and the last epoch's fair discriminator accuracy."""
    domain = next(iter(metrics["test"]))
    groups = metrics.get("groups", {}).get(domain, {})
    last = metrics["history"][-1] if metrics.get("history") else {}
    return {
        "arm": arm, "command": command, "seed": metrics["seed"], "domain": domain,
        "test_ndcg@10": metrics["test"][domain]["ndcg@10"], "test_recall@10": metrics["test"][domain]["recall@10"],
        "group_ndcg@10": {col: {g: m["ndcg@10"] for g, m in res.items() if g != "gap"} for col, res in groups.items()},
        "gap_ndcg@10": {col: res["gap"]["ndcg@10"] for col, res in groups.items() if "gap" in res},
        "leakage_auc": {col: r["leakage_auc"] for col, r in metrics.get("fairness", {}).get(domain, {}).items()},
        "probe_users_test": {col: r["users_test"] for col, r in metrics.get("fairness", {}).get(domain, {}).items()},
        "fair_disc_accuracy": last.get("fair_disc_accuracy"),
        "best_epoch": metrics.get("best_epoch"), "epochs_run": metrics.get("epochs_run"),
    }


def load(records: Path = RECORDS) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for path in sorted(records.glob("*.json")):
        rec = json.loads(path.read_text())
        out.setdefault(rec["arm"], []).append(rec)
    return out


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def render(arms: dict[str, list[dict]]) -> str:
    """The markdown table (the doc's section between BEGIN and END)."""
    base = arms[BASE]
    base_ndcg = _mean([r["test_ndcg@10"] for r in base])
    base_auc = {a: _mean([r["leakage_auc"].get(a) for r in base]) for a in ("gender", "age")}
    lines = ["| arm | command (after `crossrec finetune`) | seeds | test NDCG@10 | kept | NDCG@10 F / M | gender gap "
             "| age gap | gender leakage AUC | age leakage AUC | AUC - 0.5 vs plain | disc. accuracy |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for arm in [a for a in ARMS if a in arms] + sorted(set(arms) - set(ARMS)):
        recs = arms[arm]
        ndcg = _mean([r["test_ndcg@10"] for r in recs])
        auc = {a: _mean([r["leakage_auc"].get(a) for r in recs]) for a in ("gender", "age")}
        gender = {g: _mean([r["group_ndcg@10"].get("gender", {}).get(g) for r in recs]) for g in ("F", "M")}
        gaps = {a: _mean([r["gap_ndcg@10"].get(a) for r in recs]) for a in ("gender", "age")}
        attribute = "age" if "age" in arm else "gender"
        excess = (auc[attribute] - 0.5) / (base_auc[attribute] - 0.5) if arm != BASE and base_auc[attribute] != 0.5 else None
        command = recs[0]["command"].removeprefix("crossrec finetune ")
        lines.append(
            f"| {arm} | `{command}` | {','.join(str(r['seed']) for r in recs)} | {_fmt(ndcg)} | "
            f"{100 * ndcg / base_ndcg:.0f}% | {_fmt(gender['F'])} / {_fmt(gender['M'])} | {_fmt(gaps['gender'])} | "
            f"{_fmt(gaps['age'])} | {_fmt(auc['gender'], '.3f')} | {_fmt(auc['age'], '.3f')} | "
            f"{'' if excess is None else f'{attribute}: {excess:.2f}x'} | "
            f"{_fmt(_mean([r['fair_disc_accuracy'] for r in recs]), '.3f')} |")
    return "\n".join(lines) + "\n"


def write_doc(arms: dict[str, list[dict]], doc: Path = DOC) -> None:
    text = doc.read_text()
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    doc.write_text(f"{head}{BEGIN}\n{render(arms)}{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    rec = sub.add_parser("record", help="keep a finished run's figures")
    rec.add_argument("arm")
    rec.add_argument("run", type=Path)
    rec.add_argument("--command", required=True, help="the command line that trained the run")
    sub.add_parser("render", help="docs/fairness.md's table from the committed records")
    args = ap.parse_args(argv)
    if args.what == "record":
        record = extract(args.arm, args.command, json.loads((args.run / "metrics.json").read_text()))
        RECORDS.mkdir(parents=True, exist_ok=True)
        path = RECORDS / f"{args.arm}-seed{record['seed']}.json"
        path.write_text(json.dumps(record, indent=1) + "\n")
        print(path)
        return 0
    write_doc(load())
    print(f"{RECORDS} -> {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
