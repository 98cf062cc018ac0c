"""What a benchmark hands the runner (:class:`EvalItem`) and what comes back (:class:`Prediction`).

An item is one question to the model: its media, its prompt text, and the reference the scoring
needs. Items are plain data so that a prediction cache and results files can name them by ``id``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

MEDIA_KINDS = ("image", "video", "audio", "depth", "normal")


class ItemError(ValueError):
    """A benchmark's data folder or results file is missing something or malformed (names the file).

    Not :class:`mico_chat.training.DataError`, which is about training records.
    """


@dataclass(frozen=True)
class MediaInput:
    """One media input of an item: ``kind`` is a modality name; ``source`` a path or in-memory file bytes."""

    kind: str
    source: str | os.PathLike | bytes

    def __post_init__(self) -> None:
        if self.kind not in MEDIA_KINDS:
            raise ValueError(f"media kind must be one of {MEDIA_KINDS}, got {self.kind!r}")

    def part(self) -> dict[str, Any]:
        """The structured message part :class:`mico_chat.ChatModel` reads."""
        source = self.source if isinstance(self.source, bytes) else str(self.source)
        return {"type": self.kind, self.kind: source}


@dataclass(frozen=True)
class EvalItem:
    """One question to the model.

    Args:
        id: unique within the benchmark run; the prediction cache and result files key on it.
        prompt: the user's text, exactly as the model reads it (after the media).
        media: media inputs, placed before the text in one user turn.
        reference: what scoring needs (ground truth answer, options, captions, ...), JSON-able.
        meta: anything else worth keeping in outputs (subtask, category, file names).
    """

    id: str
    prompt: str
    media: tuple[MediaInput, ...] = ()
    reference: Any = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def messages(self, system: str | None = None) -> list[dict[str, Any]]:
        """One user turn (media parts, then the text), optionally after a system message."""
        content = [m.part() for m in self.media] + [{"type": "text", "text": self.prompt}]
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
        return messages + [{"role": "user", "content": content}]


@dataclass(frozen=True)
class Prediction:
    """The model's reply to one item, with what the cache records about how it was made."""

    id: str
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Prediction:
        return cls(
            id=str(data["id"]),
            text=str(data["text"]),
            prompt_tokens=int(data.get("prompt_tokens", 0)),
            completion_tokens=int(data.get("completion_tokens", 0)),
            finish_reason=str(data.get("finish_reason", "stop")),
        )


def check_unique_ids(items: Sequence[EvalItem], source: str) -> None:
    """Raise :class:`ItemError` naming ``source`` when two items share an id."""
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise ItemError(f"{source}: two items have the id {item.id!r}")
        seen.add(item.id)
