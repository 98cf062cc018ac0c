"""Multimodal context construction helpers (MiCo eq. 1-3, VAST modality grouping).

- A *modality group* is the set of modalities one training sample (or one retrieval query side)
  presents together: ``("video",)``, ``("audio",)``, ``("audio", "video")``. VAST's modality
  grouping (its eq. 5) trains every group with the caption that fits it (vision, audio or omni
  captions), so vision-only, audio-only and audio-visual inputs all align with text. A group of two
  or more modalities is encoded as one multimodal context: the encoder concatenates their token
  sequences (shared position embeddings, modality and context embeddings; MiCo eq. 1).
- On the text side the captions of a context are concatenated into one sequence whose position
  embeddings are shared (MiCo eq. 2): :func:`join_captions`.
- Cross-dataset joint sampling (MiCo eq. 3) draws the members of a context from different
  datasets and marks the combination with a sampling-context id; the encoder and the text tower
  each add a learned embedding of that id.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mico_chat.modality import Modality


def parse_group(group: str | Iterable[str | Modality]) -> tuple[Modality, ...]:
    """``"audio+video"`` or ``["video", "audio"]`` -> ``(Modality.AUDIO, Modality.VIDEO)`` (sorted, unique)."""
    names = group.split("+") if isinstance(group, str) else list(group)
    if not names or any(str(n).strip() == "" for n in names):
        raise ValueError(f"empty modality group {group!r}")
    mods = {Modality.parse(str(n).strip() if isinstance(n, str) else n) for n in names}
    if len(mods) != len(names):
        raise ValueError(f"modality group {group!r} names a modality twice")
    return tuple(sorted(mods, key=lambda m: m.value))


def group_key(group: Sequence[Modality]) -> str:
    """The canonical name of a group: modality names sorted and joined by ``+`` (``"audio+video"``)."""
    return "+".join(m.value for m in sorted(group, key=lambda m: m.value))


def join_captions(captions: Sequence[str]) -> str:
    """Concatenate the captions of one multimodal context into one text (MiCo eq. 2, Algorithm 1).

    Each caption keeps its own sentence; empty captions are dropped; a caption that does not end
    with sentence punctuation gets a full stop so the parts stay readable as one description.
    """
    parts = []
    for caption in captions:
        text = " ".join(caption.split())
        if not text:
            continue
        parts.append(text if text[-1] in ".!?" else text + ".")
    if not parts:
        raise ValueError("no non-empty caption to join")
    return " ".join(parts)
