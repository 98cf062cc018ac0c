"""Batch inference with Ray Data: a pipeline's shards mapped over actors that each hold the model.

The pending shards of a run (:mod:`.shards`) become a Ray dataset, one row per shard carrying its
records. ``map_batches`` sends the rows to a pool of actors; an actor sets up the
job once (loads the model: one actor per GPU, or ``workers`` CPU actors) and runs every shard it
is given through the same function the single-process path uses, writing ``OUT.shards/shard-K``
and marking it done. The driver then gathers ``OUT`` in input order.

Ray is optional (``pip install 'mico-chat[scale]'``); nothing imports it until a run asks for it.
Shard files are written by the actors, so on a cluster of several machines ``OUT`` must be on a
file system they all share.
"""

from __future__ import annotations

import json
import math
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .pipeline import RunReport
from .records import Record
from .shards import ShardedReport, ShardJob, ShardPlan, gather, mark_done, plan_shards

INSTALL_HINT = "pip install 'mico-chat[scale]'"


class RayNotInstalled(ImportError):
    """Ray Data is missing: the message says which extra installs it."""


def import_ray() -> Any:
    """The ``ray`` module with ``ray.data`` loaded, or :class:`RayNotInstalled` naming the extra."""
    try:
        import ray
        import ray.data  # noqa: F401 (the submodule must load too: ray without [data] lacks pyarrow)
    except ImportError as err:
        raise RayNotInstalled(f"--ray needs Ray Data, which is not installed here ({err}): {INSTALL_HINT}") from err
    return ray


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide a run goes.

    Args:
        address: a running cluster (``auto``, ``ray://host:10001``); ``None`` starts a local one
            sized for the workers (and shut down after the run).
        workers: model actors; ``None``: one per GPU of the cluster, or 1 without GPUs.
        cpus_per_worker: CPUs reserved per actor (its torch threads on a CPU worker).
        use_gpus: give each actor one GPU when the cluster has any (off for ``--device cpu``).
        shard_size: records per shard (a multiple of the batch size; resumption is per shard).
        object_store_mb: the local cluster's object store. It holds the pending shards' records
            (about their JSONL size); beyond it Ray spills them to disk.
        progress: Ray Data's progress bars.
    """

    address: str | None = None
    workers: int | None = None
    cpus_per_worker: float = 1.0
    use_gpus: bool = True
    shard_size: int = 256
    object_store_mb: int = 256
    progress: bool = True

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"--ray-workers must be >= 1, got {self.workers}")
        if self.cpus_per_worker <= 0:
            raise ValueError(f"CPUs per worker must be > 0, got {self.cpus_per_worker}")


class ShardActor:
    """A Ray Data actor: sets the job up once, then runs every shard row it is given."""

    def __init__(self, job: ShardJob, folder: str, shard_size: int):
        job.setup()
        self.job = job
        self.plan = ShardPlan(Path(folder), shard_size, ())  # paths only: the ids stay on the driver

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        out: dict[str, list] = {"shard": [], "report": []}
        for shard, blob in zip(batch["shard"], batch["records"]):
            shard = int(shard)
            records = pickle.loads(blob)
            report = self.job.run(records, self.plan.output(shard), self.plan.log(shard))
            mark_done(self.plan, shard, report)
            summary = {"done": report.done, "skipped": report.skipped, "failed": report.failed,
                       "rejected_outputs": report.rejected_outputs}  # fmt: skip
            out["shard"].append(shard)
            out["report"].append(json.dumps(summary))
        return out


def _start(ray: Any, options: RayOptions) -> bool:
    """Connect to (or start) the cluster; whether this call started it (and so must shut it down)."""
    if ray.is_initialized():
        return False
    if options.address is not None:
        ray.init(address=options.address, log_to_driver=False)
        return True
    num_cpus = math.ceil(options.workers * options.cpus_per_worker) if options.workers else None
    ray.init(num_cpus=num_cpus, include_dashboard=False, object_store_memory=options.object_store_mb * 2**20,
             log_to_driver=False)  # fmt: skip
    return True


def _actor_resources(ray: Any, options: RayOptions) -> tuple[int, float, float]:
    """``(actors, num_gpus, num_cpus)`` per actor for this cluster."""
    gpus = int(ray.cluster_resources().get("GPU", 0)) if options.use_gpus else 0
    workers = options.workers or max(gpus, 1)
    return workers, (1.0 if gpus else 0.0), options.cpus_per_worker


def run_with_ray(
    records: Sequence[Record],
    out: str | os.PathLike,
    job: ShardJob,
    options: RayOptions,
    *,
    batch_size: int,
    log: str | os.PathLike | None = None,
) -> ShardedReport:
    """Run ``job`` over ``records`` on a Ray cluster in shards, then gather ``out`` (input order).

    A rerun skips shards marked done and resumes the others item by item. The gathered output
    holds the same records as the single-process run with the same settings; records accepted
    only on a retry sit at their input position here, where the single-process run appends them
    after its first pass.

    Raises:
        RayNotInstalled: without Ray Data.
        ValueError: a shard folder planned for another input or shard size (see :func:`plan_shards`).
    """
    ray = import_ray()  # before anything is written: a missing extra fails fast
    out = Path(out)
    log = Path(log) if log else out.with_name(out.name + ".log.jsonl")
    plan = plan_shards(out, [job.key(r) for r in records], options.shard_size, batch_size)
    report = ShardedReport(out=out, log=log, total=len(records), shards=plan.num_shards)
    pending = plan.pending()
    report.shards_already_done = plan.num_shards - len(pending)
    if pending:
        started = _start(ray, options)
        try:
            for summary in _map_shards(ray, records, plan, pending, job, options):
                report.add(RunReport(out=out, log=log, **summary))
        finally:
            if started:
                ray.shutdown()
    report.gathered = gather(plan, out, log)
    return report


def shard_rows(records: Sequence[Record], plan: ShardPlan, shards: Sequence[int]) -> list[dict[str, Any]]:
    """The dataset rows of ``shards``: ``{"shard": K, "records": its records, pickled}``.

    Pickled rather than JSON: records made from a folder of videos carry no text yet, which
    :func:`~.records.parse_record` would refuse on the worker.
    """
    rows = []
    for shard in shards:
        start, stop = plan.bounds(shard)
        rows.append({"shard": shard, "records": pickle.dumps(list(records[start:stop]))})
    return rows


def _map_shards(
    ray: Any, records: Sequence[Record], plan: ShardPlan, pending: list[int], job: ShardJob, options: RayOptions
) -> list[dict[str, Any]]:
    """Run the pending shards on the actor pool; each shard's summary, in shard order."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = options.progress
    rows = shard_rows(records, plan, pending)
    workers, num_gpus, num_cpus = _actor_resources(ray, options)
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        ShardActor,
        fn_constructor_args=(job, str(plan.folder), plan.shard_size),
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=min(workers, len(rows))),
        num_gpus=num_gpus,
        num_cpus=num_cpus,
    )
    results = sorted(dataset.take_all(), key=lambda row: int(row["shard"]))
    return [json.loads(row["report"]) for row in results]
