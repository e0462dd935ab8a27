"""Training-curve PNG: loss and validation metric per epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crossrec_cli.io import atomic_write


def training_curve(history: list[dict[str, Any]], monitor: str, path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax1 = plt.subplots(figsize=(6, 3.6), dpi=110)
    ax1.plot(epochs, [h["loss"] for h in history], "o-", color="tab:blue", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("train loss", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot(epochs, [h[f"valid_{monitor}"] for h in history], "s-", color="tab:orange", label=f"valid {monitor}")
    ax2.set_ylabel(f"valid {monitor}", color="tab:orange")
    ax1.set_title(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path
