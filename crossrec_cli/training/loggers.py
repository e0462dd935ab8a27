"""Experiment loggers, chosen by ``logger=<name>`` (one config file each in conf/logger/):
none (default), tensorboard, wandb (offline by default).

Every command opens one logger for its run: training loops log their losses and validation
metrics step by step, and the final record (valid / test / transfer metrics) is logged once at
the end, so ``logger=`` holds for finetune, pretrain, transfer, evaluate and both tasks.
A new logger is one ``Logger`` subclass registered in ``LOGGERS`` (here or in its own module of
crossrec_cli/training/) plus conf/logger/<name>.yaml.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from crossrec_cli.errors import CrossrecError
from crossrec_cli.registry import Registry


class Logger:
    """Discards everything (``logger=none``); the base of the others."""

    def __init__(self) -> None:
        self.last_step = 0

    def __call__(self, metrics: dict[str, float], step: int) -> None:
        self.last_step = max(self.last_step, step)
        self.log(metrics, step)

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def summary(self, metrics: dict[str, float]) -> None:
        """The run's final figures, after every training step."""
        self(metrics, self.last_step + 1)

    def close(self) -> None:
        pass


class TensorBoardLogger(Logger):
    """Event files under ``<run dir>/tensorboard``."""

    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        super().__init__()
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise CrossrecError("logger=tensorboard", "tensorboard is not installed",
                                "pip install 'crossrec[tensorboard]'") from None
        self._tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log(self, metrics: dict[str, float], step: int) -> None:
        for k, v in metrics.items():
            self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        self._tb.close()


class WandbLogger(Logger):
    """A wandb run in ``<run dir>/wandb`` (``mode: offline`` unless the config says otherwise)."""

    def __init__(self, run_dir: Path, config: dict[str, Any], project: str = "crossrec", mode: str = "offline") -> None:
        super().__init__()
        try:
            import wandb
        except ImportError:
            raise CrossrecError("logger=wandb", "wandb is not installed", "pip install 'crossrec[wandb]'") from None
        self._run = wandb.init(project=project, mode=mode, dir=str(run_dir), config=config, reinit=True)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._run.log(metrics, step=step)

    def summary(self, metrics: dict[str, float]) -> None:
        super().summary(metrics)
        self._run.summary.update(metrics)

    def close(self) -> None:
        self._run.finish()


# a logger in another module of crossrec_cli/training/ registers itself the same way
LOGGERS: Registry[Callable[..., Logger]] = Registry("logger", "logger.name", "crossrec_cli.training")
LOGGERS.add("none", lambda run_dir, config: Logger())
LOGGERS.add("tensorboard", TensorBoardLogger)
LOGGERS.add("wandb", WandbLogger)


def open_logger(name: str, run_dir: Path, config: dict[str, Any], **options: Any) -> Logger:
    """The logger registered as ``name``; ``options`` are its config file's other keys."""
    return LOGGERS.get(name)(run_dir, config, **options)




def flat_metrics(record: dict[str, Any], keys: tuple[str, ...] = ("valid", "test", "transfer", "lift")) -> dict[str, float]:
    """Numeric leaves of a metrics.json record under ``keys``, as ``test/movies/ndcg@10``."""
    out: dict[str, float] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{path}/{k}")
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            out[path] = float(node)

    for key in keys:
        if key in record:
            walk(record[key], key)
    return out
