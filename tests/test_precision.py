"""trainer.precision: the forward pass under autocast (bf16 / fp16 with a GradScaler), on CPU here."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from crossrec_cli.cli import run_command
from crossrec_cli.training.engine import LoopSettings, Objective, run
from crossrec_cli.training.losses import linear_cross_entropy

SMOKE = ["experiment=smoke", "backbone=none", "model.item_ids=true", "trainer.epochs=2"]


class Regression(Objective):
    """A linear model fitted to y = 2x: every loss is recorded with the dtype it was computed in."""

    def __init__(self):
        self.module = torch.nn.Linear(4, 1)
        self.dtypes: list[torch.dtype] = []
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(64, 4, generator=g)
        self.y = self.x.sum(1, keepdim=True) * 2

    def plan(self, epoch):
        return list(range(4))

    def loss(self, batch, prog):
        pred = self.module(self.x[batch * 16 : batch * 16 + 16])
        self.dtypes.append(pred.dtype)
        return F.mse_loss(pred.float(), self.y[batch * 16 : batch * 16 + 16]), 1.0

    def weights(self):
        return dict(self.module.state_dict())

    def load_weights(self, state, source):
        self.module.load_state_dict(state)


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                              ("fp16", torch.float16)])
def test_the_forward_pass_runs_in_the_chosen_precision_and_still_learns(tmp_path, precision, dtype):
    obj = Regression()
    opt = torch.optim.SGD(obj.module.parameters(), lr=0.05)
    prog = run(obj, opt, LoopSettings(epochs=15, precision=precision), tmp_path / "ck")
    assert set(obj.dtypes) == {dtype}
    assert prog.history[-1]["loss"] < 0.05 * prog.history[0]["loss"]
    state = json.loads(sorted((tmp_path / "ck").glob("step-*/state.json"))[-1].read_text())
    # fp16's loss scale is part of the resumable state; the other precisions have none
    assert ("grad_scaler" in state) == (precision == "fp16")
    if precision == "fp16":
        assert state["grad_scaler"]["scale"] > 0


def test_fp16_resume_restores_the_loss_scale(tmp_path, monkeypatch):
    obj = Regression()
    opt = torch.optim.SGD(obj.module.parameters(), lr=0.05)
    run(obj, opt, LoopSettings(epochs=2, precision="fp16"), tmp_path / "ck")
    saved = json.loads(sorted((tmp_path / "ck").glob("step-*/state.json"))[-1].read_text())["grad_scaler"]
    again = Regression()
    opt2 = torch.optim.SGD(again.module.parameters(), lr=0.05)
    seen = {}
    orig = torch.amp.GradScaler.load_state_dict

    def spy(self, state):
        seen.update(state)
        return orig(self, state)

    monkeypatch.setattr(torch.amp.GradScaler, "load_state_dict", spy)
    prog = run(again, opt2, LoopSettings(epochs=3, precision="fp16"), tmp_path / "ck", resume=True)
    assert seen == saved and prog.epoch == 3


def test_unknown_precision_is_refused_before_any_step(tmp_path):
    obj = Regression()
    with pytest.raises(Exception, match="trainer.precision"):
        run(obj, torch.optim.SGD(obj.module.parameters(), lr=0.1), LoopSettings(epochs=1, precision="fp8"))
    assert obj.dtypes == []


def test_the_fused_softmax_stays_in_float32_under_autocast():
    g = torch.Generator().manual_seed(0)
    users = torch.randn(10, 8, generator=g).requires_grad_()
    items = torch.randn(30, 8, generator=g).requires_grad_()
    t = torch.randint(30, (10,), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        u = users @ torch.eye(8)  # a bf16 activation, as a user tower under autocast gives
        loss = linear_cross_entropy(u, items, t)
    assert u.dtype == torch.bfloat16 and loss.dtype == torch.float32
    loss.backward()
    ref = F.cross_entropy(u.float().detach() @ items.detach().T, t)
    assert abs(float(loss.detach()) - float(ref)) < 1e-5 and users.grad.dtype == torch.float32


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_finetune_trains_and_evaluates_in_reduced_precision(tmp_path, precision):
    rec = run_command("finetune", [*SMOKE, f"trainer.precision={precision}"], tmp_path)
    losses = [h["loss"] for h in rec["history"]]
    assert all(torch.isfinite(torch.tensor(losses))) and len(losses) == 2
    assert rec["test"]["movies"]["examples"] > 0


def test_bad_precision_value_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_command("finetune", [*SMOKE, "trainer.precision=half"], tmp_path)
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: trainer.precision:") and "fp32, bf16 or fp16" in err and "\n" not in err


@pytest.mark.slow  # inductor compiles C++ on a CPU: a minute or more
def test_compiled_user_tower_gives_the_eager_metrics(tmp_path):
    eager = run_command("finetune", [*SMOKE, "model.dropout=0.0"], tmp_path / "eager")
    compiled = run_command("finetune", [*SMOKE, "model.dropout=0.0", "trainer.compile=true"], tmp_path / "compiled")
    for part in ("valid", "test"):
        for k, v in eager[part]["movies"].items():
            assert compiled[part]["movies"][k] == pytest.approx(v, abs=0.02), (part, k)
