"""Modalities MiCo-Chat understands, and the placeholder token each one uses in a prompt."""

from __future__ import annotations

import enum


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
