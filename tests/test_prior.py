"""``model.text_prior``: the untrained text scorer added to every logit of a trained model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import run_cli, run_inprocess
from crossrec_cli.data.split import EvalSet
from crossrec_cli.errors import CrossrecError
from crossrec_cli.models.baselines import mean_history_vectors
from crossrec_cli.models.features.text import MEAN_FREE
from crossrec_cli.models.prior import TextPrior
from crossrec_cli.models.seqrec import SeqRec, SeqRecConfig, pad_histories
from test_seqrec import _model


def test_prior_user_state_by_hand():
    """Recency 0.5 over e1, e2, e3 (newest last): (0.25 e1 + 0.5 e2 + 1 e3) / 1.75, normalised;
    each earlier position sees only the items up to it; a padded position is zero."""
    e = torch.eye(4)
    h = torch.stack([torch.zeros(4), e[0], e[1], e[2]]).unsqueeze(0)
    valid = torch.tensor([[False, True, True, True]])
    out = TextPrior(0.5).users(h, valid)[0]
    newest = torch.tensor([0.25, 0.5, 1.0, 0.0])
    assert torch.allclose(out[3], newest / newest.norm())
    second = torch.tensor([0.5, 1.0, 0.0, 0.0])
    assert torch.allclose(out[2], second / second.norm())
    assert torch.allclose(out[1], e[0]) and torch.equal(out[0], torch.zeros(4))


def test_prior_adds_weight_times_the_text_zeroshot_cosine():
    """Same tower weights with and without the prior: the logits differ by exactly weight x the
    cosine of model=text_zeroshot's user vector (mean_history_vectors over the catalogue's
    centred LM vectors, recency 0.9) and the item's centred LM vector."""
    plain, prior = _model(dropout=0.0).eval(), _model(dropout=0.0, text_prior=2.5).eval()
    assert plain.state_dict().keys() == prior.state_dict().keys()  # no parameter added: old runs load
    histories = [[3, 4, 5], [7], [1, 2, 3, 4, 5, 6, 8, 9]]  # the last one is longer than max_history=6
    hist = pad_histories(histories, 6)
    with torch.no_grad():
        a = plain.logits(plain.user_states(plain.item_matrix("d"), hist)[:, -1], plain.item_matrix("d"))
        items = prior.item_matrix("d")
        b = prior.logits(prior.user_states(items, hist)[:, -1], items)
    lm = plain.encoded["d"]
    centred = lm - lm.mean(0)
    users = F.normalize(mean_history_vectors(centred, EvalSet(np.zeros(3, dtype=int), [np.asarray(h) for h in histories], np.zeros(3, dtype=int)), history=6, recency=0.9), dim=-1)
    zero_shot = users @ F.normalize(centred, dim=-1).T
    assert torch.allclose(b - a, 2.5 * zero_shot, atol=1e-5)
    # the loss's and the evaluator's vectors multiply to the same logits
    u = prior.user_states(items, hist)[:, -1]
    for left, right in (prior.logit_vectors(u, items), prior.scoring_vectors(u, items)):
        assert torch.allclose(left @ right.T, b, atol=1e-5)


def test_text_prior_on_ensembles_one_domain_for_the_block_only():
    """A model trained without the prior: inside ``text_prior_on(key, w)`` its logits on that
    domain are its own plus w x the text zero-shot cosine, exactly what a model trained with
    ``model.text_prior=w`` adds; outside the block they are its own again."""
    plain, prior = _model(dropout=0.0).eval(), _model(dropout=0.0, text_prior=1.5).eval()
    hist = pad_histories([[3, 4, 5], [7, 8]], 6)

    def logits(m):
        with torch.no_grad():
            items = m.item_matrix("d")
            return m.logits(m.user_states(items, hist)[:, -1], items)

    own = logits(plain)
    with plain.text_prior_on("d", 1.5):
        ensembled = logits(plain)
    assert torch.allclose(ensembled, logits(prior), atol=1e-6) and not torch.allclose(ensembled, own)
    assert torch.equal(logits(plain), own) and plain.prior_weights == {}
    with prior.text_prior_on("d", 0.0):  # eval.text_prior=0: the towers alone
        assert torch.allclose(logits(prior), own, atol=1e-6)


def test_prior_gradients_reach_the_towers_not_the_language_model():
    m = _model(text_prior=1.0)
    items = m.item_matrix("d")
    logits = m.logits(m.user_states(items, pad_histories([[1, 2, 3]], 6))[:, -1], items)
    F.cross_entropy(logits, torch.tensor([4])).backward()
    assert m.user.pos.weight.grad is not None and any(p.grad is not None for p in m.features["text"].proj.parameters())
    assert items.shape == (30, 8 + 12) and not m.encoded["d"].requires_grad


def test_prior_needs_item_text():
    with pytest.raises(CrossrecError, match="model.text_prior"):
        SeqRec(SeqRecConfig(dim=8, heads=2, item_ids=True, text_prior=1.0), None, backbone_trains=False)


def test_cli_records_the_prior_and_refuses_a_negative_weight(tmp_path):
    record = run_inprocess("finetune", "experiment=smoke", "model.text_prior=2", run_dir=tmp_path / "ok")
    assert record["text_prior"] == {"weight": 2.0, "recency": 0.9}
    again = run_inprocess("evaluate", f"run={tmp_path / 'ok'}", run_dir=tmp_path / "ev")
    assert again["text_prior"] == record["text_prior"] and again["test"]["movies"]["ndcg@10"] == record["test"]["movies"]["ndcg@10"]
    assert "text_prior" not in run_inprocess("finetune", "experiment=smoke", run_dir=tmp_path / "off")
    proc = run_cli("finetune", "experiment=smoke", "model.text_prior=-1", run_dir=tmp_path / "bad", check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "error: model.text_prior: expected a number >= 0 (0 = off), got -1; e.g. model.text_prior=2.0")


def test_align_to_moves_the_catalogue_mean_and_is_void_under_centring():
    """eval.zero_shot_align: a domain's LM vectors are shifted so that their mean is the training
    catalogues' mean before the projection; under model.text_norm=center (every domain on its own
    mean) the shift changes nothing."""
    target = torch.full((12,), -2.0)
    m = _model(dropout=0.0)
    text = m.features["text"]
    before = m.item_matrix("d").detach().clone()
    text.align_to("d", target)
    shifted = text.base("d") + text.shift["d"]
    assert torch.allclose(shifted.mean(0), target, atol=1e-5)
    assert torch.allclose(shifted - shifted.mean(0), text.base("d") - text.base("d").mean(0), atol=1e-5)
    assert torch.allclose(text.normalise("d", text.base("d")), shifted)
    assert not torch.allclose(m.item_matrix("d"), before)
    for norm in MEAN_FREE:  # a shift would change nothing (checked by forcing one): none is made or recorded
        c = _model(dropout=0.0, text_norm=norm)
        ctext = c.features["text"]
        plain = c.item_matrix("d").detach().clone()
        ctext.align_to("d", target)
        assert ctext.shift == {}
        ctext.shift["d"] = target - ctext.base("d").mean(0)
        assert torch.allclose(c.item_matrix("d"), plain, atol=1e-5)


def test_zero_shot_block_aligns_and_ensembles_the_unseen_domain_then_restores_it():
    """transfer's zero-shot arm: inside ``zero_shot`` the unseen domain's LM vectors average where
    the training catalogue's do and its logits carry the text prior (metrics.json says both);
    on leaving, the domain is as before. A training domain the model holds no catalogue of,
    with nothing to load it, is a one-line error."""
    from omegaconf import OmegaConf

    from crossrec_cli.commands.recsys import align_text, zero_shot

    m = _model(dropout=0.0).eval()
    m.add_catalogue("e", [f"song {i}" for i in range(20)])
    m.encoded["e"] = torch.randn(20, 12) - 4.0
    before = m.item_matrix("e").detach().clone()
    cfg = OmegaConf.create({"eval": {"zero_shot_align": True, "zero_shot_prior": 2.0}})
    with zero_shot(cfg, m, "e", ["d"]) as record:
        text = m.features["text"]
        assert torch.allclose((text.base("e") + text.shift["e"]).mean(0), text.base("d").mean(0), atol=1e-5)
        assert m.prior_weights == {"e": 2.0} and m.item_matrix("e").shape == (20, 8 + 12)
        assert record == {"zero_shot_prior": {"weight": 2.0, "recency": 0.9, "domains": ["e"]},
                          "zero_shot_align": {"domains": ["e"]}}
    assert torch.equal(m.item_matrix("e"), before) and m.prior_weights == {} and "e" not in text.shift
    with pytest.raises(CrossrecError, match="domain=movies: the model trained on it but holds no catalogue"):
        align_text(m, ["e"], ["movies"])


def test_cli_aligns_an_unseen_domain_to_the_training_catalogues(tmp_path):
    """evaluate run=R domain=<unseen> loads R's training domain to take its mean, records the
    shifted domains, and eval.zero_shot_align=false leaves the vectors as they are."""
    trained = tmp_path / "ft"
    run_inprocess("finetune", "experiment=smoke", run_dir=trained)
    on = run_inprocess("evaluate", "experiment=smoke", f"run={trained}", "domain=music", "eval.zero_shot_prior=0",
                       run_dir=tmp_path / "on")
    off = run_inprocess("evaluate", "experiment=smoke", f"run={trained}", "domain=music", "eval.zero_shot_prior=0",
                        "eval.zero_shot_align=false", run_dir=tmp_path / "off")
    assert on["zero_shot_align"] == {"domains": ["music"]} and "zero_shot_align" not in off
    assert "zero_shot_prior" not in on
    from crossrec_cli.cli import compose
    from crossrec_cli.commands.checkpoint_eval import load_run

    items = {}
    for align in ("true", "false"):
        cfg = compose("evaluate", ["experiment=smoke", f"run={trained}", "domain=music",
                                   f"eval.zero_shot_align={align}"], tmp_path / f"c{align}")
        model = load_run(cfg).model
        items[align] = model.item_matrix("music").detach()
        if align == "true":  # music's LM vectors now average where the movies catalogue's do
            text = model.features["text"]
            assert torch.allclose((text.base("music") + text.shift["music"]).mean(0), text.base("movies").mean(0), atol=1e-4)
    assert items["true"].shape == items["false"].shape and not torch.allclose(items["true"], items["false"])


def test_pick_prior_weight_keeps_the_text_scorer_unless_clearly_beaten():
    """The largest weight (the text scorer) stands unless a smaller one is better by more than one
    paired standard error. By hand, 100 examples, the text scorer hits 10 at NDCG 1:
    weight 2 hits the same 10 and 2 more (difference: mean 0.02, sd sqrt((2 - 100 x 0.02^2) / 99)
    = 0.1407, SE 0.01407 < 0.02): kept; weight 4 wins 2 and loses 1 (mean 0.01, sd
    sqrt((3 - 100 x 0.01^2) / 99) = 0.1738, SE 0.01738 > 0.01): not kept, the text scorer stays."""
    from crossrec_cli.models.prior import pick_prior_weight

    base = np.zeros(100)
    base[:10] = 1.0
    two, four = base.copy(), base.copy()
    two[10:12] = 1.0
    four[10:12], four[0] = 1.0, 0.0
    assert (two - base).std(ddof=1) / 10 == pytest.approx(np.sqrt((2 - 100 * 0.02 ** 2) / 99) / 10)
    assert (four - base).std(ddof=1) / 10 == pytest.approx(np.sqrt((3 - 100 * 0.01 ** 2) / 99) / 10)
    assert pick_prior_weight({0.0: base * 0.5, 2.0: two, 4.0: four, 1024.0: base}) == 2.0
    assert pick_prior_weight({4.0: four, 1024.0: base}) == 1024.0
    assert pick_prior_weight({2.0: two, 3.0: two.copy(), 1024.0: base}) == 2.0  # a tie: the smaller weight


def test_auto_prior_is_chosen_on_the_validation_examples(tmp_path):
    """eval.zero_shot_prior=auto on a domain the run never saw: every weight of the grid ranks the
    domain's validation examples, metrics.json keeps each one's valid NDCG@10 and the weight
    chosen, the run's valid NDCG@10 there is that weight's, and the same weight given as a number
    ranks the test split the same; a value that is neither a number nor auto is one line."""
    from crossrec_cli.commands.recsys import ZERO_SHOT_GRID

    trained = tmp_path / "ft"
    run_inprocess("finetune", "experiment=smoke", run_dir=trained)
    rec = run_inprocess("evaluate", "experiment=smoke", f"run={trained}", "domain=music", "eval.zero_shot_prior=auto",
                        run_dir=tmp_path / "auto")
    prior = rec["zero_shot_prior"]
    scores = {float(w): v for w, v in prior["valid_ndcg@10"]["music"].items()}
    chosen = prior["chosen"]["music"]
    assert prior["weight"] == "auto" and prior["domains"] == ["music"] and sorted(scores) == sorted(ZERO_SHOT_GRID)
    assert chosen == max(ZERO_SHOT_GRID) or scores[chosen] > scores[max(ZERO_SHOT_GRID)]
    assert rec["valid"]["music"]["ndcg@10"] == pytest.approx(scores[chosen], abs=1e-12)
    fixed = run_inprocess("evaluate", "experiment=smoke", f"run={trained}", "domain=music",
                          f"eval.zero_shot_prior={chosen}", run_dir=tmp_path / "fixed")
    assert fixed["test"]["music"]["ndcg@10"] == pytest.approx(rec["test"]["music"]["ndcg@10"], abs=1e-12)
    proc = run_cli("evaluate", "experiment=smoke", f"run={trained}", "domain=music", "eval.zero_shot_prior=best",
                   run_dir=tmp_path / "bad", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("error: eval.zero_shot_prior: expected a number >= 0")


def test_prior_contributions_split_the_prior_score_exactly():
    """explain: the text prior's part of a score, item by item, sums to that part."""
    from crossrec_cli.explain.attribution import prior_contributions

    m = _model(dropout=0.0, text_prior=2.0).eval()
    items = m.item_matrix("d")
    hist = pad_histories([[3, 4, 5, 9]], 6)
    users = m.user_states(items, hist)[:, -1]
    part = float(users[0, 8:] @ items[7, 8:])  # the prior's columns: user state . 2 x item vector
    got = prior_contributions(m, items[[3, 4, 5, 9], 8:], items[7, 8:])
    assert got.sum() == pytest.approx(part, abs=1e-5) and len(got) == 4


def test_residual_towers_start_as_the_text_scorer_and_train_away_from_it():
    """projection=residual + readout=residual + text_norm=center (dim = the LM's 12): before any
    step the model's logits are model=text_zeroshot's cosine / temperature, exactly; one
    optimiser step on the next-item loss moves them (the gains were zero, now they are not)."""
    m = _model(dropout=0.0, dim=12, projection="residual", readout="residual", text_norm="center").eval()
    histories = [[3, 4, 5], [7], [1, 2, 3, 4, 5, 6, 8, 9]]
    hist = pad_histories(histories, 6)
    items = m.item_matrix("d")
    logits = m.logits(m.user_states(items, hist)[:, -1], items)
    lm = m.encoded["d"]
    centred = lm - lm.mean(0)
    ev = EvalSet(np.zeros(3, dtype=int), [np.asarray(h) for h in histories], np.zeros(3, dtype=int))
    users = F.normalize(mean_history_vectors(centred, ev, history=6, recency=0.9), dim=-1)
    assert torch.allclose(logits, users @ F.normalize(centred, dim=-1).T / m.cfg.temperature, atol=1e-4)
    m.train()
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    loss = F.cross_entropy(m.logits(m.user_states(m.item_matrix("d"), hist)[:, -1], m.item_matrix("d")),
                           torch.tensor([6, 8, 0]))
    loss.backward()
    opt.step()
    assert m.user.gain.abs().sum() > 0 and m.features["text"].proj.scale.abs().sum() > 0
    assert float(torch.sigmoid(m.user.recency_logit)) != pytest.approx(0.9, abs=1e-6)  # recency learned too
    m.eval()
    with torch.no_grad():
        after = m.logits(m.user_states(m.item_matrix("d"), hist)[:, -1], m.item_matrix("d"))
    assert not torch.allclose(after, logits, atol=1e-4)


def test_residual_needs_the_hidden_size():
    with pytest.raises(CrossrecError, match="model.dim"):
        _model(dim=8, projection="residual")


def test_prior_users_with_a_tensor_recency_equal_the_number_and_pass_gradients():
    """TextPrior.users(..., recency=tensor) (readout=residual's learned recency) gives what the
    number gives, and d(output)/d(recency) exists."""
    h = torch.randn(2, 5, 4)
    valid = torch.tensor([[False, True, True, True, True], [True] * 5])
    h = h * valid.unsqueeze(-1)
    r = torch.tensor(0.7, requires_grad=True)
    got = TextPrior(0.9).users(h, valid, r)
    assert torch.allclose(got, TextPrior(0.7).users(h, valid), atol=1e-6)
    got[:, -1].sum().backward()
    assert r.grad is not None and r.grad.abs() > 0


def test_pool_readout_starts_as_the_text_scorer_and_stays_in_the_history_span():
    """readout=pool (+ projection=residual, text_norm=center): before any step the logits are
    model=text_zeroshot's cosine / temperature; after a step they move (the query and the distance
    bias learn); and a user vector is always a combination of its own history's item vectors (its
    component orthogonal to their span is zero), on a catalogue the model never trained on too."""
    m = _model(dropout=0.0, dim=12, projection="residual", readout="pool", text_norm="center").eval()
    histories = [[3, 4, 5], [7], [1, 2, 3, 4, 5, 6, 8, 9]]
    hist = pad_histories(histories, 6)
    items = m.item_matrix("d")
    logits = m.logits(m.user_states(items, hist)[:, -1], items)
    centred = m.encoded["d"] - m.encoded["d"].mean(0)
    ev = EvalSet(np.zeros(3, dtype=int), [np.asarray(h) for h in histories], np.zeros(3, dtype=int))
    users = F.normalize(mean_history_vectors(centred, ev, history=6, recency=0.9), dim=-1)
    assert torch.allclose(logits, users @ F.normalize(centred, dim=-1).T / m.cfg.temperature, atol=1e-4)
    m.train()
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        loss = F.cross_entropy(m.logits(m.user_states(m.item_matrix("d"), hist)[:, -1], m.item_matrix("d")),
                               torch.tensor([6, 8, 0]))
        loss.backward()
        opt.step()
    assert m.user.query.weight.abs().sum() > 0 and m.user.back_offset.abs().sum() > 0
    assert float(torch.sigmoid(m.user.recency_logit)) != pytest.approx(0.9, abs=1e-4)  # the distance bias learns
    m.eval()
    with torch.no_grad():
        items = m.item_matrix("d")
        after = m.user_states(items, hist)[:, -1]
        assert not torch.allclose(m.logits(after, items), logits, atol=1e-4)
        for row, h in zip(after, histories):
            basis = F.normalize(items[h], dim=-1).T  # (d, len(h))
            inside = basis @ torch.linalg.lstsq(basis, row.unsqueeze(1)).solution
            assert torch.allclose(inside.squeeze(1), row, atol=1e-5)


def test_an_unseen_catalogue_is_read_without_the_residual_correction():
    """projection=residual: after training moved its correction, a domain the model never trained
    on (rank_unseen) gets item vectors = its centred LM vectors, the training domain keeps the
    correction, metrics.json names the domain (zero_shot_items), and ``zero_shot`` puts it back."""
    from omegaconf import OmegaConf

    from crossrec_cli.commands.recsys import rank_unseen, zero_shot, zero_shot_record

    m = _model(dropout=0.0, dim=12, projection="residual", readout="pool", text_norm="center").eval()
    m.add_catalogue("new", [f"thing {i}" for i in range(20)])
    m.encoded["new"] = torch.randn(20, 12) - 1.0
    with torch.no_grad():
        m.features["text"].proj.scale.fill_(0.5)
    centred = {k: m.encoded[k] - m.encoded[k].mean(0) for k in ("d", "new")}
    cfg = OmegaConf.create({"eval": {"zero_shot_align": False, "zero_shot_prior": 0.0}})
    with torch.no_grad():
        corrected = m.item_matrix("new")
        assert not torch.allclose(corrected, centred["new"], atol=1e-5)
        with zero_shot(cfg, m, "new", ["d"]) as record:
            assert torch.allclose(m.item_matrix("new"), centred["new"], atol=1e-5)
            assert record["zero_shot_items"]["domains"] == ["new"]
        assert torch.allclose(m.item_matrix("new"), corrected)  # put back on leaving
        rank_unseen(cfg, m, ["new"], ["d"])
        assert torch.allclose(m.item_matrix("new"), centred["new"], atol=1e-5)
        assert not torch.allclose(m.item_matrix("d"), centred["d"], atol=1e-5)  # the training domain keeps it
        assert "zero_shot_items" not in zero_shot_record(cfg, m, [])
    plain = _model(dropout=0.0).eval()  # projection=mlp: nothing to leave out, nothing recorded
    plain.add_catalogue("new", [f"thing {i}" for i in range(20)])
    plain.encoded["new"] = torch.randn(20, 12)
    rank_unseen(cfg, plain, ["new"], ["d"])
    assert "zero_shot_items" not in zero_shot_record(cfg, plain, ["new"])


def _trained(readout: str, steps: int = 3) -> SeqRec:
    """A lm_space model (projection=residual, text_norm=center) a few Adam steps past its init."""
    m = _model(dropout=0.0, dim=12, projection="residual", readout=readout, text_norm="center", general_loss=1.0)
    hist = pad_histories([[3, 4, 5], [7], [1, 2, 3, 4, 5, 6, 8, 9]], 6)
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=5e-2)
    for _ in range(steps):
        opt.zero_grad()
        items = m.item_matrix("d")
        F.cross_entropy(m.logits(m.user_states(items, hist)[:, -1], items), torch.tensor([6, 8, 0])).backward()
        opt.step()
    return m.eval()


def test_the_general_user_of_residual_is_the_text_scorer_at_the_learned_recency():
    """readout=residual's domain-general user (Readout.general) is the recency-weighted mean of the
    history's normalised item vectors at sigmoid(recency_logit), by hand; the full user is not."""
    m = _trained("residual")
    r = float(torch.sigmoid(m.user.recency_logit))
    assert r != pytest.approx(0.9, abs=1e-4)
    with torch.no_grad():
        items = m.item_matrix("d")
        general = m.user_states(items, pad_histories([[3, 4, 5]], 6), general=True)[0, -1]
        full = m.user_states(items, pad_histories([[3, 4, 5]], 6))[0, -1]
    x = F.normalize(items[[3, 4, 5]], dim=-1)
    want = F.normalize(r * r * x[0] + r * x[1] + x[2], dim=0)
    assert torch.allclose(general, want, atol=1e-5) and not torch.allclose(full, want, atol=1e-3)


def test_the_general_user_of_pool_weighs_by_distance_and_likeness_to_the_newest():
    """readout=pool's general user: softmax over the history of the distance bias (distance x log
    sigmoid(recency_logit) + a free offset per distance) + like_newest x cos(item, newest item),
    times the normalised items; computed by hand for one history."""
    m = _trained("pool")
    with torch.no_grad():
        m.user.like_newest.fill_(1.5)  # values training could reach, so that each term shows
        m.user.back_offset.copy_(torch.tensor([0.0, 0.3, -0.2, 0.1, 0.0, 0.0]))
        items = m.item_matrix("d")
        general = m.user_states(items, pad_histories([[3, 4, 5]], 6), general=True)[0, -1]
    x = F.normalize(items[[3, 4, 5]], dim=-1)
    log_r = float(np.log(torch.sigmoid(m.user.recency_logit).item()))
    scores = torch.tensor([2 * log_r - 0.2, log_r + 0.3, 0.0]) + 1.5 * (x @ x[2])
    assert torch.allclose(general, torch.softmax(scores, 0) @ x, atol=1e-5)


def test_general_loss_adds_the_general_users_next_item_loss():
    """model.general_loss=w: a step's loss is the model's loss plus w x the same loss of the
    domain-general users (training/loop.py batch_loss)."""
    from crossrec_cli.training.loop import TrainConfig, batch_loss

    m = _model(dropout=0.0, dim=12, projection="residual", readout="pool", text_norm="center")
    with torch.no_grad():
        m.user.query.weight.normal_(0, 0.5)  # the transformer's share, so that the two users differ
    inp = torch.tensor([[-1, 3, 4, 5], [7, 8, 9, 1]])
    tgt = torch.tensor([[-1, 4, 5, 6], [8, 9, 1, 2]])
    tc = TrainConfig()
    m.cfg.general_loss = 0.0
    alone = batch_loss(m, "d", inp, tgt, tc).item()
    m.cfg.general_loss = 0.5
    both = batch_loss(m, "d", inp, tgt, tc).item()
    items = m.item_matrix("d")
    mask = tgt >= 0
    logits = m.logits(m.user_states(items, inp, general=True)[mask], items)
    assert both - alone == pytest.approx(0.5 * F.cross_entropy(logits, tgt[mask]).item(), rel=1e-5)


def test_general_items_plain_trains_the_general_user_on_the_language_model_space():
    """model.general_items=plain: the general users' loss reads the domain as an unseen domain is
    read (the LM vectors, no learned correction), the model's loss the corrected items; the domain
    is not left plain afterwards. Refused in one line without general_loss or a projection base."""
    from crossrec_cli.errors import CrossrecError
    from crossrec_cli.training.loop import TrainConfig, batch_loss

    m = _model(dropout=0.0, dim=12, projection="residual", readout="pool", text_norm="center", general_loss=0.5,
               general_items="plain")
    with torch.no_grad():
        m.features["text"].proj.scale.fill_(0.7)  # a learned correction, so that the two item spaces differ
    inp = torch.tensor([[-1, 3, 4, 5], [7, 8, 9, 1]])
    tgt = torch.tensor([[-1, 4, 5, 6], [8, 9, 1, 2]])
    both = batch_loss(m, "d", inp, tgt, TrainConfig()).item()
    assert not m.features["text"].plain  # put back
    items = m.item_matrix("d")
    plain = m.encoded["d"] - m.encoded["d"].mean(0)  # text_norm=center, no correction
    assert not torch.allclose(items, plain, atol=1e-4)
    mask = tgt >= 0
    model_loss = F.cross_entropy(m.logits(m.user_states(items, inp)[mask], items), tgt[mask]).item()
    general = F.cross_entropy(m.logits(m.user_states(plain, inp, general=True)[mask], plain), tgt[mask]).item()
    assert both == pytest.approx(model_loss + 0.5 * general, rel=1e-5)
    with pytest.raises(CrossrecError, match="model.general_items.*general_loss"):
        _model(dim=12, projection="residual", readout="pool", text_norm="center", general_items="plain")
    with pytest.raises(CrossrecError, match="model.general_items.*projection=mlp"):
        _model(dim=12, projection="mlp", readout="pool", general_loss=1.0, general_items="plain")


def test_an_unseen_domain_reads_the_general_user_and_says_so():
    """zero_shot / rank_unseen: the unseen domain's users are the general users (metrics.json
    ``zero_shot_users``), the training domain's are not, and leaving the block puts it back; a
    readout without a general part changes nothing and records nothing; general_loss needs one."""
    from omegaconf import OmegaConf

    from crossrec_cli.commands.recsys import zero_shot, zero_shot_record
    from crossrec_cli.models.seqrec import seqrec_scorer

    m = _trained("residual")
    m.add_catalogue("new", [f"thing {i}" for i in range(20)])
    m.encoded["new"] = torch.randn(20, 12)
    ev = EvalSet(np.zeros(2, dtype=int), [np.asarray([3, 4, 5]), np.asarray([1])], np.zeros(2, dtype=int))
    cfg = OmegaConf.create({"eval": {"zero_shot_align": False, "zero_shot_prior": 0.0}})
    full = seqrec_scorer(m, "new")[0](ev)
    with zero_shot(cfg, m, "new", ["d"]) as record:
        users = seqrec_scorer(m, "new")[0](ev)
        items = m.item_matrix("new")
        general = m.user_states(items, pad_histories([[3, 4, 5], [1]], 6), general=True)[:, -1]
        assert torch.allclose(users, F.normalize(general, dim=-1), atol=1e-6)
        assert record["zero_shot_users"]["domains"] == ["new"] and "residual" in record["zero_shot_users"]["read"]
        assert not torch.allclose(seqrec_scorer(m, "d")[0](ev), users, atol=1e-4)  # "d" keeps its transformer
    assert m.general_users == set() and torch.allclose(seqrec_scorer(m, "new")[0](ev), full)
    plain = _model(dropout=0.0).eval()  # readout=last: no general part
    assert plain.read_general("new") is False and "zero_shot_users" not in zero_shot_record(cfg, plain, ["new"])
    with pytest.raises(CrossrecError, match="model.general_loss"):
        _model(general_loss=1.0)
