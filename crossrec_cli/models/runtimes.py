"""``backbone.runtime``: what runs a frozen backbone over item texts.

- ``torch``: the backbone module itself (``encode.forward_pool``), as always;
- ``onnx``: the backbone and its pooling traced to ONNX (``serving.export.trace_encoder``) and run
  by onnxruntime's CPU provider;
- ``onnx_int8``: that graph with onnxruntime's dynamic int8 quantisation of its linear layers
  (``quantize_dynamic``: int8 weights per output channel, activations quantised per batch).

The graphs are made once per backbone and pooling and kept beside the item-vector cache
(``<cache>/encoders/``); the vectors each runtime computes are cached under a key that names the
runtime, so no runtime ever reads another's. A runtime other than torch only encodes: it is
refused (one line naming the key) where the backbone trains, on a GPU, for a decoder backbone and
in commands that encode no item texts (``check_config``).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from crossrec_cli.errors import CrossrecError, IOFault
from crossrec_cli.models.backbone import Backbone, short_hash
from crossrec_cli.registry import Registry

log = logging.getLogger("crossrec")
KEY = "backbone.runtime"
OPSET = 18
# the commands whose item vectors come from a frozen backbone's encoding (export and serve read
# the run's own backbone and refuse any other backbone key)
READ_BY = ("finetune", "transfer", "evaluate", "recommend", "explain")
Encoder = Callable[[list[str]], torch.Tensor]  # a batch of texts -> (B, hidden) float32 on the CPU


@dataclass(frozen=True)
class Runtime:
    """``quantize``: None (the traced float32 graph) or "int8"; ``graph`` False: the torch module."""

    graph: bool
    quantize: str | None = None

    def encoder(self, backbone: Backbone, max_length: int, pooling: str) -> Encoder:
        from crossrec_cli.models.encode import forward_pool

        if not self.graph:
            return lambda texts: forward_pool(backbone, texts, max_length, pooling).float().cpu()
        session = _session(backbone, pooling, self.quantize)

        def run(texts: list[str]) -> torch.Tensor:
            from crossrec_cli.models.encode import tokenize

            tok = tokenize(backbone, texts, max_length)
            feed = {"input_ids": tok["input_ids"].numpy(), "attention_mask": tok["attention_mask"].numpy()}
            return torch.from_numpy(session.run(None, feed)[0])

        return run


RUNTIMES: Registry[Runtime] = Registry("encoder runtime", KEY)
RUNTIMES.add("torch", Runtime(graph=False))
RUNTIMES.add("onnx", Runtime(graph=True))
RUNTIMES.add("onnx_int8", Runtime(graph=True, quantize="int8"))


def encoder(backbone: Backbone, max_length: int, pooling: str) -> Encoder:
    """The batch encoder of ``backbone.runtime`` (refused where it cannot apply: ``check``)."""
    check(backbone.runtime, backbone.kind)
    return RUNTIMES.get(backbone.runtime).encoder(backbone, max_length, pooling)


def cache_tag(runtime: str) -> str:
    """What the item-vector cache key adds for ``runtime`` (nothing for torch: its entries stay valid)."""
    return "" if runtime == "torch" else f"|runtime={runtime}"


def check(runtime: str, kind: str = "encoder", trains: bool = False, device: str = "cpu") -> None:
    """Refuse ``backbone.runtime=<runtime>`` where it cannot apply (one line naming the key)."""
    RUNTIMES.get(runtime)
    if runtime == "torch":
        return
    if kind != "encoder":
        raise CrossrecError(KEY, f"{runtime} runs an encoder backbone, and backbone.kind is {kind}",
                            "use backbone.runtime=torch")
    if trains:
        raise CrossrecError(KEY, f"{runtime} encodes item texts with a frozen backbone, and the adapter trains it",
                            "use adapter=frozen, or backbone.runtime=torch")
    if device != "cpu":
        raise CrossrecError(KEY, f"{runtime} runs on the CPU (onnxruntime's CPU provider), and device is {device}",
                            "use device=cpu, or backbone.runtime=torch on a GPU")


def check_config(cfg: dict[str, Any], command: str | None) -> None:
    """``check`` on a resolved command config, before anything loads; also refuses the commands and
    tasks that encode no item texts with a frozen backbone."""
    backbone = cfg.get("backbone") or {}
    runtime = backbone.get("runtime", "torch")
    if runtime == "torch":
        return
    if command is not None and command not in READ_BY:
        raise CrossrecError(KEY, f"crossrec {command.replace('_', ' ')} encodes no item vectors with a frozen backbone",
                            f"drop it (read by {', '.join(READ_BY)})")
    task = (cfg.get("task") or {}).get("name", "recommendation")
    if task != "recommendation":
        raise CrossrecError(KEY, f"{runtime} encodes the item vectors of task=recommendation, not task={task}",
                            "drop it")
    from crossrec_cli.adapters import ADAPTERS
    from crossrec_cli.models.backbone import resolve_device

    adapter = (cfg.get("adapter") or {}).get("name", "frozen")
    trains = isinstance(adapter, str) and ADAPTERS.get(adapter).trains_backbone(adapter)
    check(runtime, str(backbone.get("kind", "encoder")), trains, resolve_device(str(cfg.get("device", "auto"))).type)


_SESSIONS: dict[tuple[str, int], Any] = {}


def graph_path(backbone: Backbone, pooling: str, quantize: str | None, folder: Path | None = None) -> Path:
    """Where the traced graph of ``backbone`` with ``pooling`` is kept (``.int8.onnx``: quantised):
    ``<cache>/encoders/`` unless ``folder`` is given."""
    from crossrec_cli.models.encode import cache_dir

    stem = short_hash(f"{backbone.identity}|{pooling}|opset={OPSET}|torch={torch.__version__}")
    return (folder or cache_dir() / "encoders") / (f"{stem}.int8.onnx" if quantize else f"{stem}.onnx")


def _session(backbone: Backbone, pooling: str, quantize: str | None) -> Any:
    """An onnxruntime session over the graph (made when missing; remade when it cannot be read),
    with the process's torch thread count."""
    from crossrec_cli.serving.engine import _session as open_session

    path = graph_path(backbone, pooling, quantize)
    key = (str(path), torch.get_num_threads())
    if key in _SESSIONS:
        return _SESSIONS[key]
    if path.is_file():
        try:
            _SESSIONS[key] = open_session(path, key[1])
            return _SESSIONS[key]
        except Exception as exc:  # a damaged or foreign file: made again
            log.warning("%s is not a usable graph (%s); making it again", path, str(exc).splitlines()[0][:200])
    try:
        _make(backbone, pooling, quantize, path.parent)
    except (IOFault, OSError) as exc:  # the cache only saves time: the graph goes to a scratch folder
        log.warning("%s; the item encoder's graph goes to a temporary folder", str(exc).removeprefix("error: "))
        path = _make(backbone, pooling, quantize, Path(tempfile.mkdtemp(prefix="crossrec-encoder-")))
    _SESSIONS[key] = open_session(path, key[1])
    return _SESSIONS[key]


def _make(backbone: Backbone, pooling: str, quantize: str | None, folder: Path) -> Path:
    """Trace (and quantise) the graph into ``folder``; its path."""
    from crossrec_cli.io import atomic_write
    from crossrec_cli.serving.export import quiet, trace_encoder

    plain, path = graph_path(backbone, pooling, None, folder), graph_path(backbone, pooling, quantize, folder)
    if quantize is None or not plain.is_file():
        log.info("%s: tracing the backbone to %s", KEY, plain)
        trace_encoder(backbone, pooling, 16, plain, OPSET)
    if quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        log.info("%s: int8 quantisation of %s", KEY, plain.name)
        # the linear layers only (MatMul with a constant weight), each output channel with its own scale
        with quiet():
            atomic_write(path, lambda tmp: quantize_dynamic(str(plain), tmp, weight_type=QuantType.QInt8,
                                                            per_channel=True, op_types_to_quantize=["MatMul"]),
                         "the int8 item encoder")
    return path
