"""The item-feature seam: a Domain's per-item features survive filtering and enter its
fingerprint; the item tower is the fusion of registered feature modules."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from crossrec_cli.data.assemble import apply_filters
from crossrec_cli.data.domain import FilterSpec
from crossrec_cli.errors import CrossrecError
from crossrec_cli.models.features import FEATURES, Catalogue, FeatureContext, ItemFeature
from crossrec_cli.models.seqrec import SeqRec, SeqRecConfig
from crossrec_cli.training.loop import load_trainable_state, trainable_state
from tests.test_split import domain_from_conf

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def movies():
    return domain_from_conf("movies")


def _with_year(domain):
    """ml-100k's release year as an extra per-item feature (an array, one entry per item)."""
    years = np.asarray([int(y) if y.isdigit() else 0 for y in domain.item_columns["release_year"]], dtype=np.int64)
    domain.item_features = {**domain.item_features, "year": years}
    return domain


def test_filters_keep_every_item_feature_aligned_with_its_item(movies):
    spec, _ = movies
    domain = _with_year(domain_from_conf("movies")[1])
    year_of = dict(zip(domain.item_ids, domain.item_features["year"].tolist()))
    text_of = dict(zip(domain.item_ids, domain.item_text))
    spec.filters = FilterSpec(item_core=50)
    small = apply_filters(domain, spec)
    assert 0 < small.n_items < domain.n_items  # the k-core dropped items
    assert len(small.item_features["year"]) == len(small.item_text) == small.n_items
    assert [year_of[i] for i in small.item_ids] == small.item_features["year"].tolist()
    assert [text_of[i] for i in small.item_ids] == small.item_text
    assert int(small.inter_item.max()) < small.n_items


def test_fingerprint_covers_the_item_features_a_run_reads(movies):
    _, domain = movies
    plain = domain.sha256()
    # the published fingerprint of the bundled data still holds for a text-only domain
    published = re.search(r"sha256 `([0-9a-f]{16})`", (REPO / "docs" / "benchmarks.md").read_text()).group(1)
    assert plain.startswith(published)
    with_year = _with_year(domain_from_conf("movies")[1])
    assert with_year.sha256() == plain  # a run that does not read the feature: the same data
    assert with_year.sha256(("year",)) != plain
    before = with_year.sha256(("year",))
    with_year.item_features["year"] = with_year.item_features["year"] + 1
    assert with_year.sha256(("year",)) not in (plain, before)


class FakeBackbone:
    hidden_size = 12
    model = None


class YearFeature(ItemFeature):
    """A new item feature, defined here the way a module in models/features/ would be."""

    def __init__(self, ctx: FeatureContext, name: str = ""):
        super().__init__()
        self.map = nn.Linear(1, ctx.cfg.dim)
        self.years: dict[str, torch.Tensor] = {}

    def add_catalogue(self, key, catalogue):
        self.years[key] = torch.as_tensor(np.asarray(catalogue.get("year", key)), dtype=torch.float32)[:, None]

    def forward(self, key, fresh=None):
        return self.map((self.years[key] - 1990.0) / 10.0)


def test_a_registered_feature_joins_the_item_tower_without_other_changes(movies):
    FEATURES.add("year_test", YearFeature)
    domain = _with_year(domain_from_conf("movies")[1])
    torch.manual_seed(0)
    m = SeqRec(SeqRecConfig(dim=8, heads=2), FakeBackbone(), backbone_trains=False, features=["text", "year_test"])
    m.add_catalogue("movies", Catalogue.of(domain))
    m.encoded["movies"] = torch.randn(domain.n_items, 12)
    items = m.item_matrix("movies")
    text, year = m.features["text"]("movies"), m.features["year_test"]("movies")
    assert items.shape == (domain.n_items, 8) and torch.allclose(items, text + year)  # fusion=sum
    items.sum().backward()
    assert m.features["year_test"].map.weight.grad is not None
    assert m.can_score("movies") and not m.transductive
    assert any(n.startswith("features.year_test.map.") for n, _ in m.named_parameters())
    # a domain without the data the feature reads: one line naming the domain and the data
    with pytest.raises(CrossrecError, match="no item 'year' data"):
        m.add_catalogue("bare", Catalogue.from_texts(["a", "b"]))


def test_unknown_feature_is_a_one_line_error():
    with pytest.raises(CrossrecError, match="unknown item feature 'colour'"):
        SeqRec(SeqRecConfig(dim=8, heads=2), FakeBackbone(), backbone_trains=False, features=["text", "colour"])


def test_runs_written_before_features_were_modules_still_load():
    """Checkpoints name the text projection ``proj.*`` and id tables ``id_emb.<domain>.*``."""
    torch.manual_seed(0)
    a = SeqRec(SeqRecConfig(dim=8, heads=2, item_ids=True), FakeBackbone(), backbone_trains=False)
    a.add_catalogue("d", [f"item {i}" for i in range(5)])
    old = {k.replace("features.text.proj.", "proj.").replace("features.id.emb.", "id_emb."): v
           for k, v in trainable_state(a).items()}
    assert "proj.1.weight" in old and "id_emb.d.weight" in old
    torch.manual_seed(1)
    b = SeqRec(SeqRecConfig(dim=8, heads=2, item_ids=True), FakeBackbone(), backbone_trains=False)
    b.add_catalogue("d", [f"item {i}" for i in range(5)])
    load_trainable_state(b, old, "old run")
    assert all(torch.equal(v, trainable_state(b)[k]) for k, v in trainable_state(a).items())


def test_model_features_chooses_the_item_tower_from_the_command_line(tmp_path):
    """``model.features=[id]`` is the ID-only SASRec that ``model.item_ids=true`` spells:
    the same weights, metrics and mode."""
    from tests.conftest import run_inprocess

    smoke = ("experiment=smoke", "backbone=none", "trainer.epochs=1")
    a = run_inprocess("finetune", *smoke, "model.item_ids=true", run_dir=tmp_path / "a")
    b = run_inprocess("finetune", *smoke, "model.features=[id]", run_dir=tmp_path / "b")
    assert a["mode"] == b["mode"] == "transductive"
    assert a["test"] == b["test"] and [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]


@pytest.mark.parametrize("overrides, key", [
    (["model.item_ids=true", "model.features=[text]"], "model.item_ids"),
    (["model.features=[text,text]"], "model.features"),
    (["model.features=[colour]"], "model.features"),
    (["model.fusion=product"], "model.fusion"),
    (["backbone=none", "model.features=[text]"], "model.features"),
])
def test_a_bad_item_tower_choice_is_one_line(tmp_path, capsys, overrides, key):
    from crossrec_cli.cli import run_command

    with pytest.raises(SystemExit) as stop:
        run_command("finetune", ["experiment=smoke", *overrides], tmp_path)
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and err[0].startswith(f"error: {key}:"), err
