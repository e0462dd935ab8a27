#!/usr/bin/env python3
"""Which part of a trained text model loses zero-shot quality on a domain it never saw.

    python scripts/zeroshot_parts.py RUN DOMAIN [--searchpath DIR]

Ranks DOMAIN's valid / test splits (full ranking, seen items kept, NDCG@10) with the trained run
RUN and with scorers that drop its parts one at a time, all cosine over the same catalogue:

- the whole model (user tower over projected items; what `crossrec evaluate run=RUN domain=DOMAIN`
  reports when the run scores by cosine);
- the trained projection only (user = plain mean of the history's projected item vectors);
- the language model only (user = mean of the raw LM vectors), centred on the catalogue or not,
  with recency weights 1.0 or 0.9 (what `model=text_zeroshot` computes, up to the per-item
  normalisation it applies before averaging).

Example: `python scripts/zeroshot_parts.py outputs/benchmarks/movies/text_cosine/seed0 music`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from crossrec_cli.cli import compose
from crossrec_cli.commands.checkpoint_eval import load_run
from crossrec_cli.data import make_split
from crossrec_cli.evaluation.protocol import evaluate_split
from crossrec_cli.models.baselines import recency_weights
from crossrec_cli.models.features.text import TEXT_NORMS
from crossrec_cli.models.seqrec import pad_histories


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("domain")
    ap.add_argument("--searchpath", help="a folder with domain/<name>.yaml (hydra.searchpath)")
    a = ap.parse_args()
    extra = [f"hydra.searchpath=[file://{a.searchpath}]"] if a.searchpath else []
    cfg = compose("evaluate", [f"run={a.run}", f"domain={a.domain}", *extra], "outputs/zeroshot_parts")
    loaded = load_run(cfg)
    model = loaded.model.eval()
    (spec, domain), = loaded.domains
    split = make_split(domain, spec.order, spec.order_seed)
    if "text" not in model.features:
        raise SystemExit(f"{a.run} reads no item text: nothing to take apart")
    with torch.no_grad():
        raw = model.features["text"].base(spec.name)  # (N, hidden) LM vectors
        items = model.item_matrix(spec.name)  # (N, dim) the trained item vectors
    n = model.n_targets(spec.name)

    def mean_of(vecs: torch.Tensor, recency: float) -> Callable[[torch.Tensor], torch.Tensor]:
        def users(hist: torch.Tensor) -> torch.Tensor:
            w = (hist >= 0).float() * recency_weights(hist.shape[1], recency)
            return (vecs[hist.clamp_min(0)] * w.unsqueeze(-1)).sum(1) / w.sum(1, keepdim=True).clamp_min(1e-9)
        return users

    def ndcg(user_fn: Callable[[torch.Tensor], torch.Tensor], item_vecs: torch.Tensor) -> tuple[float, float]:
        @torch.no_grad()
        def users(evalset) -> torch.Tensor:
            out = [user_fn(pad_histories(evalset.histories[i:i + 256], model.cfg.max_history))
                   for i in range(0, len(evalset), 256)]
            return F.normalize(torch.cat(out), dim=-1)

        res = evaluate_split(users, F.normalize(item_vecs[:n], dim=-1), split, [10], False, None, "", 512, 65536,
                             ("valid", "test"))
        return res["valid"]["ndcg@10"], res["test"]["ndcg@10"]

    centred = TEXT_NORMS.get("center")(raw, raw)
    rows = [
        ("trained model (user tower + projection)", ndcg(lambda h: model.user_states(items, h)[:, -1], items)),
        ("trained projection, mean of the history", ndcg(mean_of(items, 1.0), items)),
        ("LM vectors, mean of the history", ndcg(mean_of(raw, 1.0), raw)),
        ("LM vectors centred, mean of the history", ndcg(mean_of(centred, 1.0), centred)),
        ("LM vectors centred, recency 0.9", ndcg(mean_of(centred, 0.9), centred)),
    ]
    table = Table(title=f"{a.run} on {a.domain} (cosine, seen items kept)")
    for col in ("scorer", "valid NDCG@10", "test NDCG@10"):
        table.add_column(col, justify="left" if col == "scorer" else "right")
    for label, (valid, test) in rows:
        table.add_row(label, f"{valid:.4f}", f"{test:.4f}")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
