"""Several processes: ``torchrun --nproc_per_node N -m crossrec_cli finetune ...`` (or
``accelerate launch``) trains with DistributedDataParallel.

The launcher decides: with ``WORLD_SIZE`` > 1 in the environment every process joins one process
group (gloo on CPU, nccl on CUDA, each process on the GPU of its ``LOCAL_RANK``); without it
nothing here does anything and a run is the one-process run it always was.

What each process does (``training/engine.run``): every step all processes take the same global
batch from the objective's ``plan`` and each computes its own disjoint slice of it
(``Objective.shard``); DDP sums the gradients so the step is the one-process step on the whole
batch. Validation, early stopping, checkpoints, metrics and logs are rank 0's; its decisions are
broadcast. Every process resumes from the same checkpoint.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from crossrec_cli.errors import CrossrecError

# rank 0 validates while the others wait in a broadcast: a long validation must not time them out
TIMEOUT = timedelta(hours=2)
_joined = False  # whether init() made the process group (close() ends only that one)


def launched() -> bool:
    """Whether a launcher started this process as one of several (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    """Whether this process is in a process group of several."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    """This process's rank (the launcher's ``RANK`` before the group is joined; 0 alone)."""
    return dist.get_rank() if active() else int(os.environ.get("RANK", "0")) if launched() else 0


def is_main() -> bool:
    """Rank 0: the process that validates and writes the run directory."""
    return rank() == 0


def init(device: torch.device) -> None:
    """Join the launcher's process group (once; nothing for one process): gloo on CPU, nccl on
    CUDA with this process on GPU ``LOCAL_RANK``."""
    if not launched() or dist.is_initialized():
        return
    if device.type == "cuda":
        if device.index is not None:
            raise CrossrecError("device", f"{device} puts every process on one GPU",
                                "use device=cuda (each process takes the GPU of its LOCAL_RANK)")
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    global _joined
    _joined = True


def close() -> None:
    """Leave the process group that ``init`` joined."""
    global _joined
    if _joined and dist.is_initialized():
        dist.destroy_process_group()
    _joined = False


def broadcast(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` (anything JSON can write) on every process; sent as JSON text, so
    no pickle is ever loaded."""
    if not active():
        return obj
    dev, mine = _comm_device(), rank() == src
    data = torch.frombuffer(bytearray(json.dumps(obj).encode()), dtype=torch.uint8) if mine else None
    size = torch.tensor([len(data) if data is not None else 0], device=dev)
    dist.broadcast(size, src)
    buf = data.to(dev) if data is not None else torch.empty(int(size), dtype=torch.uint8, device=dev)
    dist.broadcast(buf, src)
    return obj if mine else json.loads(bytes(buf.cpu().numpy()).decode())


def gather(obj: Any) -> list[Any]:
    """Every process's ``obj`` (JSON values), in rank order, on every process."""
    return [broadcast(obj, src) for src in range(world_size())]


def sum_floats(*values: float) -> list[float]:
    """Each value summed over the processes (one collective)."""
    if not active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return t.tolist()


def barrier() -> None:
    if active():
        dist.barrier()


def _comm_device() -> torch.device:
    """Where collectives of plain values run: nccl only moves CUDA tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def wrap(module: torch.nn.Module, loss) -> torch.nn.Module:
    """``loss(part, prog)`` as the forward of a DistributedDataParallel module over ``module``
    (the parameters it trains), so that its backward averages the gradients of every process.
    Unused parameters are found every step: a batch holds one domain, and the others' item
    tables and heads get no gradient (with one domain torch warns once that it found none)."""
    from torch.nn.parallel import DistributedDataParallel

    step = _Step(module, loss)
    dev = next((p.device for p in module.parameters()), torch.device("cpu"))
    return DistributedDataParallel(step, device_ids=[dev.index] if dev.type == "cuda" else None,
                                   find_unused_parameters=True)


class _Step(torch.nn.Module):
    """The objective's loss as a module's forward (DDP syncs gradients of what forward ran)."""

    def __init__(self, module: torch.nn.Module, loss) -> None:
        super().__init__()
        self.module = module
        self.loss = loss

    def forward(self, part: Any, prog: Any) -> Any:
        return self.loss(part, prog)


def slices(n: int, world: int) -> list[np.ndarray]:
    """Positions 0..n-1 cut into ``world`` contiguous slices in rank order, all of the same
    length ``ceil(n / world)`` except the last non-empty one (later ones may be empty)."""
    size = -(-n // world)
    return [np.arange(min(n, r * size), min(n, (r + 1) * size)) for r in range(world)]


def gather_rows(x: torch.Tensor, n: int) -> torch.Tensor:
    """Every process's rows of ``x`` (each ``ceil(n / world)`` rows, padded at the end), in rank
    order, as the first ``n`` rows: (ceil(n / world), ...) -> (n, ...). Differentiable: the
    gradient of each row goes back to the process that computed it."""
    if not active():
        return x[:n]
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()))[:n]


@torch.no_grad()
def all_rows(x: torch.Tensor, n: int) -> torch.Tensor:
    """``gather_rows`` without autograd, for tensors on the CPU whatever the backend: every
    process's rows of ``x`` (the same row count on each), in rank order, the first ``n``, on the CPU."""
    if not active():
        return x[:n]
    dev = _comm_device()
    parts = [torch.empty_like(x, device=dev) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous().to(dev))
    return torch.cat(parts)[:n].to(x.device)


@torch.no_grad()
def broadcast_rows(x: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s ``x`` on every process; the others pass a tensor of its shape and dtype."""
    if not active():
        return x
    buf = x.contiguous().to(_comm_device())
    dist.broadcast(buf, src)
    return buf.to(x.device)
