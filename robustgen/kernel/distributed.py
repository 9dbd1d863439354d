"""torch.distributed in one place: rank, world size, device per rank, collectives.

Launched by torchrun (one process per device, on one node or many), robustgen
reads the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT) and joins the process group: NCCL when the rank's device is a CUDA
GPU, Gloo on CPUs. Without a launcher the same calls run in one process and
every collective is the identity, so training, sampling and scoring have one
code path. Nothing outside this module knows how ranks are set up.

    dist = distributed.setup("auto")        # -> Dist(rank, world_size, device, ...)
    mine = dist.shard(range(n))             # this rank's share of a work list
    total = dist.all_reduce_sum(tensor)     # identical on every rank afterwards
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

import torch
import torch.distributed as td

from robustgen.kernel.device import resolve_device
from robustgen.kernel.errors import RobustgenError

T = TypeVar("T")
TIMEOUT_MINUTES = float(os.environ.get("ROBUSTGEN_DIST_TIMEOUT_MIN", "30"))  # a collective that waits longer fails, never hangs


@dataclass(frozen=True)
class Dist:
    """This process's place in the job. world_size 1 = a plain single-process run."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None  # "nccl" | "gloo" | None (single process)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def shard(self, items: Sequence[T]) -> Sequence[T]:
        """Round-robin share of `items`: rank r gets items r, r + W, r + 2W, ..."""
        return items[self.rank :: self.world_size]

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return self._all_reduce(tensor, td.ReduceOp.SUM)

    def all_reduce_max(self, tensor: torch.Tensor) -> torch.Tensor:
        return self._all_reduce(tensor, td.ReduceOp.MAX)

    def _all_reduce(self, tensor: torch.Tensor, op) -> torch.Tensor:
        if not self.active:
            return tensor
        out = tensor.clone()
        td.all_reduce(out, op=op)
        return out

    def all_gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order (small picklable objects we made ourselves)."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        td.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any, *, src: int = 0) -> Any:
        """Rank `src`'s `obj` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        td.broadcast_object_list(box, src=src)
        return box[0]

    def gather_rows(self, rows: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        """Reassemble a row-sharded array: each rank holds `rows` for global indices `order`; returns all rows, sorted."""
        if not self.active:
            return rows[torch.argsort(order)]
        parts = [p for p in self.all_gather_objects((order.cpu(), rows.cpu())) if len(p[0])]  # a rank may have had no rows
        orders = torch.cat([p[0] for p in parts])
        values = torch.cat([p[1] for p in parts])
        return values[torch.argsort(orders)].to(rows.device)

    def barrier(self) -> None:
        if self.active:
            td.barrier()


def launched() -> bool:
    """True inside a torchrun (or SLURM-with-env) job of more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str = "auto") -> Dist:
    """This rank's Dist; joins the launcher's process group on first use (idempotent).

    Under torchrun, `device="auto"` means cuda:LOCAL_RANK on GPUs and the CPU elsewhere.
    """
    if not launched():
        return Dist(0, 1, 0, resolve_device(device), None)
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    dev = resolve_device(device, local_rank=local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not td.is_initialized():
        try:
            td.init_process_group(backend=backend, timeout=_dt.timedelta(minutes=TIMEOUT_MINUTES))
        except (RuntimeError, ValueError) as exc:
            raise RobustgenError(
                f"cannot join the torchrun process group ({str(exc).splitlines()[0][:120]}): "
                "check --rdzv-endpoint / MASTER_ADDR and that every node runs the same command"
            ) from None
    return Dist(rank, world, local, dev, td.get_backend())


def for_device(device: torch.device) -> Dist:
    """The Dist of this process for an already-resolved device (single process unless a group is up)."""
    if td.is_available() and td.is_initialized():
        return Dist(td.get_rank(), td.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), device, td.get_backend())
    return Dist(0, 1, 0, device, None)


def is_main() -> bool:
    """True in a single process and on rank 0: the process that writes shared files (caches, results)."""
    return not (td.is_available() and td.is_initialized()) or td.get_rank() == 0


def teardown() -> None:
    """Leave the process group (end of a CLI command under torchrun)."""
    if td.is_available() and td.is_initialized():
        td.destroy_process_group()
