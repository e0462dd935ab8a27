"""On a CUDA device (scripts/gpu_check.sh runs these; elsewhere they are skipped): the device
paths give the CPU's results."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crossrec_cli.cli import run_command
from crossrec_cli.evaluation.ranking import full_ranks
from crossrec_cli.training.losses import linear_cross_entropy

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

SMOKE = ["experiment=smoke", "backbone=none", "model.item_ids=true", "device=cuda"]


def test_ranking_on_the_gpu_gives_the_cpu_float64_ranks():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(300, 32, generator=g, dtype=torch.float64)
    items = torch.cat([base, base[:50], base[:50] * (1 + 1e-7)])  # twins and float32 near-ties
    users = torch.randn(2000, 32, generator=g, dtype=torch.float64)
    targets = np.random.default_rng(0).integers(0, len(items), 2000)
    exclude = [np.random.default_rng(i).choice(len(items), 10, replace=False) for i in range(2000)]
    for ex in (None, exclude):
        cpu = full_ranks(users, items, targets, ex, score_dtype="float64")
        gpu = full_ranks(users, items, targets, ex, score_dtype="float32", device="cuda", item_chunk=97)
        assert gpu.tolist() == cpu.tolist()


def test_the_fused_softmax_on_the_gpu_matches_the_cpu():
    g = torch.Generator().manual_seed(0)
    u, i = torch.randn(500, 64, generator=g), torch.randn(20000, 64, generator=g) * 0.1
    t = torch.randint(20000, (500,), generator=g)
    ref = F.cross_entropy(u.double() @ i.double().T, t)
    got = linear_cross_entropy(u.cuda(), i.cuda(), t.cuda())
    assert abs(float(got) - float(ref)) < 1e-4


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_finetune_on_the_gpu_in_each_precision(tmp_path, precision):
    rec = run_command("finetune", [*SMOKE, "trainer.epochs=2", f"trainer.precision={precision}"], tmp_path)
    assert all(np.isfinite(h["loss"]) for h in rec["history"])
    assert rec["peak_gpu_memory_mib"] > 0 and rec["test"]["movies"]["examples"] > 0


def test_a_named_gpu_is_honoured_and_a_missing_one_refused(tmp_path, capsys):
    run_command("finetune", [*SMOKE[:-1], "device=cuda:0"], tmp_path / "ok")
    with pytest.raises(SystemExit):
        run_command("finetune", [*SMOKE[:-1], f"device=cuda:{torch.cuda.device_count()}"], tmp_path / "bad")
    assert "GPU(s) are visible" in capsys.readouterr().err


def test_compiled_user_tower_on_the_gpu(tmp_path):
    rec = run_command("finetune", [*SMOKE, "trainer.compile=true"], tmp_path)
    assert np.isfinite(rec["history"][-1]["loss"])
