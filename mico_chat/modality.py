"""Modalities MiCo-Chat understands, their placeholder tokens, and how their tokens are laid out.

A modality is one kind of media input. Each one has
- a placeholder token (``<video>``) that marks where its features go in a prompt,
- an *input kind*: which patch embedding of the omni-modal encoder reads it (video frames and
  images share the RGB patch embedding; audio spectrograms, depth and normal maps have their own),
- a :class:`MediaLayout`: how many segments (frames, audio clips) and patches per segment the
  encoder emits, so the processor knows the token count before any tensor exists.

Adding a modality means adding a member here, its :data:`INPUT_KINDS` entry, a preprocessing
entry in :mod:`mico_chat.processing` and, if it is a new input kind, a patch embedding.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class Modality(str, enum.Enum):
    """A kind of media input. The value is the name used in configs, records and messages."""

    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"
    DEPTH = "depth"
    NORMAL = "normal"

    @property
    def placeholder(self) -> str:
        """The special token that marks where this media goes in a prompt, e.g. ``<video>``."""
        return f"<{self.value}>"

    @property
    def input_kind(self) -> str:
        """Which patch embedding of the encoder reads this modality (see :data:`INPUT_KINDS`)."""
        return INPUT_KINDS[self]

    @classmethod
    def parse(cls, value: str | Modality) -> Modality:
        """``Modality.parse("video") -> Modality.VIDEO``; an unknown name raises ``ValueError``."""
        if isinstance(value, Modality):
            return value
        try:
            return cls(value)
        except ValueError:
            known = ", ".join(m.value for m in cls)
            raise ValueError(f"unknown modality {value!r}; known modalities: {known}") from None

    def __str__(self) -> str:  # so f-strings and YAML dumps show "video", not "Modality.VIDEO"
        return self.value


# Input kind -> number of channels its patch embedding reads.
INPUT_CHANNELS: dict[str, int] = {"rgb": 3, "audio": 1, "depth": 1, "normal": 3}

def find_placeholders(text: str, modalities: Iterable[Modality] = tuple(Modality)) -> list[Modality]:
    """The media placeholders in ``text``, in order of appearance: ``"<video> and <audio>"`` ->
    ``[VIDEO, AUDIO]``."""
    hits = []
    for modality in modalities:
        token = modality.placeholder
        start = text.find(token)
        while start != -1:
            hits.append((start, modality))
            start = text.find(token, start + len(token))
    return [m for _, m in sorted(hits, key=lambda hit: hit[0])]


INPUT_KINDS: dict[Modality, str] = {
    Modality.IMAGE: "rgb",
    Modality.VIDEO: "rgb",
    Modality.AUDIO: "audio",
    Modality.DEPTH: "depth",
    Modality.NORMAL: "normal",
}


@dataclass(frozen=True)
class MediaLayout:
    """Token layout of one media item as the encoder emits it.

    The encoder turns an item into ``num_segments`` segments (video frames, audio clips; 1 for an
    image or a map), each ``[CLS] + grid_h * grid_w`` patch tokens, concatenated:
    features of shape ``(num_segments * tokens_per_segment, hidden)``.
    """

    num_segments: int
    grid_h: int
    grid_w: int

    @property
    def num_patches(self) -> int:
        return self.grid_h * self.grid_w

    @property
    def tokens_per_segment(self) -> int:
        return 1 + self.num_patches

    @property
    def num_tokens(self) -> int:
        return self.num_segments * self.tokens_per_segment
