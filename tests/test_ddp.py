"""Several processes: ``torchrun --nproc_per_node 2 -m crossrec_cli ...`` on CPU (gloo) against
one process with the same global batch.

Tolerances: with dropout 0 the two runs take the same steps up to float rounding (the gradient
of a batch is summed from two halves), so epoch losses must agree to 1e-5 relative (measured
~1e-8), ranking metrics to 1e-6 (measured: identical) and weights to 1e-5 (measured ~5e-7; the
attention's key bias, whose true gradient is 0, is left out: Adam turns its float noise into
lr-sized steps that change no output). With the default dropout each process draws its own
masks: losses within 1% (measured ~0.1%), metrics within 0.05 (a few users of 100). A resumed
2-process run must equal the uninterrupted one exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import REPO, read_metrics, run_inprocess, without_timing
from safetensors.torch import load_file

from crossrec_cli.errors import CrossrecError
from crossrec_cli.models.seqrec import SeqRec, SeqRecConfig
from crossrec_cli.training.engine import Objective
from crossrec_cli.training.loop import NextItem, TrainConfig

ARGS = ("finetune", "domain=movies", "backbone=none", "model.item_ids=true", "model.dim=32", "model.max_history=20",
        "+data.overrides.filters.max_users=100", "trainer.epochs=2", "trainer.batch_size=32", "eval.topk=[10]",
        "eval.cache_vectors=false", "progress=false")
NO_DROPOUT = (*ARGS, "model.dropout=0")


def _env(tmp) -> dict:
    """This checkout's package, one thread per process, scratch files under ``tmp``."""
    (tmp / "scratch").mkdir(exist_ok=True)
    path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp / "scratch"),
            "CROSSREC_CACHE": os.environ.get("CROSSREC_TEST_CACHE", str(REPO / ".cache" / "test"))}


def _cmd(args, run_dir, procs: int) -> list[str]:
    launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"] if procs > 1 else []
    return [sys.executable, *launch, "-m", "crossrec_cli", *args, f"hydra.run.dir={run_dir}"]


def _run(args, run_dir, tmp, procs: int = 2) -> None:
    proc = subprocess.run(_cmd(args, run_dir, procs), cwd=REPO, env=_env(tmp), capture_output=True, text=True,
                          timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"{procs} processes exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def _files(run_dir) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())


def _close(a: float, b: float, rel: float) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b))


def _metrics_close(a: dict, b: dict, tol: float) -> bool:
    return a.keys() == b.keys() and all(abs(a[d][k] - b[d][k]) <= tol for d in a for k in a[d])


def _weights(run_dir, name="checkpoint/model.safetensors") -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / name))


def _without_key_bias(w: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The attention's key bias zeroed: softmax ignores it (its true gradient is 0)."""
    out = dict(w)
    for k, v in w.items():
        if k.endswith("self_attn.in_proj_bias"):
            out[k] = torch.cat([v[: len(v) // 3], torch.zeros(len(v) // 3), v[2 * len(v) // 3 :]])
    return out



@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """The 2-process run with the default dropout (the resume test's uninterrupted reference)."""
    tmp = tmp_path_factory.mktemp("ddp")
    _run(ARGS, tmp / "run", tmp)
    return tmp / "run"


def test_two_processes_take_the_one_process_steps_and_write_one_run(tmp_path):
    _run(NO_DROPOUT, tmp_path / "one", tmp_path, procs=1)
    _run(NO_DROPOUT, tmp_path / "two", tmp_path, procs=2)
    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert two["status"] == "complete" and len(two["history"]) == len(one["history"]) == 2
    for h1, h2 in zip(one["history"], two["history"]):
        assert _close(h1["loss"], h2["loss"], 1e-5), (h1["loss"], h2["loss"])
        assert abs(h1["valid_ndcg@10"] - h2["valid_ndcg@10"]) <= 1e-6
    assert _metrics_close(one["valid"], two["valid"], 1e-6)
    assert _metrics_close(one["test"], two["test"], 1e-6)
    w1, w2 = _without_key_bias(_weights(tmp_path / "one")), _without_key_bias(_weights(tmp_path / "two"))
    assert w1.keys() == w2.keys() and all(torch.allclose(w1[k], w2[k], atol=1e-5) for k in w1)
    # one run directory, written once: the same files as one process's (one metrics.json, one
    # .hydra/, one log, the same checkpoints), and no scratch folder of rank 1 left behind
    assert _files(tmp_path / "two") == _files(tmp_path / "one")
    assert not list((tmp_path / "scratch").glob("crossrec-rank*"))


def test_two_processes_with_dropout_agree_with_one_process_statistically(two_processes, tmp_path):
    one = run_inprocess(*ARGS, run_dir=tmp_path)
    two = read_metrics(two_processes)
    for h1, h2 in zip(one["history"], two["history"]):
        assert _close(h1["loss"], h2["loss"], 0.01), (h1["loss"], h2["loss"])
    assert _metrics_close(one["test"], two["test"], 0.05)


def test_sigterm_stops_both_processes_and_resume_restores_every_one(two_processes, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(_cmd(ARGS, run_dir, 2), cwd=REPO, env=_env(tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not list((run_dir / "checkpoints").glob("step-*")):  # the first epoch's end
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() - t0 < 240
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)  # torchrun passes it to both processes
    proc.communicate(timeout=120)
    assert read_metrics(run_dir)["status"] == "interrupted"
    state = json.loads(next((run_dir / "checkpoints").glob("step-*/state.json")).read_text())
    assert len(state["rank_rng"]) == 2  # each process's generators (its own dropout masks)
    _run((*ARGS, f"resume={run_dir}"), run_dir, tmp_path)
    got, ref = read_metrics(run_dir), read_metrics(two_processes)
    assert got["status"] == "complete"
    assert without_timing(got) == without_timing(ref)
    w, r = _weights(run_dir), _weights(two_processes)
    assert w.keys() == r.keys() and all(torch.equal(w[k], r[k]) for k in w)


def test_pretrain_two_processes_score_the_whole_batch(tmp_path):
    args = ("pretrain", "experiment=smoke", "adapter=lora", "adapter.dropout=0", "pretrain.objective=neighbors",
            "pretrain.epochs=2", "+backbone.config.hidden_dropout_prob=0",
            "+backbone.config.attention_probs_dropout_prob=0")
    _run(args, tmp_path / "one", tmp_path, procs=1)
    _run(args, tmp_path / "two", tmp_path, procs=2)
    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    for h1, h2 in zip(one["history"], two["history"], strict=True):
        assert _close(h1["loss"], h2["loss"], 1e-5), (h1["loss"], h2["loss"])
    name = "checkpoint/backbone/model.safetensors"
    w1, w2 = _weights(tmp_path / "one", name), _weights(tmp_path / "two", name)
    assert w1.keys() == w2.keys() and all(torch.allclose(w1[k], w2[k], atol=1e-5) for k in w1)


# ----- in one process: the arithmetic of the slices, and what refuses -----------------------------


def _tiny_objective(loss: str, batch_size: int) -> NextItem:
    torch.manual_seed(0)
    model = SeqRec(SeqRecConfig(dim=8, max_history=4, layers=1, heads=1, dropout=0.0, item_ids=True), None, False)
    model.add_catalogue("d", [f"item {i}" for i in range(30)])
    rng = np.random.default_rng(0)
    shapes = [(5, 4), (3, 2), (2, 1), (5, 1), (4, 3), (5, 4), (2, 1)]  # windows with 1 to 4 targets
    wins = {"d": [(rng.integers(0, 30, size=n), k) for n, k in shapes]}
    return NextItem(model, wins, TrainConfig(batch_size=batch_size, loss=loss, n_negatives=5), None, None, None, None)


def _grad(model) -> torch.Tensor:
    return torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel()) for p in model.parameters()])


@pytest.mark.parametrize("loss", ["full", "sampled", "sampled_logq"])
@pytest.mark.parametrize("size,world", [(7, 3), (7, 2), (2, 3)])  # (2, 3): one process gets no window
def test_slices_weighted_by_their_targets_add_up_to_the_batch_gradient(loss, size, world):
    obj = _tiny_objective(loss, size)
    batch = ("d", np.arange(size))
    torch.manual_seed(1)  # the sampled loss draws its negatives: every process draws the same
    whole, _ = obj.loss(batch, None)
    whole.backward()
    expect = _grad(obj.model)
    obj.model.zero_grad()
    total, seen = 0.0, []
    for rank in range(world):
        part = obj.shard(batch, rank, world)
        torch.manual_seed(1)
        value, _ = obj.loss(part, None)
        (value * part.share).backward()
        total += float(value.detach()) * part.share
        seen += list(part.batch[1]) if part.share else []
    assert sorted(seen) == list(range(size))  # disjoint slices that cover the batch
    assert abs(total - float(whole.detach())) < 1e-5
    assert torch.allclose(_grad(obj.model), expect, atol=1e-6)


def test_an_objective_without_slices_refuses_several_processes():
    with pytest.raises(CrossrecError, match="one process only"):
        Objective().shard(("d", np.arange(4)), 0, 2)


def test_commands_that_cannot_share_their_work_refuse_under_torchrun(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(SystemExit) as stop:
        run_inprocess("evaluate", "model=popularity", "domain=movies", run_dir=tmp_path)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: torchrun: crossrec evaluate runs in one process only; launch it without torchrun "
                   "(or with --nproc_per_node 1)"], err
    from crossrec_cli.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["finetune", "-m", "seed=0,1"])
    assert stop.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
