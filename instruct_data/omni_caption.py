"""Omni-modality captions (VAST section 3.1): an LLM merges a clip's vision captions, audio captions
and subtitle into one natural caption.

As in VAST, the LLM is a zero-shot *omni-modality captioner*: it gets the single-modality captions
(up to three of each kind, VAST samples three vision and three audio captions per clip), the raw
subtitle, and an instruction to write one sentence in a human captioning style that covers
picture, sound and speech, invents nothing and never talks about its inputs. The wording here is
this project's own.

Input: caption records (``captions.vision`` / ``captions.audio`` / ``captions.subtitle``; more
captions of a kind may be listed in ``meta.vision_captions`` / ``meta.audio_captions``). A record
with no vision caption can be pseudo-labelled first (:mod:`.pseudolabel`). Output: the same
records with ``captions.omni`` written by the LLM (``meta.omni_caption`` names the model).
The run is batched and resumable with bounded retries (:mod:`.pipeline`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .llm import Messages, TextGenerator
from .pipeline import Outcome, ResumableRun, RunReport
from .records import BadRecord, Record, read_numbered_records

SYSTEM = "You write short, factual captions for video clips."
INSTRUCTION = (
    "Write one fluent sentence that captions this clip the way a person would, combining what can be seen, "
    "what can be heard and what is said. Use only the facts above and add nothing else. Do not mention "
    "captions, descriptions or subtitles, and do not start with 'The clip shows'. Reply with the sentence only."
)
META_WORDS = re.compile(r"\b(captions?|subtitles?|descriptions?|transcripts?)\b", re.IGNORECASE)
REFUSAL = re.compile(r"\b(i'?m sorry|i cannot|i can't|as an ai|language model|unable to)\b", re.IGNORECASE)
LABEL = re.compile(r"^\s*(sure[^:\n]*:|here is[^:\n]*:|here's[^:\n]*:|omni[- ]?(modality )?caption\s*:|caption\s*:|sentence\s*:)\s*", re.IGNORECASE)


@dataclass(frozen=True)
class OmniCaptionConfig:
    """Batching, retries and the checks an output must pass.

    Args:
        max_per_kind: at most this many vision / audio captions go into a prompt (VAST: 3).
        min_words, max_words: accepted sentence length.
        min_grounding: share of the output's content words that must occur in the inputs (an
            output mostly made of new words is invented, and rejected).
        fallback: ``none`` (leave failed clips for a rerun) or ``concat`` (write the captions
            joined, VAST's "w/o LLM" baseline, marked in ``meta.omni_caption``).
    """

    batch_size: int = 8
    max_retries: int = 2
    max_per_kind: int = 3
    min_words: int = 5
    max_words: int = 80
    min_grounding: float = 0.5
    fallback: str = "none"

    def __post_init__(self) -> None:
        if self.fallback not in ("none", "concat"):
            raise ValueError(f"fallback must be 'none' or 'concat', got {self.fallback!r}")


def caption_inputs(record: Record, max_per_kind: int = 3) -> dict[str, list[str]]:
    """``{"vision": [...], "audio": [...], "subtitle": [...]}`` of a caption record (empty lists allowed)."""
    out: dict[str, list[str]] = {}
    for kind in ("vision", "audio"):
        texts = [record.captions[kind]] if record.captions.get(kind) else []
        extra = record.meta.get(f"{kind}_captions", [])
        texts += [t for t in extra if isinstance(t, str) and t.strip() and t not in texts]
        out[kind] = texts[:max_per_kind]
    out["subtitle"] = [record.captions["subtitle"]] if record.captions.get("subtitle") else []
    return out


def omni_prompt(inputs: Mapping[str, Sequence[str]]) -> list[dict[str, str]]:
    """The chat messages asking for one clip's omni caption."""
    parts = ["Here is what is known about one video clip."]
    for kind, title in (("vision", "What can be seen"), ("audio", "What can be heard")):
        if inputs.get(kind):
            parts.append(f"{title}:\n" + "\n".join(f"- {t.strip()}" for t in inputs[kind]))
    if inputs.get("subtitle"):
        parts.append(f'What is said: "{inputs["subtitle"][0].strip()}"')
    parts.append(INSTRUCTION)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


STOPWORDS = frozenset(
    "about above after again also along among another around audio before being below between both clip clips during "
    "each from have having here into just more most much near other over same shown shows some such than that their "
    "them then there these they this those through very video what when where which while with within without would "
    "your".split()
)


def content_words(text: str) -> set[str]:
    """Lower-case words of 4+ letters that carry content, cut to 5 letters (so "moves" meets "moving")."""
    return {w[:5] for w in re.findall(r"[a-z]{4,}", text.lower()) if w not in STOPWORDS}


def grounded(sentence: str, inputs: Mapping[str, Sequence[str]], min_share: float = 0.5) -> tuple[bool, str]:
    """Whether at least ``min_share`` of the sentence's content words occur in the inputs (no invention)."""
    words = content_words(sentence)
    known = content_words(" ".join(t for texts in inputs.values() for t in texts))
    if not words:
        return False, "no content words"
    share = len(words & known) / len(words)
    if share < min_share:
        return False, f"only {share:.0%} of its content words come from the inputs ({sorted(words - known)[:6]} are new)"
    return True, ""


def clean_sentence(text: str, *, min_words: int, max_words: int) -> tuple[str | None, str]:
    """``(sentence, "")`` when ``text`` is an acceptable caption, else ``(None, reason)``.

    Accepted: after stripping a leading label ("Caption:", "Sure, here is ...:") and quotes, the
    first non-empty line has ``min_words``..``max_words`` words, is mostly letters, does not talk
    about captions/subtitles, and is no refusal.
    """
    lines = [ln.strip() for ln in LABEL.sub("", text or "").splitlines() if ln.strip()]
    if not lines:
        return None, "empty output"
    sentence = lines[0].strip().strip('"“”\'').strip()
    words = sentence.split()
    if not min_words <= len(words) <= max_words:
        return None, f"{len(words)} words; accepted {min_words}-{max_words}"
    letters = sum(ch.isalpha() or ch.isspace() for ch in sentence)
    if letters < 0.8 * len(sentence):
        return None, "not mostly words (symbols or code)"
    if REFUSAL.search(sentence):
        return None, "a refusal, not a caption"
    if META_WORDS.search(sentence):
        return None, "talks about its inputs (captions/subtitles) instead of the clip"
    if sentence[-1] not in ".!?":
        sentence += "."
    return sentence[0].upper() + sentence[1:], ""


def concat_caption(inputs: Mapping[str, Sequence[str]]) -> str:
    """VAST's "w/o LLM" baseline: the first vision caption, audio caption and subtitle, joined."""
    parts = [inputs[k][0].strip().rstrip(".") for k in ("vision", "audio") if inputs.get(k)]
    if inputs.get("subtitle"):
        parts.append(f'someone says "{inputs["subtitle"][0].strip()}"')
    return ". ".join(p[0].upper() + p[1:] for p in parts if p) + "."


def read_caption_records(path: str | os.PathLike) -> tuple[list[Record], list[BadRecord]]:
    """Records of ``path`` split into usable ones and bad lines (reported, never fatal)."""
    good, bad = [], []
    for _, item in read_numbered_records(path):
        (bad if isinstance(item, BadRecord) else good).append(item)
    return good, bad


def generate_omni_captions(
    records: Sequence[Record],
    out: str | os.PathLike,
    generator: TextGenerator,
    config: OmniCaptionConfig = OmniCaptionConfig(),
    *,
    log: str | os.PathLike | None = None,
    progress: bool = True,
) -> RunReport:
    """Write each record with an LLM-written ``captions.omni`` to ``out`` (JSONL), resumably.

    Records with neither a vision nor an audio caption nor a subtitle cannot be captioned and are
    reported as failed. With ``fallback="concat"``, clips whose outputs were all rejected get
    the concatenation instead (a final attempt that cannot fail).
    """
    concat_attempt = config.max_retries + 1 if config.fallback == "concat" else None

    def produce(batch: list[Record], attempt: int) -> list[Outcome]:
        inputs = [caption_inputs(r, config.max_per_kind) for r in batch]
        usable = [i for i, x in enumerate(inputs) if any(x.values())]
        if attempt == concat_attempt:
            return [_finished(r, concat_caption(x), "concat (LLM outputs rejected)") if any(x.values())
                    else Outcome(None, None, "no captions to combine") for r, x in zip(batch, inputs)]  # fmt: skip
        generated = generator.generate([omni_prompt(inputs[i]) for i in usable], attempt=attempt) if usable else []
        results = {i: g for i, g in zip(usable, generated)}
        outcomes = []
        for i, record in enumerate(batch):
            if i not in results:
                outcomes.append(Outcome(None, None, "no vision/audio caption or subtitle to combine"))
                continue
            gen = results[i]
            if gen.text is None:
                outcomes.append(Outcome(None, None, gen.error))
                continue
            sentence, reason = clean_sentence(gen.text, min_words=config.min_words, max_words=config.max_words)
            if sentence is not None:
                ok, why = grounded(sentence, inputs[i], config.min_grounding)
                sentence, reason = (sentence, "") if ok else (None, why)
            outcomes.append(_finished(record, sentence, generator.name) if sentence else Outcome(None, gen.text, reason))
        return outcomes

    runner = ResumableRun(
        out=Path(out), key=lambda r: r.id, produce=produce, batch_size=config.batch_size,
        max_retries=config.max_retries if concat_attempt is None else concat_attempt,
        log=Path(log) if log else None, progress=progress, desc="omni captions",
    )  # fmt: skip
    return runner.run(list(records))


def _finished(record: Record, omni: str, source: str) -> Outcome:
    data: dict[str, Any] = record.to_json()
    data["captions"] = {**data.get("captions", {}), "omni": omni}
    data["meta"] = {**data.get("meta", {}), "omni_caption": source}
    return Outcome(data)
