"""Text -> vector with a backbone: pooling, batched encoding, and an on-disk vector cache."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from crossrec_cli.errors import IOFault
from crossrec_cli.io import atomic_write
from crossrec_cli.models.backbone import Backbone, last_hidden
from crossrec_cli.registry import Registry
from crossrec_cli.progress import phase
from crossrec_cli.training import distributed

log = logging.getLogger("crossrec")


def cache_dir() -> Path:
    """$CROSSREC_CACHE or ~/.cache/crossrec."""
    return Path(os.environ.get("CROSSREC_CACHE", "~/.cache/crossrec")).expanduser()


def _mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


def _cls(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return hidden[:, 0]


def _last(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The last non-pad token, from the right (right padding) or the final column (left padding)."""
    last = mask.long().sum(1) - 1
    if mask.shape[1] and bool((mask[:, -1] == 1).all()) and bool((mask[:, 0] == 0).any()):
        last = torch.full_like(last, mask.shape[1] - 1)  # left padding
    return hidden[torch.arange(hidden.shape[0]), last.clamp_min(0)]


# backbone.pooling: (hidden (B, T, H), mask (B, T)) -> (B, H)
POOLINGS: Registry[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = Registry("pooling", "backbone.pooling")
POOLINGS.add("mean", _mean)
POOLINGS.add("cls", _cls)
POOLINGS.add("last", _last)


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """hidden: (B, T, H), mask: (B, T) -> (B, H), pooled as ``POOLINGS[how]``."""
    return POOLINGS.get(how)(hidden, mask)


def tokenize(backbone: Backbone, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    return backbone.tokenizer(
        texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU batch on ``device``: through pinned memory without blocking when it is a GPU."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def forward_pool(backbone: Backbone, texts: list[str], max_length: int, pooling: str) -> torch.Tensor:
    """Encode texts with gradients (if enabled): (len(texts), hidden)."""
    device = next(backbone.model.parameters()).device
    batch = {k: to_device(v, device) for k, v in tokenize(backbone, texts, max_length).items()}
    hidden = last_hidden(backbone.model, backbone.kind, batch)
    mask = batch["attention_mask"]
    if hidden.shape[1] != mask.shape[1]:  # prompt-learning methods prepend virtual tokens
        extra = hidden.shape[1] - mask.shape[1]
        mask = torch.cat([mask.new_ones(mask.shape[0], extra), mask], 1)
    return pool(hidden, mask, pooling)


_across = False  # set by across_processes()


@contextlib.contextmanager
def across_processes() -> Iterator[None]:
    """Within it, under torchrun, each process encodes its share of the texts: every process makes
    the same encode calls in the same order (a run's catalogues, before training), each encodes a
    contiguous share of the length-sorted batches (the batches one process would make, so the
    vectors are the same bits), every process gets every row, and rank 0 alone reads and writes
    the vector cache. Without several processes it changes nothing."""
    global _across
    was, _across = _across, True
    try:
        yield
    finally:
        _across = was


def _shared() -> bool:
    return _across and distributed.active()


@torch.no_grad()
def encode_texts(backbone: Backbone, texts: list[str], max_length: int = 64, pooling: str = "mean",
                 batch_size: int = 128) -> torch.Tensor:
    """(len(texts), hidden) float32 vectors, in eval mode, on the CPU, computed by
    ``backbone.runtime`` (models/runtimes.py); see ``across_processes`` for several processes."""
    from crossrec_cli.models.runtimes import encoder

    if not texts:
        return torch.zeros(0, backbone.hidden_size)
    run = encoder(backbone, max_length, pooling)
    was_training = backbone.model.training
    backbone.model.eval()
    # sort by length so batches pad little; restore the order at the end
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    batches = [order[a : a + batch_size] for a in range(0, len(order), batch_size)]
    world = distributed.world_size() if _shared() else 1
    mine = [batches[b] for b in distributed.slices(len(batches), world)[distributed.rank() if world > 1 else 0]]
    out = []
    with phase("encode item texts", sum(map(len, mine))) as bar:
        for rows in mine:
            out.append(run([texts[i] for i in rows]))
            bar.advance(len(rows))
    backbone.model.train(was_training)
    vecs = torch.cat(out) if out else torch.zeros(0, backbone.hidden_size)
    if world > 1:  # every share but the last non-empty one is whole batches: padded, gathered, cut
        share = -(-len(batches) // world) * batch_size
        vecs = distributed.all_rows(torch.cat([vecs, vecs.new_zeros(share - len(vecs), vecs.shape[1])]), len(texts))
    result = torch.empty_like(vecs)
    result[torch.as_tensor(order, dtype=torch.long)] = vecs
    return result


def cached_text_vectors(backbone: Backbone, texts: list[str], max_length: int, pooling: str,
                        batch_size: int = 128, cache: bool = True) -> torch.Tensor:
    """``encode_texts`` memoised on disk, keyed by backbone identity, pooling, length, texts and
    ``backbone.runtime`` (other than torch). Each entry carries the sha256 of its vectors
    (safetensors metadata), checked on load: a damaged entry is recomputed with a warning; a cache
    folder that cannot be written is skipped with a warning. Within ``across_processes`` rank 0
    reads and writes the entry and sends what it read to the others."""
    from crossrec_cli.models.runtimes import cache_tag

    h = hashlib.sha256(f"{backbone.identity}|{pooling}|{max_length}{cache_tag(backbone.runtime)}".encode())
    for t in texts:
        h.update(t.encode() + b"\x1e")
    path = cache_dir() / "vectors" / f"{h.hexdigest()}.safetensors"
    lead = distributed.is_main() or not _shared()  # the process that reads and writes the entry
    vecs = None
    if cache and lead and path.is_file():
        vecs, problem = _read_cached(path, len(texts))
        if vecs is None:
            log.warning("vector cache entry %s is not usable (%s); recomputing it", path, problem)
    if _shared() and distributed.broadcast(vecs is not None):
        return distributed.broadcast_rows(vecs if vecs is not None else torch.empty(len(texts), backbone.hidden_size))
    if vecs is not None:
        return vecs
    vecs = encode_texts(backbone, texts, max_length, pooling, batch_size).contiguous()
    if cache and lead:
        from safetensors.torch import save_file

        try:
            atomic_write(path, lambda tmp: save_file({"vectors": vecs}, tmp, metadata={"sha256": _digest(vecs)}),
                         "an item-vector cache entry")
        except (IOFault, OSError) as exc:  # the cache only saves time: a run never stops for it
            log.warning("%s; going on without the vector cache", str(exc).removeprefix("error: "))
    return vecs


def _digest(vecs: torch.Tensor) -> str:
    return hashlib.sha256(vecs.contiguous().numpy().tobytes()).hexdigest()


def _read_cached(path: Path, rows: int) -> tuple[torch.Tensor | None, str]:
    """(the entry's vectors, "") when its checksum and row count hold, else (None, what is wrong)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            vecs = fh.get_tensor("vectors")
    except Exception as exc:  # unreadable or foreign: recomputed, never trusted
        return None, f"unreadable: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    if "sha256" not in meta:
        return None, "no checksum (written by an older crossrec)"
    if vecs.shape[0] != rows:
        return None, f"{vecs.shape[0]} rows for {rows} texts"
    if _digest(vecs) != meta["sha256"]:
        return None, "checksum mismatch"
    return vecs, ""
