#!/usr/bin/env python3
"""Training benchmark on real MovieLens-100K with the real MiniLM backbone.

Prints, for the frozen-MiniLM recommender: seconds per training epoch, evaluation seconds and
peak memory (RSS); for adapter=lora: items encoded per second through the training backbone
(forward + backward), measured over a few real training steps.

Usage: python scripts/bench_train.py [--epochs 2] [--lora-steps 5] [--threads N]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from rich.console import Console
from rich.table import Table

from crossrec_cli.data import DomainSpec, load_domain, make_split
from crossrec_cli.models.build import build_recommender
from crossrec_cli.training.batches import collate, windows
from crossrec_cli.training.loop import TrainConfig, batch_loss, fit, make_optimizer

MOVIES = dict(name="movies", format="recbole", path="bundled:ml-100k", dataset="ml-100k",
              text_fields=["movie_title", "release_year", "class"], text_template="{movie_title} ({release_year}). Genres: {class}")
MODEL = dict(dim=64, max_history=50, layers=2, heads=2, dropout=0.2, readout="last", score="cosine",
             temperature=0.07, item_ids=False, encode_batch=128)
MINILM = dict(name="minilm", path="sentence-transformers/all-MiniLM-L6-v2", local="all-MiniLM-L6-v2", config=None,
              kind="encoder", pooling="mean", max_length=64)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lora-steps", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lora-batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    domain = load_domain(DomainSpec.from_dict(MOVIES))
    split = make_split(domain)
    rows = []

    # frozen MiniLM: item vectors cached once, towers train
    model = build_recommender(MODEL, MINILM, {"name": "frozen"}, seed=0)
    model.cache_vectors = False  # measure the one-off catalogue encoding too
    model.add_catalogue("movies", domain.item_text)
    t0 = time.perf_counter()
    model.refresh("movies", cache=False)
    encode_s = time.perf_counter() - t0
    tc = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, patience=99)
    from crossrec_cli.models.seqrec import seqrec_scorer
    from crossrec_cli.evaluation.protocol import evaluate_split

    def valid(m):
        u, i = seqrec_scorer(m, "movies")
        return {"movies": evaluate_split(u, i, split, [10])["valid"]}

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        prog = fit(model, {"movies": split}, tc, valid, Path(tmp), show_progress=False)
    per_epoch = sum(h["train_seconds"] for h in prog.history) / len(prog.history)
    eval_s = sum(h["eval_seconds"] for h in prog.history) / len(prog.history)
    rows.append(("frozen MiniLM: catalogue encoding (1,682 items, once)", f"{encode_s:.1f} s", f"{1682 / encode_s:.0f} items/s"))
    rows.append(("frozen MiniLM: seconds per training epoch", f"{per_epoch:.2f} s", f"{len(windows(split, 50))} windows"))
    rows.append(("frozen MiniLM: seconds per validation pass", f"{eval_s:.2f} s", "943 users x 1,682 items"))
    rows.append(("frozen MiniLM: peak RSS so far", f"{peak_rss_mb():.0f} MB", ""))

    # LoRA: the backbone trains, only a batch's unique items are encoded (with gradients)
    torch.manual_seed(0)
    lora = build_recommender(MODEL, MINILM, {"name": "lora", "r": 8, "alpha": 16, "dropout": 0.05, "target_modules": "auto"},
                             seed=0, total_steps=args.lora_steps)
    lora.add_catalogue("movies", domain.item_text)
    lora.refresh("movies")
    ltc = TrainConfig(batch_size=args.lora_batch_size, loss="full")
    opt = make_optimizer(lora, ltc)
    wins = windows(split, 50)
    encoded, seconds = 0, 0.0
    for step in range(args.lora_steps):
        batch = wins[step * args.lora_batch_size:(step + 1) * args.lora_batch_size]
        inp, tgt = collate(batch, 50)
        n_unique = int(torch.unique(torch.cat([inp[inp >= 0], tgt[tgt >= 0]])).numel())
        t0 = time.perf_counter()
        loss = batch_loss(lora, "movies", inp, tgt, ltc)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step:  # the first step warms up
            seconds += time.perf_counter() - t0
            encoded += n_unique
    rows.append(("lora MiniLM: items encoded per second in training (fwd+bwd)", f"{encoded / seconds:.1f} items/s",
                 f"{encoded} items over {args.lora_steps - 1} steps"))
    rows.append(("peak RSS (whole benchmark)", f"{peak_rss_mb():.0f} MB", f"torch threads {torch.get_num_threads()}"))
    table = Table(title="crossrec training benchmark · MovieLens-100K · all-MiniLM-L6-v2 · CPU")
    for c in ("measure", "value", "note"):
        table.add_column(c)
    for r in rows:
        table.add_row(*r)
    Console().print(table)


if __name__ == "__main__":
    main()
