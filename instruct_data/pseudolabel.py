"""Pseudo-labelling (Lialin et al., section 3.1): label videos that have no text with an image captioner.

Following the paper, a video is cut into chunks (8 s there) and the centre frame of each chunk
is captioned by an image-caption model; a clip shorter than a chunk gets its centre frame's
caption. A video of several chunks gets one label made from its frame captions, either joined in
order ("..., then ...") or summarised by an LLM (``combine="llm"``). Every frame caption is kept
in ``meta.pseudolabel`` with its time.

The image captioner is anything with ``caption(images) -> [Generated]``; the natural one here is
the project's own :class:`~mico_chat.api.ChatModel` asked about an image
(:class:`ChatModelCaptioner`). Runs are batched, resumable and retried like omni-captioning.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .llm import ChatModelGenerator, Generated, SamplingSettings, TextGenerator
from .omni_caption import clean_sentence
from .pipeline import Outcome, ResumableRun, RunReport
from .records import Record

IMAGE_PROMPT = "Describe this image in one sentence."
COMBINE_PROMPT = (
    "These sentences describe frames taken in order from one video:\n{frames}\n\n"
    "Write one sentence that describes the whole video, including what changes over time. Use only "
    "the facts above. Reply with the sentence only."
)


class ImageCaptioner(Protocol):
    """Captions images (``(H, W, 3)`` uint8 RGB arrays), one :class:`Generated` each."""

    name: str

    def caption(self, images: Sequence[np.ndarray], *, attempt: int = 0) -> list[Generated]: ...


class ChatModelCaptioner:
    """An image captioner made of a :class:`~mico_chat.api.ChatModel` and a prompt."""

    def __init__(self, chat: Any, prompt: str = IMAGE_PROMPT, settings: SamplingSettings = SamplingSettings(max_new_tokens=48)):
        self.generator = ChatModelGenerator(chat, settings)
        self.prompt = prompt
        self.name = self.generator.name

    def caption(self, images: Sequence[np.ndarray], *, attempt: int = 0) -> list[Generated]:
        conversations = [
            [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": self.prompt}]}]
            for image in images
        ]
        return self.generator.generate(conversations, attempt=attempt)


@dataclass(frozen=True)
class PseudoLabelConfig:
    """How frames are chosen and captions combined.

    Args:
        chunk_s: chunk length; one frame (the chunk's centre) per chunk (Lialin et al.: 8 s).
        max_frames: at most this many chunks per video (longer videos get longer chunks).
        combine: ``join`` (frame captions in order), ``llm`` (summarised by a text generator) or
            ``auto`` (``llm`` when a text generator is given).
        min_words, max_words: accepted caption length (frame captions and the combined label).
    """

    chunk_s: float = 8.0
    max_frames: int = 4
    combine: str = "auto"
    batch_size: int = 8
    max_retries: int = 2
    min_words: int = 3
    max_words: int = 60

    def __post_init__(self) -> None:
        if self.combine not in ("auto", "join", "llm"):
            raise ValueError(f"combine must be auto, join or llm, got {self.combine!r}")
        if self.chunk_s <= 0 or self.max_frames < 1:
            raise ValueError("chunk_s must be > 0 and max_frames >= 1")


def num_chunks(duration_s: float | None, config: PseudoLabelConfig) -> int:
    """Chunks (= frames captioned) for a video of ``duration_s`` seconds (1 when unknown)."""
    if not duration_s or duration_s <= 0:
        return 1
    return max(1, min(config.max_frames, math.ceil(duration_s / config.chunk_s - 1e-9)))


def join_captions(captions: Sequence[str]) -> str:
    """Frame captions in order as one sentence, repeated neighbours merged: ``"A ..., then b ..."``."""
    kept = [c.strip().rstrip(".") for i, c in enumerate(captions) if i == 0 or c.strip() != captions[i - 1].strip()]
    text = ", then ".join([kept[0], *[k[0].lower() + k[1:] for k in kept[1:]]])
    return text + "."


def _frames(record: Record, media_root: Path | None, config: PseudoLabelConfig) -> tuple[list[np.ndarray], list[float]]:
    from mico_chat.media import load_image, load_video, probe

    for ref in record.media:
        path = str(ref.resolve(media_root))
        if ref.modality.value == "video":
            start, end = ref.start or 0.0, ref.end
            duration = (end if end is not None else probe(path).duration_s or 0.0) - start
            clip = load_video(path, num_chunks(duration, config), start_s=start, end_s=end)
            return list(clip.frames), [float(t) for t in clip.timestamps]
        if ref.modality.value == "image":
            return [load_image(path)], [0.0]
    raise ValueError("the record has no video or image to label")


def pseudolabel(
    records: Sequence[Record],
    out: str | os.PathLike,
    captioner: ImageCaptioner,
    *,
    combiner: TextGenerator | None = None,
    media_root: str | os.PathLike | None = None,
    config: PseudoLabelConfig = PseudoLabelConfig(),
    log: str | os.PathLike | None = None,
    progress: bool = True,
) -> RunReport:
    """Write each record with a pseudo-label as ``captions.vision`` to ``out`` (JSONL), resumably.

    Records need a video (or image) media item; their other captions are kept.
    """
    from mico_chat.media import MediaError

    combine = config.combine if config.combine != "auto" else ("llm" if combiner is not None else "join")
    if combine == "llm" and combiner is None:
        raise ValueError("combine='llm' needs a text generator (combiner=...)")
    root = Path(media_root) if media_root is not None else None

    def produce(batch: list[Record], attempt: int) -> list[Outcome]:
        frames: dict[int, tuple[list[np.ndarray], list[float]]] = {}
        outcomes: dict[int, Outcome] = {}
        for i, record in enumerate(batch):
            try:
                frames[i] = _frames(record, root, config)
            except (MediaError, ValueError) as err:
                outcomes[i] = Outcome(None, None, f"cannot read frames: {err}")
        flat = [(i, k) for i in frames for k in range(len(frames[i][0]))]
        captions = captioner.caption([frames[i][0][k] for i, k in flat], attempt=attempt) if flat else []
        per_record: dict[int, list[str | None]] = {i: [] for i in frames}
        reasons: dict[int, str] = {}
        for (i, _), gen in zip(flat, captions):
            sentence, reason = (None, gen.error or "no output") if gen.text is None else clean_sentence(
                gen.text, min_words=config.min_words, max_words=config.max_words)  # fmt: skip
            per_record[i].append(sentence)
            if sentence is None:
                reasons.setdefault(i, f"frame caption rejected: {reason} ({gen.text!r})")
        for i in frames:
            if i in reasons:
                outcomes[i] = Outcome(None, None, reasons[i])
        ready = [i for i in frames if i not in reasons]
        labels: dict[int, tuple[str | None, str]] = {}
        for i in ready:
            if len(per_record[i]) == 1:
                labels[i] = (per_record[i][0], "single frame")
            elif combine == "join":
                labels[i] = (join_captions(per_record[i]), "join")
        to_combine = [i for i in ready if i not in labels]
        if to_combine:
            prompts = [[{"role": "user", "content": COMBINE_PROMPT.format(
                frames="\n".join(f"{k + 1}. {c}" for k, c in enumerate(per_record[i])))}] for i in to_combine]  # fmt: skip
            for i, gen in zip(to_combine, combiner.generate(prompts, attempt=attempt)):
                sentence, reason = (None, gen.error or "no output") if gen.text is None else clean_sentence(
                    gen.text, min_words=config.min_words, max_words=config.max_words)  # fmt: skip
                labels[i] = (sentence, f"llm:{combiner.name}") if sentence else (None, f"combined label rejected: {reason}")
                if sentence is None:
                    outcomes[i] = Outcome(None, gen.text, labels[i][1])
        for i in ready:
            label, how = labels[i]
            if label is None:
                continue
            data = batch[i].to_json()
            data["captions"] = {**data.get("captions", {}), "vision": label}
            data["meta"] = {**data.get("meta", {}), "pseudolabel": {
                "captioner": captioner.name, "combine": how,
                "frames": [{"time_s": round(t, 3), "caption": c} for t, c in zip(frames[i][1], per_record[i])]}}  # fmt: skip
            outcomes[i] = Outcome(data)
        return [outcomes[i] for i in range(len(batch))]

    runner = ResumableRun(out=Path(out), key=lambda r: r.id, produce=produce, batch_size=config.batch_size,
                          max_retries=config.max_retries, log=Path(log) if log else None, progress=progress,
                          desc="pseudo-labels")  # fmt: skip
    return runner.run(list(records))


VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v")


def records_from_folder(folder: str | os.PathLike, suffixes: Sequence[str] = VIDEO_SUFFIXES) -> list[Record]:
    """Unlabelled video records for every video under ``folder`` (ids: relative paths without suffix).

    Their media paths are relative to ``folder``, which is then the media root. They carry no text
    yet, so they exist only in memory until :func:`pseudolabel` gives them a caption.
    """
    from mico_chat.modality import Modality
    from .records import MediaRef

    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    return [Record(str(p.relative_to(root).with_suffix("")), (MediaRef(Modality.VIDEO, str(p.relative_to(root))),)) for p in files]
