"""The one record format for training and evaluation data.

A record is one JSON object (a line of a ``.jsonl`` file, or an element of a ``.json`` list)::

    {
      "id": "synth-000042",
      "media": [                                   # in the order of the placeholders
        {"modality": "video", "path": "clips/000042.mp4", "start": 0.0, "end": 4.0},
        {"modality": "audio", "path": "clips/000042.mp4"}
      ],
      "conversations": [                           # LLaVA style ...
        {"from": "human", "value": "<video>\n<audio>\nWhat colour is the square?"},
        {"from": "gpt", "value": "Red."}
      ],
      "captions": {"vision": "...", "audio": "...", "omni": "...", "subtitle": "..."},
      "meta": {...}                                # free-form (ground truth, source dataset, ...)
    }

``messages`` with OpenAI-style ``{"role", "content"}`` turns may replace ``conversations``.
LLaVA's shorthand ``"image": "x.jpg"`` / ``"video": "x.mp4"`` (a path or a list of paths) is
accepted in place of ``media``. Media paths are relative to a media root given when the records
are read. A *caption-pair* record (pretraining, stage-1 alignment) has ``media`` and ``captions``
and no conversation.

:func:`parse_record` checks the schema and the placeholders-versus-media agreement (not the
media files themselves: see the validator) and raises :class:`RecordError` naming the field.
:func:`read_records` yields a :class:`Record` or a :class:`BadRecord` per line, never stopping on
a bad one, so callers choose to skip-and-count or to stop (strict mode).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mico_chat.modality import Modality, find_placeholders

ROLE_FROM_LLAVA = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
CAPTION_KINDS = ("vision", "audio", "omni", "subtitle")
MEDIA_OPTIONS = ("start", "end", "num_frames")


class RecordError(ValueError):
    """A record that does not follow the format; the message names the field."""


@dataclass(frozen=True)
class MediaRef:
    """One media input of a record: modality, path (relative to the media root) and options."""

    modality: Modality
    path: str
    start: float | None = None
    end: float | None = None
    num_frames: int | None = None

    def options(self) -> dict[str, Any]:
        """Per-item options for the processor (time window)."""
        return {k: v for k, v in (("start", self.start), ("end", self.end)) if v is not None}

    def resolve(self, media_root: str | os.PathLike | None) -> Path:
        path = Path(self.path)
        return path if path.is_absolute() or media_root is None else Path(media_root) / path


@dataclass(frozen=True)
class Record:
    """A validated record: ``messages`` are ``{"role", "content"}`` dicts with string content."""

    id: str
    media: tuple[MediaRef, ...] = ()
    messages: tuple[Mapping[str, str], ...] = ()
    captions: Mapping[str, str] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_caption_pair(self) -> bool:
        return not self.messages

    def to_json(self) -> dict[str, Any]:
        """The canonical JSON form (``media`` list, OpenAI-style ``messages``)."""
        out: dict[str, Any] = {"id": self.id}
        if self.media:
            out["media"] = [
                {"modality": m.modality.value, "path": m.path, **{k: getattr(m, k) for k in MEDIA_OPTIONS if getattr(m, k) is not None}}
                for m in self.media
            ]
        if self.messages:
            out["messages"] = [dict(m) for m in self.messages]
        if self.captions:
            out["captions"] = dict(self.captions)
        if self.meta:
            out["meta"] = dict(self.meta)
        return out


@dataclass(frozen=True)
class BadRecord:
    """A line that could not be parsed: where it is and why."""

    source: str
    line: int
    reason: str
    id: str | None = None

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}"
        return f"{where}: {self.reason}" + (f" (id {self.id})" if self.id else "")


def _media(raw: Mapping[str, Any]) -> list[MediaRef]:
    items: list[MediaRef] = []
    if "media" in raw:
        media = raw["media"]
        if not isinstance(media, list):
            raise RecordError(f"'media' must be a list, got {type(media).__name__}")
        for i, item in enumerate(media):
            if not isinstance(item, Mapping):
                raise RecordError(f"media[{i}] must be an object")
            try:
                modality = Modality.parse(item.get("modality"))
            except ValueError as err:
                raise RecordError(f"media[{i}]: {err}") from None
            path = item.get("path")
            if not isinstance(path, str) or not path:
                raise RecordError(f"media[{i}] needs a non-empty 'path'")
            unknown = set(item) - {"modality", "path", *MEDIA_OPTIONS}
            if unknown:
                raise RecordError(f"media[{i}] has unknown keys {sorted(unknown)}")
            start, end, frames = item.get("start"), item.get("end"), item.get("num_frames")
            for name, value in (("start", start), ("end", end)):
                if value is not None and (
                    not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0
                ):
                    raise RecordError(f"media[{i}].{name} must be a number >= 0, got {value!r}")
            if start is not None and end is not None and end <= start:
                raise RecordError(f"media[{i}] has end {end} <= start {start}")
            if frames is not None and (not isinstance(frames, int) or isinstance(frames, bool) or frames < 1):
                raise RecordError(f"media[{i}].num_frames must be a positive integer, got {frames!r}")
            items.append(MediaRef(modality, path, start, end, frames))
    for modality in Modality:  # LLaVA shorthand: "image": "a.jpg" or ["a.jpg", "b.jpg"]
        if modality.value in raw:
            if "media" in raw:
                raise RecordError(f"give media either as 'media' or as '{modality.value}', not both")
            value = raw[modality.value]
            paths = value if isinstance(value, list) else [value]
            for path in paths:
                if not isinstance(path, str) or not path:
                    raise RecordError(f"'{modality.value}' must be a path or a list of paths")
                items.append(MediaRef(modality, path))
    return items


def _messages(raw: Mapping[str, Any]) -> list[dict[str, str]]:
    if "conversations" in raw and "messages" in raw:
        raise RecordError("give either 'conversations' or 'messages', not both")
    turns = raw.get("conversations", raw.get("messages"))
    if turns is None:
        return []
    if not isinstance(turns, list) or not turns:
        raise RecordError("'conversations'/'messages' must be a non-empty list")
    out = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, Mapping):
            raise RecordError(f"turn {i} must be an object")
        speaker = turn.get("from") if "from" in turn else turn.get("role")
        content = turn.get("value") if "from" in turn else turn.get("content")
        role = ROLE_FROM_LLAVA.get(speaker) if isinstance(speaker, str) else None
        if role is None:
            raise RecordError(f"turn {i} has unknown speaker {printable(speaker, 60)}")
        if not isinstance(content, str):
            raise RecordError(f"turn {i} content must be a string")
        out.append({"role": role, "content": content})
    roles = [m["role"] for m in out if m["role"] != "system"]
    if any(r == roles[i - 1] for i, r in enumerate(roles) if i) or (roles and roles[0] != "user"):
        raise RecordError(f"turns must alternate user/assistant starting with user, got {roles}")
    if roles and roles[-1] != "assistant":
        raise RecordError("the last turn must be the assistant's")
    return out


def placeholders_in(messages: list[Mapping[str, str]]) -> list[Modality]:
    """Media placeholders in the order they appear across the messages."""
    return [m for msg in messages for m in find_placeholders(msg["content"])]


def parse_record(raw: Any, *, max_chars: int = 100_000) -> Record:
    """Check one decoded JSON value against the format; raises :class:`RecordError`."""
    if not isinstance(raw, Mapping):
        raise RecordError(f"a record must be a JSON object, got {type(raw).__name__}")
    rid = raw.get("id")
    if not isinstance(rid, (str, int)) or isinstance(rid, bool) or str(rid) == "":
        raise RecordError("missing or empty 'id'")
    media = _media(raw)
    messages = _messages(raw)
    captions = raw.get("captions", {})
    if not isinstance(captions, Mapping) or not all(isinstance(v, str) for v in captions.values()):
        raise RecordError("'captions' must map caption kinds to strings")
    unknown = set(captions) - set(CAPTION_KINDS)
    if unknown:
        raise RecordError(f"unknown caption kinds {sorted(unknown)}; known: {list(CAPTION_KINDS)}")
    if not messages and not captions:
        raise RecordError("a record needs a conversation or captions")
    total = sum(len(m["content"]) for m in messages) + sum(len(c) for c in captions.values())
    if total > max_chars:
        raise RecordError(f"text is {total} characters; the limit is {max_chars}")
    if messages:
        found = placeholders_in(messages)
        expected = [m.modality for m in media]
        if found != expected:
            raise RecordError(
                f"placeholders [{', '.join(m.placeholder for m in found) or 'none'}] do not match media "
                f"[{', '.join(m.value for m in expected) or 'none'}]"
            )
    elif not media:
        raise RecordError("a caption-pair record needs media")
    meta = raw.get("meta", {})
    if not isinstance(meta, Mapping):
        raise RecordError("'meta' must be an object")
    return Record(str(rid), tuple(media), tuple(messages), dict(captions), dict(meta))


def read_records(path: str | os.PathLike, *, max_chars: int = 100_000) -> Iterator[Record | BadRecord]:
    """Yield a :class:`Record` or :class:`BadRecord` for each record of a ``.jsonl`` or ``.json`` file."""
    for _, item in read_numbered_records(path, max_chars=max_chars):
        yield item


def read_numbered_records(
    path: str | os.PathLike, *, max_chars: int = 100_000
) -> Iterator[tuple[int, Record | BadRecord]]:
    """Like :func:`read_records`, with each record's line number (its 1-based index in a ``.json`` list)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such records file")
    if path.suffix == ".json":
        try:
            data = loads_strict(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as err:
            raise RecordError(f"{path}: not valid JSON ({err})") from None
        except ValueError as err:
            raise RecordError(f"{path}: {err}") from None
        if not isinstance(data, list):
            raise RecordError(f"{path}: a .json records file must hold a list")
        rows = ((i + 1, item, None) for i, item in enumerate(data))
    else:
        rows = _jsonl_rows(path)
    for line, raw, error in rows:
        if error is not None:
            yield line, BadRecord(str(path), line, error)
            continue
        try:
            yield line, parse_record(raw, max_chars=max_chars)
        except RecordError as err:
            rid = raw.get("id") if isinstance(raw, Mapping) else None
            yield line, BadRecord(str(path), line, printable(str(err)), None if rid is None else printable(rid))


def _no_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} (JSON has none; NaN and Infinity are not accepted)")


def loads_strict(text: str | bytes) -> Any:
    """``json.loads`` that refuses what would fail later, far from the line: ``NaN``/``Infinity``,
    integers over Python's digit limit, nesting deeper than the interpreter's recursion limit, and
    strings with lone surrogates (not encodable as UTF-8). Raises ``ValueError`` naming the problem."""
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"not valid JSON ({err})") from None
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except UnicodeEncodeError:
        raise ValueError("a string holds a lone surrogate (invalid Unicode)") from None
    return value


def printable(value: Any, limit: int = 200) -> str:
    """``str(value)`` safe to print and short: lone surrogates escaped, cut at ``limit`` characters."""
    try:
        text = value if isinstance(value, str) else repr(value)
    except ValueError:  # an int over the digit limit
        text = f"<{type(value).__name__}>"
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    with path.open("rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield line_no, loads_strict(line), None
            except UnicodeDecodeError as err:
                yield line_no, None, f"not valid JSON ({err})"
            except ValueError as err:
                yield line_no, None, str(err)


def write_records(path: str | os.PathLike, records: Iterator[Record] | list[Record]) -> int:
    """Write records as JSONL (canonical form), atomically; returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(path)
    return count
