"""crossrec data stats: what each domain holds, as the models will see it.

Recipe: load domains (filters applied) -> split (given, else leave-one-out) -> statistics ->
one table per domain -> ``stats.json`` in the run directory.

    crossrec data stats domain=movies
    crossrec data stats domain=[movies,music]
"""

from __future__ import annotations

from typing import Any

import numpy as np
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from crossrec_cli.commands._common import load_domains, run_dir
from crossrec_cli.data import Domain, DomainSpec, Split, make_split
from crossrec_cli.io import atomic_write_json


def split_stats(split: Split) -> dict[str, Any]:
    """Kind and sizes of a split: training sequences / pairs, valid and test examples."""
    return {
        "kind": split.kind,
        "train_sequences": len(split.train_seqs),
        "train_pairs": len(split.train_pairs),
        "valid": len(split.valid),
        "test": len(split.test),
    }


def domain_stats(domain: Domain, split: Split) -> dict[str, Any]:
    """Counts, sparsity, per-user activity, text coverage, ratings, timestamps, split, hash."""
    per_user = np.bincount(domain.inter_user, minlength=domain.n_users)
    per_item = np.bincount(domain.inter_item, minlength=domain.n_items)
    words = np.asarray([len(t.split()) for t in domain.item_text], dtype=np.float64)
    ratings = domain.inter_rating[np.isfinite(domain.inter_rating)]
    cells = domain.n_users * domain.n_items
    return {
        "users": domain.n_users,
        "items": domain.n_items,
        "interactions": domain.n_interactions,
        "sparsity": 1.0 - domain.n_interactions / cells if cells else None,
        "interactions_per_user": {
            "mean": float(per_user.mean()) if len(per_user) else 0.0,
            "median": float(np.median(per_user)) if len(per_user) else 0.0,
            "min": int(per_user.min()) if len(per_user) else 0,
            "max": int(per_user.max()) if len(per_user) else 0,
        },
        "items_without_interactions": int((per_item == 0).sum()),
        "text_coverage": float((words > 0).mean()) if len(words) else 0.0,
        "text_words_mean": float(words.mean()) if len(words) else 0.0,
        "rating_range": [float(ratings.min()), float(ratings.max())] if len(ratings) else None,
        "has_timestamps": bool(np.isfinite(domain.inter_time).any()),
        "split": split_stats(split),
        "sha256": domain.sha256(),
    }


def stats_table(spec: DomainSpec, stats: dict[str, Any]) -> Table:
    """A two-column rich table (statistic, value) of ``domain_stats``."""
    table = Table(title=f"{spec.name} · {spec.format}")
    table.add_column("statistic")
    table.add_column("value", justify="right")
    per_user, split = stats["interactions_per_user"], stats["split"]
    rating = stats["rating_range"]
    rows = [
        ("users", f"{stats['users']:,}"),
        ("items", f"{stats['items']:,}"),
        ("interactions", f"{stats['interactions']:,}"),
        ("sparsity", "-" if stats["sparsity"] is None else f"{stats['sparsity']:.4%}"),
        (
            "interactions / user",
            "mean {mean:.1f} · median {median:g} · min {min} · max {max}".format(**per_user),
        ),
        ("items with no interaction", f"{stats['items_without_interactions']:,}"),
        ("items with text", f"{stats['text_coverage']:.1%}"),
        ("words per item text", f"{stats['text_words_mean']:.1f}"),
        ("rating range", "none" if rating is None else f"{rating[0]:g} – {rating[1]:g}"),
        ("timestamps", "yes" if stats["has_timestamps"] else "no"),
        ("split", split["kind"]),
        ("train sequences / pairs", f"{split['train_sequences']:,} / {split['train_pairs']:,}"),
        ("valid / test examples", f"{split['valid']:,} / {split['test']:,}"),
        ("sha256", stats["sha256"][:16] + " (full: stats.json)"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def run(cfg: DictConfig) -> dict[str, Any]:
    console = Console()
    record: dict[str, Any] = {"command": "data stats", "domains": {}}
    for spec, domain in load_domains(cfg):
        split = make_split(domain, spec.order, spec.order_seed)
        stats = domain_stats(domain, split)
        record["domains"][spec.name] = {"format": spec.format, "origin": domain.origin} | stats
        console.print(stats_table(spec, stats))
    path = atomic_write_json(run_dir(cfg) / "stats.json", record)
    console.print(f"stats: {path}")
    return record
