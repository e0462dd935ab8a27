#!/usr/bin/env python3
"""Image vectors for a domain's `vectors:` key, from local image files and a local vision model.

    python scripts/image_vectors.py --model ~/models/clip-vit-base --images ~/data/posters --out ~/data/poster_vecs

Images are named <item id>.<jpg|png|...>; writes <out>.npy (items, dim) and <out>.ids.txt, to be
declared as `vectors: {image: {path: poster_vecs.npy, ids: poster_vecs.ids.txt}}`.
The model folder is any Hugging Face vision model saved with save_pretrained (safetensors,
preprocessor_config.json); nothing is downloaded and custom code needs --trust-remote-code.
"""

from __future__ import annotations

import argparse
import sys

from crossrec_cli.errors import CrossrecError
from crossrec_cli.models.vision import write_image_vectors


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="local vision model folder")
    p.add_argument("--images", required=True, help="folder of <item id>.<ext> images")
    p.add_argument("--out", required=True, help="output path stem (.npy and .ids.txt are added)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--trust-remote-code", action="store_true")
    a = p.parse_args()
    try:
        npy, ids = write_image_vectors(a.model, a.images, a.out, a.batch_size, a.trust_remote_code)
    except CrossrecError as exc:
        print(exc.one_line(), file=sys.stderr)
        sys.exit(2)
    print(f"{npy}\n{ids}")


if __name__ == "__main__":
    main()
