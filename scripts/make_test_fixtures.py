"""Regenerate tests/fixtures/data/ from the bundled MovieLens 100K (RecBole atomic files).

One real slice, written in every public format the loaders read:
users 1-30, and their ratings of movies 1-100 plus 543 and 1005 (two non-ASCII titles, so the
latin-1 files hold non-ASCII bytes). Row order follows the bundled ``ml-100k.inter`` (which
keeps the order of the original ``u.data``). Deterministic: gzip without a timestamp.

    .venv/bin/python scripts/make_test_fixtures.py
"""

from __future__ import annotations

import gzip
import json
import time
from collections import defaultdict
from pathlib import Path

from crossrec_cli.data.movielens import ML100K_GENRES

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "crossrec_cli" / "data" / "bundled" / "ml-100k"
OUT = ROOT / "tests" / "fixtures" / "data"
USERS = range(1, 31)
ITEMS = {*range(1, 101), 543, 1005}
STEM = "ml-100k-slice"
MAX_HISTORY = 20  # UniSRec keeps 50; 20 keeps the sequential files small
GENRES = ML100K_GENRES  # the genre flag order of ml-100k's u.item
CATEGORY = "Movies_and_TV"


def read_atomic(path: Path) -> list[list[str]]:
    rows = path.read_text(encoding="utf-8").splitlines()
    return [r.split("\t") for r in rows[1:] if r.strip()]


def load_slice() -> tuple[list[tuple[str, str, int, int]], dict[str, tuple[str, str, list[str]]]]:
    """(ratings in file order as (user, item, rating, time), items id -> (title, year, genres))."""
    ratings = [
        (u, i, int(float(r)), int(float(t)))
        for u, i, r, t in read_atomic(SRC / "ml-100k.inter")
        if int(u) in USERS and int(i) in ITEMS
    ]
    items = {
        i: (title, year, cls.split())
        for i, title, year, cls in read_atomic(SRC / "ml-100k.item")
        if int(i) in ITEMS
    }
    return ratings, dict(sorted(items.items(), key=lambda kv: int(kv[0])))


def full_title(title: str, year: str) -> str:
    return f"{title} ({year})" if year.isdigit() else title


def write(path: Path, text: str, encoding: str = "utf-8") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode(encoding)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)


def movielens(ratings, items) -> None:
    write(OUT / "ml-100k/u.data", "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings))
    write(
        OUT / "ml-100k/u.genre",
        "".join(f"{g}|{k}\n" for k, g in enumerate(GENRES)) + "\n",
        "latin-1",
    )
    rows = []
    for i, (title, year, genres) in items.items():
        flags = "|".join("1" if g in genres else "0" for g in GENRES)
        rows.append(
            f"{i}|{full_title(title, year)}||||{flags}\n"
        )  # release date, video date, URL: not in source
    write(OUT / "ml-100k/u.item", "".join(rows), "latin-1")
    write(OUT / "ml-1m/ratings.dat", "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in ratings))
    write(
        OUT / "ml-1m/movies.dat",
        "".join(f"{i}::{full_title(t, y)}::{'|'.join(g)}\n" for i, (t, y, g) in items.items()),
        "latin-1",
    )


def jsonl(records: list) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def amazon(ratings, items) -> None:
    def day(t: int) -> str:  # the 2014/2018 reviewTime
        return time.strftime("%m %d, %Y", time.gmtime(t))

    old = [
        {"reviewerID": u, "asin": i, "overall": float(r), "unixReviewTime": t, "reviewTime": day(t)}
        for u, i, r, t in ratings
    ]
    write(OUT / f"amazon-2014/reviews_{CATEGORY}_5.json.gz", jsonl(old))
    meta14 = [
        repr({"asin": i, "title": full_title(t, y), "categories": [["Movies & TV", *g]]})
        for i, (t, y, g) in items.items()
    ]  # Python literals, single quotes, like the 2014 files
    write(OUT / f"amazon-2014/meta_{CATEGORY}.json.gz", "\n".join(meta14) + "\n")
    write(OUT / f"amazon-2018/{CATEGORY}_5.json.gz", jsonl(old))
    meta18 = [
        {
            "asin": i,
            "title": full_title(t, y),
            "brand": "",
            "category": ["Movies & TV", *g],
            "description": [],
            "feature": [],
        }
        for i, (t, y, g) in items.items()
    ]
    write(OUT / f"amazon-2018/meta_{CATEGORY}.json.gz", jsonl(meta18))
    new = [
        {
            "rating": float(r),
            "title": "",
            "text": "",
            "images": [],
            "asin": i,
            "parent_asin": i,
            "user_id": u,
            "timestamp": t * 1000,
            "helpful_vote": 0,
            "verified_purchase": True,
        }
        for u, i, r, t in ratings
    ]
    write(OUT / f"amazon-2023/{CATEGORY}.jsonl.gz", jsonl(new))
    meta23 = [
        {
            "main_category": "Movies & TV",
            "title": full_title(t, y),
            "features": [],
            "description": [],
            "store": None,
            "categories": g,
            "parent_asin": i,
        }
        for i, (t, y, g) in items.items()
    ]
    write(OUT / f"amazon-2023/meta_{CATEGORY}.jsonl.gz", jsonl(meta23))


def sequences(ratings) -> dict[str, list[tuple[str, str, int, int]]]:
    """Per user (by id), the ratings ordered by time, ties in file order."""
    by_user = defaultdict(list)
    for row in ratings:
        by_user[row[0]].append(row)
    return {
        u: sorted(rows, key=lambda r: r[3])
        for u, rows in sorted(by_user.items(), key=lambda kv: int(kv[0]))
    }


def presplit(ratings, items) -> None:
    item_rows = [f"{i}\t{t}\t{y}\t{' '.join(g)}\n" for i, (t, y, g) in items.items()]
    head = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    write(OUT / f"presplit-inter/{STEM}.item", head + "".join(item_rows))
    text = [f"{i}\t{full_title(t, y)}. {' '.join(g)}\n" for i, (t, y, g) in items.items()]
    write(OUT / f"presplit-seq/{STEM}.text", "item_id:token\ttext:token_seq\n" + "".join(text))
    parts = {p: [] for p in ("train", "valid", "test")}
    seq_parts = {p: [] for p in ("train", "valid", "test")}
    for u, rows in sequences(ratings).items():
        cut = (
            {"train": rows[:-2], "valid": rows[-2:-1], "test": rows[-1:]}
            if len(rows) >= 3
            else {"train": rows}
        )
        for p, sub in cut.items():
            parts[p] += [f"{u}\t{i}\t{r}\t{t}\n" for _, i, r, t in sub]
        if len(rows) < 3:
            continue
        ids = [r[1] for r in rows]
        for p, positions in (
            ("train", range(1, len(ids) - 2)),
            ("valid", [len(ids) - 2]),
            ("test", [len(ids) - 1]),
        ):
            seq_parts[p] += [
                f"{u}\t{' '.join(ids[max(0, k - MAX_HISTORY) : k])}\t{ids[k]}\n" for k in positions
            ]
    for p, rows in parts.items():
        write(
            OUT / f"presplit-inter/{STEM}.{p}.inter",
            "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(rows),
        )
        write(
            OUT / f"presplit-seq/{STEM}.{p}.inter",
            "user_id:token\titem_id_list:token_seq\titem_id:token\n" + "".join(seq_parts[p]),
        )


def main() -> None:
    ratings, items = load_slice()
    movielens(ratings, items)
    amazon(ratings, items)
    presplit(ratings, items)
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    users = len({r[0] for r in ratings})
    print(f"{len(ratings)} ratings, {users} users, {len(items)} movies -> {OUT} ({total} bytes)")


if __name__ == "__main__":
    main()
