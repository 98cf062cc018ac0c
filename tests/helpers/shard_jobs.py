"""A deterministic :class:`~mico_chat.instruct_data.shards.ShardJob` for the sharded / Ray runs.

It runs the real omni-caption pipeline with a rule-based "LLM" that answers with the clip's
first vision caption (always grounded). Every prompt it answers is appended to a file per
process, so a test can tell which items a rerun redid; it can be told to fail some prompts on
the first attempt (retries) and to crash on one clip while a flag file exists (a killed run).
"""

from __future__ import annotations

import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

from mico_chat.instruct_data.omni_caption import OmniCaptionConfig, generate_omni_captions
from mico_chat.instruct_data.records import Record

from helpers.llm_stubs import ScriptedGenerator

SEEN = re.compile(r"What can be seen:\n- (.+)")


def first_vision_caption(prompt: str) -> str | None:
    match = SEEN.search(prompt)
    return match.group(1) if match else None


class Crash(RuntimeError):
    """Stands in for a worker killed mid-shard."""


@dataclass
class EchoOmniJob:
    """Omni captions by :func:`first_vision_caption`; answered prompts go to ``calls/<pid>.txt``.

    Args:
        calls: folder of the per-process call files.
        batch_size: the pipeline's batch size.
        reject_every: a prompt whose CRC32 % ``reject_every`` == 0 fails on attempt 0 (0: never).
        crash_on: a vision caption that raises :class:`Crash` while ``crash_flag`` exists.
    """

    calls: Path
    batch_size: int = 2
    reject_every: int = 0
    crash_on: str | None = None
    crash_flag: Path | None = None

    def setup(self) -> None:
        self.generator = ScriptedGenerator(self.respond)

    def key(self, record: Record) -> str:
        return record.id

    def respond(self, prompt: str, attempt: int) -> str | None:
        caption = first_vision_caption(prompt)
        if self.crash_on is not None and caption == self.crash_on and self.crash_flag and self.crash_flag.exists():
            raise Crash(f"crashed on {caption!r}")
        with (self.calls / f"{os.getpid()}.txt").open("a", encoding="utf-8") as handle:
            handle.write(f"{caption}\n")
        if self.reject_every and attempt == 0 and zlib.crc32(prompt.encode()) % self.reject_every == 0:
            return None
        return caption

    def run(self, records: list[Record], out: Path, log: Path | None):
        config = OmniCaptionConfig(batch_size=self.batch_size, max_retries=1)
        return generate_omni_captions(records, out, self.generator, config, log=log, progress=False)


def answered(calls: Path) -> list[str]:
    """Every caption the job's processes answered (all call files, in no particular order)."""
    return [line for f in sorted(calls.glob("*.txt")) for line in f.read_text(encoding="utf-8").splitlines()]
