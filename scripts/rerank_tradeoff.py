"""Popularity re-ranking trade-off: each recommend-time re-ranker (``rerank=``) at a few lambdas on
a trained run's test split, NDCG@10 / recall@10 against popular share@10 and ARP@10.

    python scripts/rerank_tradeoff.py --run outputs/<finetune run> --train-command "crossrec finetune ..."
    python scripts/rerank_tradeoff.py --render    # docs/fairness.md's table from the committed record

Each test example's user vector ranks the whole catalogue (the run's own ``eval.exclude_seen``), the
best ``--pool`` candidates are re-ranked into 10 slots (crossrec_cli/evaluation/rerankers/), and the
target's position in that list is scored by the project's metrics (evaluation/metrics.py) and the
list by its beyond-accuracy figures (evaluation/beyond.py, training popularity), as ``evaluate``
scores the unre-ranked list: at lambda 0 the row is the run's own test NDCG@10.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "docs" / "fairness-records" / "rerank.json"
DOC = REPO / "docs" / "fairness.md"
BEGIN, END = "<!-- rerank table: begin -->", "<!-- rerank table: end -->"
K = 10
ARMS = [("none", 0.0)] + [(name, lam) for name in ("calibrated", "mmr") for lam in (0.25, 0.5, 0.75, 0.9)]


def measure(run: Path, pool_size: int) -> dict:
    """The record: one row per (re-ranker, lambda) of ARMS on the run's first training domain."""
    from crossrec_cli.cli import compose
    from crossrec_cli.commands.checkpoint_eval import load_run
    from crossrec_cli.evaluation.beyond import beyond_accuracy
    from crossrec_cli.evaluation.metrics import rank_metrics
    from crossrec_cli.evaluation.protocol import own_items
    from crossrec_cli.evaluation.ranking import top_items
    from crossrec_cli.evaluation.rerankers import Pool, rerank
    from crossrec_cli.models.seqrec import seqrec_scorer

    loaded = load_run(compose("evaluate", [f"run={run}"]))
    name = loaded.trained_on[0]
    split = loaded.split(name)
    user_vecs, item_vecs = seqrec_scorer(loaded.model, loaded.key(name), int(loaded.cfg.eval.batch_size))
    test = split.test
    n = item_vecs.shape[0]
    own = own_items(test.histories, n)
    users = user_vecs(test)
    idx, scores = top_items(users, item_vecs, pool_size, own if loaded.cfg.eval.exclude_seen else None)
    counts = split.train_item_counts(n)[:n]
    rows = []
    for reranker, lam in ARMS:
        pool = Pool(idx, np.asarray(scores, dtype=np.float64), own, item_vecs.detach().float().numpy(), counts, lam)
        top = rerank(reranker, pool, K)
        hit = top == test.targets[:, None]
        ranks = np.where(hit.any(1), hit.argmax(1), K)  # outside the list: rank K, no gain at @K
        acc = rank_metrics(ranks, [K])
        ba = beyond_accuracy(top, counts, own, K)
        rows.append({"rerank": reranker, "lambda": lam, "ndcg@10": acc["ndcg@10"], "recall@10": acc["recall@10"],
                     "popular_share@10": ba["popular_share@10"], "arp@10": ba["arp@10"],
                     "arp_history": ba["arp_history"], "coverage@10": ba["coverage@10"]})
        print(json.dumps(rows[-1]), flush=True)
    reported = json.loads((run / "metrics.json").read_text())["test"][name]["ndcg@10"]
    return {"domain": name, "examples": int(len(test)), "pool": pool_size, "run_test_ndcg@10": reported, "rows": rows}


def render(record: dict) -> str:
    """The markdown table of a record (the doc's section between BEGIN and END)."""
    base = record["rows"][0]
    lines = [f"Run: `{record['train_command']}` (test NDCG@10 {record['run_test_ndcg@10']:.4f} in its metrics.json); "
             f"{record['domain']}, {record['examples']} test users, the best {record['pool']} candidates re-ranked into 10; "
             f"ARP of the users' own histories {base['arp_history']:.1f}.", "",
             "| rerank | lambda | NDCG@10 | recall@10 | popular share@10 | ARP@10 | coverage@10 | NDCG@10 kept | popular share change |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in record["rows"]:
        kept = r["ndcg@10"] / base["ndcg@10"] if base["ndcg@10"] else float("nan")
        change = round(100 * (r["popular_share@10"] / base["popular_share@10"] - 1)) if base["popular_share@10"] else 0
        lines.append(f"| {r['rerank']} | {r['lambda']:g} | {r['ndcg@10']:.4f} | {r['recall@10']:.4f} | "
                     f"{r['popular_share@10']:.3f} | {r['arp@10']:.1f} | {r['coverage@10']:.3f} | {100 * kept:.0f}% | "
                     f"{change:+d}% |")
    return "\n".join(lines) + "\n"


def write_doc(record: dict, doc: Path = DOC) -> None:
    text = doc.read_text()
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    doc.write_text(f"{head}{BEGIN}\n{render(record)}{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, help="a finetune run directory")
    ap.add_argument("--train-command", help="the command line that trained --run (written into the record)")
    ap.add_argument("--pool", type=int, default=100)
    ap.add_argument("--render", action="store_true", help="only render docs/fairness.md from the committed record")
    args = ap.parse_args(argv)
    if not args.render:
        if not args.run or not args.train_command:
            ap.error("--run and --train-command are needed to measure")
        record = {"train_command": args.train_command} | measure(args.run, args.pool)
        RECORD.parent.mkdir(parents=True, exist_ok=True)
        RECORD.write_text(json.dumps(record, indent=1) + "\n")
    write_doc(json.loads(RECORD.read_text()))
    print(f"{RECORD} -> {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
