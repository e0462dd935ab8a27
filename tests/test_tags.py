"""Last.fm tags as item text and labels voted from them (crossrec_cli/data/tags.py), and the
classifiers of task=classification on the bundled music genres.

The small folders are real rows of the bundled release (``tags.dat`` latin-1 with CRLF line
ends, ``user_taggedartists.dat`` CRLF), copied line by line for a handful of artists.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from crossrec_cli.data import DomainSpec, load_domain
from crossrec_cli.data.tags import HIDDEN, LabelRule
from crossrec_cli.errors import CrossrecError

REPO = Path(__file__).resolve().parents[1]
LASTFM = REPO / "crossrec_cli" / "data" / "bundled" / "lastfm-hetrec2011"
MUSIC = yaml.safe_load((REPO / "crossrec_cli" / "conf" / "domain" / "music.yaml").read_text())
# Rex the Dog, The Scorpions, Digital Summer, Just Jack, Chay Suede, Farid Bang; 649 D'Nash has
# no tag assignment; 14103 is tagged but not in artists.dat
ARTISTS = ["13011", "2849", "505", "1497", "5750", "5676", "649"]
UNKNOWN = "14103"


def _lines(name: str) -> list[bytes]:
    return (LASTFM / name).read_bytes().splitlines(keepends=True)


def real_folder(tmp_path: Path) -> Path:
    """The bundled files' own lines for ARTISTS (and the unknown id's tag rows)."""
    keep = set(ARTISTS)
    art = _lines("artists.dat")
    ut = _lines("user_taggedartists.dat")
    ut_rows = [ln for ln in ut[1:] if ln.split(b"\t")[1].decode() in keep | {UNKNOWN}]
    used = {ln.split(b"\t")[2] for ln in ut_rows}
    tags = _lines("tags.dat")
    ua = _lines("user_artists.dat")
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "artists.dat").write_bytes(b"".join([art[0]] + [ln for ln in art[1:] if ln.split(b"\t")[0].decode() in keep]))
    (tmp_path / "user_taggedartists.dat").write_bytes(b"".join([ut[0]] + ut_rows))
    (tmp_path / "tags.dat").write_bytes(b"".join([tags[0]] + [ln for ln in tags[1:] if ln.split(b"\t")[0] in used]))
    (tmp_path / "user_artists.dat").write_bytes(b"".join([ua[0]] + [ln for ln in ua[1:] if ln.split(b"\t")[1].decode() in keep]))
    return tmp_path


def spec_for(folder: Path, **labels) -> DomainSpec:
    raw = {k: v for k, v in MUSIC.items() if k not in ("kg", "path")}
    raw["path"] = str(folder)
    raw["tags"] = {"max_tags": 10, "min_users": 1}
    raw["labels"] = MUSIC["labels"] | labels
    return DomainSpec.from_dict(raw)


def test_real_rows_tags_and_labels(tmp_path):
    folder = real_folder(tmp_path)
    assert b"\r\n" in (folder / "tags.dat").read_bytes() and b"\r\n" in (folder / "user_taggedartists.dat").read_bytes()
    d = load_domain(spec_for(folder))
    assert d.n_items == len(ARTISTS)  # the unknown artist's tag rows are skipped, not an item
    row = {iid: k for k, iid in enumerate(d.item_ids)}
    tags, genre, hidden = d.item_columns["tags"], d.item_columns["genre"], d.item_columns["tags" + HIDDEN]
    # latin-1 tag values decode (tags.dat is ISO-8859-1)
    assert "tropicália" in tags[row["5750"]] and "düsseldorf" in tags[row["5676"]]
    # an artist with no tag: empty tags, no label, and its text is its name (the original spelling)
    assert tags[row["649"]] == "" and genre[row["649"]] == "" and d.item_text[row["649"]] == "D'Nash"
    # Digital Summer: users 12 and 1679 both gave alternative metal / alternative rock / alternative
    # / nu metal, 1679 also nu-metal: 2-user tags first, alphabetically, then the 1-user tag
    assert tags[row["505"]] == "alternative, alternative metal, alternative rock, nu metal, nu-metal"
    assert d.item_text[row["505"]] == "Digital Summer. " + tags[row["505"]]
    # hidden: class tags (alternative metal, alternative rock, nu metal) and tags with a class
    # word (nu-metal has the token "metal") are left out of the task input
    assert hidden[row["505"]] == "alternative"
    # Votes by distinct users (min_voters 2, tie -> more raw assignments):
    # Rex the Dog: pop {43, 1191} (dance x2) vs electronic {43, 1191} (electro, techno x2 each);
    #   2-2 on users, 2 vs 4 assignments -> electronic
    # The Scorpions: metal {61, 63} (2 assignments) vs rock {61, 2030} (hard rock, rock, classic
    #   rock by 61, classic rock by 2030: 4) -> rock
    # Digital Summer: metal {12, 1679} (alternative metal, nu metal: 4) vs rock {12, 1679}
    #   (alternative rock: 2) -> metal
    # Just Jack: pop {43, 1535} (pop, dance, dance: 3) vs electronic {1929, 2030} (2), hip-hop {43}
    #   -> pop
    # Chay Suede: folk {331} and jazz {331}: one voter, under min_voters 2 -> no label
    # Farid Bang: hip-hop {1912} (rap): one voter -> no label
    want = {"13011": "electronic", "2849": "rock", "505": "metal", "1497": "pop", "5750": "", "5676": ""}
    assert {a: genre[row[a]] for a in want} == want


def test_tie_and_vote_rules(tmp_path):
    folder = real_folder(tmp_path)

    def labels(**kw):
        d = load_domain(spec_for(folder, **kw))
        return dict(zip(d.item_ids, d.item_columns["genre"]))

    drop = labels(tie="drop")  # every 2-2 tie above is left unlabelled
    assert [drop[a] for a in ("13011", "2849", "505", "1497")] == ["", "", "", ""]
    order = labels(tie="order", min_voters=1)  # classes: rock, metal, electronic, pop, hip-hop, punk, folk, ...
    assert order["13011"] == "electronic" and order["2849"] == "rock" and order["505"] == "rock"
    assert order["5750"] == "folk" and order["5676"] == "hip-hop"
    # vote by raw assignments: Just Jack pop 3 > electronic 2 > hip-hop 1; Scorpions rock 4 > metal 2
    by_assign = labels(vote="assignments", tie="drop")
    assert by_assign["1497"] == "pop" and by_assign["2849"] == "rock" and by_assign["13011"] == "electronic"


def test_bundled_music_text_and_hidden_label_words():
    spec = DomainSpec.from_dict(MUSIC)
    d = load_domain(spec)
    rule = LabelRule.from_dict(MUSIC["labels"], "labels")
    row = d.item_ids.index("113")
    assert d.item_columns["name"][row] == "Dustin O'Halloran"  # the original artists.dat, quotes kept
    assert d.item_text[row].startswith("Dustin O'Halloran. ")
    genre, hidden = d.item_columns["genre"], d.item_columns["tags" + HIDDEN]
    labelled = [i for i, g in enumerate(genre) if g]
    assert len(set(genre[i] for i in labelled)) == len(rule.classes)
    for i in labelled:
        tokens = {tok for tag in hidden[i].split(", ") for tok in tag.replace("-", " ").split()}
        assert genre[i] not in tokens, (d.item_ids[i], hidden[i])
        assert not any(rule.hides(tag) for tag in hidden[i].split(", ") if tag)
    # the task reads the hidden column: no label word in any classifier input
    from crossrec_cli.tasks.classification import label_data

    data = label_data(d, spec)
    assert not data.multi_label and len(data.texts) == len(labelled)
    assert data.label_texts[data.names.index("rock")] == "rock music"
    for text, y in zip(data.texts, data.targets):
        name = data.names[y]
        tags = text.split(". ", 1)[1] if ". " in text else ""
        assert name not in {tok for tag in tags.split(", ") for tok in tag.replace("-", " ").split()}


def test_tag_errors(tmp_path):
    folder = real_folder(tmp_path / "ok")
    with pytest.raises(CrossrecError, match="labels.classes.metal.*also listed under 'rock'"):
        spec_for(folder, classes={"rock": ["rock", "hard rock"], "metal": ["metal", "hard rock"]})
    with pytest.raises(CrossrecError, match="labels.tie.*unknown tie rule"):
        spec_for(folder, tie="coin")
    with pytest.raises(CrossrecError, match="format 'recbole' has no tag files"):
        DomainSpec.from_dict({"name": "m", "format": "recbole", "path": ".", "tags": {"max_tags": 3}})
    bad = tmp_path / "bad"
    real_folder(bad)
    lines = (bad / "user_taggedartists.dat").read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b"\t", b"\t", 1).split(b"\t")
    lines[3][2] = b"999999"
    lines[3] = b"\t".join(lines[3])
    (bad / "user_taggedartists.dat").write_bytes(b"".join(lines))
    with pytest.raises(CrossrecError) as ex:
        load_domain(spec_for(bad))
    assert "user_taggedartists.dat:4" in str(ex.value) and "999999" in str(ex.value)


# ---- classification on the bundled genres ---------------------------------------------------

def test_stratified_split_keeps_class_shares():
    from crossrec_cli.tasks.classification import split_indices

    y = np.array([0] * 80 + [1] * 15 + [2] * 5)
    parts = split_indices(len(y), (0.8, 0.1, 0.1), 0, strata=y)
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(100))
    # per class: round(0.8 n) train, round(0.1 n) valid, the rest test
    assert [np.bincount(y[parts[s]], minlength=3).tolist() for s in ("train", "valid", "test")] == \
        [[64, 12, 4], [8, 2, 0], [8, 1, 1]]
    again = split_indices(len(y), (0.8, 0.1, 0.1), 0, strata=y)
    assert all((again[s] == parts[s]).all() for s in parts)


def _job(targets, parts, names=("a", "b", "c"), multi=False, texts=None):
    from crossrec_cli.tasks.classifiers import ClassifyJob
    from crossrec_cli.tasks.train import TrainSettings

    texts = texts or [f"item {i}" for i in range(len(targets))]
    return ClassifyJob(texts, np.asarray(targets), list(names), list(names), multi, parts, TrainSettings())


def test_majority_and_tfidf_by_hand():
    from crossrec_cli.tasks.classification import run_classification

    y = [0, 1, 1, 2, 1, 0]
    parts = {"train": np.array([0, 1, 2, 3]), "test": np.array([4, 5])}
    res = run_classification(_job(y, parts), "majority")
    # train labels 0, 1, 1, 2 -> always 1; test truth 1, 0: accuracy 1/2; F1 of class 1 =
    # 2PR/(P+R) with P = 1/2, R = 1 -> 2/3; classes 0 and 2 score 0 -> macro (2/3)/3
    m = res["metrics"]["test"]
    assert m["accuracy"] == 0.5 and m["f1_b"] == pytest.approx(2 / 3) and m["macro_f1"] == pytest.approx(2 / 9)
    assert res["confusion"]["test"].tolist() == [[0, 1, 0], [0, 1, 0], [0, 0, 0]]
    words = ["rock guitar", "synth beat", "synth dance", "guitar solo", "dance synth", "guitar riff"]
    tf = run_classification(_job([0, 1, 1, 0, 1, 0], parts, names=("rock", "electronic", "x"), texts=words),
                            "tfidf_lr")
    assert tf["metrics"]["test"]["accuracy"] == 1.0  # "dance synth" -> electronic, "guitar riff" -> rock


def test_recipe_music_genres_tfidf_and_tiny_lm(tmp_path):
    from tests.test_tasks import run_app

    rec = run_app(tmp_path / "tfidf", "task=classification", "domain=music", "task.classifier=tfidf_lr",
                  "backbone=none", "adapter.name=frozen")
    ds = rec["dataset"]["music"]
    assert rec["protocol"] == "stratified-item-split" and ds["multi_label"] is False and "rock" in ds["labels"]
    counts = np.array([ds["label_counts"][n] for n in ds["labels"]])
    assert sum(ds["items"].values()) == counts.sum()
    test = rec["test"]["music"]
    assert test["accuracy"] > counts.max() / counts.sum()  # beats always answering the largest class
    assert {"macro_f1", "f1_rock", "f1_blues"} <= set(test) and rec["classifier"] == "tfidf_lr"
    assert (tmp_path / "tfidf" / "confusion_matrix.music.test.seed0.png").stat().st_size > 10_000
    lm = run_app(tmp_path / "lm", "task=classification", "domain=music", "task.train_samples=64",
                 "task.train.epochs=1", "task.train.min_steps=0")
    assert lm["mode"] == "inductive" and lm["classifier"] == "lm" and lm["per_seed"][0]["train_examples"] == 64
    assert lm["test"]["music"]["n"] == test["n"]  # the same stratified split
    zs = run_app(tmp_path / "zs", "task=classification", "domain=music", "task.classifier=zero_shot",
                 "adapter.name=frozen")
    assert zs["mode"] == "zero-shot" and zs["trainable_params"] == 0


def test_baseline_classifier_refuses_a_trained_adapter(tmp_path, capsys):
    from tests.test_tasks import run_app

    with pytest.raises(SystemExit):
        run_app(tmp_path, "task=classification", "domain=music", "task.classifier=majority", "adapter.name=lora")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "task.classifier=majority trains no language model" in err[0]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_label_rule_needs_classes():
    with pytest.raises(CrossrecError, match="labels.classes"):
        LabelRule.from_dict({"column": "genre", "classes": {"rock": ["rock"]}}, "labels")
    rule = dataclasses.replace(LabelRule.from_dict(MUSIC["labels"], "labels"), words=["rock"])
    assert rule.hides("Alternative Rock") and rule.hides("j-rock") and not rule.hides("jrock")
