"""A resumable, batched, retrying runner for LLM data pipelines (omni captions, pseudo-labels, rewriting).

The runner owns the bookkeeping every such pipeline needs:

- **resumable**: results are appended to ``OUT`` (JSONL, one record per line, flushed per batch);
  a rerun reads ``OUT`` and skips every id already there. A line cut short by a crash is dropped
  (and ``OUT`` rewritten without it) before resuming.
- **batched**: ``produce`` gets ``batch_size`` items at a time (one LLM batch).
- **bounded retries**: an item whose output is rejected is retried up to ``max_retries`` times
  (later attempts sample, see :mod:`.llm`); every rejected output is logged to ``LOG`` (JSONL:
  id, attempt, output, reason). An item that never succeeds is counted as failed and left out
  of ``OUT``, so the next run tries it again. Nothing here is fatal to the run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from tqdm.auto import tqdm

Item = TypeVar("Item")


@dataclass(frozen=True)
class Outcome:
    """What ``produce`` made of one item: a finished record (JSON dict), or the rejected output and why."""

    record: dict[str, Any] | None
    output: str | None = None
    reason: str | None = None


@dataclass
class RunReport:
    """Counts of one run: finished now, already done before, failed after all retries, rejected outputs."""

    out: Path
    log: Path
    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    rejected_outputs: int = 0
    dropped_partial_lines: int = 0

    def format(self) -> str:
        return (
            f"{self.out}: {self.done} written, {self.skipped} already done, {len(self.failed)} failed "
            f"after retries, {self.rejected_outputs} outputs rejected (logged to {self.log})"
        )


def finished_ids(out: Path) -> tuple[set[str], int]:
    """Ids already in ``out``; a truncated or invalid line (a crash mid-write) is removed from the file."""
    if not out.exists():
        return set(), 0
    ids, keep, dropped = set(), [], 0
    with out.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                rid = json.loads(line)["id"]
            except (json.JSONDecodeError, KeyError, TypeError):
                dropped += 1
                continue
            ids.add(str(rid))
            keep.append(line if line.endswith("\n") else line + "\n")
    if dropped:
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text("".join(keep), encoding="utf-8")
        tmp.replace(out)
    return ids, dropped


@dataclass
class ResumableRun(Generic[Item]):
    """Run ``produce`` over items in batches, appending finished records to ``out``.

    Args:
        out: the output JSONL file (appended to; read first to skip finished ids).
        key: an item's id (the ``id`` its output record will carry).
        produce: ``(batch, attempt) -> [Outcome per item]``.
        log: where rejected outputs go (default ``OUT.log.jsonl``).
    """

    out: Path
    key: Callable[[Item], str]
    produce: Callable[[list[Item], int], list[Outcome]]
    batch_size: int = 8
    max_retries: int = 2
    log: Path | None = None
    progress: bool = True
    desc: str = "generate"

    def run(self, items: Sequence[Item]) -> RunReport:
        out = Path(self.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        log = Path(self.log) if self.log else out.with_name(out.name + ".log.jsonl")
        done_ids, dropped = finished_ids(out)
        report = RunReport(out=out, log=log, total=len(items), dropped_partial_lines=dropped)
        pending = [item for item in items if self.key(item) not in done_ids]
        report.skipped = len(items) - len(pending)
        bar = tqdm(total=len(pending), desc=self.desc, unit="item", disable=not self.progress)
        try:
            with out.open("a", encoding="utf-8") as sink, log.open("a", encoding="utf-8") as log_sink:
                for attempt in range(self.max_retries + 1):
                    retry: list[Item] = []
                    for start in range(0, len(pending), self.batch_size):
                        batch = list(pending[start : start + self.batch_size])
                        outcomes = self.produce(batch, attempt)
                        if len(outcomes) != len(batch):
                            raise RuntimeError(f"produce returned {len(outcomes)} outcomes for {len(batch)} items")
                        for item, outcome in zip(batch, outcomes):
                            if outcome.record is not None:
                                sink.write(json.dumps(outcome.record, ensure_ascii=False) + "\n")
                                report.done += 1
                                bar.update(1)
                                continue
                            report.rejected_outputs += 1
                            log_sink.write(json.dumps({"id": self.key(item), "attempt": attempt, "output": outcome.output,
                                                       "reason": outcome.reason}, ensure_ascii=False) + "\n")  # fmt: skip
                            retry.append(item)
                        sink.flush()
                        log_sink.flush()
                        os.fsync(sink.fileno())
                    pending = retry
                    if not pending:
                        break
                report.failed = [self.key(item) for item in pending]
                bar.update(len(pending))
        finally:
            bar.close()
        return report
