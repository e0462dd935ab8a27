"""`crossrec data stats`: statistics on real fixtures, and the command on the bundled domains."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from crossrec_cli.commands.data_stats import domain_stats
from crossrec_cli.data import DomainSpec, load_domain, make_split

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "data"
CROSSREC = Path(sys.executable).parent / "crossrec"


def stats_of(**raw) -> dict:
    spec = DomainSpec.from_dict({"name": "t", **raw})
    domain = load_domain(spec)
    return domain_stats(domain, make_split(domain, spec.order, spec.order_seed)) | {
        "_domain": domain
    }


def test_stats_of_movielens_slice():
    s = stats_of(format="movielens", path=str(FIX / "ml-100k"), text_fields=["title", "genres"])
    assert (s["users"], s["items"], s["interactions"]) == (29, 102, 617)
    assert s["sparsity"] == pytest.approx(1 - 617 / (29 * 102))
    # ratings per user in u.data (cut -f1 | uniq -c): 2 2 3 3 3 5 ... 11 (15th of 29) ... 66 100
    assert s["interactions_per_user"] == {
        "mean": pytest.approx(617 / 29),
        "median": 11.0,
        "min": 2,
        "max": 100,
    }
    assert s["items_without_interactions"] == 0
    assert s["text_coverage"] == 1.0
    words = [len(t.split()) for t in s["_domain"].item_text]
    assert (
        s["text_words_mean"] == pytest.approx(np.mean(words)) and words[0] == 6
    )  # Toy Story (1995). Animation, ...
    assert s["rating_range"] == [1.0, 5.0] and s["has_timestamps"] is True
    assert s["split"] == {
        "kind": "leave-one-out",
        "train_sequences": 29,
        "train_pairs": 534,
        "valid": 27,
        "test": 27,
    }
    assert s["sha256"] == s["_domain"].fingerprint()["sha256"]


def test_stats_of_given_sequences():
    s = stats_of(format="recbole", path=str(FIX / "presplit-seq"), dataset="ml-100k-slice")
    assert s["split"] == {
        "kind": "given",
        "train_sequences": 24,
        "train_pairs": 532,
        "valid": 27,
        "test": 27,
    }
    assert s["rating_range"] is None and s["has_timestamps"] is False
    # the 563 train rows of presplit-inter less the 4 of the two users UniSRec-style files drop
    assert (s["users"], s["interactions"]) == (27, 559)


def test_stats_count_items_without_interactions():
    # Amazon keeps only reviewed items; a given split keeps every item of its item file
    s = stats_of(
        format="recbole",
        path=str(FIX / "presplit-inter"),
        dataset="ml-100k-slice",
        text_fields=["movie_title"],
    )
    d = s["_domain"]
    assert s["items_without_interactions"] == d.n_items - len(np.unique(d.inter_item)) > 0


def run_stats(tmp_path: Path, *overrides: str) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / "run"
    proc = subprocess.run(
        [str(CROSSREC), "data", "stats", *overrides, f"hydra.run.dir={out}"],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    return proc, out


def test_cli_stats_movies(tmp_path):
    proc, out = run_stats(tmp_path, "domain=movies")
    assert proc.returncode == 0, proc.stderr
    for text in ("943", "1,682", "100,000", "leave-one-out", "93.6953%"):
        assert text in proc.stdout
    movies = json.loads((out / "stats.json").read_text())["domains"]["movies"]
    assert (movies["users"], movies["items"], movies["interactions"]) == (943, 1682, 100000)
    assert movies["sparsity"] == pytest.approx(1 - 100000 / (943 * 1682))
    assert (
        movies["interactions_per_user"]["min"] == 20
        and movies["interactions_per_user"]["max"] == 737
    )
    assert movies["rating_range"] == [1.0, 5.0] and movies["has_timestamps"] is True
    assert movies["split"] == {
        "kind": "leave-one-out",
        "train_sequences": 943,
        "train_pairs": 100000 - 3 * 943,
        "valid": 943,
        "test": 943,
    }
    assert len(movies["sha256"]) == 64


def user_domains(tmp_path: Path, filters: str = "") -> Path:
    """DIR/domain/given.yaml: the UniSRec fixture copied to a user folder."""
    data = tmp_path / "given-data"
    shutil.copytree(FIX / "presplit-seq", data)
    conf = tmp_path / "conf"
    (conf / "domain").mkdir(parents=True)
    text = f"name: given\nformat: recbole\npath: {data}\ndataset: ml-100k-slice\nsplit: given\n"
    (conf / "domain" / "given.yaml").write_text(text + filters)
    return conf


def test_cli_stats_two_domains_with_user_domain(tmp_path):
    conf = user_domains(tmp_path)
    proc, out = run_stats(tmp_path, "domain=[music,given]", f"hydra.searchpath=[file://{conf}]")
    assert proc.returncode == 0, proc.stderr
    domains = json.loads((out / "stats.json").read_text())["domains"]
    assert list(domains) == ["music", "given"]
    assert (domains["music"]["users"], domains["music"]["items"]) == (1892, 17632)
    assert domains["music"]["has_timestamps"] is False
    assert domains["given"]["split"]["kind"] == "given" and domains["given"]["split"]["test"] == 27


def test_cli_stats_bad_domain_is_one_error_line(tmp_path):
    conf = user_domains(tmp_path, "filters: {user_core: 5}\n")
    proc, out = run_stats(tmp_path, "domain=given", f"hydra.searchpath=[file://{conf}]")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip().splitlines()[-1].startswith("error: domain.given.filters.user_core: ")
    )
    assert not (out / "stats.json").exists()
