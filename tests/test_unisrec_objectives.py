"""UniSRec's pre-training and fine-tuning pieces: the item-drop view, the sequence-sequence
contrastive loss (model.seq_loss) and freezing parts of a loaded model (freeze=[user])."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from crossrec_cli.errors import CrossrecError
from crossrec_cli.models.seqrec import item_drop


def test_item_drop_keeps_the_order_and_the_newest_item_left_padded():
    hist = torch.tensor([[-1, -1, 3, 4, 5, 6, 7, 8], [10, 11, 12, 13, 14, 15, 16, 17]])
    assert torch.equal(item_drop(hist, 0.0), hist)
    torch.manual_seed(0)
    for _ in range(20):
        view = item_drop(hist, 0.5)
        for row, orig in zip(view, hist):
            kept = row[row >= 0]
            assert kept[-1] == orig[-1]  # the newest item stays, last
            assert (row[: len(row) - len(kept)] == -1).all()  # left-padded
            pos = [orig.tolist().index(int(x)) for x in kept]
            assert pos == sorted(pos)  # the kept ones in their order
    # every item but the newest dropped at p: over many draws, about p of them
    torch.manual_seed(1)
    big = torch.arange(50).repeat(400, 1)
    dropped = 49 - (item_drop(big, 0.2) >= 0).sum(1).float() + 1
    assert dropped.mean().item() / 49 == pytest.approx(0.2, abs=0.02)


def test_sequence_loss_is_the_infonce_of_a_history_and_its_view_by_hand():
    from test_seqrec import _model

    m = _model(dropout=0.0, seq_loss=0.5, seq_drop=0.3, temperature=0.1)
    items = m.item_matrix("d")
    hist = torch.tensor([[-1, 3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 13], [-1, -1, -1, 2, 20, 21], [1, 2, 3, 4, 5, 6]])
    nxt = torch.tensor([9, 14, 9, 7])  # rows 0 and 2 share their next item: not each other's negatives
    torch.manual_seed(5)
    got = m.sequence_loss(items, hist, nxt)
    torch.manual_seed(5)
    view = item_drop(hist, 0.3)
    a = F.normalize(m.user_states(items, hist)[:, -1], dim=-1)
    b = F.normalize(m.user_states(items, view)[:, -1], dim=-1)
    sim = (a @ b.T / 0.1).tolist()
    want = 0.0
    for i in range(4):
        negs = [j for j in range(4) if j == i or int(nxt[j]) != int(nxt[i])]
        want += -sim[i][i] + math.log(sum(math.exp(sim[i][j]) for j in negs))
    assert got.item() == pytest.approx(want / 4, rel=1e-5)


def test_batch_loss_adds_seq_loss_times_its_weight():
    from test_seqrec import _model

    from crossrec_cli.training.loop import TrainConfig, batch_loss

    inp = torch.tensor([[-1, 3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 13]])
    tgt = torch.tensor([[-1, 4, 5, 6, 7, 9], [9, 10, 11, 12, 13, 14]])
    plain = _model(dropout=0.0)
    with_seq = _model(dropout=0.0, seq_loss=0.25)
    tc = TrainConfig()
    torch.manual_seed(2)
    items = with_seq.item_matrix("d")
    extra = with_seq.sequence_loss(items, inp, tgt[:, -1], with_seq.user_states(items, inp)[:, -1])
    torch.manual_seed(2)
    got = batch_loss(with_seq, "d", inp, tgt, tc)
    assert got.item() == pytest.approx(batch_loss(plain, "d", inp, tgt, tc).item() + 0.25 * extra.item(), rel=1e-5)
    assert extra.item() > 0


def test_freeze_keeps_the_user_tower_and_trains_the_adaptor():
    from test_seqrec import _model

    from crossrec_cli.training.loop import TrainConfig, batch_loss, make_optimizer

    m = _model(dropout=0.0, projection="moe")
    assert m.freeze(["user"]) == len(list(m.user.parameters()))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    opt = make_optimizer(m, TrainConfig())
    loss = batch_loss(m, "d", torch.tensor([[-1, 3, 4, 5, 6, 7]]), torch.tensor([[-1, 4, 5, 6, 7, 9]]), TrainConfig())
    loss.backward()
    opt.step()
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("user."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("features.text.proj."))


def test_freeze_refuses_unknown_parts_and_a_model_with_nothing_left_to_train():
    from test_seqrec import _model

    with pytest.raises(CrossrecError, match="unknown part 'transformer'.*user, features, features.text, fusion"):
        _model().freeze(["transformer"])
    with pytest.raises(CrossrecError, match="leaves nothing of the model to train"):
        _model().freeze(["user", "features", "fusion"])
    with pytest.raises(CrossrecError, match="model.seq_drop"):
        _model(seq_drop=1.0)


def test_unisrec_pretrain_then_adaptor_only_finetune_and_transfer(tmp_path):
    from conftest import read_metrics, run_cli, run_inprocess
    from safetensors.torch import load_file

    smoke = ("experiment=smoke", "model.projection=moe", "model.experts=2", "trainer.epochs=1")
    pre = tmp_path / "pre"
    run_inprocess("finetune", *smoke, "model.seq_loss=0.001", run_dir=pre)
    ft = tmp_path / "ft"
    run_inprocess("finetune", *smoke, f"init_from={pre}", "freeze=[user]", run_dir=ft)
    m = read_metrics(ft)
    assert m["freeze"] == ["user"] and m["trainable_params"] < read_metrics(pre)["trainable_params"]
    a, b = load_file(pre / "checkpoint" / "model.safetensors"), load_file(ft / "checkpoint" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("user."))
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("features.text.proj."))
    tr = tmp_path / "tr"
    run_inprocess("transfer", *smoke, "source=movies", "target=music", f"init_from={pre}", "freeze=[user]", run_dir=tr)
    assert read_metrics(tr)["freeze"] == ["user"]
    bad = run_cli("finetune", *smoke, "freeze=[user]", run_dir=tmp_path / "bad", check=False)
    assert bad.returncode != 0 and "freeze" in bad.stderr and "init_from" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
