"""Text -> vector with a backbone: pooling, batched encoding, and an on-disk vector cache."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import torch

from crossrec_cli.io import atomic_write
from crossrec_cli.models.backbone import Backbone, last_hidden
from crossrec_cli.registry import Registry


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


@torch.no_grad()
def encode_texts(backbone: Backbone, texts: list[str], max_length: int = 64, pooling: str = "mean",
                 batch_size: int = 128) -> torch.Tensor:
    """(len(texts), hidden) float32 vectors, in eval mode, on the CPU."""
    was_training = backbone.model.training
    backbone.model.eval()
    out = []
    # sort by length so batches pad little; restore the order at the end
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for a in range(0, len(order), batch_size):
        chunk = [texts[i] for i in order[a : a + batch_size]]
        out.append(forward_pool(backbone, chunk, max_length, pooling).float().cpu())
    backbone.model.train(was_training)
    vecs = torch.cat(out) if out else torch.zeros(0, backbone.hidden_size)
    result = torch.empty_like(vecs)
    result[torch.as_tensor(order, dtype=torch.long)] = vecs
    return result


def cached_text_vectors(backbone: Backbone, texts: list[str], max_length: int, pooling: str,
                        batch_size: int = 128, cache: bool = True) -> torch.Tensor:
    """``encode_texts`` memoised on disk, keyed by backbone identity, pooling, length and texts."""
    from safetensors.torch import load_file, save_file

    h = hashlib.sha256(f"{backbone.identity}|{pooling}|{max_length}".encode())
    for t in texts:
        h.update(t.encode() + b"\x1e")
    path = cache_dir() / "vectors" / f"{h.hexdigest()}.safetensors"
    if cache and path.is_file():
        try:
            vecs = load_file(str(path))["vectors"]
            if vecs.shape[0] == len(texts):
                return vecs
        except Exception:  # a damaged cache entry is recomputed, never trusted
            pass
    vecs = encode_texts(backbone, texts, max_length, pooling, batch_size)
    if cache:
        atomic_write(path, lambda tmp: save_file({"vectors": vecs.contiguous()}, tmp))
    return vecs
