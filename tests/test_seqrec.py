"""The recommender's towers: initial scales, projections, text normalisation, causality."""

from __future__ import annotations

import pytest
import torch

from crossrec_cli.errors import CrossrecError
from crossrec_cli.models.projection import MoEAdaptor, Whitening, build_projection
from crossrec_cli.models.seqrec import SeqRec, SeqRecConfig, UserTower


class FakeBackbone:
    """Stands in for a frozen LM: ``hidden_size`` and no parameters (vectors are set directly)."""

    hidden_size = 12
    model = None


def _model(**kw) -> SeqRec:
    torch.manual_seed(0)
    cfg = SeqRecConfig(**({"dim": 8, "max_history": 6, "heads": 2} | kw))
    m = SeqRec(cfg, FakeBackbone(), backbone_trains=False)
    m.add_catalogue("d", [f"item {i}" for i in range(30)])
    m.encoded["d"] = torch.randn(30, 12) * 0.5 + 3.0  # anisotropic: one large shared direction
    return m


def test_every_tower_weight_starts_at_init_std():
    """Positions and items enter the user tower at the same scale (torch's N(0, 1) embedding
    default made positions ~50x larger than 0.02-scaled item vectors)."""
    tower = UserTower(SeqRecConfig(dim=64, max_history=50, init_std=0.02))
    assert tower.pos.weight.std().item() == pytest.approx(0.02, rel=0.1)
    attn = tower.encoder.layers[0].self_attn
    assert attn.in_proj_weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.count_nonzero(attn.in_proj_bias) == 0
    ff = tower.encoder.layers[0].linear1
    assert ff.weight.std().item() == pytest.approx(0.02, rel=0.1) and torch.count_nonzero(ff.bias) == 0


def test_user_state_depends_only_on_earlier_items():
    m = _model(dropout=0.0).eval()
    items = m.item_matrix("d")
    hist = torch.tensor([[-1, 3, 4, 5, 6, 7]])
    other = torch.tensor([[-1, 3, 4, 5, 6, 9]])  # only the newest item differs
    a, b = m.user_states(items, hist), m.user_states(items, other)
    assert torch.allclose(a[:, :-1], b[:, :-1], atol=1e-6)
    assert not torch.allclose(a[:, -1], b[:, -1])


def test_score_auto_is_dot_for_ids_and_cosine_for_text():
    ids = SeqRec(SeqRecConfig(dim=8, heads=2, item_ids=True, score="auto"), None, backbone_trains=False)
    assert ids.score == "dot" and _model(score="auto").score == "cosine"
    assert _model(score="dot").score == "dot" and _model(score="cosine").score == "cosine"


@pytest.mark.parametrize("score", ["dot", "cosine"])
def test_logits_loss_vectors_and_ranking_vectors_agree(score):
    """dot: u . v; cosine: cos(u, v) / temperature. The fused loss's vectors multiply to the same
    logits, and the evaluator's vectors order every item as the logits do."""
    m = _model(score=score, temperature=0.25)
    users, items = torch.randn(5, 8, dtype=torch.float64), torch.randn(30, 8, dtype=torch.float64)
    if score == "dot":
        by_hand = torch.stack([torch.stack([u @ v for v in items]) for u in users])
    else:
        by_hand = torch.stack([torch.stack([u @ v / (u.norm() * v.norm()) / 0.25 for v in items]) for u in users])
    assert torch.allclose(m.logits(users, items), by_hand, rtol=1e-12)
    u, i = m.logit_vectors(users, items)
    assert torch.allclose(u @ i.T, by_hand, rtol=1e-12)
    u, i = m.scoring_vectors(users, items)
    assert torch.equal(torch.argsort(u @ i.T, dim=1, stable=True), torch.argsort(by_hand, dim=1, stable=True))


def test_center_and_standardize_use_the_domain_catalogue():
    m = _model(text_norm="standardize").features["text"]
    z = m.normalise("d", m.base("d"))
    assert torch.allclose(z.mean(0), torch.zeros(12), atol=1e-5)
    assert torch.allclose(z.std(0), torch.ones(12), atol=1e-4)
    c = _model(text_norm="center").features["text"]
    assert torch.allclose(c.normalise("d", c.base("d")), c.base("d") - c.base("d").mean(0))
    assert torch.equal(_model().features["text"].normalise("d", c.base("d")), c.base("d"))  # none: untouched


def test_whitening_subtracts_its_bias_before_the_map():
    w = Whitening(3, 2)
    with torch.no_grad():
        w.bias.copy_(torch.tensor([1.0, 2.0, 3.0]))
        w.lin.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
    out = w(torch.tensor([[2.0, 2.0, 2.0]]))
    assert torch.allclose(out, torch.tensor([[1.0, 0.0 + 1.0 + 0.0 - 1.0]]))  # x - b = (1, 0, -1)


def test_moe_with_zero_gates_is_the_mean_of_its_experts_in_eval():
    torch.manual_seed(0)
    moe = MoEAdaptor(5, 3, experts=4).eval()
    x = torch.randn(7, 5)
    expected = torch.stack([e(x) for e in moe.experts]).mean(0)
    assert torch.allclose(moe(x), expected, atol=1e-6)


def test_unknown_projection_is_a_one_line_error():
    with pytest.raises(CrossrecError, match="model.projection"):
        build_projection("conv", 4, 2)


@pytest.mark.parametrize("projection", ["linear", "mlp", "whiten", "moe"])
def test_each_projection_maps_the_catalogue_to_dim(projection):
    m = _model(projection=projection)
    assert m.item_matrix("d").shape == (30, 8)


def test_identity_projection_keeps_the_lm_vectors_and_needs_their_size():
    """model.projection=identity: the item vector is the (normalised) LM vector itself; a model.dim
    other than the hidden size is one line naming model.dim and the size to use."""
    torch.manual_seed(0)
    m = SeqRec(SeqRecConfig(dim=12, max_history=6, heads=2, projection="identity", text_norm="center"),
               FakeBackbone(), backbone_trains=False)
    m.add_catalogue("d", [f"item {i}" for i in range(30)])
    m.encoded["d"] = torch.randn(30, 12) + 3.0
    assert torch.allclose(m.item_matrix("d"), m.encoded["d"] - m.encoded["d"].mean(0), atol=1e-6)
    with pytest.raises(CrossrecError) as err:
        _model(projection="identity")
    assert err.value.one_line().startswith("error: model.dim: 8, but model.projection=identity keeps the backbone's 12")
    assert "set model.dim=12" in err.value.one_line()


class _PassThrough(torch.nn.Module):
    def forward(self, x, mask=None):
        return x


def test_positions_count_from_the_newest_or_from_the_oldest_item():
    """end: the newest item always sits at the last position row; start (RecBole): the oldest
    item of a left-padded history gets position 0 whatever the padding."""
    torch.manual_seed(0)
    cfg = SeqRecConfig(dim=8, max_history=4, heads=2, dropout=0.0, item_ids=True)
    ends = UserTower(cfg)
    starts = UserTower(SeqRecConfig(**{**cfg.__dict__, "positions": "start"}))
    starts.load_state_dict(ends.state_dict())
    h = torch.randn(2, 4, 8)
    valid = torch.tensor([[False, False, True, True], [True, True, True, True]])
    seen = {}
    for name, tower in (("end", ends), ("start", starts)):
        tower.in_norm = torch.nn.Identity()
        tower.encoder = _PassThrough()  # the input to the blocks: item + position
        seen[name] = tower.eval()(h, valid) - h
    pos = ends.pos.weight
    close = lambda a, b: torch.allclose(a, b, atol=1e-6)  # noqa: E731
    assert close(seen["end"][0, 2:], pos[2:]) and close(seen["end"][1], pos)
    assert close(seen["start"][0, 2:], pos[:2]) and close(seen["start"][1], pos)
    assert not close(seen["end"][0, 2:], seen["start"][0, 2:])
