"""What an export is checked against: onnxruntime's scores beside PyTorch's on the test split's
users, and the int8 text encoder's top-10 lists and speed beside float32's."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from crossrec_cli.data import EvalSet
from crossrec_cli.evaluation.index import build_index
from crossrec_cli.models.seqrec import SeqRec, seqrec_scorer
from crossrec_cli.serving.engine import Engine
from crossrec_cli.serving.export import score_gap


def onnx_users(engine: Engine, domain: str, histories: list[np.ndarray], rows: np.ndarray | None = None,
               batch: int = 256) -> np.ndarray:
    """(n, W') user vectors of ``histories`` (item indices) from the export's user tower."""
    cat = engine.catalogs[domain]
    rows = cat.rows if rows is None else rows
    out = [engine.user_vectors(cat.user_tower, [rows[h] for h in histories[a:a + batch]])
           for a in range(0, len(histories), batch)]
    return np.concatenate(out) if out else np.zeros((0, cat.vectors.shape[1]), np.float32)


def parity(engine: Engine, model: SeqRec, tests: dict[str, tuple[str, EvalSet]],
           batch: int = 256) -> tuple[dict[str, Any], dict[str, tuple[np.ndarray, np.ndarray, float]]]:
    """Per domain (``tests``: domain -> (model key, the test split's examples)): the largest score
    difference between onnxruntime and PyTorch over every (test user, item) pair through the user
    tower and the exported items (``max_score_diff``: what a request ranks) and, for a text run, with
    every item re-encoded from its text through the ONNX encoder and head (``max_score_diff_encoded``:
    what an item added by its text would score). Also each text domain's re-encoded (rows, vectors,
    items/s), for ``int8_report``."""
    out: dict[str, Any] = {}
    encoded: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
    for name, (key, test) in tests.items():
        users, items = seqrec_scorer(model, key, batch)
        ref, items = users(test).detach().numpy(), items.detach()  # id-only items: the embedding itself
        cat = engine.catalogs[name]
        got = onnx_users(engine, name, test.histories, batch=batch)
        entry = {"users": len(test), "items": len(cat.ids), "max_score_diff": score_gap(got, ref, items.numpy()),
                 "max_abs_score": float(np.abs(ref.astype(np.float64) @ items.double().numpy().T).max()) if len(test) else 0.0}
        if cat.head is not None:
            texts = list(model.features["text"].texts[key])
            start = time.perf_counter()
            rows, vectors = engine.encode(cat.head, texts)
            encoded[name] = (rows, vectors, len(texts) / max(time.perf_counter() - start, 1e-9))
            enc = onnx_users(engine, name, test.histories, rows, batch)
            a = np.asarray(enc, np.float64) @ np.asarray(vectors, np.float64).T
            b = np.asarray(ref, np.float64) @ items.double().numpy().T
            entry["max_score_diff_encoded"] = float(np.abs(a - b).max()) if len(test) else 0.0
        out[name] = entry
    return out, encoded


def top10(engine: Engine, domain: str, rows: np.ndarray, vectors: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
    users = onnx_users(engine, domain, histories, rows)
    return build_index(torch.from_numpy(vectors), "exact").search(torch.from_numpy(users), 10, histories)[0]


def int8_report(f32: Engine, i8: Engine, encoded: dict[str, tuple[np.ndarray, np.ndarray, float]],
                texts: dict[str, list[str]], tests: dict[str, EvalSet]) -> dict[str, Any]:
    """Per domain: recall@10 of the int8 encoder's top-10 lists against float32's (the share of
    float32's ten items that int8 also ranks in its ten, the catalogue encoded by each, seen items
    excluded, mean over the test users) and items/s of each encoder over the domain's catalogue
    (``encoded``: float32's, from ``parity``)."""
    out: dict[str, Any] = {}
    for name, test in tests.items():
        start = time.perf_counter()
        rows8, vectors8 = i8.encode(i8.catalogs[name].head, texts[name])
        speed8 = len(texts[name]) / max(time.perf_counter() - start, 1e-9)
        rows, vectors, speed = encoded[name]
        a = top10(f32, name, rows, vectors, test.histories)
        b = top10(i8, name, rows8, vectors8, test.histories)
        hits = [len(set(x[x >= 0]) & set(y[y >= 0])) / max(1, int((x >= 0).sum())) for x, y in zip(a, b)]
        out[name] = {"recall@10_vs_float32": round(float(np.mean(hits)) if hits else 1.0, 4), "users": len(test),
                     "items_per_s": {"float32": round(speed, 1), "int8": round(speed8, 1)},
                     "speedup": round(speed8 / speed, 2)}
    return out
