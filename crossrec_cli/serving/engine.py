"""The recommender an export folder describes, on onnxruntime and numpy: what ``crossrec serve`` runs.

``Engine.recommend`` reads a history of item ids and new texts, runs the user tower and ranks the
domain's catalogue with the same top-k search as ``crossrec recommend`` (``evaluation.index``);
``Engine.add_items`` encodes texts into a catalogue (a new domain when none has that name) and
the next request ranks them. A catalogue is an immutable snapshot swapped whole under a lock, so
a request in flight never sees half an update.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crossrec_cli.evaluation.index import TopK, build_index
from crossrec_cli.serving.export import read_manifest


class RequestError(Exception):
    """A request the engine cannot answer: ``field`` names what is wrong, ``status`` the HTTP code."""

    def __init__(self, field: str, problem: str, status: int = 422):
        super().__init__(f"{field}: {problem}")
        self.field, self.problem, self.status = field, problem, status


@dataclass(frozen=True)
class Catalog:
    """One domain's items as served: ids, texts, rows (N, W) for the user tower, vectors (N, W') to
    rank, the top-k index over them, and the graphs that read the domain."""

    ids: list[str]
    where: dict[str, int]
    texts: list[str]
    rows: np.ndarray
    vectors: np.ndarray
    index: TopK
    mode: str
    user_tower: str
    head: str | None


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def read_items(path: Path) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """(ids, texts, rows, vectors) of an ``items.<domain>.safetensors``."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as fh:
        meta = fh.metadata() or {}
        rows, vectors = fh.get_tensor("rows"), fh.get_tensor("vectors")
    return json.loads(meta["ids"]), json.loads(meta["texts"]), rows, vectors


class Engine:
    """An export folder, served. ``index``: builds the top-k search over a domain's vectors (default
    exact); ``encoder``: float32 or int8 (``quantize=int8`` at export); ``threads``: onnxruntime's."""

    def __init__(self, folder: Path, domains: list[str] | None = None, threads: int = 1,
                 index: Callable[[torch.Tensor], TopK] | None = None, encoder: str = "float32"):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        self.threads = threads
        self.make_index = index or (lambda vecs: build_index(vecs, "exact"))
        self.sessions: dict[str, Any] = {}
        self.lock = threading.Lock()
        self.max_history = int(self.manifest["max_history"])
        enc = self.manifest.get("encoder")
        self.encoder = None
        if enc is not None:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder / enc["tokenizer"]))
            self.encoder = self.session(enc["file"] if encoder == "float32" else enc["int8"])
        chosen = list(self.manifest["domains"]) if domains is None else domains
        self.catalogs: dict[str, Catalog] = {n: self._load(n) for n in chosen}

    def session(self, name: str) -> Any:
        if name not in self.sessions:
            self.sessions[name] = _session(self.folder / name, self.threads)
        return self.sessions[name]

    def _load(self, name: str) -> Catalog:
        d = self.manifest["domains"][name]
        ids, texts, rows, vectors = read_items(self.folder / d["items"])
        self.session(d["user_tower"])
        if d["head"] and self.encoder is not None:
            self.session(d["head"])
        return Catalog(ids, {x: i for i, x in enumerate(ids)}, texts, rows, vectors,
                       self.index_of(vectors), d["mode"], d["user_tower"],
                       d["head"] if self.encoder is not None else None)

    def index_of(self, vectors: np.ndarray) -> TopK:
        """The top-k search over ``vectors``, given in float64: the exact search scores in float64 and
        would otherwise convert the whole matrix on every request."""
        return self.make_index(torch.from_numpy(np.asarray(vectors, dtype=np.float64)))

    # -- computing ----------------------------------------------------------------------------------
    def lm_vectors(self, texts: list[str]) -> np.ndarray:
        """(n, hidden) pooled LM vectors of ``texts`` from the ONNX encoder, in batches."""
        enc = self.manifest["encoder"]
        out = []
        for a in range(0, len(texts), enc["batch"]):
            tok = self.tokenizer(texts[a:a + enc["batch"]], padding=True, truncation=True, max_length=enc["max_length"],
                                 return_tensors="np")
            feed = {"input_ids": tok["input_ids"].astype(np.int64), "attention_mask": tok["attention_mask"].astype(np.int64)}
            out.append(self.encoder.run(None, feed)[0])
        return np.concatenate(out) if out else np.zeros((0, enc["hidden"]), np.float32)

    def encode(self, head: str, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(rows (n, W), vectors (n, W')) of ``texts`` as items of the domain read by ``head``."""
        rows, vectors = self.session(head).run(None, {"lm": self.lm_vectors(texts)})
        return rows, vectors

    def user_vectors(self, user_tower: str, histories: list[np.ndarray]) -> np.ndarray:
        """(B, W') user vectors of histories given as item rows (L_i, W), oldest first; the newest
        ``max_history`` rows are read, left-padded to the longest."""
        histories = [h[-self.max_history:] for h in histories]
        n = max(len(h) for h in histories)
        width = histories[0].shape[1]
        rows = np.zeros((len(histories), n, width), np.float32)
        valid = np.zeros((len(histories), n), bool)
        for b, h in enumerate(histories):
            rows[b, n - len(h):] = h
            valid[b, n - len(h):] = True
        return self.session(user_tower).run(None, {"rows": rows, "valid": valid})[0]

    # -- requests -----------------------------------------------------------------------------------
    def catalog(self, domain: str, field: str = "domain") -> Catalog:
        cat = self.catalogs.get(domain)
        if cat is None:
            raise RequestError(field, f"unknown domain {domain!r}; served: {', '.join(sorted(self.catalogs))}", 404)
        return cat

    def recommend(self, domain: str, history: list[str | dict], k: int, exclude_seen: bool) -> dict[str, Any]:
        """The top ``k`` items of ``domain`` for ``history`` (item ids and {"text": ...} entries)."""
        cat = self.catalog(domain)
        seen, texts, slots = [], [], []
        for n, entry in enumerate(history):
            if isinstance(entry, dict):
                texts.append(entry["text"])
                slots.append(None)
            else:
                if entry not in cat.where:
                    raise RequestError(f"history[{n}]", f"unknown item {entry!r} in domain {domain!r}", 404)
                seen.append(cat.where[entry])
                slots.append(cat.where[entry])
        new = None
        if texts:
            if cat.head is None:
                raise RequestError("history", f"a {{\"text\": ...}} entry needs a run that encodes text: "
                                   f"{self.manifest.get('new_items') or 'this export has no text encoder'}", 409)
            new = iter(self.encode(cat.head, texts)[0])
        rows = np.stack([cat.rows[s] if s is not None else next(new) for s in slots])
        user = self.user_vectors(cat.user_tower, [rows])
        exclude = [np.unique(np.asarray(seen, dtype=np.int64))] if exclude_seen else None
        idx, scores = cat.index.search(torch.from_numpy(user), k, exclude)
        items = [{"item": cat.ids[i], "score": float(s), "text": cat.texts[i]} for i, s in zip(idx[0], scores[0]) if i >= 0]
        return {"domain": domain, "mode": cat.mode, "items": items}

    def add_items(self, domain: str, items: list[tuple[str, str]]) -> dict[str, Any]:
        """Encode ``items`` ((id, text), ...) into ``domain``: an id it has is replaced, a new one
        appended, an unknown domain created (zero-shot); the next request ranks them."""
        if self.encoder is None:
            raise RequestError("items", "this run cannot make items from text: "
                               f"{self.manifest.get('new_items') or 'no text encoder was exported'}", 409)
        with self.lock:
            cat = self.catalogs.get(domain) or self._new_domain(domain)
            if cat.head is None:
                raise RequestError("items", "this export has no item head for the domain", 409)
            rows, vectors = self.encode(cat.head, [t for _, t in items])
            ids, texts, where = list(cat.ids), list(cat.texts), dict(cat.where)
            old_rows = cat.rows.copy() if len(cat.ids) else np.zeros((0, rows.shape[1]), np.float32)
            old_vecs = cat.vectors.copy() if len(cat.ids) else np.zeros((0, vectors.shape[1]), np.float32)
            fresh = []
            for n, (item, text) in enumerate(items):
                if item in where:  # replaced in place: its rank among equal scores stays
                    old_rows[where[item]], old_vecs[where[item]], texts[where[item]] = rows[n], vectors[n], text
                else:
                    where[item] = len(ids)
                    ids.append(item)
                    texts.append(text)
                    fresh.append(n)
            all_vecs = np.concatenate([old_vecs, vectors[fresh]])
            self.catalogs[domain] = replace(cat, ids=ids, where=where, texts=texts,
                                            rows=np.concatenate([old_rows, rows[fresh]]), vectors=all_vecs,
                                            index=self.index_of(all_vecs))
        return {"domain": domain, "added": len(fresh), "replaced": len(items) - len(fresh), "items": len(ids)}

    def _new_domain(self, domain: str) -> Catalog:
        """An empty catalogue read as a domain the run never trained on (``manifest["new_domains"]``)."""
        created = self.manifest.get("new_domains")
        if created is None:
            raise RequestError("domain", f"unknown domain {domain!r}, and this export cannot create one "
                               f"(served: {', '.join(sorted(self.catalogs))})", 404)
        empty = np.zeros((0, 0), np.float32)
        return Catalog([], {}, [], empty, empty, None, "zero-shot", created["user_tower"], created["head"])  # type: ignore[arg-type]

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "run": self.manifest.get("run"),
                "domains": {n: len(c.ids) for n, c in sorted(self.catalogs.items())}}


__all__ = ["Catalog", "Engine", "RequestError"]
