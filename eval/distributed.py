"""Data-parallel evaluation: split a benchmark's items over processes, gather them on rank 0.

A launcher starts one process per GPU (or several on a CPU), on one or several nodes, and sets
the usual environment: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``.
``accelerate launch``, ``torchrun`` and the DeepSpeed launcher all do::

    accelerate launch --num_processes 8 -m mico_chat.cli eval mme --data MME_Benchmark_release_version
    torchrun --nproc-per-node 2 -m mico_chat.cli eval mme --data ...      # CPU: two gloo processes
    mico-chat eval mme --data ... --num-processes 2                       # the same, launched for you

:meth:`DataParallel.from_environment` reads that environment. Process ``rank`` of ``world_size``
takes items ``rank, rank + world_size, ...`` (:meth:`Shard.take`: interleaved, so a benchmark
whose items are sorted by length or subtask still gives every process a similar load), answers
them into its own prediction-cache shard, and rank 0 gathers everything, restores the item order
and scores. The collectives move Python objects (predictions, CPU feature tensors) once per run,
so they go over gloo (TCP) on every machine: no NCCL, no GPU memory, the same code on CPU and GPU
nodes.
"""

from __future__ import annotations

import datetime as _dt
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

# Rank 0 waits in the gather for the slowest process's whole shard, which can take hours on a
# large benchmark; the default 30-minute collective timeout would abort a healthy run.
COLLECTIVE_TIMEOUT = _dt.timedelta(hours=24)


class DistributedError(RuntimeError):
    """The launch environment is inconsistent (e.g. ``RANK`` without ``WORLD_SIZE``)."""


@dataclass(frozen=True)
class Shard:
    """This process's part of the work: process ``rank`` of ``world_size`` (``local_rank`` on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise DistributedError(f"rank {self.rank} is not in a world of {self.world_size} processes")

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that gathers, writes outputs and scores."""
        return self.rank == 0

    def take(self, items: Sequence[T]) -> list[T]:
        """Items ``rank, rank + world_size, ...`` of ``items`` (every item in exactly one shard)."""
        return list(items[self.rank :: self.world_size])

    def indices(self, n: int) -> range:
        """The indices of :meth:`take` over a sequence of length ``n``."""
        return range(self.rank, n, self.world_size)

    def suffix(self) -> str:
        """``rank1-of-4``: names this shard's files (a rerun with another world size makes new ones)."""
        return f"rank{self.rank}-of-{self.world_size}"


class DataParallel:
    """The process group of a data-parallel evaluation, or a single process (all methods no-ops).

    Pass one to :func:`mico_chat.eval.runner.evaluate` or
    :func:`mico_chat.eval.retrieval.evaluator.evaluate_retrieval`; build it with
    :meth:`from_environment` (or :meth:`single`). Close it with :meth:`close` or use it as a
    context manager.
    """

    def __init__(self, shard: Shard | None = None, *, owns_group: bool = False):
        self.shard = shard or Shard()
        self._owns_group = owns_group

    @classmethod
    def single(cls) -> DataParallel:
        return cls(Shard())

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> DataParallel:
        """The group the launcher described in ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``; a
        single process when ``WORLD_SIZE`` is unset or 1. Initialises ``torch.distributed``
        (gloo) unless the caller already did."""
        env = os.environ if environ is None else environ
        world = int(env.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls.single()
        if "RANK" not in env:
            raise DistributedError(
                f"WORLD_SIZE={world} but RANK is unset: start the processes with accelerate launch or torchrun"
            )
        shard = Shard(int(env["RANK"]), world, int(env.get("LOCAL_RANK", env["RANK"])))
        import torch.distributed as dist

        owns = False
        if not dist.is_initialized():
            missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in env]
            if missing:
                raise DistributedError(f"WORLD_SIZE={world} but {', '.join(missing)} unset: the launcher sets them")
            dist.init_process_group("gloo", rank=shard.rank, world_size=world, timeout=COLLECTIVE_TIMEOUT)
            owns = True
        elif dist.get_world_size() != world or dist.get_rank() != shard.rank:
            raise DistributedError(
                f"torch.distributed is rank {dist.get_rank()} of {dist.get_world_size()}, the environment says "
                f"{shard.rank} of {world}"
            )
        return cls(shard, owns_group=owns)

    @property
    def world_size(self) -> int:
        return self.shard.world_size

    @property
    def is_main(self) -> bool:
        return self.shard.is_main

    def device(self, requested: str | None) -> str | None:
        """The device this process uses: with several processes a CUDA request (or none, when a
        GPU is present) becomes ``cuda:LOCAL_RANK``, one GPU per process; anything explicit
        other than plain ``cuda`` is kept."""
        if self.world_size == 1:
            return requested
        import torch

        if requested in (None, "auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{self.shard.local_rank % torch.cuda.device_count()}"
        return requested

    # ------------------------------------------------------------------ collectives
    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, obj: T) -> list[T] | None:
        """Every rank's ``obj`` on rank 0, in rank order; ``None`` on the other ranks."""
        if self.world_size == 1:
            return [obj]
        import torch.distributed as dist

        received: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, received, dst=0)
        return received

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank (the others' values are ignored)."""
        if self.world_size == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Run the block on rank 0, then on the others (e.g. fill a cache that they then read)."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def close(self) -> None:
        """Tear down the process group if :meth:`from_environment` made it."""
        if self._owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self._owns_group = False

    def __enter__(self) -> DataParallel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def in_launched_group(environ: dict[str, str] | None = None) -> bool:
    """Whether this process was started by a launcher as one of several (``WORLD_SIZE`` > 1)."""
    env = os.environ if environ is None else environ
    return int(env.get("WORLD_SIZE", "1")) > 1


def local_launch_command(argv: Sequence[str], processes: int) -> list[str]:
    """The command that runs ``mico-chat ARGV`` as ``processes`` local processes (torchrun, standalone).

    torchrun (what ``accelerate launch`` uses for several processes) rather than forking or
    ``torch.multiprocessing``: each rank starts a fresh interpreter (no fork of a process with
    OpenMP or CUDA already initialised, nothing to pickle), ``--standalone`` picks a free port,
    a failing rank stops the others and the exit code comes back, and it is the same code path
    as a multi-node launch. It is started through this module's ``__main__`` (:func:`torchrun`)
    rather than torchrun's command line, whose parser would take ``--n`` (an option of ``synth``)
    for an abbreviation of its own ``--nnodes``/``--node-rank``.
    """
    if processes < 2:
        raise ValueError(f"a local launch needs at least 2 processes, got {processes}")
    return [sys.executable, "-m", "mico_chat.eval.distributed", str(processes), *argv]


def torchrun(processes: int, argv: Sequence[str]) -> int:
    """Run ``python -m mico_chat.cli ARGV`` as ``processes`` local processes under torchrun's agent."""
    from torch.distributed import run as torch_run
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    config = torch_run.parse_args(["--standalone", f"--nproc-per-node={processes}", "-m", "mico_chat.cli"])
    config.training_script_args = list(argv)  # set here, so torchrun's parser never reads them
    try:
        torch_run.run(config)
    except ChildFailedError as err:
        print(f"mico-chat: {len(err.failures)} of {processes} processes failed (their errors are above)", file=sys.stderr)
        return 1
    return 0


def launch_local(argv: Sequence[str], processes: int) -> int:
    """Run ``mico-chat ARGV`` as ``processes`` local processes; returns the launcher's exit code."""
    env = dict(os.environ)
    # Split the cores between the processes (torchrun would set 1 thread each, with a warning).
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    return subprocess.run(local_launch_command(argv, processes), env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(torchrun(int(sys.argv[1]), sys.argv[2:]))
