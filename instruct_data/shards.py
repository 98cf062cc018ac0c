"""Sharded outputs for the model-driven data pipelines: the bookkeeping of a run split across workers.

A run over records ``R`` that writes ``OUT`` keeps its state in ``OUT.shards/``:

- ``plan.json``: the shard size and a digest of the output ids in input order. A rerun must use
  the same input and shard size; anything else would mix shards of two different runs, so it
  is refused with the folder named.
- ``shard-KKKKK.jsonl`` (+ ``.log.jsonl`` and any side output a pipeline writes next to it):
  shard ``K`` holds records ``R[K*S:(K+1)*S]``, written by the ordinary resumable runner
  (:mod:`.pipeline`), so a killed shard resumes item by item.
- ``shard-KKKKK.done``: written when a shard finished with no item left failed; a rerun skips
  these shards without loading a model for them. A shard with failed items is run again, which
  retries only those items, as a rerun of the single-process path does.

:func:`gather` then writes ``OUT`` from the shards, one shard in memory at a time: records in
input order (the shards are contiguous slices of the input), and every side file concatenated
in shard order. Nothing here needs Ray; :mod:`.ray_runner` executes the shards.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TextIO

from .pipeline import RunReport, finished_ids
from .records import Record

PLAN_VERSION = 1


class ShardJob(Protocol):
    """One pipeline as a picklable unit of work: built on the driver, set up once per worker.

    ``setup`` loads the model (on the worker, never on the driver); ``run`` processes one shard's
    records into ``out`` (resumably) and logs rejected outputs to ``log``; ``key`` is the id the
    output record of an input record carries (used to put the gathered output in input order).
    """

    def setup(self) -> None: ...

    def key(self, record: Record) -> str: ...

    def run(self, records: list[Record], out: Path, log: Path) -> RunReport: ...


def shard_folder(out: str | os.PathLike) -> Path:
    """Where the shards of output ``out`` live: ``OUT.shards/`` beside it."""
    out = Path(out)
    return out.with_name(out.name + ".shards")


@dataclass(frozen=True)
class ShardPlan:
    """The split of a run's records into contiguous shards and the files each shard owns."""

    folder: Path
    shard_size: int
    keys: tuple[str, ...]

    @property
    def num_shards(self) -> int:
        return -(-len(self.keys) // self.shard_size)

    def bounds(self, shard: int) -> tuple[int, int]:
        """``(start, stop)`` of shard ``shard`` in the input."""
        start = shard * self.shard_size
        return start, min(start + self.shard_size, len(self.keys))

    def output(self, shard: int) -> Path:
        return self.folder / f"shard-{shard:05d}.jsonl"

    def log(self, shard: int) -> Path:
        return self.folder / f"shard-{shard:05d}.jsonl.log.jsonl"

    def marker(self, shard: int) -> Path:
        return self.folder / f"shard-{shard:05d}.done"

    def pending(self) -> list[int]:
        """Shards without a done marker, in order."""
        return [k for k in range(self.num_shards) if not self.marker(k).exists()]


def _digest(keys: Sequence[str]) -> str:
    h = hashlib.sha256()
    for key in keys:
        h.update(key.encode("utf-8") + b"\n")
    return h.hexdigest()


def plan_shards(out: str | os.PathLike, keys: Sequence[str], shard_size: int, batch_size: int) -> ShardPlan:
    """Create or reopen ``OUT.shards/`` for output ids ``keys`` (input order) in shards of ``shard_size``.

    ``shard_size`` must be a multiple of ``batch_size``: then a shard's first pass sees exactly
    the batches the single-process run would (batch composition changes a padded batch's
    numerics, so equal batches are what makes the outputs equal).

    Raises:
        ValueError: bad sizes, repeated ids, or a folder planned for other ids or another size.
    """
    if shard_size < 1 or batch_size < 1 or shard_size % batch_size:
        raise ValueError(f"shard size {shard_size} must be a positive multiple of the batch size {batch_size}")
    if len(set(keys)) != len(keys):
        raise ValueError("record ids repeat in the input; sharded runs need unique ids")
    folder = shard_folder(out)
    wanted = {"version": PLAN_VERSION, "shard_size": shard_size, "num_records": len(keys), "ids_sha256": _digest(keys)}
    path = folder / "plan.json"
    if path.exists():
        found = json.loads(path.read_text(encoding="utf-8"))
        if found != wanted:
            raise ValueError(
                f"{folder} was made for another input or shard size ({found.get('num_records')} records, shard size "
                f"{found.get('shard_size')}; now {len(keys)} records, shard size {shard_size}): use the same input "
                "and --ray-shard-size to resume, or delete the folder to start over"
            )
    else:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name("plan.json.tmp")
        tmp.write_text(json.dumps(wanted, indent=1) + "\n", encoding="utf-8")
        tmp.replace(path)
    return ShardPlan(folder, shard_size, tuple(keys))


def mark_done(plan: ShardPlan, shard: int, report: RunReport) -> bool:
    """Write shard ``shard``'s done marker when no item failed; whether it was written."""
    if report.failed:
        return False
    tmp = plan.marker(shard).with_suffix(".tmp")
    tmp.write_text(json.dumps({"done": report.done, "skipped": report.skipped}) + "\n", encoding="utf-8")
    tmp.replace(plan.marker(shard))
    return True


@dataclass
class ShardedReport:
    """Counts of a sharded run, summed over the shards it ran (shards done before are counted apart)."""

    out: Path
    log: Path
    total: int = 0
    shards: int = 0
    shards_already_done: int = 0
    done: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    rejected_outputs: int = 0
    gathered: int = 0

    def add(self, report: RunReport) -> None:
        self.done += report.done
        self.skipped += report.skipped
        self.failed += report.failed
        self.rejected_outputs += report.rejected_outputs

    def format(self) -> str:
        return (
            f"{self.out}: {self.gathered} records gathered from {self.shards} shards ({self.shards_already_done} done "
            f"before); this run: {self.done} written, {self.skipped} already done, {len(self.failed)} failed after "
            f"retries, {self.rejected_outputs} outputs rejected (logged to {self.log})"
        )


def _side_files(plan: ShardPlan, shard: int) -> dict[str, Path]:
    """Shard ``shard``'s files other than its output, by suffix after ``shard-KKKKK.jsonl``."""
    stem = plan.output(shard).name
    return {p.name[len(stem) :]: p for p in plan.folder.glob(stem + ".*") if not p.name.endswith(".tmp")}


def gather(plan: ShardPlan, out: str | os.PathLike, log: str | os.PathLike) -> int:
    """Write ``out`` from the shards (records in input order) and ``OUT<suffix>`` from their side files.

    ``log`` receives the shards' ``.log.jsonl`` files. Each target is written to a temporary file
    and moved into place, so a gather cut short leaves the previous ``out`` whole. Returns the
    number of records written. A record's place is that of its ``id`` among the plan's keys
    (the runner's output ids, see :class:`ShardJob`).
    """
    out, log = Path(out), Path(log)
    position = {k: i for i, k in enumerate(plan.keys)}
    targets: dict[str, Path] = {}
    for shard in range(plan.num_shards):
        for suffix in _side_files(plan, shard):
            targets[suffix] = log if suffix == ".log.jsonl" else out.with_name(out.name + suffix)
    handles = {s: t.with_name(t.name + ".tmp").open("w", encoding="utf-8") for s, t in targets.items()}
    written = 0
    tmp_out = out.with_name(out.name + ".tmp")
    try:
        with tmp_out.open("w", encoding="utf-8") as sink:
            for shard in range(plan.num_shards):
                written += _gather_shard(plan, shard, sink, position)
                for suffix, path in _side_files(plan, shard).items():
                    handles[suffix].write(path.read_text(encoding="utf-8"))
    finally:
        for handle in handles.values():
            handle.close()
    tmp_out.replace(out)
    for suffix, target in targets.items():
        target.with_name(target.name + ".tmp").replace(target)
    return written


def _gather_shard(plan: ShardPlan, shard: int, sink: TextIO, position: dict[str, int]) -> int:
    path = plan.output(shard)
    if not path.exists():
        return 0
    finished_ids(path)  # drops a line a killed worker cut short
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            place = position.get(str(json.loads(line)["id"]), len(position))
            rows.append((place, line if line.endswith("\n") else line + "\n"))
    rows.sort(key=lambda row: row[0])  # stable: lines of one id keep their order
    sink.writelines(line for _, line in rows)
    return len(rows)


def run_in_process(
    records: Sequence[Record],
    out: str | os.PathLike,
    job: ShardJob,
    *,
    shard_size: int,
    batch_size: int,
    log: str | os.PathLike | None = None,
) -> ShardedReport:
    """:func:`~.ray_runner.run_with_ray` without Ray: the same shards, run one after another here.

    For a pipeline whose output is itself sharded (``encode-features`` writes one file per
    shard), so that one process and a Ray cluster write the same files. The job is set up (the
    model loaded) only when a shard is pending.
    """
    out = Path(out)
    log = Path(log) if log else out.with_name(out.name + ".log.jsonl")
    plan = plan_shards(out, [job.key(r) for r in records], shard_size, batch_size)
    report = ShardedReport(out=out, log=log, total=len(records), shards=plan.num_shards)
    pending = plan.pending()
    report.shards_already_done = plan.num_shards - len(pending)
    if pending:
        job.setup()
    for shard in pending:
        start, stop = plan.bounds(shard)
        result = job.run(list(records[start:stop]), plan.output(shard), plan.log(shard))
        mark_done(plan, shard, result)
        report.add(result)
    report.gathered = gather(plan, out, log)
    return report
