"""Knowledge graphs (both public layouts, real rows), the ``kg`` item feature and the fusion methods."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from crossrec_cli.data.kg import Graph, KgItem, item_graph, read_kgcn, read_recbole
from crossrec_cli.errors import CrossrecError
from crossrec_cli.models.backbone import build_backbone
from crossrec_cli.models.features import Catalogue, FeatureContext
from crossrec_cli.models.features.kg import KgFeature, readable, transe_loss
from crossrec_cli.models.fusion import FUSIONS, build_fusion
from crossrec_cli.models.seqrec import SeqRec, SeqRecConfig
from tests.test_split import domain_from_conf

REPO = Path(__file__).resolve().parents[1]
ML = REPO / "crossrec_cli" / "data" / "bundled" / "ml-100k"
FM = REPO / "crossrec_cli" / "data" / "bundled" / "lastfm-hetrec2011"


def _plain_rows(path: Path, header: bool) -> list[list[str]]:
    lines = path.read_text(encoding="utf-8").splitlines()[1 if header else 0:]
    return [ln.split("\t") for ln in lines if ln.strip()]


def test_recbole_kg_and_link_read_every_real_row():
    g = read_recbole(ML / "ml-100k.kg", ML / "ml-100k.link")
    rows = _plain_rows(ML / "ml-100k.kg", header=True)
    assert len(g.triples) == len(rows) == 91631
    assert g.triples[0] == ("m.04ctbw8", "film.producer.film", "m.0bln8") == tuple(rows[0])
    assert len(g.links) == 1598 and g.links["94"] == "m.0bln8"


def test_kgcn_layout_reads_every_real_row():
    g = read_kgcn(FM / "kg.txt", FM / "item_index2entity_id.txt")
    assert len(g.triples) == 15518 and g.triples[0] == ("2086", "music.artist.origin", "3846")
    assert len(g.links) == 3846 and g.links["2"] == "0"


def test_an_item_has_every_edge_touching_its_entity_in_both_directions():
    _, movies = domain_from_conf("movies")
    kg = movies.item_features["kg"]
    item = kg[movies.item_ids.index("94")]
    rows = _plain_rows(ML / "ml-100k.kg", header=True)
    want = sorted([(r, t) for h, r, t in rows if h == "m.0bln8"] + [("~" + r, h) for h, r, t in rows if t == "m.0bln8"])
    assert item.entity == "m.0bln8" and sorted(item.edges) == want and len(want) == 34
    linked = sum(k.entity is not None for k in kg)
    assert linked == 1598 and kg[[k.entity for k in kg].index(None)] == KgItem(None)


def test_the_graph_is_read_only_when_a_run_uses_it_and_the_fingerprint_says_so():
    _, movies = domain_from_conf("movies")
    assert movies.item_features["kg"]._items is None  # loading the domain did not read the 3.5 MB graph
    plain = movies.sha256()
    assert movies.item_features["kg"]._items is None and plain == movies.sha256(("text",))
    assert movies.sha256(("kg",)) != plain


@pytest.mark.parametrize("layout, files, content, where", [
    ("kgcn", ("kg.txt", "links.txt"), {"kg.txt": "1\tr\t2\n3\tr\n", "links.txt": "10\t1\n"}, "kg.txt:2"),
    ("kgcn", ("kg.txt", "links.txt"), {"kg.txt": "1\tr\t2\n", "links.txt": "10\t1\n10\t2\n"}, "links.txt:2"),
    ("kgcn", ("kg.txt", "links.txt"), {"kg.txt": "1\t\t2\n", "links.txt": "10\t1\n"}, "kg.txt:1:2"),
    ("recbole", ("x.kg", "x.link"), {"x.kg": "head_id:token\trelation_id:token\ttail_id:token\na\tr\t\n",
                                     "x.link": "item_id:token\tentity_id:token\n1\ta\n"}, "x.kg:2"),
])
def test_a_malformed_graph_row_is_one_line_with_file_and_line(tmp_path, layout, files, content, where):
    for name, text in content.items():
        (tmp_path / name).write_text(text)
    reader = read_kgcn if layout == "kgcn" else read_recbole
    with pytest.raises(CrossrecError) as err:
        reader(tmp_path / files[0], tmp_path / files[1])
    msg = str(err.value)
    assert "\n" not in msg and f"{tmp_path / where.split(':')[0]}:{where.split(':', 1)[1]}" in msg, msg


class FakeBackbone:
    hidden_size = 12
    model = None


def _catalogue() -> Catalogue:
    items = [KgItem("e1", (("r", "e2"), ("~s", "e3"))), KgItem(None), KgItem("e2", (("~r", "e1"),)), KgItem(None)]
    return Catalogue(4, {"text": [f"item {i}" for i in range(4)], "kg": items})


def test_items_without_an_entity_share_the_learned_missing_vector_and_a_graphless_domain_works():
    torch.manual_seed(0)
    m = SeqRec(SeqRecConfig(dim=8, heads=2, features=["kg"]), None, backbone_trains=False)
    m.add_catalogue("d", _catalogue())
    m.add_catalogue("bare", Catalogue.from_texts(["a", "b", "c"]))  # no graph at all
    v = m.item_matrix("d")
    kg = m.features["kg"]
    assert torch.equal(v[1], kg.missing) and torch.equal(v[3], kg.missing) and not torch.equal(v[0], kg.missing)
    assert torch.equal(m.item_matrix("bare"), kg.missing.expand(3, -1))
    v.sum().backward()
    assert kg.missing.grad is not None and kg.tables["d"]["ent"].weight.grad.abs().sum() > 0


def test_transe_loss_matches_a_hand_computed_value():
    h, r = torch.tensor([[0.0, 0.0], [1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t, t_neg = torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[0.0, 3.0], [1.0, 1.0]])
    # row 1: |h+r-t| = 0, |h+r-t'| = |(1,-3)| = sqrt(10): max(0, 1 + 0 - sqrt(10)) = 0
    # row 2: |h+r-t| = |(0,1)| = 1, |h+r-t'| = 0:          max(0, 1 + 1 - 0) = 2
    assert transe_loss(h, r, t, t_neg, margin=1.0).item() == pytest.approx((0.0 + 2.0) / 2)
    assert transe_loss(h, r, t, t_neg, margin=4.0).item() == pytest.approx(((4 - math.sqrt(10)) + 5.0) / 2)


def test_transe_weight_adds_the_graph_loss_to_training():
    cfg = SeqRecConfig(dim=8, heads=2, features=["kg"], feature_settings={"kg": {"transe_weight": 0.5}})
    m = SeqRec(cfg, None, backbone_trains=False)
    m.add_catalogue("d", _catalogue())
    loss = m.feature_loss("d")
    assert loss is not None and loss.item() > 0
    off = SeqRec(SeqRecConfig(dim=8, heads=2, features=["kg"]), None, backbone_trains=False)
    off.add_catalogue("d", _catalogue())
    assert off.feature_loss("d") is None


@pytest.mark.parametrize("name", ["sum", "concat", "gated", "attention"])
def test_each_fusion_maps_features_to_dim_and_passes_gradient(name):
    torch.manual_seed(0)
    parts = [torch.randn(5, 8, requires_grad=True) for _ in range(3)]
    fusion = build_fusion(name, ["text", "id", "kg"], 8)
    out = fusion(parts, "d")
    assert out.shape == (5, 8)
    out.pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in parts)
    assert all(p.grad is not None for p in fusion.parameters())


def test_gated_fusion_starts_at_the_mean_and_its_gates_sum_to_one():
    torch.manual_seed(0)
    parts = [torch.randn(4, 6) for _ in range(2)]
    fusion = FUSIONS.get("gated")(["text", "kg"], 6)
    gates = fusion.gates(parts)
    assert torch.allclose(gates, torch.full((4, 2), 0.5))
    assert torch.allclose(fusion(parts, "d"), (parts[0] + parts[1]) / 2)


def test_a_users_own_recbole_graph_is_found_through_the_search_path(tmp_path):
    """`crossrec finetune fusion=kg domain=mine 'hydra.searchpath=[file://DIR]'` with RecBole
    .kg/.link files dropped beside the atomic files (no domain key for them)."""
    from tests.conftest import run_inprocess

    data = tmp_path / "data"
    data.mkdir()
    for suffix in ("inter", "item", "kg", "link"):
        shutil.copy(ML / f"ml-100k.{suffix}", data / f"mine.{suffix}")
    conf = tmp_path / "conf" / "domain"
    conf.mkdir(parents=True)
    (conf / "mine.yaml").write_text(f"name: mine\nformat: recbole\npath: {data}\ndataset: mine\n"
                                    "text_fields: [movie_title, release_year]\n")
    rec = run_inprocess("finetune", "experiment=smoke", "fusion=kg", "domain=mine",
                        f"hydra.searchpath=[file://{tmp_path / 'conf'}]", run_dir=tmp_path / "run")
    assert rec["features"] == ["text", "kg"] and rec["fusion"] == "gated" and rec["mode"] == "transductive"
    assert rec["score"] == "cosine"  # model.score=auto with text among the features
    assert set(rec["test"]) == {"mine"}
    assert np.isfinite(rec["history"][0]["loss"])


# -- hops and relation_text -------------------------------------------------------------------

def _feature(settings: dict, catalogues: dict[str, Catalogue], backbone=None, trains: bool = False) -> KgFeature:
    cfg = SeqRecConfig(dim=8, heads=2, features=["kg"], feature_settings={"kg": settings})
    f = KgFeature(FeatureContext(cfg, backbone, trains, device=lambda: torch.device("cpu"), cache_vectors=False), "kg")
    for key, cat in catalogues.items():
        f.add_catalogue(key, cat)
    return f


def _graph_catalogue(triples: list[tuple[str, str, str]], links: dict[str, str], ids: list[str]) -> Catalogue:
    return Catalogue(len(ids), {"kg": item_graph(ids, Graph(triples, links))})


# items i1 (entity a), i2 (b), i3 (not linked); a - b via r; a's neighbour c has its own edge to x,
# an entity two hops from every item
TRIPLES = [("a", "film.film.actor", "b"), ("a", "film.film.genre", "c"), ("c", "genre.of", "x")]
SMALL = _graph_catalogue(TRIPLES, {"i1": "a", "i2": "b"}, ["i1", "i2", "i3"])


def test_the_graph_shares_one_adjacency_and_the_item_repr_is_unchanged():
    items = SMALL.data["kg"]
    assert items[0].adjacency is items[2].adjacency and items[0].adjacency["c"] == (("~film.film.genre", "a"), ("genre.of", "x"))
    assert repr(items[0]) == "KgItem(entity='a', edges=(('film.film.actor', 'b'), ('film.film.genre', 'c')))"
    assert items[2] == KgItem(None)  # fingerprints hash the repr, equality ignores the adjacency


def test_hops_1_is_the_computation_it_always_was():
    """Golden numbers written by the feature before hops / relation_text existed (same seed,
    same catalogue): the same random draws, sample, output and gradients."""
    items = [KgItem("e1", (("r", "e2"), ("~s", "e3"), ("t", "e4"), ("r", "e5"))), KgItem(None),
             KgItem("e2", (("~r", "e1"), ("u", "e6"))), KgItem("e4", (("~t", "e1"),))]
    torch.manual_seed(0)
    f = _feature({"neighbors": 2}, {"d": Catalogue(4, {"kg": items})})
    v = f("d")
    (v * torch.arange(32.0).view(4, 8)).sum().backward()
    assert sorted(f.state_dict()) == ["missing", "out.bias", "out.weight", "tables.d.ent.weight", "tables.d.rel.weight"]
    assert f.index["d"]["nbr_ent"].tolist() == [[2, 3], [0, 0], [1, 5], [1, 0]]
    assert f.index["d"]["nbr_rel"].tolist() == [[1, 2], [0, 0], [3, 4], [5, 0]]
    # float32 sums: equal to the golden numbers up to the order a CPU's vector units add in (1e-5)
    assert v.sum().item() == pytest.approx(-0.002017583465203643, rel=1e-5)
    assert v.pow(2).sum().item() == pytest.approx(0.003645713208243251, rel=1e-5)
    assert f.tables["d"]["ent"].weight.grad.pow(2).sum().item() == pytest.approx(68.55770874023438, rel=1e-5)


def test_hops_2_aggregates_each_neighbour_with_its_own_neighbours():
    torch.manual_seed(0)
    two = _feature({"hops": 2}, {"d": SMALL})
    ents = two.vocab["d"][0]
    v = two("d")
    assert v.shape == (3, 8) and torch.equal(v[2], two.missing)
    v.pow(2).sum().backward()
    grad = two.tables["d"]["ent"].weight.grad
    assert grad[ents.index("x")].abs().sum() > 0 and two.out2.weight.grad.abs().sum() > 0
    one = _feature({}, {"d": SMALL})
    assert "x" not in one.vocab["d"][0] and one.out2 is None  # hops=1 never reaches x
    one("d").pow(2).sum().backward()
    assert one.tables["d"]["ent"].weight.grad[1:].abs().sum(1).gt(0).all()  # its entities (a, b, c) all learn
    # the first hop's sample does not depend on hops
    assert torch.equal(two.index["d"]["nbr_ent"], one.index["d"]["nbr_ent"])


def test_hops_2_samples_at_most_neighbors2_edges_per_neighbour_seeded():
    hub = [("a", "film.film.genre", "g")] + [(f"m{i}", "film.film.genre", "g") for i in range(20)]
    cat = _graph_catalogue(hub, {"i1": "a"}, ["i1", "i2"])
    f = _feature({"hops": 2, "neighbors2": 3}, {"d": cat})
    ix = f.index["d"]
    n, k = ix["nbr_ent"].shape
    assert ix["nbr2_ent"].shape == ix["nbr2_rel"].shape == (len(ix["hop1"]), 3) and len(ix["hop1"]) <= n * k + 1
    g = int((ix["hop1"] == f.vocab["d"][0].index("g")).nonzero())
    assert (ix["nbr2_rel"][g] > 0).sum() == 3  # 21 edges, 3 kept

    def kept(f: KgFeature) -> list[str]:  # g's sampled neighbours by name (ids follow first sight)
        return [f.vocab["d"][0][e] for e in f.index["d"]["nbr2_ent"][g].tolist()]

    assert kept(f) == kept(_feature({"hops": 2, "neighbors2": 3}, {"d": cat}))
    assert kept(f) != kept(_feature({"hops": 2, "neighbors2": 3, "seed": 1}, {"d": cat}))


def test_hops_2_on_the_movies_graph_keeps_the_index_bounded():
    _, movies = domain_from_conf("movies")
    f = _feature({"hops": 2}, {"m": Catalogue.of(movies)})
    ix = f.index["m"]
    degree = torch.tensor([len(movies.item_features["kg"][0].adjacency[e]) for e in
                           (f.vocab["m"][0][u] for u in ix["hop1"][1:].tolist())])
    assert ix["nbr_pos"].shape == (1682, 16) and ix["nbr2_ent"].shape == (len(ix["hop1"]), 8)
    assert len(ix["hop1"]) <= 1682 * 16 + 1
    assert torch.equal((ix["nbr2_rel"][1:] > 0).sum(1), degree.clamp(max=8))
    assert torch.equal(ix["hop1"][ix["nbr_pos"]], ix["nbr_ent"])  # each neighbour's row is its own


def test_readable_relation_names():
    assert readable("film.film.actor") == "film film actor"
    assert readable("~film.person_or_entity_appearing_in_film.film") == "film person or entity appearing in film film (inverse)"
    assert readable("42") == "42" and readable("--") == "--"


TINY = OmegaConf.to_container(OmegaConf.load(REPO / "crossrec_cli/conf/backbone/tiny.yaml"))


def test_relation_text_shares_the_text_part_of_same_named_relations_across_graphs():
    bb = build_backbone("tiny", config=TINY["config"], seed=0)
    other = _graph_catalogue([("p", "film_film.actor", "q"), ("p", "music.artist.origin", "s")], {"j": "p"}, ["j"])
    torch.manual_seed(0)
    f = _feature({"relation_text": True}, {"d": SMALL, "e": other}, backbone=bb)
    rels = {key: f.vocab[key][1] for key in ("d", "e")}
    text = {key: f.relation_text(key) for key in ("d", "e")}
    assert text["d"].shape == (len(rels["d"]), 8)
    # the same text encoded in two batches of other lengths: equal up to float32 rounding (a CPU's
    # kernels may sum a padded batch in another order: 7e-9 apart here), the inverse far apart
    actor = text["d"][rels["d"].index("film.film.actor")]
    assert torch.allclose(actor, text["e"][rels["e"].index("film_film.actor")], rtol=0, atol=1e-6)
    assert (actor - text["d"][rels["d"].index("~film.film.actor")]).abs().max() > 1e-3
    # the vector of a relation is the domain's table plus the shared text part
    idx = torch.tensor([rels["e"].index("film_film.actor")])
    assert torch.allclose(f.relations("e", idx), f.tables["e"]["rel"].weight[idx] + text["e"][idx])


def test_relation_text_trains_its_map_and_never_the_backbone():
    bb = build_backbone("tiny", config=TINY["config"], seed=0)
    m = SeqRec(SeqRecConfig(dim=8, heads=2, features=["kg"], feature_settings={"kg": {"relation_text": True, "hops": 2}}),
               bb, backbone_trains=True)
    m.cache_vectors = False
    m.add_catalogue("d", SMALL)
    m.item_matrix("d").pow(2).sum().backward()
    kg = m.features["kg"]
    assert kg.rel_map.weight.grad.abs().sum() > 0 and kg.tables["d"]["rel"].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in bb.model.parameters())
    assert not kg.rel_encoded["d"].requires_grad


@pytest.mark.parametrize("settings, backbone, key", [
    ({"relation_text": True}, None, "model.feature_settings.kg.relation_text"),
    ({"relation_text": "yes"}, "tiny", "model.feature_settings.kg.relation_text"),
    ({"hops": 3}, None, "model.feature_settings.kg.hops"),
    ({"neighbors2": 4}, None, "model.feature_settings.kg.neighbors2"),  # another value needs hops=2
    ({"hops": 2, "neighbors2": 0}, None, "model.feature_settings.kg.neighbors2"),
])
def test_unusable_kg_settings_are_refused_in_one_line(settings, backbone, key):
    bb = build_backbone("tiny", config=TINY["config"], seed=0) if backbone else None
    with pytest.raises(CrossrecError) as err:
        SeqRec(SeqRecConfig(dim=8, heads=2, features=["kg"], feature_settings={"kg": settings}), bb, backbone_trains=False)
    assert err.value.where == key and "\n" not in str(err.value)


def test_hops_2_refuses_items_without_the_graph_adjacency():
    f = _feature({"hops": 2}, {})
    with pytest.raises(CrossrecError, match="model.feature_settings.kg.hops"):
        f.add_catalogue("d", _catalogue())  # KgItems built by hand, no adjacency
    f.add_catalogue("bare", Catalogue.from_texts(["a", "b"]))  # a graphless domain is fine
    assert torch.equal(f("bare"), f.missing.expand(2, -1))


@pytest.mark.parametrize("args, module", [
    (("fusion=kg", "model.feature_settings.kg.hops=2"), "out2"),  # conf/fusion/kg.yaml lists the settings
    (("model.features=[text,kg]", "model.feature_settings={kg:{relation_text:true}}"), "rel_map"),
])
def test_a_smoke_finetune_with_the_kg_option_completes_and_its_checkpoint_evaluates(tmp_path, args, module):
    from safetensors import safe_open

    from tests.conftest import run_inprocess

    rec = run_inprocess("finetune", "experiment=smoke", *args, run_dir=tmp_path / "run")
    assert rec["features"] == ["text", "kg"] and np.isfinite(rec["history"][0]["loss"])
    with safe_open(str(tmp_path / "run" / "checkpoint" / "model.safetensors"), "pt") as f:
        assert f"features.kg.{module}.weight" in set(f.keys())
    again = run_inprocess("evaluate", "experiment=smoke", f"run={tmp_path / 'run'}", run_dir=tmp_path / "eval")
    assert again["test"]["movies"] == pytest.approx(rec["test"]["movies"])


def test_a_fusion_kg_run_from_before_hops_and_relation_text_resumes_unless_they_changed(tmp_path, capsys):
    from crossrec_cli.cli import compose
    from crossrec_cli.commands._common import check_resume_config

    cfg = compose("finetune", ["experiment=smoke", "fusion=kg", "resume=true"], tmp_path)
    old = OmegaConf.to_container(cfg)
    for key in ("hops", "neighbors2", "relation_text"):  # as a config.yaml from before they were added
        del old["model"]["feature_settings"]["kg"][key]
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(old))
    check_resume_config(cfg)
    with pytest.raises(SystemExit):
        check_resume_config(compose("finetune", ["experiment=smoke", "fusion=kg", "resume=true",
                                                 "model.feature_settings.kg.hops=2"], tmp_path))
    assert "config key model.feature_settings.kg.hops" in capsys.readouterr().err


# -- pretrain with a fused item tower ------------------------------------------------------------

def test_pretrain_with_a_fused_tower_trains_the_kg_tables_through_the_fused_views():
    """pretrain's views are the tower's fused item vectors: the neighbours objective moves the
    entity table of the items it pairs, and the backbone (full fine-tuning) too."""
    import yaml

    from crossrec_cli.training.pretrain import pretrain_item_tower

    tiny = yaml.safe_load((REPO / "crossrec_cli" / "conf" / "backbone" / "tiny.yaml").read_text())["config"]
    bb = build_backbone("tiny", config=tiny, seed=0)
    torch.manual_seed(0)
    tower = SeqRec(SeqRecConfig(dim=8, heads=2, features=["text", "kg"], fusion="gated"), bb, backbone_trains=True)
    cat = _catalogue()
    tower.add_catalogue("d", cat)
    before = {k: v.clone() for k, v in tower.state_dict().items()}
    pairs = np.array([[0, 2], [2, 0], [1, 3], [3, 1]])  # item 0 (entity e1) next to item 2 (e2), and back
    history = pretrain_item_tower(bb, {"d": (list(cat.data["text"]), pairs)}, "neighbors", 2, 4, 1e-2, 0.05, 16,
                                  "mean", seed=0, tower=tower)
    after = tower.state_dict()
    assert len(history) == 2 and history[0]["steps"] == 1
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert "features.kg.tables.d.ent.weight" in moved and any(k.startswith("fusion.") for k in moved)
    assert any(k.startswith("backbone_model.") for k in moved)
    assert not any(k.startswith("user.") for k in moved)  # no user tower in pretraining


def test_pretrain_fusion_kg_saves_the_tower_and_finetune_init_from_loads_it(tmp_path):
    """`crossrec pretrain fusion=kg` -> checkpoint/model.safetensors (item tower only); finetune
    `init_from=` it starts from those tensors and refuses another model.dim in one line."""
    from safetensors.torch import load_file

    from crossrec_cli.cli import compose
    from crossrec_cli.commands._common import load_domains
    from crossrec_cli.commands.recsys import build_model, load_init
    from tests.conftest import read_metrics, run_inprocess

    pre = tmp_path / "pre"
    run_inprocess("pretrain", "experiment=smoke", "domain=music", "fusion=kg", "pretrain.objective=neighbors",
                  run_dir=pre)
    m = read_metrics(pre)
    assert m["features"] == ["text", "kg"] and m["fusion"] == "gated" and m["history"][0]["loss"] > 0
    assert m["mode"] == "transductive"  # entity tables; the fingerprint covers the graph
    saved = load_file(str(pre / "checkpoint" / "model.safetensors"))
    assert any(k.startswith("features.kg.") for k in saved) and all(k.startswith(("features.", "fusion.")) for k in saved)
    cfg = compose("finetune", ["experiment=smoke", "domain=music", "fusion=kg", f"init_from={pre}"], tmp_path / "ft")
    model = build_model(cfg, [(s.name, d) for s, d in load_domains(cfg)])
    assert any(not torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    load_init(cfg, model)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    wide = compose("finetune", ["experiment=smoke", "domain=music", "fusion=kg", "model.dim=48", f"init_from={pre}"],
                   tmp_path / "ft2")
    with pytest.raises(CrossrecError, match=r"init_from: .*has shape \(32,\), this model's \(48,\)"):
        load_init(wide, build_model(wide, [(s.name, d) for s, d in load_domains(wide)]))


def test_pretrain_refuses_a_fusion_without_features_and_model_settings_it_would_not_read(tmp_path):
    from crossrec_cli.cli import compose
    from crossrec_cli.commands.pretrain import check_overrides
    from tests.conftest import run_cli

    proc = run_cli("pretrain", "experiment=smoke", "fusion=gated", run_dir=tmp_path / "a", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: fusion: gated fuses item features")
    plain = ["experiment=smoke", "model.dim=64"]
    assert "reads the model settings only for a fused" in str(check_overrides(compose("pretrain", plain, tmp_path), plain))
    fused = ["experiment=smoke", "fusion=kg", "model.dim=64"]
    assert check_overrides(compose("pretrain", fused, tmp_path), fused) is None
