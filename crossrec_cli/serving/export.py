"""Write a trained ``SeqRec`` as an export folder that onnxruntime serves without PyTorch's model code.

An export folder holds:

- ``items.<domain>.safetensors``: ``rows`` (N, W), what the user tower reads of each item, and
  ``vectors`` (N, W'), what a user vector is multiplied with (``SeqRec.scoring_vectors``);
  metadata ``ids``, ``texts`` and ``sha256`` (of each text the item tower read), as JSON lists.
- ``user_tower*.onnx`` (``graphs.UserGraph``): dynamic batch and history length; one per way a
  domain's users are read (a trained domain, a zero-shot one through a domain-general readout).
- for an item tower that reads text alone (inductive): ``encoder.onnx`` (``graphs.TextEncoder``),
  ``tokenizer/`` and ``head.<domain>.onnx`` (``graphs.ItemHead``), so a new text becomes an item
  without retraining; ``head.new-domain.onnx`` reads a domain created at serve time zero-shot.
- ``manifest.json``: what the server needs (``engine.Engine`` reads it) and what the export was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crossrec_cli.errors import CrossrecError
from crossrec_cli.io import atomic_write, atomic_write_json
from crossrec_cli.models.backbone import Backbone
from crossrec_cli.models.seqrec import SeqRec
from crossrec_cli.serving.graphs import ItemHead, TextEncoder, UserGraph

FORMAT = "crossrec-onnx/1"
NEW_DOMAIN = "new-domain"  # the file stem of the head and user tower of domains created at serve time


@dataclass
class DomainExport:
    """One domain of an export: its name, the model's catalogue key, ``mode`` (the model's mode, or
    zero-shot), item ids and texts as ``crossrec recommend`` shows them, and its fingerprint."""

    name: str
    key: str
    mode: str
    ids: list[str]
    texts: list[str]
    fingerprint: dict[str, Any]


def encodes_text(model: SeqRec) -> str | None:
    """None when a new item can be made from its text alone (the item tower's only feature is text,
    read through one backbone for every domain); else why not."""
    names = list(model.features)
    if names != ["text"]:
        return f"the item tower reads {', '.join(names)}, not text alone: a new item needs " + (
            "retraining (item-id embeddings, transductive)" if model.transductive else "features a text does not give")
    if model.switch_adapter is not None:
        return "the run routes each domain through its own adapter; one text encoder cannot serve them all"
    return None


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def write_items(path: Path, rows: torch.Tensor, vectors: torch.Tensor, ids: list[str], texts: list[str],
                read: list[str]) -> None:
    """``items.<domain>.safetensors``: rows (N, W), vectors (N, W') and their ids / texts / sha256."""
    from safetensors.torch import save_file

    meta = {"ids": json.dumps(ids), "texts": json.dumps(texts, ensure_ascii=False), "sha256": json.dumps([_sha(t) for t in read])}
    # cloned: with model.score=dot the vectors are the rows themselves, and safetensors stores no shared memory
    tensors = {"rows": rows.float().cpu().clone(), "vectors": vectors.float().cpu().clone()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta), "an exported item matrix")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The exporters' and the quantiser's INFO lines (one per graph pass) and advice stay out of the run's log."""
    root = logging.getLogger()
    noisy = [root, logging.getLogger("onnx_ir"), logging.getLogger("onnxscript")]
    levels = [n.level for n in noisy]
    for n in noisy:
        n.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for n, level in zip(noisy, levels):
            n.setLevel(level)


def _onnx(module: torch.nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
          axes: dict[str, dict[int, str]], opset: int, dynamo: bool) -> None:
    """Trace ``module`` to ``path``. The user tower goes through torch.export (``dynamo``: its mask
    is built in place, which the TorchScript exporter cannot write); the heads and the language model
    through the TorchScript tracer, whose dynamic axes hold for every transformers model."""
    try:
        _trace(module, args, path, inputs, outputs, axes, opset, dynamo)
    except CrossrecError:
        raise
    except Exception as exc:  # an operator or a model the exporter cannot write: one line, not its traceback
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise CrossrecError(path.name, f"torch.onnx could not export {type(module).__name__}: {first[:300]}",
                            "a different opset= may help; else report it with the run's config.yaml") from exc


def _trace(module: torch.nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
           axes: dict[str, dict[int, str]], opset: int, dynamo: bool) -> None:
    with torch.no_grad(), warnings.catch_warnings(), quiet():
        warnings.simplefilter("ignore")
        if dynamo:
            dims = {name: {i: torch.export.Dim(n, max=1 << 16) for i, n in ax.items()} for name, ax in axes.items()
                    if name in inputs}
            prog = torch.onnx.export(module, args, dynamic_shapes=dims, input_names=inputs, output_names=outputs,
                                     opset_version=opset, dynamo=True, external_data=False, verbose=False)
            atomic_write(path, lambda tmp: prog.save(tmp), "an exported ONNX graph")
        else:
            atomic_write(path, lambda tmp: torch.onnx.export(
                module, args, tmp, input_names=inputs, output_names=outputs, dynamic_axes=axes, opset_version=opset,
                dynamo=False), "an exported ONNX graph")


def export_user_tower(model: SeqRec, general: bool, width: int, path: Path, opset: int) -> dict[str, Any]:
    """``UserGraph`` to ``path``: rows (B, L, W) float32, valid (B, L) bool -> users (B, W')."""
    rows = torch.randn(2, 5, width)
    valid = torch.ones(2, 5, dtype=torch.bool)
    valid[0, :2] = False
    _onnx(UserGraph(model, general, width).eval(), (rows, valid), path, ["rows", "valid"], ["users"],
          {"rows": {0: "batch", 1: "history"}, "valid": {0: "batch", 1: "history"}}, opset, dynamo=True)
    return {"file": path.name, "general": general, "width": width}


def export_head(model: SeqRec, key: str, path: Path, opset: int) -> str:
    """``ItemHead`` of catalogue ``key`` to ``path``: lm (n, hidden) -> rows (n, W), vectors (n, W')."""
    lm = model.encoded[key][:3] if key in model.encoded else torch.randn(3, model.backbone.hidden_size)
    _onnx(ItemHead(model, key).eval(), (lm.float(),), path, ["lm"], ["rows", "vectors"],
          {"lm": {0: "n"}, "rows": {0: "n"}, "vectors": {0: "n"}}, opset, dynamo=False)
    return path.name


def trace_encoder(backbone: Backbone, pooling: str, max_length: int, path: Path, opset: int) -> None:
    """``graphs.TextEncoder`` of ``backbone`` to ``path``: input_ids, attention_mask (B, T) int64 -> lm (B, hidden)."""
    tok = backbone.tokenizer(["a short text", "a text a little longer than that"], padding=True, truncation=True,
                             max_length=max_length, return_tensors="pt")
    was = backbone.model.training
    backbone.model.eval()
    _onnx(TextEncoder(backbone, pooling).eval(), (tok["input_ids"], tok["attention_mask"]), path,
          ["input_ids", "attention_mask"], ["lm"], {"input_ids": {0: "batch", 1: "tokens"},
                                                      "attention_mask": {0: "batch", 1: "tokens"}, "lm": {0: "batch"}},
          opset, dynamo=False)
    backbone.model.train(was)


def export_encoder(model: SeqRec, out: Path, opset: int) -> dict[str, Any]:
    """``encoder.onnx`` (input_ids, attention_mask (B, T) int64 -> lm (B, hidden)) and ``tokenizer/``."""
    backbone, cfg = model.backbone, model.cfg
    backbone.tokenizer.save_pretrained(str(out / "tokenizer"))
    trace_encoder(backbone, cfg.pooling, cfg.max_length, out / "encoder.onnx", opset)
    return {"file": "encoder.onnx", "tokenizer": "tokenizer", "max_length": int(cfg.max_length), "pooling": cfg.pooling,
            "batch": int(cfg.encode_batch), "hidden": int(backbone.hidden_size), "backbone": backbone.identity}


def quantize_encoder(out: Path) -> str:
    """``encoder.int8.onnx``: onnxruntime's dynamic int8 quantisation of ``encoder.onnx``'s weights."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet():
        atomic_write(out / "encoder.int8.onnx", lambda tmp: quantize_dynamic(
            str(out / "encoder.onnx"), tmp, weight_type=QuantType.QInt8), "the int8 text encoder")
    return "encoder.int8.onnx"


@torch.no_grad()
def export_model(model: SeqRec, domains: list[DomainExport], out: Path, opset: int, quantize: str | None,
                 new_domain: str | None, about: dict[str, Any]) -> dict[str, Any]:
    """Write ``model`` for ``domains`` into ``out`` (see the module docstring) and return the manifest.
    ``new_domain``: the catalogue key prepared for domains created at serve time (None: none can
    be). ``about``: what the manifest records of the run (path, fingerprints, settings)."""
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    why_not = encodes_text(model)
    if quantize is not None and why_not is not None:
        raise CrossrecError("quantize", f"{quantize} quantises the text encoder, and this run exports none: {why_not}",
                            "drop quantize=")
    towers: dict[tuple[bool, int], dict[str, Any]] = {}
    manifest_domains = {}
    for d in domains:
        rows = model.item_matrix(d.key)
        vectors = model.scoring_vectors(rows[:1], rows)[1]
        write_items(out / f"items.{d.name}.safetensors", rows, vectors, d.ids, d.texts,
                    list(model.features["text"].texts[d.key]) if model.reads_text else d.texts)
        general = d.key in model.general_users
        tower = towers.get((general, rows.shape[1]))
        if tower is None:
            name = "user_tower" + (".general" if general else "") + ("" if not towers else f".{len(towers)}") + ".onnx"
            tower = towers[(general, rows.shape[1])] = export_user_tower(model, general, rows.shape[1], out / name, opset)
        head = export_head(model, d.key, out / f"head.{d.name}.onnx", opset) if why_not is None else None
        manifest_domains[d.name] = {"items": f"items.{d.name}.safetensors", "user_tower": tower["file"], "head": head,
                                    "mode": d.mode, "n_items": len(d.ids), "fingerprint": d.fingerprint,
                                    "text_prior": model.prior_weights.get(d.key, model.cfg.text_prior)}
    encoder = export_encoder(model, out, opset) if why_not is None else None
    created = None
    if encoder is not None and new_domain is not None:
        width = model.item_matrix(new_domain).shape[1]
        general = new_domain in model.general_users
        tower = towers.get((general, width)) or export_user_tower(model, general, width, out / "user_tower.new-domain.onnx",
                                                                  opset)
        created = {"head": export_head(model, new_domain, out / f"head.{NEW_DOMAIN}.onnx", opset),
                   "user_tower": tower["file"], "mode": "zero-shot",
                   "text_prior": model.prior_weights.get(new_domain, model.cfg.text_prior)}
    if encoder is not None and quantize == "int8":
        encoder["int8"] = quantize_encoder(out)
    manifest = {"format": FORMAT, **about, "opset": opset, "score": model.score, "temperature": model.cfg.temperature,
                "dim": model.cfg.dim, "max_history": model.cfg.max_history,
                "inputs": {"user_tower": ["rows", "valid"], "head": ["lm"], "encoder": ["input_ids", "attention_mask"]},
                "outputs": {"user_tower": ["users"], "head": ["rows", "vectors"], "encoder": ["lm"]},
                "domains": manifest_domains, "encoder": encoder, "new_domains": created,
                "new_items": None if why_not is None else why_not}
    atomic_write_json(out / "manifest.json", manifest, "the export's manifest")
    return manifest


def read_manifest(folder: Path) -> dict[str, Any]:
    """``folder/manifest.json`` of an export (a one-line error when it is not one)."""
    path = folder / "manifest.json"
    if not path.is_file():
        raise CrossrecError(str(folder), "not a crossrec export (no manifest.json)",
                            "pass run=<a training run, an export run or its export/ folder>")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise CrossrecError(str(path), f"format {manifest.get('format')!r}, expected {FORMAT!r}",
                            "export the run again with this crossrec")
    return manifest


def score_gap(onnx: np.ndarray, torch_users: np.ndarray, items: np.ndarray) -> float:
    """Largest |score| difference between two sets of user vectors over every item (float64)."""
    a, b, i = (np.asarray(x, dtype=np.float64) for x in (onnx, torch_users, items))
    return float(np.abs(a @ i.T - b @ i.T).max()) if len(a) else 0.0
