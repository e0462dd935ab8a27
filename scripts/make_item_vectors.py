#!/usr/bin/env python3
"""Per-item vectors from ml-100k's own metadata, for multimodal fusion runs on real vectors.

    python scripts/make_item_vectors.py [--out outputs/vectors]

Writes ``<out>/ml100k_meta.tsv`` (``item_id<TAB>v1 v2 ...``: the 19 genre indicators of
``ml-100k.item``'s ``class`` column, then the release year scaled to [0, 1] over the catalogue,
0.5 where unknown) and ``<out>/conf/domain/movies_meta.yaml``, the bundled movies domain with that
file declared as ``vectors: {meta: ...}``. Then::

    crossrec finetune domain=movies_meta 'model.features=[text,vectors:meta]' fusion=gated \\
        'hydra.searchpath=[file://<out>/conf]'
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
ITEMS = REPO / "crossrec_cli" / "data" / "bundled" / "ml-100k" / "ml-100k.item"
DOMAIN = REPO / "crossrec_cli" / "conf" / "domain" / "movies.yaml"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "outputs" / "vectors"))
    out = Path(p.parse_args().out).resolve()
    lines = ITEMS.read_text(encoding="utf-8").splitlines()
    header = [h.split(":")[0] for h in lines[0].split("\t")]
    rows = [dict(zip(header, ln.split("\t"))) for ln in lines[1:] if ln.strip()]
    genres = sorted({g for r in rows for g in r["class"].split()})
    years = np.asarray([float(r["release_year"]) if r["release_year"].strip().isdigit() else np.nan for r in rows])
    lo, hi = np.nanmin(years), np.nanmax(years)
    scaled = np.where(np.isnan(years), 0.5, (years - lo) / (hi - lo))
    out.mkdir(parents=True, exist_ok=True)
    tsv = out / "ml100k_meta.tsv"
    with tsv.open("w", encoding="utf-8") as f:
        for r, y in zip(rows, scaled):
            have = set(r["class"].split())
            vec = [1.0 if g in have else 0.0 for g in genres] + [float(y)]
            f.write(r["item_id"] + "\t" + " ".join(f"{v:g}" for v in vec) + "\n")
    domain = yaml.safe_load(DOMAIN.read_text())
    domain.update(name="movies_meta", vectors={"meta": {"path": str(tsv)}})
    conf = out / "conf" / "domain"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "movies_meta.yaml").write_text(yaml.safe_dump(domain, sort_keys=False))
    print(f"{len(rows)} items x {len(genres) + 1} values ({len(genres)} genres + year {lo:.0f}-{hi:.0f}) -> {tsv}")
    print(f"domain file: {conf / 'movies_meta.yaml'}")


if __name__ == "__main__":
    main()
