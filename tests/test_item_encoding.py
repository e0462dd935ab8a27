"""Item encoding: ``backbone.runtime`` (torch | onnx | onnx_int8, models/runtimes.py), its refusals,
and the encoding shared by several processes (``encode.across_processes``).

Tolerances, on the tiny random backbone of the tests (measured: onnx cosine to torch >= 0.9999998,
largest difference 4e-7; onnx_int8 cosine >= 0.999999, largest difference 2e-3): onnx cosine
> 0.999, onnx_int8 cosine > 0.99. Several processes: the same bits as one process.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import REPO

from crossrec_cli.errors import CrossrecError
from crossrec_cli.models.backbone import build_backbone
from crossrec_cli.models.encode import across_processes, cached_text_vectors, encode_texts, forward_pool
from crossrec_cli.models.runtimes import RUNTIMES, check, check_config

TINY = yaml.safe_load((REPO / "crossrec_cli" / "conf" / "backbone" / "tiny.yaml").read_text())["config"]
TEXTS = [f"item {i}: " + " ".join(["word"] * (i % 17)) + f" tail {i * 7}" for i in range(300)]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSREC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _tiny(runtime: str = "torch"):
    return build_backbone("tiny", config=TINY, runtime=runtime)


def test_the_default_runtime_is_torch_and_computes_what_it_always_did(cache):
    backbone = _tiny()
    assert backbone.runtime == "torch" and build_backbone("tiny", config=TINY).runtime == "torch"
    for name in ("minilm", "tiny", "smollm2", "none"):
        assert yaml.safe_load((REPO / "crossrec_cli" / "conf" / "backbone" / f"{name}.yaml").read_text())["runtime"] == "torch"
    # the loop encode_texts ran before runtimes: batches of the length-sorted texts through forward_pool
    order = sorted(range(len(TEXTS)), key=lambda i: len(TEXTS[i]))
    backbone.model.eval()
    with torch.no_grad():
        parts = [forward_pool(backbone, [TEXTS[i] for i in order[a:a + 64]], 48, "mean").float() for a in range(0, 300, 64)]
    before = torch.empty(300, backbone.hidden_size)
    before[torch.tensor(order)] = torch.cat(parts)
    vecs = cached_text_vectors(backbone, TEXTS, 48, "mean", batch_size=64)
    assert torch.equal(vecs, before)
    # the cache key is the one it always was: entries written before runtimes stay valid
    h = hashlib.sha256(f"{backbone.identity}|mean|48".encode())
    for t in TEXTS:
        h.update(t.encode() + b"\x1e")
    assert [p.name for p in (cache / "vectors").iterdir()] == [f"{h.hexdigest()}.safetensors"]
    assert not (cache / "encoders").exists()


def test_onnx_runtimes_agree_with_torch_and_keep_their_own_cache(cache):
    ref = encode_texts(_tiny(), TEXTS, 48)
    got = {}
    for runtime, floor in (("onnx", 0.999), ("onnx_int8", 0.99)):
        got[runtime] = cached_text_vectors(_tiny(runtime), TEXTS, 48, "mean")
        assert got[runtime].dtype == torch.float32 and got[runtime].shape == ref.shape
        assert F.cosine_similarity(got[runtime], ref).min() > floor, runtime
        assert torch.equal(cached_text_vectors(_tiny(runtime), TEXTS, 48, "mean"), got[runtime])  # read back
    assert not torch.equal(got["onnx"], got["onnx_int8"])
    assert len(list((cache / "vectors").iterdir())) == 2  # one entry per runtime, never shared
    graphs = sorted(p.name for p in (cache / "encoders").iterdir())
    assert len(graphs) == 2 and graphs[0].endswith(".int8.onnx") and graphs[1].endswith(".onnx")


def test_a_damaged_graph_is_made_again(cache):
    from crossrec_cli.models import runtimes

    backbone = _tiny("onnx")
    first = encode_texts(backbone, TEXTS[:20], 48)
    path = runtimes.graph_path(backbone, "mean", None)
    path.write_bytes(b"not a graph")
    runtimes._SESSIONS.clear()
    assert torch.allclose(encode_texts(backbone, TEXTS[:20], 48), first, atol=1e-6)
    assert path.stat().st_size > 1000


def test_runtimes_are_refused_where_they_cannot_apply():
    assert RUNTIMES.names() == ["torch", "onnx", "onnx_int8"]
    check("torch", kind="decoder", trains=True, device="cuda")  # torch runs anywhere
    cases = [
        ({"kind": "decoder"}, "runs an encoder backbone, and backbone.kind is decoder"),
        ({"kind": "none"}, "backbone.kind is none"),
        ({"trains": True}, "the adapter trains it"),
        ({"device": "cuda"}, "device is cuda"),
    ]
    for kwargs, says in cases:
        with pytest.raises(CrossrecError, match=says) as err:
            check("onnx_int8", **kwargs)
        assert err.value.where == "backbone.runtime" and "\n" not in str(err.value)
    with pytest.raises(CrossrecError, match="unknown encoder runtime 'tensorrt'"):
        check("tensorrt")
    base = {"backbone": {"kind": "encoder", "runtime": "onnx"}, "adapter": {"name": "frozen"}, "device": "cpu",
            "task": {"name": "recommendation"}}
    check_config(base, "finetune")
    for change, command, says in [
        ({"adapter": {"name": "lora"}}, "finetune", "the adapter trains it"),
        ({"task": {"name": "classification"}}, "finetune", "not task=classification"),
        ({}, "pretrain", "crossrec pretrain encodes no item vectors"),
        ({}, "data_stats", "crossrec data stats encodes no item vectors"),
    ]:
        with pytest.raises(CrossrecError, match=says):
            check_config({**base, **change}, command)


def test_the_command_line_refuses_in_one_line(tmp_path):
    from crossrec_cli.cli import compose
    from crossrec_cli.config_check import check_common
    from omegaconf import OmegaConf

    def refusal(command, *overrides):
        plain = OmegaConf.to_container(compose(command, list(overrides)), resolve=True)
        with pytest.raises(CrossrecError) as err:
            check_common(plain, command)
        return err.value.one_line()

    assert refusal("finetune", "backbone.runtime=fast").startswith(
        "error: backbone.runtime: expected torch, onnx or onnx_int8, got 'fast'")
    assert refusal("finetune", "backbone.runtime=onnx", "adapter=lora").startswith(
        "error: backbone.runtime: onnx encodes item texts with a frozen backbone, and the adapter trains it")
    assert "backbone.kind is none" in refusal("finetune", "backbone=none", "backbone.runtime=onnx", "model.item_ids=true")
    assert "crossrec pretrain" in refusal("pretrain", "backbone.runtime=onnx", "adapter=frozen")


def test_evaluate_honours_the_runtime(tmp_path, monkeypatch):
    from conftest import run_inprocess

    monkeypatch.setenv("CROSSREC_CACHE", str(tmp_path / "cache"))
    args = ("model=text_zeroshot", "backbone=tiny", "domain=movies", "+data.overrides.filters.max_users=60",
            "eval.topk=[10]", "device=cpu")
    plain = run_inprocess("evaluate", *args, run_dir=tmp_path / "torch")
    onnx = run_inprocess("evaluate", *args, "backbone.runtime=onnx", run_dir=tmp_path / "onnx")
    assert abs(plain["test"]["movies"]["recall@10"] - onnx["test"]["movies"]["recall@10"]) <= 1 / 60
    assert len(list((tmp_path / "cache" / "vectors").iterdir())) == 2
    assert len(list((tmp_path / "cache" / "encoders").iterdir())) == 1


# -- several processes --------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shard_worker(rank: int, world: int, port: int, cache: str, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), CROSSREC_CACHE=cache)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from crossrec_cli.models import runtimes

    encoded = []  # the rows this process encodes
    real = runtimes.encoder
    runtimes.encoder = lambda *a: (lambda f: lambda texts: (encoded.append(len(texts)), f(texts))[1])(real(*a))
    try:
        backbone = _tiny()
        with across_processes():
            first = cached_text_vectors(backbone, TEXTS, 48, "mean", batch_size=48)  # encoded, rank 0 writes
            shared = sum(encoded)
            again = cached_text_vectors(backbone, TEXTS, 48, "mean", batch_size=48)  # rank 0 reads, sends
        torch.save({"first": first, "again": again, "encoded": [shared, sum(encoded)]}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_write_the_one_process_cache_bit_for_bit(tmp_path, monkeypatch):
    import torch.multiprocessing as mp

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        monkeypatch.setenv("CROSSREC_CACHE", str(tmp_path / "one"))
        one = cached_text_vectors(_tiny(), TEXTS, 48, "mean", batch_size=48)  # 7 batches: 4 + 3, the last partial
    finally:
        torch.set_num_threads(threads)
    mp.spawn(_shard_worker, args=(2, _free_port(), str(tmp_path / "two"), str(tmp_path)), nprocs=2, join=True)
    [entry] = list((tmp_path / "one" / "vectors").iterdir())
    assert [p.name for p in (tmp_path / "two" / "vectors").iterdir()] == [entry.name]
    assert (tmp_path / "two" / "vectors" / entry.name).read_bytes() == entry.read_bytes()
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert torch.equal(got["first"], one) and torch.equal(got["again"], one)
        assert got["encoded"] == [[4 * 48, 4 * 48], [300 - 4 * 48, 300 - 4 * 48]][rank]  # its share, then nothing


@pytest.mark.slow  # about a minute: two runs of the command, one under torchrun
def test_torchrun_finetune_encodes_each_catalogue_once_across_processes(tmp_path):
    """``crossrec finetune`` under torchrun (2 gloo processes, frozen tiny backbone): the vector cache
    it writes is the one-process run's, byte for byte."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    args = ["finetune", "experiment=smoke", "eval.cache_vectors=true", "device=cpu"]
    for procs in (1, 2):
        launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"] if procs > 1 else []
        proc = subprocess.run([sys.executable, *launch, "-m", "crossrec_cli", *args, f"hydra.run.dir={tmp_path / f'run{procs}'}"],
                              cwd=REPO, env={**env, "CROSSREC_CACHE": str(tmp_path / f"cache{procs}")},
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    one = {p.name: p.read_bytes() for p in (tmp_path / "cache1" / "vectors").iterdir()}
    two = {p.name: p.read_bytes() for p in (tmp_path / "cache2" / "vectors").iterdir()}
    assert one and one == two
