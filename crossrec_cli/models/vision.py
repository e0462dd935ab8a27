"""Image vectors for multimodal fusion: any local Hugging Face vision model folder
(``AutoModel`` + ``AutoImageProcessor``), loaded with the backbones' safety rules (a local folder
only, safetensors only, no custom code unless ``trust_remote_code``), pools each image to one
vector (the model's ``pooler_output``, else the mean of its last hidden states). The output is
what a domain's ``vectors:`` key reads: an ``.npy`` (items, dim) and an ids file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from crossrec_cli.errors import CrossrecError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")


def load_vision_model(folder: str | Path, trust_remote_code: bool = False):
    from transformers import AutoImageProcessor, AutoModel

    folder = Path(folder).expanduser()
    if not (folder / "config.json").is_file():
        raise CrossrecError(str(folder), "not a local model folder (no config.json)",
                            "point at a folder saved with save_pretrained (no hub download here)")
    try:
        custom = "auto_map" in json.loads((folder / "config.json").read_text())
    except ValueError:
        raise CrossrecError(str(folder / "config.json"), "not valid JSON", "restore the model folder") from None
    if custom and not trust_remote_code:
        raise CrossrecError("trust_remote_code", f"{folder} ships its own Python code", "allow it only for code you trust")
    try:
        processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True, trust_remote_code=trust_remote_code)
        model = AutoModel.from_pretrained(folder, local_files_only=True, use_safetensors=True,
                                          trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise CrossrecError(str(folder), f"cannot load the vision model: {str(exc).splitlines()[0]}",
                            "it needs model.safetensors and a preprocessor_config.json") from None
    return model.eval(), processor


@torch.no_grad()
def image_vectors(folder: str | Path, images: list[Path], batch_size: int = 16,
                  trust_remote_code: bool = False) -> np.ndarray:
    """(len(images), hidden) float32: one pooled vector per image file, in order."""
    from PIL import Image, UnidentifiedImageError

    model, processor = load_vision_model(folder, trust_remote_code)
    out = []
    for a in range(0, len(images), batch_size):
        batch = []
        for p in images[a:a + batch_size]:
            try:
                with Image.open(p) as im:
                    batch.append(im.convert("RGB"))
            except (OSError, UnidentifiedImageError) as exc:
                raise CrossrecError(str(p), f"cannot read the image: {exc}", "remove or replace the file") from None
        res = model(**processor(images=batch, return_tensors="pt"))
        pooled = getattr(res, "pooler_output", None)
        if pooled is None:
            pooled = res.last_hidden_state.mean(1)
        out.append(pooled.reshape(len(batch), -1).float())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


def write_image_vectors(model_dir: str | Path, image_dir: str | Path, out: str | Path, batch_size: int = 16,
                        trust_remote_code: bool = False) -> tuple[Path, Path]:
    """Every image in ``image_dir`` named ``<item id>.<ext>`` -> ``<out>.npy`` + ``<out>.ids.txt``."""
    image_dir, out = Path(image_dir), Path(out)
    files = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CrossrecError(str(image_dir), "no image files", f"expected <item id> + one of {list(IMAGE_SUFFIXES)}")
    mat = image_vectors(model_dir, files, batch_size, trust_remote_code)
    out.parent.mkdir(parents=True, exist_ok=True)
    npy, ids = out.with_suffix(".npy"), out.with_suffix(".ids.txt")
    np.save(npy, mat)
    ids.write_text("".join(p.stem + "\n" for p in files))
    return npy, ids
