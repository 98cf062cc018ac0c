"""Instruction data from caption records: conversations by templates, and optionally LLM-written ones.

Templates give the kinds of questions evaluators ask, each answerable from the caption alone:

============  ==========================================================================================
description   "Describe this clip in detail." -> the richest caption (omni, else vision, else audio)
open          a short open question about the picture or the sound -> that caption
yesno         "Does this sentence describe the clip? ..." -> yes (its own caption) or no (another
              item's caption of the same kind)
mc            "Which sentence describes the clip?" with lettered options -> the letter of its caption
============  ==========================================================================================

Negatives come from other items (``meta.item`` when converters set it, else the record id), so a
dataset with several captions per item never offers a true caption as a wrong option. Choices are
drawn from a generator seeded per record: the same input and seed give the same output.

``rewrite`` is the LLaVA-style alternative: an LLM reads the captions and writes a short
conversation about the clip (``Q:``/``A:`` lines), parsed, checked, retried and logged like the
other pipelines (:mod:`.pipeline`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .llm import TextGenerator
from .omni_caption import META_WORDS, REFUSAL
from .pipeline import Outcome, ResumableRun, RunReport
from .records import Record

KINDS = ("description", "open", "yesno", "mc")
OPEN_SUFFIX = "Answer the question using a single word or phrase."
MC_SUFFIX = "Answer with the option's letter from the given choices directly."
YESNO_SUFFIX = "Answer yes or no."

DESCRIBE = {
    "clip": ("Describe this clip in detail, both what you see and what you hear.",
             "What happens in this clip? Describe the picture and the sound.",
             "Give a detailed description of this video and its sound."),
    "video": ("Describe this video in detail.", "What happens in this video?", "Give a detailed description of the video."),
    "image": ("Describe this image in detail.", "What does this image show?", "Give a detailed description of the picture."),
    "audio": ("Describe what you hear in detail.", "What does this recording sound like?", "Describe the sounds in this audio."),
}  # fmt: skip
OPEN = {
    "vision": ("What can you see?", "What is shown?", "What is happening in the picture?"),
    "audio": ("What can you hear?", "What sound is there?", "What does it sound like?"),
    "omni": ("What is happening, and what does it sound like?", "What can you see and hear?"),
    "subtitle": ("What is said?", "What words are spoken?"),
}  # fmt: skip
THING = {"clip": "clip", "video": "video", "image": "image", "audio": "recording"}


@dataclass(frozen=True)
class InstructConfig:
    """Which template kinds to make, how many per caption record, and the seed."""

    kinds: tuple[str, ...] = KINDS
    per_record: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(KINDS)
        if unknown or not self.kinds:
            raise ValueError(f"kinds must be among {', '.join(KINDS)}, got {list(self.kinds)}")
        if self.per_record < 1:
            raise ValueError(f"per_record must be >= 1, got {self.per_record}")


def _view(record: Record) -> str:
    modalities = {m.modality.value for m in record.media}
    if "video" in modalities:
        return "clip" if "audio" in modalities else "video"
    if "image" in modalities:
        return "image"
    if "audio" in modalities:
        return "audio"
    return "video"


def _prefix(record: Record) -> str:
    return "".join(f"{m.modality.placeholder}\n" for m in record.media)


def _item(record: Record) -> str:
    return str(record.meta.get("item", record.id))


def _richest(record: Record) -> tuple[str, str] | None:
    for kind in ("omni", "vision", "audio", "subtitle"):
        if record.captions.get(kind):
            return kind, record.captions[kind]
    return None


def make_instructions(records: Sequence[Record], config: InstructConfig = InstructConfig()) -> list[dict[str, Any]]:
    """Template conversations (record JSON dicts) for every caption record with media and a caption."""
    pool: dict[str, list[tuple[str, str]]] = {}  # caption kind -> [(item, caption)] for negatives
    usable = [r for r in records if r.media and _richest(r)]
    for record in usable:
        for kind, text in record.captions.items():
            pool.setdefault(kind, []).append((_item(record), text))
    out = []
    for index, record in enumerate(usable):
        rng = np.random.default_rng([config.seed, index])
        view, prefix = _view(record), _prefix(record)
        kinds = [config.kinds[i] for i in rng.permutation(len(config.kinds))]
        made = 0
        for kind in kinds * config.per_record:
            if made >= config.per_record:
                break
            built = _build(kind, record, view, pool, rng)
            if built is None:
                continue
            question, answer, meta = built
            out.append({
                "id": f"{record.id}-{kind}-{made}",
                "media": record.to_json()["media"],
                "messages": [{"role": "user", "content": prefix + question}, {"role": "assistant", "content": answer}],
                "meta": {"source_id": record.id, "item": _item(record), "kind": kind, **meta},
            })  # fmt: skip
            made += 1
    return out


def _pick(rng: np.random.Generator, values: Sequence[Any]) -> Any:
    return values[int(rng.integers(len(values)))]


def _negatives(kind: str, item: str, pool: dict[str, list[tuple[str, str]]], rng: np.random.Generator, k: int) -> list[str]:
    candidates = sorted({text for owner, text in pool.get(kind, []) if owner != item})
    return [candidates[i] for i in rng.permutation(len(candidates))[:k]]


def _build(kind: str, record: Record, view: str, pool, rng) -> tuple[str, str, dict[str, Any]] | None:
    cap_kind, caption = _richest(record)
    if kind == "description":
        return _pick(rng, DESCRIBE[view]), caption, {"answer": caption, "caption_kind": cap_kind}
    if kind == "open":
        cap_kind = _pick(rng, sorted(record.captions))
        return f"{_pick(rng, OPEN[cap_kind])}", record.captions[cap_kind], {"answer": record.captions[cap_kind], "caption_kind": cap_kind}
    if kind == "yesno":
        truth = bool(rng.integers(2))
        text = caption if truth else next(iter(_negatives(cap_kind, _item(record), pool, rng, 1)), None)
        if text is None:
            return None
        question = f'Does this sentence describe the {THING[view]}? "{text}"\n{YESNO_SUFFIX}'
        answer = "yes" if truth else "no"
        return question, answer, {"answer": answer, "caption_kind": cap_kind}
    if kind == "mc":
        wrong = _negatives(cap_kind, _item(record), pool, rng, 3)
        if len(wrong) < 2:
            return None
        options = [caption, *wrong]
        options = [options[i] for i in rng.permutation(len(options))]
        letter = "ABCD"[options.index(caption)]
        lines = "\n".join(f"{'ABCD'[i]}. {o}" for i, o in enumerate(options))
        question = f"Which sentence describes the {THING[view]}?\n{lines}\n{MC_SUFFIX}"
        return question, letter, {"answer": letter, "options": options, "caption_kind": cap_kind}
    raise ValueError(f"unknown kind {kind!r}")


# ----------------------------------------------------------------------------------- LLM rewriting
REWRITE_SYSTEM = "You are an assistant that can see and hear video clips, and you talk about them precisely."
REWRITE_INSTRUCTION = (
    "Write a short conversation in which a person asks about this {thing} and you answer as someone who is "
    "watching and listening to it. Ask {n} different questions (about objects, actions, sounds, counts, order "
    "of events), each with a definite answer in the facts above; answer confidently and never mention "
    "descriptions or captions. Use exactly this format, one line each:\nQ: <question>\nA: <answer>"
)
QA_LINE = re.compile(r"^\s*(?:\d+[.)]\s*)?(Q|A|Question|Answer)\s*[:：]\s*(.+?)\s*$", re.IGNORECASE)


def rewrite_prompt(record: Record, turns: int = 3) -> list[dict[str, str]]:
    facts = "\n".join(f"- {kind}: {text}" for kind, text in sorted(record.captions.items()))
    thing = THING[_view(record)]
    user = f"Facts about a {thing}:\n{facts}\n\n" + REWRITE_INSTRUCTION.format(thing=thing, n=turns)
    return [{"role": "system", "content": REWRITE_SYSTEM}, {"role": "user", "content": user}]


def parse_qa(text: str, *, min_pairs: int = 1) -> tuple[list[tuple[str, str]] | None, str]:
    """``([(question, answer), ...], "")`` from ``Q:``/``A:`` lines, or ``(None, reason)``."""
    pairs: list[tuple[str, str]] = []
    question = None
    for line in (text or "").splitlines():
        match = QA_LINE.match(line)
        if not match:
            continue
        tag, body = match.group(1).lower()[0], match.group(2)
        if tag == "q":
            question = body
        elif question is not None:
            pairs.append((question, body))
            question = None
    if len(pairs) < min_pairs:
        return None, f"{len(pairs)} question-answer pairs; need at least {min_pairs}"
    for q, a in pairs:
        if not q.endswith("?"):
            return None, f"not a question: {q!r}"
        if META_WORDS.search(a) or REFUSAL.search(a):
            return None, f"answer talks about its sources or refuses: {a!r}"
    return pairs, ""


def rewrite(
    records: Sequence[Record],
    out: str | os.PathLike,
    generator: TextGenerator,
    *,
    turns: int = 3,
    batch_size: int = 8,
    max_retries: int = 2,
    log: str | os.PathLike | None = None,
    progress: bool = True,
) -> RunReport:
    """LLaVA-style: an LLM turns each caption record into a multi-turn conversation, written to ``out``."""
    usable = [r for r in records if r.media and r.captions]

    def produce(batch: list[Record], attempt: int) -> list[Outcome]:
        outcomes = []
        for record, gen in zip(batch, generator.generate([rewrite_prompt(r, turns) for r in batch], attempt=attempt)):
            if gen.text is None:
                outcomes.append(Outcome(None, None, gen.error))
                continue
            pairs, reason = parse_qa(gen.text)
            if pairs is None:
                outcomes.append(Outcome(None, gen.text, reason))
                continue
            messages = []
            for i, (q, a) in enumerate(pairs):
                messages += [{"role": "user", "content": (_prefix(record) if i == 0 else "") + q}, {"role": "assistant", "content": a}]
            outcomes.append(Outcome({"id": f"{record.id}-llm", "media": record.to_json()["media"], "messages": messages,
                                     "meta": {"source_id": record.id, "item": _item(record), "kind": "llm", "model": generator.name}}))  # fmt: skip
        return outcomes

    runner = ResumableRun(out=Path(out), key=lambda r: f"{r.id}-llm", produce=produce, batch_size=batch_size,
                          max_retries=max_retries, log=Path(log) if log else None, progress=progress, desc="rewrite")  # fmt: skip
    return runner.run(usable)
