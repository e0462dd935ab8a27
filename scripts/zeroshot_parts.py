#!/usr/bin/env python3
"""Which part of a trained text model loses zero-shot quality on a domain it never saw.

    python scripts/zeroshot_parts.py RUN DOMAIN [--searchpath DIR]

Ranks DOMAIN's valid / test splits (full ranking, seen items kept, NDCG@10) with the trained run
RUN and with scorers that drop its parts one at a time, all cosine over the same catalogue:

- the whole model (user tower over projected items; what `crossrec evaluate run=RUN domain=DOMAIN`
  reports when the run scores by cosine);
- the trained projection only (user = plain mean of the history's projected item vectors);
- the language model only (user = mean of the history's L2-normalised LM vectors, as
  `model=text_zeroshot` computes it), centred on the catalogue or not, with recency weights 1.0
  or 0.9 (the last row is `model=text_zeroshot` with its defaults);
- the trained model plus w x that last scorer (w = 1, 2, 4): the output ensemble that
  `model.text_prior=w` trains with (here added after training, for a run trained without it).

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
from crossrec_cli.data.split import EvalSet
from crossrec_cli.evaluation.protocol import evaluate_split
from crossrec_cli.models.baselines import mean_history_vectors
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
    if not model.reads_text:
        raise SystemExit(f"{a.run} reads no item text: nothing to take apart")
    with torch.no_grad():
        raw = model.features["text"].base(spec.name)  # (N, hidden) LM vectors
        items = model.item_matrix(spec.name)  # (N, dim) the trained item vectors
    n = model.n_targets(spec.name)

    def mean_of(vecs: torch.Tensor, recency: float) -> Callable[[EvalSet], torch.Tensor]:
        return lambda evalset: mean_history_vectors(vecs, evalset, model.cfg.max_history, recency)

    @torch.no_grad()
    def tower(evalset: EvalSet) -> torch.Tensor:
        return torch.cat([model.user_states(items, pad_histories(evalset.histories[i:i + 256], model.cfg.max_history))[:, -1]
                          for i in range(0, len(evalset), 256)])

    def ndcg(user_fn: Callable[[EvalSet], torch.Tensor], item_vecs: torch.Tensor, prior: float = 0.0) -> tuple[float, float]:
        """Cosine of ``user_fn``'s and ``item_vecs``' rows (over the model's temperature when
        ``prior`` > 0), plus ``prior`` x the text zero-shot cosine."""
        scale = model.cfg.temperature if prior else 1.0

        def users(evalset: EvalSet) -> torch.Tensor:
            u = F.normalize(user_fn(evalset), dim=-1) / scale
            return torch.cat([u, prior * F.normalize(mean_of(centred, 0.9)(evalset), dim=-1)], 1) if prior else u

        vecs = F.normalize(item_vecs[:n], dim=-1)
        vecs = torch.cat([vecs, F.normalize(centred[:n], dim=-1)], 1) if prior else vecs
        res = evaluate_split(users, vecs, split, [10], False, None, "", 512, 65536, ("valid", "test"))
        return res["valid"]["ndcg@10"], res["test"]["ndcg@10"]

    centred = TEXT_NORMS.get("center")(raw, raw)
    rows = [
        ("trained model (user tower + projection)", ndcg(tower, items)),
        ("trained projection, mean of the history", ndcg(mean_of(items, 1.0), items)),
        ("LM vectors, mean of the history", ndcg(mean_of(raw, 1.0), raw)),
        ("LM vectors centred, mean of the history", ndcg(mean_of(centred, 1.0), centred)),
        ("LM vectors centred, recency 0.9 (model=text_zeroshot)", ndcg(mean_of(centred, 0.9), centred)),
    ]
    if model.score == "cosine" and not model.cfg.text_prior:
        rows += [(f"trained model + {w:g} x text_zeroshot", ndcg(tower, items, w)) for w in (1.0, 2.0, 4.0)]
    table = Table(title=f"{a.run} on {a.domain} (cosine, seen items kept)")
    for col in ("scorer", "valid NDCG@10", "test NDCG@10"):
        table.add_column(col, justify="left" if col == "scorer" else "right")
    for label, (valid, test) in rows:
        table.add_row(label, f"{valid:.4f}", f"{test:.4f}")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
