"""Loaders for MovieLens raw, Amazon JSON, RecBole / UniSRec pre-split files, on real fixtures.

The fixtures (tests/fixtures/data, see its README) are one real ml-100k slice written in every
format, so every loader must return the same users, items, ratings and timestamps.
"""

from __future__ import annotations

import gzip
import itertools
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from crossrec_cli.data import DomainSpec, load_domain, make_split
from crossrec_cli.errors import CrossrecError

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "data"
BUNDLED = ROOT / "crossrec_cli" / "data" / "bundled" / "ml-100k"
CROSSREC = Path(sys.executable).parent / "crossrec"
SLICE_ITEMS = {*range(1, 101), 543, 1005}
CAT = "Movies_and_TV"


def spec(**raw) -> DomainSpec:
    return DomainSpec.from_dict({"name": "t", **raw})


def load(**raw):
    return load_domain(spec(**raw))


def source_ratings() -> list[tuple[str, str, float, float]]:
    """The slice straight from the bundled RecBole file: (user, item, rating, time), file order."""
    rows = [r.split("\t") for r in (BUNDLED / "ml-100k.inter").read_text().splitlines()[1:]]
    return [
        (u, i, float(r), float(t)) for u, i, r, t in rows if int(u) <= 30 and int(i) in SLICE_ITEMS
    ]


def triples(domain) -> list[tuple[str, str, float, float]]:
    """(user id, item id, rating, time) of every interaction, in the domain's order."""
    return [
        (domain.user_ids[u], domain.item_ids[i], r, t)
        for u, i, r, t in zip(
            domain.inter_user, domain.inter_item, domain.inter_rating, domain.inter_time
        )
    ]


def copy_fixture(name: str, tmp_path: Path) -> Path:
    dst = tmp_path / name
    shutil.copytree(FIX / name, dst)
    return dst


def replace_line(path: Path, lineno: int, text: str, encoding: str = "utf-8") -> None:
    lines = path.read_text(encoding=encoding).split("\n")
    lines[lineno - 1] = text
    path.write_text("\n".join(lines), encoding=encoding)


def error_of(**raw) -> str:
    with pytest.raises(CrossrecError) as exc:
        load(**raw)
    return str(exc.value)


# --- MovieLens raw -----------------------------------------------------------------------------


def test_ml100k_raw_matches_source():
    d = load(format="movielens", path=str(FIX / "ml-100k"), text_fields=["title", "genres"])
    assert (d.n_users, d.n_items, d.n_interactions) == (29, 102, 617)
    assert triples(d) == source_ratings()
    assert d.item_ids[:3] == ["1", "2", "3"] and d.item_ids[-2:] == ["543", "1005"]
    assert d.item_text[0] == "Toy Story (1995). Animation, Children's, Comedy"
    assert d.item_columns["title"][100] == "Misérables, Les (1995)"  # latin-1 byte 0xe9
    assert d.item_columns["year"][0] == "1995"
    assert set(d.item_columns) >= {
        "item_id",
        "title",
        "year",
        "release_date",
        "video_release_date",
        "imdb_url",
        "genres",
    }


def test_ml100k_without_u_genre_uses_standard_names(tmp_path):
    folder = copy_fixture("ml-100k", tmp_path)
    (folder / "u.genre").unlink()
    d = load(format="movielens", path=str(folder), text_fields=["title", "genres"])
    assert d.item_columns["genres"][1] == "Action, Adventure, Thriller"  # GoldenEye


def test_ml1m_equals_ml100k():
    kw = {"format": "movielens", "text_fields": ["title", "genres"]}
    d100 = load(path=str(FIX / "ml-100k"), **kw)
    d1m = load(path=str(FIX / "ml-1m"), **kw)
    assert d1m.fingerprint() == d100.fingerprint()
    assert d1m.item_columns["genres"] == d100.item_columns["genres"]


def test_movielens_split_is_time_ordered():
    d = load(format="movielens", path=str(FIX / "ml-100k"), text_fields=["title"])
    split = make_split(d)
    for u, hist, target in zip(split.test.users, split.test.histories, split.test.targets):
        times = {d.inter_item[k]: d.inter_time[k] for k in np.flatnonzero(d.inter_user == u)}
        assert times[target] == max(times.values())
        assert all(times[a] <= times[b] for a, b in itertools.pairwise(hist))


@pytest.mark.parametrize(
    "file, lineno, text, where, problem",
    [
        ("u.data", 5, "196\t242\t3", "u.data:5", "row has 3 fields"),
        ("u.data", 3, "22\t1\tgood\t878887116", "u.data:3:3", "'rating' has 'good'"),
        ("u.data", 7, "22\t9999\t3\t878887116", "u.data:7", "unknown item id '9999'"),
        (
            "u.item",
            2,
            "2|GoldenEye (1995)||||0|2|1|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0",
            "u.item:2:7",
            "genre flag '2'",
        ),
    ],
)
def test_ml100k_malformed_rows(tmp_path, file, lineno, text, where, problem):
    folder = copy_fixture("ml-100k", tmp_path)
    replace_line(folder / file, lineno, text, "latin-1")
    msg = error_of(format="movielens", path=str(folder), text_fields=["title"])
    assert f"{folder / file}:{where.split(':', 1)[1]}:" in msg and problem in msg


def test_ml1m_malformed_movie(tmp_path):
    folder = copy_fixture("ml-1m", tmp_path)
    replace_line(folder / "movies.dat", 4, "4::Get Shorty (1995)", "latin-1")
    msg = error_of(format="movielens", path=str(folder), text_fields=["title"])
    assert f"{folder / 'movies.dat'}:4:" in msg and "row has 2 fields" in msg


def test_movielens_release_choice(tmp_path):
    folder = copy_fixture("ml-100k", tmp_path)
    for name in ("ratings.dat", "movies.dat"):
        shutil.copy(FIX / "ml-1m" / name, folder / name)
    assert "set dataset: ml-100k or ml-1m" in error_of(format="movielens", path=str(folder))
    d = load(format="movielens", path=str(folder), dataset="ml-1m", text_fields=["title"])
    assert set(d.item_columns) == {"item_id", "title", "year", "genres"}


@pytest.mark.parametrize("fmt, folder", [("movielens", "ml-100k"), ("amazon", "amazon-2023")])
def test_formats_without_split_files_reject_split_given(fmt, folder):
    msg = error_of(format=fmt, path=str(FIX / folder), split="given")
    assert msg.startswith("error: domain.t.split: ") and "loo" in msg


# --- Amazon ------------------------------------------------------------------------------------


@pytest.mark.parametrize("release", ["amazon-2014", "amazon-2018", "amazon-2023"])
def test_amazon_releases_match_source(release):
    d = load(format="amazon", path=str(FIX / release))
    assert triples(d) == source_ratings()  # 2023 milliseconds -> seconds
    assert list(d.item_columns) == [
        "item_id",
        "title",
        "brand",
        "categories",
        "description",
        "features",
    ]
    assert d.item_columns["categories"][0] == "Movies & TV, Animation, Children's, Comedy"
    assert d.item_text[0] == "Toy Story (1995). Movies & TV, Animation, Children's, Comedy"


def test_amazon_releases_agree():
    prints = {
        r: load(format="amazon", path=str(FIX / r), dataset=CAT).fingerprint()
        for r in ("amazon-2014", "amazon-2018", "amazon-2023")
    }
    assert len({json.dumps(p) for p in prints.values()}) == 1


def test_amazon_named_stems():
    d = load(format="amazon", path=str(FIX / "amazon-2014"), dataset=f"reviews_{CAT}_5")
    assert d.n_interactions == 617


def read_jsonl_gz(path: Path) -> list[dict]:
    return [json.loads(line) for line in gzip.decompress(path.read_bytes()).decode().splitlines()]


def test_amazon_json_array_plain(tmp_path):
    reviews = read_jsonl_gz(FIX / "amazon-2023" / f"{CAT}.jsonl.gz")
    (tmp_path / f"{CAT}.json").write_text(json.dumps(reviews, indent=1))
    shutil.copy(FIX / "amazon-2023" / f"meta_{CAT}.jsonl.gz", tmp_path)
    d = load(format="amazon", path=str(tmp_path))
    assert d.fingerprint() == load(format="amazon", path=str(FIX / "amazon-2023")).fingerprint()
    del reviews[9]["user_id"]  # one object per line: record 10 is on line 11
    (tmp_path / f"{CAT}.json").write_text(
        "[\n" + ",\n".join(json.dumps(r) for r in reviews) + "\n]\n"
    )
    assert f"{tmp_path / (CAT + '.json')}:11: record has no id" in error_of(
        format="amazon", path=str(tmp_path)
    )


def test_amazon_drops_items_without_text(tmp_path, caplog):
    meta = read_jsonl_gz(FIX / "amazon-2018" / f"meta_{CAT}.json.gz")
    missing = {m["asin"] for m in meta[:5]}
    empty = meta[5]
    empty.update(title="", category=[])
    shutil.copy(FIX / "amazon-2018" / f"{CAT}_5.json.gz", tmp_path)
    (tmp_path / f"meta_{CAT}.json").write_text("".join(json.dumps(m) + "\n" for m in meta[5:]))
    with caplog.at_level(logging.INFO, logger="crossrec"):
        d = load(format="amazon", path=str(tmp_path), text_fields=["title", "categories"])
    gone = missing | {empty["asin"]}
    kept = [r for r in source_ratings() if r[1] not in gone]
    assert d.n_items == 102 - 6 and gone.isdisjoint(d.item_ids)
    assert triples(d) == kept
    assert "5 reviewed items without metadata and 1 without text" in caplog.text


def write_gz_lines(path: Path, lines: list[str]) -> None:
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))


@pytest.mark.parametrize(
    "lineno, text, problem",
    [
        (4, '{"reviewerID": "1", "asin": ', "not valid JSON"),
        (
            6,
            '{"asin": "1", "overall": 5.0, "unixReviewTime": 874965758}',
            "no id in ['reviewerID', 'user_id']",
        ),
        (
            9,
            '{"reviewerID": "1", "asin": "1", "overall": "great", "unixReviewTime": 1}',
            "'overall' has 'great'",
        ),
        (2, '["not", "an", "object"]', "record is a list"),
    ],
)
def test_amazon_malformed_reviews(tmp_path, lineno, text, problem):
    folder = copy_fixture("amazon-2018", tmp_path)
    path = folder / f"{CAT}_5.json.gz"
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    lines[lineno - 1] = text
    write_gz_lines(path, lines)
    msg = error_of(format="amazon", path=str(folder))
    assert f"{path}:{lineno}" in msg and problem in msg


def test_amazon_truncated_gzip(tmp_path):
    folder = copy_fixture("amazon-2023", tmp_path)
    path = folder / f"{CAT}.jsonl.gz"
    path.write_bytes(path.read_bytes()[:-40])
    assert "cannot read the file" in error_of(format="amazon", path=str(folder))


def test_amazon_literal_metadata_is_never_evaluated(tmp_path):
    folder = copy_fixture("amazon-2014", tmp_path)
    path = folder / f"meta_{CAT}.json.gz"
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    flag = tmp_path / "pwned"
    lines[2] = f"__import__('pathlib').Path({str(flag)!r}).touch()"
    write_gz_lines(path, lines)
    msg = error_of(format="amazon", path=str(folder))
    assert f"{path}:3" in msg and not flag.exists()


def test_amazon_needs_dataset_with_two_meta_files(tmp_path):
    folder = copy_fixture("amazon-2018", tmp_path)
    shutil.copy(folder / f"meta_{CAT}.json.gz", folder / "meta_Books.json.gz")
    assert "set dataset" in error_of(format="amazon", path=str(folder))
    assert load(format="amazon", path=str(folder), dataset=CAT).n_items == 102


# --- RecBole / UniSRec pre-split files ---------------------------------------------------------


def read_split_file(path: Path) -> list[list[str]]:
    return [r.split("\t") for r in path.read_text().splitlines()[1:]]


def test_presplit_interactions_used_as_given():
    folder = FIX / "presplit-inter"
    d = load(
        format="recbole",
        path=str(folder),
        dataset="ml-100k-slice",
        text_fields=["movie_title", "class"],
    )
    split = make_split(d)
    assert split is d.given_split and split.kind == "given"
    train = read_split_file(folder / "ml-100k-slice.train.inter")
    assert d.n_interactions == len(train) == 563 and d.n_users == 29 and d.n_items == 102
    assert triples(d) == [(u, i, float(r), float(t)) for u, i, r, t in train]
    ids = np.asarray(d.item_ids)
    for part in ("valid", "test"):
        rows = read_split_file(folder / f"ml-100k-slice.{part}.inter")
        ev = getattr(split, part)
        assert [(d.user_ids[u], ids[t]) for u, t in zip(ev.users, ev.targets)] == [
            (r[0], r[1]) for r in rows
        ]
    seqs = {int(u): s for u, s in zip(split.train_users, split.train_seqs)}
    valid_target = dict(zip(split.valid.users.tolist(), split.valid.targets.tolist()))
    for u, hist, target in zip(split.test.users, split.test.histories, split.test.targets):
        assert target not in seqs[u] and valid_target[u] not in seqs[u]  # no leakage
        assert hist.tolist() == seqs[u].tolist() + [valid_target[u]]
        times = [t for uu, _, _, t in triples(d) if uu == d.user_ids[u]]
        assert times == sorted(times)
    for u, hist in zip(split.valid.users, split.valid.histories):
        assert hist.tolist() == seqs[u].tolist()
    assert len(split.train_pairs) == sum(len(s) - 1 for s in split.train_seqs) == 534


def pair_rows(d, split) -> list[tuple[str, list[str], str]]:
    """(user, history, target) of every training pair, in ``train_pairs`` order."""
    ids, seqs = np.asarray(d.item_ids), split.train_seqs
    return [
        (d.user_ids[split.train_users[s]], ids[seqs[s][:p]].tolist(), ids[seqs[s][p]])
        for s, p in split.train_pairs
    ]


def assert_one_pair_per_row(d, split, train_rows) -> None:
    pairs = pair_rows(d, split)
    assert len(pairs) == len(train_rows)
    for (u, hist, t), (fu, fh, ft) in zip(pairs, train_rows):
        given = fh.split()
        assert (u, t) == (fu, ft) and hist[len(hist) - len(given) :] == given


def test_presplit_sequences_used_as_given():
    folder = FIX / "presplit-seq"
    d = load(format="recbole", path=str(folder), dataset="ml-100k-slice")
    split = make_split(d)
    assert split is d.given_split and split.kind == "given"
    assert d.item_text[0] == "Toy Story (1995). Animation Children's Comedy"  # from the .text file
    ids = np.asarray(d.item_ids)
    train = read_split_file(folder / "ml-100k-slice.train.inter")
    assert len(train) == 532
    assert_one_pair_per_row(d, split, train)
    # UniSRec writes one row per prefix: they chain into each user's training sequence, which is
    # the same as the interaction-form fixture's (so position-wise trainers see the same pairs)
    inter = load(format="recbole", path=str(FIX / "presplit-inter"), dataset="ml-100k-slice")
    inter_split = make_split(inter)
    expected = {
        inter.user_ids[u]: np.asarray(inter.item_ids)[s].tolist()
        for u, s in zip(inter_split.train_users, inter_split.train_seqs)
    }
    got = {d.user_ids[u]: ids[s].tolist() for u, s in zip(split.train_users, split.train_seqs)}
    assert len(got) == len(split.train_seqs) == 24 and all(got[u] == expected[u] for u in got)
    assert split.starts == [1] * 24
    for part in ("valid", "test"):
        rows = read_split_file(folder / f"ml-100k-slice.{part}.inter")
        ev = getattr(split, part)
        got_ev = [
            (d.user_ids[u], ids[h].tolist(), ids[t])
            for u, h, t in zip(ev.users, ev.histories, ev.targets)
        ]
        assert got_ev == [(u, h.split(), t) for u, h, t in rows]
    assert np.isnan(d.inter_time).all() and d.n_users == 27


def test_presplit_rows_that_do_not_chain_stay_one_pair_each(tmp_path):
    folder = copy_fixture("presplit-seq", tmp_path)
    path = folder / "ml-100k-slice.train.inter"
    head, *rows = path.read_text().splitlines()
    rows = rows[::-1] + rows[:3]  # longest prefix first, then three repeated rows
    path.write_text("\n".join([head, *rows]) + "\n")
    d = load(format="recbole", path=str(folder), dataset="ml-100k-slice")
    split = d.given_split
    # reversed rows never extend each other; the three repeats are a prefix chain of their own
    assert len(rows) == 535 and len(split.train_seqs) == 532 + 1
    assert_one_pair_per_row(d, split, [r.split("\t") for r in rows])
    longest: dict[int, list[int]] = {}  # the domain's interactions: each user's longest one
    for u, seq in zip(split.train_users.tolist(), split.train_seqs):
        longest[u] = max(longest.get(u, []), seq.tolist(), key=len)
    for u, seq in longest.items():
        assert d.inter_item[d.inter_user == u].tolist() == seq


def test_presplit_sequences_domain_holds_training_interactions_only():
    folder = FIX / "presplit-seq"
    d = load(format="recbole", path=str(folder), dataset="ml-100k-slice")
    test_inter = read_split_file(FIX / "presplit-inter" / "ml-100k-slice.test.inter")
    valid_inter = read_split_file(FIX / "presplit-inter" / "ml-100k-slice.valid.inter")
    train_inter = read_split_file(FIX / "presplit-inter" / "ml-100k-slice.train.inter")
    seq_users = {r[0] for r in test_inter}
    expected = sorted((u, i) for u, i, _, _ in train_inter if u in seq_users)
    assert sorted((u, i) for u, i, _, _ in triples(d)) == expected
    held_out = {(r[0], r[1]) for r in valid_inter + test_inter}
    assert held_out.isdisjoint((u, i) for u, i, _, _ in triples(d))


def test_presplit_rejects_filters():
    msg = error_of(
        format="recbole",
        path=str(FIX / "presplit-seq"),
        dataset="ml-100k-slice",
        filters={"max_users": 5},
    )
    assert "domain.t.filters.max_users" in msg and "given split" in msg


@pytest.mark.parametrize(
    "form, part, lineno, text, col",
    [
        ("presplit-inter", "valid", 3, "2\t7777\t4\t888550871", ""),
        ("presplit-seq", "test", 4, "3\t1 8888 2\t5", ":2"),
    ],
)
def test_presplit_unknown_item_names_its_file(tmp_path, form, part, lineno, text, col):
    folder = copy_fixture(form, tmp_path)
    path = folder / f"ml-100k-slice.{part}.inter"
    replace_line(path, lineno, text)
    msg = error_of(format="recbole", path=str(folder), dataset="ml-100k-slice")
    assert f"{path}:{lineno}{col}" in msg and "unknown item id" in msg


def test_presplit_forms_must_match(tmp_path):
    folder = copy_fixture("presplit-seq", tmp_path)
    shutil.copy(FIX / "presplit-inter" / "ml-100k-slice.test.inter", folder)
    msg = error_of(format="recbole", path=str(folder), dataset="ml-100k-slice")
    assert "ml-100k-slice.test.inter:1" in msg and "same form" in msg


# --- end to end: a user's own domain on Hydra's search path ------------------------------------


def write_user_domain(tmp_path: Path, users: int = 40) -> tuple[Path, Path]:
    """DIR/domain/mine.yaml + a RecBole folder with real ml-100k rows of the first users."""
    data = tmp_path / "mine-data"
    data.mkdir()
    rows = [r.split("\t") for r in (BUNDLED / "ml-100k.inter").read_text().splitlines()[1:]]
    rows = [r for r in rows if int(r[0]) <= users]
    used = {r[1] for r in rows}
    (data / "mine.inter").write_text(
        "user_id:token\titem_id:token\ttimestamp:float\n"
        + "".join(f"{u}\t{i}\t{t}\n" for u, i, _, t in rows)
    )
    items = [r.split("\t") for r in (BUNDLED / "ml-100k.item").read_text().splitlines()[1:]]
    (data / "mine.item").write_text(
        "item_id:token\ttitle:token_seq\n"
        + "".join(f"{i}\t{t}\n" for i, t, _, _ in items if i in used)
    )
    conf = tmp_path / "conf"
    (conf / "domain").mkdir(parents=True)
    (conf / "domain" / "mine.yaml").write_text(
        f"name: mine\nformat: recbole\npath: {data}\ndataset: mine\ntext_fields: [title]\n"
    )
    return conf, data


def test_user_domain_on_search_path_evaluates(tmp_path):
    conf, data = write_user_domain(tmp_path)
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            str(CROSSREC),
            "evaluate",
            "model=popularity",
            "domain=mine",
            f"hydra.searchpath=[file://{conf}]",
            f"hydra.run.dir={out}",
        ],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads((out / "metrics.json").read_text())
    expected = load(format="recbole", path=str(data), dataset="mine", text_fields=["title"])
    assert record["dataset"]["mine"] == expected.fingerprint() | {"split": "leave-one-out"}
    counts = np.bincount(expected.inter_user)
    assert record["test"]["mine"]["examples"] == int((counts >= 3).sum()) == 40
    assert 0.0 < record["test"]["mine"]["recall@50"] <= 1.0


def test_malformed_user_domain_is_one_error_line(tmp_path):
    conf, data = write_user_domain(tmp_path, users=5)
    replace_line(data / "mine.inter", 6, "1\t61")
    proc = subprocess.run(
        [
            str(CROSSREC),
            "evaluate",
            "model=popularity",
            "domain=mine",
            f"hydra.searchpath=[file://{conf}]",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert (
        lines[-1].startswith(f"error: {data / 'mine.inter'}:6: row has 2 fields")
        and "Traceback" not in proc.stderr
    )
