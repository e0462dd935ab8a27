"""Gradient reversal, checkpoint atomicity / verification / retention, state round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crossrec_cli.adversarial import DomainDiscriminator, grad_reverse, item_alignment_loss
from crossrec_cli.data.split import Split, EvalSet, subsample_training_users
from crossrec_cli.training import checkpoint as ckpt
from crossrec_cli.training.batches import collate, epoch_order, windows
from crossrec_cli.training.state import flatten, rng_state, set_rng_state, unflatten


@pytest.mark.parametrize("weight", [1.0, 0.25, 3.0])
def test_grad_reverse_flips_sign_and_scales(weight):
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = grad_reverse(x, weight)
    assert torch.equal(y, x)  # identity forward
    (y * torch.tensor([2.0, 5.0, -1.0])).sum().backward()
    assert torch.allclose(x.grad, -weight * torch.tensor([2.0, 5.0, -1.0]))


def test_discriminator_learns_while_encoder_is_pushed_to_confuse_it():
    torch.manual_seed(0)
    enc = torch.nn.Linear(4, 4)
    disc = DomainDiscriminator(4, 2, hidden=8, weight=1.0)
    a, b = torch.randn(64, 4) + 2.0, torch.randn(64, 4) - 2.0
    loss, acc = item_alignment_loss(disc, [enc(a), enc(b)])
    loss.backward()
    # the discriminator descends its loss; the encoder receives the reversed gradient
    d_grad = disc.net[0].weight.grad.clone()
    e_grad = enc.weight.grad.clone()
    enc.zero_grad(), disc.zero_grad()
    plain = torch.nn.functional.cross_entropy(disc.net(torch.cat([enc(a), enc(b)])),
                                              torch.cat([torch.zeros(64), torch.ones(64)]).long())
    plain.backward()
    assert torch.allclose(d_grad, disc.net[0].weight.grad, atol=1e-6)
    assert torch.allclose(e_grad, -enc.weight.grad, atol=1e-6)
    assert 0.0 <= acc <= 1.0


def _split(seqs):
    seqs = [np.asarray(s) for s in seqs]
    empty = EvalSet(np.zeros(0, dtype=np.int64), [], np.zeros(0, dtype=np.int64))
    return Split(np.arange(len(seqs)), seqs, empty, empty, "test")


def test_windows_predict_every_position_once_with_bounded_context():
    seq = list(range(10))
    ws = windows(_split([seq]), max_history=3)
    targets = sorted(t for w, k in ws for t in w[len(w) - k:])
    assert targets == list(range(1, 10))
    assert all(len(w) <= 4 and k == len(w) - 1 for w, k in ws)  # no overlap: every position a target
    inp, tgt = collate(ws, 3)
    assert inp.shape == tgt.shape == (len(ws), 3)
    # a target's input is the item right before it
    for i, (w, _) in enumerate(ws):
        n = len(w) - 1
        assert inp[i, 3 - n:].tolist() == list(w[:-1]) and tgt[i, 3 - n:].tolist() == list(w[1:])
        assert (inp[i, : 3 - n] == -1).all()


def test_overlapping_windows_give_each_target_more_context_and_predict_it_once():
    seq = list(range(20))
    ws = windows(_split([seq]), max_history=6, stride=2)
    inp, tgt = collate(ws, 6)
    seen = []
    for i in range(len(ws)):
        for pos in range(6):
            t = int(tgt[i, pos])
            if t < 0:
                continue
            seen.append(t)
            context = [c for c in inp[i, : pos + 1].tolist() if c >= 0]
            assert context == list(range(t - len(context), t))  # the items right before t, in order
            assert len(context) >= min(t, 6 - 2 + 1)  # > max_history - stride once the sequence allows
    assert sorted(seen) == list(range(1, 20))  # every target exactly once
    # stride=max_history is the non-overlapping cut
    assert [(w.tolist(), k) for w, k in windows(_split([seq]), 6, 6)] == [(w.tolist(), k) for w, k in windows(_split([seq]), 6)]


def test_epoch_order_is_a_function_of_seed_and_epoch():
    assert np.array_equal(epoch_order(50, 0, 3), epoch_order(50, 0, 3))
    assert not np.array_equal(epoch_order(50, 0, 3), epoch_order(50, 0, 4))
    assert not np.array_equal(epoch_order(50, 1, 3), epoch_order(50, 0, 3))


def test_subsample_training_users_keeps_evaluation():
    s = _split([[1, 2, 3]] * 10)
    sub = subsample_training_users(s, 0.3, seed=0)
    assert len(sub.train_seqs) == 3 and sub.test is s.test
    assert np.array_equal(sub.train_users, subsample_training_users(s, 0.3, seed=0).train_users)


def test_state_round_trip_through_safetensors_layout():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.randn(3, 2))], lr=0.1)
    opt.param_groups[0]["params"][0].grad = torch.ones(3, 2)
    opt.step()
    tensors, skel = flatten(opt.state_dict(), "opt")
    back = unflatten(skel, tensors)
    assert back["param_groups"][0]["lr"] == 0.1 and back["param_groups"][0]["betas"] == (0.9, 0.999)
    assert torch.equal(back["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_rng_state_restores_all_generators():
    import random

    st = rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    t, s = flatten(st, "rng")
    set_rng_state(unflatten(s, t))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def _write(folder, payload=b"x"):
    return ckpt.write_checkpoint(folder, {"a.bin": lambda p: open(p, "wb").write(payload)})


def test_checkpoint_visible_only_when_complete(tmp_path):
    def boom(p):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        ckpt.write_checkpoint(tmp_path / "step-1", {"a.bin": lambda p: open(p, "wb").write(b"1"), "b.bin": boom})
    assert not (tmp_path / "step-1").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary leftovers either


def test_verify_detects_damage_and_resume_falls_back(tmp_path):
    _write(tmp_path / "step-1", b"old")
    _write(tmp_path / "step-2", b"new")
    assert ckpt.latest_verified(tmp_path) == tmp_path / "step-2"
    (tmp_path / "step-2" / "a.bin").write_bytes(b"ne")  # truncated
    assert "checksum" in ckpt.verify(tmp_path / "step-2")
    assert ckpt.latest_verified(tmp_path) == tmp_path / "step-1"
    (tmp_path / "step-1" / "manifest.json").unlink()
    assert ckpt.latest_verified(tmp_path) is None


def test_prune_keeps_newest_and_protected_only_inside_root(tmp_path):
    for i in range(1, 6):
        _write(tmp_path / f"step-{i}")
    outside = tmp_path.parent / "keepme"
    outside.mkdir(exist_ok=True)
    removed = ckpt.prune(tmp_path, keep_last=2, protect={tmp_path / "step-1"})
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["step-1", "step-4", "step-5"] and len(removed) == 2
    assert outside.is_dir()
    ckpt.prune(tmp_path, keep_last=0)
    assert (tmp_path / "step-5").is_dir()  # the newest is never deleted


@pytest.mark.parametrize("clip", [0.0, 0.5])
def test_pretrain_clips_every_step_only_when_asked(monkeypatch, clip):
    """``pretrain.grad_clip``: the pretrain loop clips like the finetune loop (0 = off)."""
    from pathlib import Path

    import yaml

    from crossrec_cli.models.backbone import build_backbone
    from crossrec_cli.training.pretrain import pretrain_item_tower

    tiny = yaml.safe_load((Path(__file__).resolve().parents[1] / "crossrec_cli" / "conf" / "backbone" / "tiny.yaml")
                          .read_text())["config"]
    bb = build_backbone("tiny", config=tiny, seed=0)
    seen: list[float] = []
    real = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, max_norm, **kw: seen.append(max_norm)
                        or real(params, max_norm, **kw))
    texts = [f"movie number {i}" for i in range(12)]
    history = pretrain_item_tower(bb, {"d": (texts, np.zeros((0, 2), dtype=np.int64))}, "contrastive", 1, 4, 1e-3,
                                  0.05, 16, "mean", seed=0, grad_clip=clip)
    assert history[0]["steps"] == 3
    assert seen == ([clip] * 3 if clip else [])


def test_task_epochs_replay_one_seeded_permutation_stream():
    """A task's epoch plan is a pure function of (seed, epoch) and equals the e-th permutation
    of one generator seeded once (what the task loop drew before it ran on the shared engine)."""
    from crossrec_cli.tasks.train import Supervised, TrainSettings

    s = TrainSettings(batch_size=4, seed=7)
    obj = Supervised(torch.nn.Identity(), list(range(10)), np.zeros(10), s, None, None)
    gen = torch.Generator().manual_seed(7)
    for epoch in range(3):
        order = torch.randperm(10, generator=gen).tolist()
        assert obj.plan(epoch) == [order[0:4], order[4:8], order[8:10]]
    assert obj.plan(1) == obj.plan(1)
