"""privacy=dp: DP-SGD through opacus (crossrec_cli/privacy/dp.py). Each user's gradient is that
user's own, opacus clips each to max_grad_norm before the noise, the accountant's epsilon is
reported and within the target, the combinations that cannot work are refused in one line, a
resumed private run is the uninterrupted one, and privacy=none trains exactly as before."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crossrec_cli.data.split import EvalSet, Split
from crossrec_cli.models.seqrec import SeqRec, SeqRecConfig
from crossrec_cli.privacy import TrainingContext, build_privacy
from crossrec_cli.privacy.dp import window_owners
from crossrec_cli.training.batches import collate, windows
from crossrec_cli.training.engine import LoopSettings
from crossrec_cli.training.engine import run as run_loop
from crossrec_cli.training.loop import NextItem, TrainConfig, fit, make_optimizer, trainable_state
from tests.conftest import read_metrics, run_inprocess, without_timing

SMOKE = ("experiment=smoke", "trainer.epochs=2")


class FakeBackbone:
    """A frozen LM stand-in: ``hidden_size`` and no parameters (the vectors are set directly)."""

    hidden_size = 12
    model = None


def _model(dropout: float = 0.0) -> SeqRec:
    torch.manual_seed(0)
    m = SeqRec(SeqRecConfig(dim=8, max_history=6, heads=2, dropout=dropout, projection="linear", item_ids=True),
               FakeBackbone(), backbone_trains=False, features=["text", "id"])
    m.add_catalogue("d", [f"item {i}" for i in range(30)])
    m.encoded["d"] = torch.randn(30, 12)
    return m


def _split() -> Split:
    """12 users; users 0 and 5 have two training sequences, long ones several windows each."""
    rng = np.random.default_rng(0)
    users = np.array([0, 0, 1, 2, 3, 4, 5, 5, 6, 7, 8, 9, 10, 11])
    seqs = [rng.integers(0, 30, size=int(n)) for n in rng.integers(2, 16, size=len(users))]
    empty = EvalSet(np.zeros(0, dtype=np.int64), [], np.zeros(0, dtype=np.int64))
    return Split(users, seqs, empty, empty, "test")


def _objective(model: SeqRec, tc: TrainConfig, **settings):
    wins = {"d": windows(_split(), model.cfg.max_history, tc.window_stride)}
    inner = NextItem(model, wins, tc, lambda m: {"d": {"ndcg@10": 0.0}}, None, None, None)
    dp = build_privacy("dp", {"epsilon": 4.0, "delta": 1e-3, "max_grad_norm": 1.0} | settings, TrainingContext())
    return dp.wrap(inner, {"d": _split()}, make_optimizer(model, tc)), dp


def test_each_users_gradient_is_the_gradient_of_that_users_mean_loss_alone():
    model = _model().eval()
    tc = TrainConfig(epochs=1, batch_size=4, window_stride=3)
    obj, _ = _objective(model, tc)
    batch = np.arange(len(obj.samples))
    grads, total = obj.per_user_gradients(batch)
    split, n_items = _split(), 30
    losses = []
    for pos, (key, idx, n_targets) in enumerate(obj.samples):
        user = window_owners(split, 3)[idx[0]]
        # the user's mean next-item cross-entropy over every training target, by plain autograd
        inp, tgt = collate([obj.inner.wins["d"][i] for i in idx], model.cfg.max_history)
        model.zero_grad()
        items = model.item_matrix("d")
        logits = model.logits(model.user_states(items, inp), items)
        mask = tgt >= 0
        loss = F.cross_entropy(logits[mask], tgt[mask], reduction="sum") / mask.sum()
        loss.backward()
        losses.append(float(loss.detach()))
        assert mask.sum() == n_targets == sum(len(s) - 1 for u, s in zip(split.train_users, split.train_seqs) if u == user)
        for name, p in model.named_parameters():
            if p.requires_grad:
                assert torch.allclose(grads[name][pos], p.grad, atol=1e-5), (pos, name)
    assert total == pytest.approx(sum(losses), rel=1e-5)
    assert len(obj.samples) == 12  # a user with two training sequences is one sample


def test_opacus_clips_each_users_gradient_to_max_grad_norm_before_the_noise():
    model = _model(dropout=0.2).train()
    tc = TrainConfig(epochs=1, batch_size=6, window_stride=3)
    clip = 0.05
    obj, _ = _objective(model, tc, max_grad_norm=clip)
    dp = obj.optimizer
    batch = np.arange(len(obj.samples))
    grads, _ = obj.per_user_gradients(batch)
    for p in dp.params:
        p.grad_sample = grads[obj.names[id(p)]]
    norms = torch.stack([g.reshape(len(g), -1).norm(dim=1) for g in dp.grad_samples], 1).norm(dim=1)
    assert (norms > clip).all()  # every user's gradient is above the bound: the clipping acts
    dp.clip_and_accumulate()  # opacus: p.summed_grad = sum of the clipped per-user gradients
    factor = (clip / (norms + 1e-6)).clamp(max=1.0)
    clipped = torch.stack([torch.cat([grads[obj.names[id(p)]][i].reshape(-1) * factor[i] for p in dp.params])
                           for i in range(len(batch))])
    assert (clipped.norm(dim=1) <= clip * (1 + 1e-5)).all()
    summed = torch.cat([p.summed_grad.reshape(-1) for p in dp.params])
    assert torch.allclose(summed, clipped.sum(0), atol=1e-6)
    assert summed.norm() <= clip * len(batch) * (1 + 1e-5)
    dp.zero_grad(set_to_none=True)


def test_without_noise_a_step_moves_by_the_mean_clipped_gradient():
    """noise_multiplier 0 (a test only: epsilon unbounded): the private gradient is the sum of the
    clipped per-user gradients over the expected batch, and the surrogate loss puts exactly it in
    ``.grad``; with noise it differs from that by Gaussian noise of std sigma * max_grad_norm / batch."""
    model = _model().eval()
    tc = TrainConfig(epochs=1, batch_size=6, window_stride=3)
    obj, _ = _objective(model, tc, max_grad_norm=0.05)
    batch = np.arange(len(obj.samples))
    grads, _ = obj.per_user_gradients(batch)
    norms = torch.stack([g.reshape(len(g), -1).norm(dim=1) for g in grads.values()], 1).norm(dim=1)
    factor = (0.05 / (norms + 1e-6)).clamp(max=1.0)
    expected = {n: torch.einsum("i,i...", factor, g) / obj.batch for n, g in grads.items()}
    obj.optimizer.noise_multiplier = obj.noise_multiplier = 0.0
    loss, _ = obj.loss(batch, None)
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert torch.allclose(p.grad, expected[name], atol=1e-6), name


def test_poisson_batches_are_a_function_of_seed_and_epoch():
    model = _model()
    tc = TrainConfig(epochs=3, batch_size=4, seed=5)
    obj, _ = _objective(model, tc)
    a, b = obj.plan(1), obj.plan(1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and len(a) == obj.steps_per_epoch == 3
    sizes = [len(x) for e in range(40) for x in obj.plan(e)]
    assert len(set(sizes)) > 2 and np.mean(sizes) == pytest.approx(4, abs=0.5)  # Poisson: 4 expected


def test_private_finetune_reports_the_spent_epsilon_within_the_target(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="crossrec")
    m = run_inprocess("finetune", *SMOKE, "privacy=dp", "privacy.epsilon=2", run_dir=tmp_path)
    p = m["privacy"]
    assert p["method"] == "dp" and p["unit"] == "user" and p["target_epsilon"] == 2.0 and p["delta"] == 1e-5
    assert p["max_grad_norm"] == 1.0 and p["noise_multiplier"] > 0 and p["steps"] == 4 and p["users"] == 40
    assert 0 < p["epsilon"] <= 2.0 and p["epsilon"] > 1.8  # the noise is calibrated to spend about all of it
    per_epoch = [h["epsilon"] for h in m["history"]]
    assert len(per_epoch) == 2 and 0 < per_epoch[0] < per_epoch[1] == p["epsilon"]
    assert "privacy: epsilon 1.9" in caplog.text  # the per-epoch log line


@pytest.mark.parametrize("override, key", [
    ("trainer.loss=sampled", "trainer.loss"),
    ("trainer.loss=sampled_logq", "trainer.loss"),
    ("adversarial=fgm", "adversarial"),
    ("trainer.precision=bf16", "trainer.precision"),
    ("trainer.compile=true", "trainer.compile"),
    ("mixed_history=true", "mixed_history"),
    ("adapter=lora", "adapter"),
    ("privacy.delta=0.5", "privacy.delta"),
    ("privacy.epsilon=0", "privacy.epsilon"),
    ("privacy.max_grad_norm=-1", "privacy.max_grad_norm"),
    ("privacy.accountant=moments", "privacy.accountant"),
])
def test_what_cannot_work_with_dp_is_refused_in_one_line_naming_the_key(tmp_path, capsys, override, key):
    with pytest.raises(SystemExit) as stop:
        run_inprocess("finetune", *SMOKE, "privacy=dp", override, run_dir=tmp_path)
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert stop.value.code == 2 and len(errors) == 1 and errors[0].startswith(f"error: {key}: "), errors


def test_an_added_privacy_key_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_inprocess("finetune", *SMOKE, "privacy=dp", "+privacy.sigma=1", run_dir=tmp_path)
    assert "error: privacy.sigma: " in capsys.readouterr().err


def test_a_resumed_private_run_is_the_uninterrupted_run(tmp_path):
    args = (*SMOKE, "privacy=dp", "trainer.checkpoint_every=1", "trainer.keep_last=10")
    ref = tmp_path / "ref"
    run_inprocess("finetune", *args, run_dir=ref)
    cut = tmp_path / "cut"
    shutil.copytree(ref, cut)
    (cut / "metrics.json").unlink()
    shutil.rmtree(cut / "checkpoint")
    for step in (2, 3, 4):  # as if killed after step 1, mid first epoch
        shutil.rmtree(cut / "checkpoints" / f"step-{step}")
    run_inprocess("finetune", *args, "resume=true", run_dir=cut)
    assert without_timing(read_metrics(cut)) == without_timing(read_metrics(ref))


def test_privacy_none_trains_exactly_as_before(tmp_path):
    """fit(privacy=None) is the loop it was before privacy existed: the same losses and weights."""
    tc = TrainConfig(epochs=2, batch_size=4, window_stride=3, patience=5)
    split = {"d": _split()}
    evaluate = lambda m: {"d": {"ndcg@10": 0.0}}  # noqa: E731

    torch.manual_seed(1)
    model = _model(dropout=0.2)
    torch.manual_seed(1)
    got = fit(model, split, tc, evaluate, tmp_path / "a", show_progress=False, privacy=None)
    after = trainable_state(model)

    torch.manual_seed(1)
    model = _model(dropout=0.2)
    torch.manual_seed(1)
    wins = {"d": windows(split["d"], model.cfg.max_history, tc.window_stride)}
    objective = NextItem(model, wins, tc, evaluate, tmp_path / "b", None, None)
    settings = LoopSettings(tc.epochs, tc.grad_clip, tc.checkpoint_every, tc.keep_last, False, precision=tc.precision)
    want = run_loop(objective, make_optimizer(model, tc), settings, tmp_path / "b" / "checkpoints", False, None)
    assert [h["loss"] for h in got.history] == [h["loss"] for h in want.history]
    assert all(torch.equal(v, trainable_state(model)[k]) for k, v in after.items())


def test_the_pages_private_training_table_is_the_records_rendered():
    """docs/fairness.md's table is ``scripts/privacy_tradeoff.py table`` of the committed records."""
    import importlib.util
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("privacy_tradeoff", repo / "scripts" / "privacy_tradeoff.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    records = script.load_records()
    assert records and {r["domain"] for r in records} <= set(script.EPOCHS)
    for r in records:  # each record is what its command measured, within its budget
        assert r["command"] == "crossrec " + " ".join(script.command(r["domain"], r["seed"], "none" if r[
            "epsilon_target"] is None else f"{r['epsilon_target']:g}"))
        assert r["privacy"] is None if r["epsilon_target"] is None else r["privacy"]["epsilon"] <= r["epsilon_target"]
    page = script.PAGE.read_text()
    assert script.page_with_table(page, script.render(records)) == page
