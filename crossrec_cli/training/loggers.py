"""Experiment loggers: none (default), wandb (offline by default) and tensorboard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crossrec_cli.errors import CrossrecError


class MetricLogger:
    def __init__(self, name: str, run_dir: Path, config: dict[str, Any], project: str = "crossrec", mode: str = "offline"):
        self.name, self._run, self._tb = name, None, None
        if name == "wandb":
            try:
                import wandb
            except ImportError:
                raise CrossrecError("logger=wandb", "wandb is not installed", "pip install 'crossrec[wandb]'") from None
            self._run = wandb.init(project=project, mode=mode, dir=str(run_dir), config=config, reinit=True)
        elif name == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise CrossrecError("logger=tensorboard", "tensorboard is not installed",
                                    "pip install 'crossrec[tensorboard]'") from None
            self._tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        elif name != "none":
            raise CrossrecError("logger.name", f"unknown logger {name!r}", "expected none, wandb or tensorboard")

    def __call__(self, metrics: dict[str, float], step: int) -> None:
        if self._run is not None:
            self._run.log(metrics, step=step)
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self._run is not None:
            self._run.finish()
        if self._tb is not None:
            self._tb.close()
