"""OpenAI chat messages -> :class:`~mico_chat.api.ChatModel` messages, with every media part checked.

Accepted content parts (``messages[i].content`` may also be a plain string):

==================  ==========================================================  ==============
part                payload                                                      becomes
==================  ==========================================================  ==============
``text``            ``{"text": "..."}``                                          text
``image_url``       ``{"image_url": {"url": "data:image/png;base64,..."}}``     image
``video_url``       ``{"video_url": {"url": "data:video/mp4;base64,..."}}``     video (+ its audio track)
``input_audio``     ``{"input_audio": {"data": "<base64>", "format": "wav"}}``  audio
``audio_url``       ``{"audio_url": {"url": "data:audio/wav;base64,..."}}``     audio
==================  ==========================================================  ==============

``video_url`` with base64 data URLs is the convention of vLLM and LLaMA-Factory; ``input_audio`` is
OpenAI's. ``http(s)`` URLs are fetched only from hosts the operator allowed
(:attr:`ApiConfig.allowed_media_hosts`), with the same size limit and without following redirects;
``file:`` URLs and bare paths are always refused: a client must never make the server read its disk.

Every problem raises :class:`RequestError` with the HTTP status, OpenAI's error fields, and the
``param`` path of the offending part (``messages[0].content[1].video_url``).
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mico_chat.media import MediaError, MediaLimits, MediaTooLargeError, probe

from .config import ApiConfig, ServeLimits

MEDIA_PART_TYPES = {"image_url": "image", "video_url": "video", "input_audio": "audio", "audio_url": "audio"}
ROLES = ("system", "user", "assistant")
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,", re.I)


@dataclass
class RequestError(Exception):
    """A request the server refuses, in OpenAI's error shape."""

    status: int
    message: str
    param: str | None = None
    code: str | None = None
    type: str = "invalid_request_error"

    def __str__(self) -> str:
        return self.message

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _too_large(message: str, param: str) -> RequestError:
    return RequestError(413, message, param, "request_too_large")


def to_chat_messages(messages: Any, config: ApiConfig) -> list[dict[str, Any]]:
    """Validate OpenAI ``messages`` and return ChatModel messages whose media are ``bytes``.

    Decodes base64 (and fetches allowed remote URLs), then probes every media item's header against
    ``config.limits`` so a corrupt, oversized or overlong file is refused here, before the model
    sees it. Runs blocking work: call it off the event loop.
    """
    limits = config.limits
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)) or not messages:
        raise RequestError(400, "messages must be a non-empty list", "messages")
    if len(messages) > limits.max_messages:
        raise RequestError(400, f"{len(messages)} messages; this server takes at most {limits.max_messages}", "messages")
    out: list[dict[str, Any]] = []
    media_count = 0
    chars = 0

    def count(text: str, where: str) -> None:
        nonlocal chars
        chars += len(text)
        if chars > limits.max_text_chars:
            raise RequestError(
                400, f"{where}: the request's text is over {limits.max_text_chars:,} characters, this server's limit",
                where, "context_length_exceeded",
            )  # fmt: skip

    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise RequestError(400, f"{where} must be an object with role and content", where)
        role = message.get("role")
        if role == "developer":  # OpenAI's newer name for the system role
            role = "system"
        if not isinstance(role, str) or role not in ROLES:
            raise RequestError(400, f"{where}.role {role!r} is not supported; use one of {', '.join(ROLES)}", f"{where}.role")
        content = message.get("content")
        if content is None:
            content = ""
        if isinstance(content, str):
            count(content, f"{where}.content")
            out.append({"role": role, "content": content})
            continue
        if not isinstance(content, Sequence):
            raise RequestError(400, f"{where}.content must be a string or a list of parts", f"{where}.content")
        parts: list[dict[str, Any]] = []
        for j, part in enumerate(content):
            pwhere = f"{where}.content[{j}]"
            if not isinstance(part, Mapping):
                raise RequestError(400, f"{pwhere} must be an object with a type", pwhere)
            kind = part.get("type")
            if not isinstance(kind, str):
                raise RequestError(400, f"{pwhere}.type must be a string, got {type(kind).__name__}", f"{pwhere}.type")
            if kind == "text":
                text = part.get("text")
                if not isinstance(text, str):
                    raise RequestError(400, f"{pwhere}.text must be a string", f"{pwhere}.text")
                count(text, f"{pwhere}.text")
                parts.append({"type": "text", "text": text})
                continue
            if kind not in MEDIA_PART_TYPES:
                known = ", ".join(["text", *MEDIA_PART_TYPES])
                raise RequestError(400, f"{pwhere}: unsupported content part type {kind!r}; supported: {known}", f"{pwhere}.type")
            if role != "user":
                raise RequestError(400, f"{pwhere}: only user messages may carry media, not {role}", pwhere)
            media_count += 1
            if media_count > limits.max_media_items:
                raise RequestError(400, f"more than {limits.max_media_items} media items in one request", pwhere)
            modality = MEDIA_PART_TYPES[kind]
            data = _part_bytes(part, kind, f"{pwhere}.{kind}", config)
            check_media(data, modality, f"{pwhere}.{kind}", limits)
            parts.append({"type": modality, modality: data})
        out.append({"role": role, "content": parts})
    return out


def _part_bytes(part: Mapping[str, Any], kind: str, where: str, config: ApiConfig) -> bytes:
    payload = part.get(kind)
    if kind == "input_audio":
        if not isinstance(payload, Mapping) or not isinstance(payload.get("data"), str):
            raise RequestError(400, f"{where} must be {{'data': <base64>, 'format': 'wav'|'mp3'|...}}", where)
        return _b64decode(payload["data"], f"{where}.data", config.limits)
    url = payload.get("url") if isinstance(payload, Mapping) else payload  # some clients send the URL bare
    if not isinstance(url, str) or not url:
        raise RequestError(400, f"{where} must be {{'url': 'data:...;base64,...'}}", where)
    if url.startswith("data:"):
        match = _DATA_URL.match(url)
        if match is None or not match.group("b64"):
            raise RequestError(400, f"{where}.url: only base64 data URLs are accepted (data:<mime>;base64,<data>)", f"{where}.url")
        return _b64decode(url[match.end() :], f"{where}.url", config.limits)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        return fetch_remote(url, f"{where}.url", config)
    raise RequestError(
        400,
        f"{where}.url: local files and {scheme or 'scheme-less'} URLs are refused; send the media inline as a "
        "base64 data URL",
        f"{where}.url",
    )


def _b64decode(text: str, where: str, limits: ServeLimits) -> bytes:
    approx = len(text) * 3 // 4
    if approx > limits.max_media_bytes + 3:
        raise _too_large(f"{where}: the media is about {approx:,} bytes; the limit is {limits.max_media_bytes:,}", where)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, f"{where}: not valid base64", where) from None
    if not data:
        raise RequestError(400, f"{where}: empty media", where)
    return data


def check_media(data: bytes, modality: str, where: str, limits: ServeLimits) -> None:
    """Refuse media whose header is unreadable (400) or over the size/duration/pixel limits (413)."""
    if len(data) > limits.max_media_bytes:
        raise _too_large(f"{where}: the media is {len(data):,} bytes; the limit is {limits.max_media_bytes:,}", where)
    # Probe with loose limits so "corrupt" and "too large" are told apart; our own checks follow.
    try:
        info = probe(data, name=where, limits=MediaLimits(max_bytes=len(data)))
    except MediaTooLargeError as err:  # e.g. a decompression bomb: over a limit, not broken
        raise _too_large(f"{modality} too large: {err}", where) from None
    except MediaError as err:
        raise RequestError(400, f"bad {modality}: {err}", where, "invalid_media") from None
    if info.duration_s is not None and info.duration_s > limits.max_media_duration_s:
        raise _too_large(
            f"{where}: the {modality} lasts {info.duration_s:.1f} s; the limit is {limits.max_media_duration_s:.0f} s", where
        )
    if info.width and info.height and info.width * info.height > limits.max_pixels:
        raise _too_large(
            f"{where}: {info.width}x{info.height} pixels; the limit is {limits.max_pixels:,} per image or frame", where
        )
    if modality == "audio" and not info.has_audio:
        raise RequestError(400, f"bad audio: {where} holds no audio track", where, "invalid_media")
    if modality == "video" and not info.has_video:
        raise RequestError(400, f"bad video: {where} holds no video stream", where, "invalid_media")
    if modality == "image" and info.kind != "image":
        raise RequestError(400, f"bad image: {where} holds a {info.kind}, not an image", where, "invalid_media")


def fetch_remote(url: str, where: str, config: ApiConfig) -> bytes:
    """GET ``url`` if its host is allowed; at most ``max_media_bytes``, no redirects."""
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    if host not in {h.lower() for h in config.allowed_media_hosts}:
        raise RequestError(
            400,
            f"{where}: this server does not fetch remote URLs"
            + (f" from {host}" if config.allowed_media_hosts else "")
            + "; send the media inline as a base64 data URL",
            where,
            "remote_url_refused",
        )
    import httpx  # deferred: only servers that allow remote media need it

    limit = config.limits.max_media_bytes
    try:
        with httpx.Client(timeout=config.remote_timeout_s, follow_redirects=False) as client:
            with client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise RequestError(400, f"{where}: fetching {url} returned HTTP {response.status_code}", where)
                declared = int(response.headers.get("content-length") or 0)
                if declared > limit:
                    raise _too_large(f"{where}: {url} is {declared:,} bytes; the limit is {limit:,}", where)
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise _too_large(f"{where}: {url} is over the limit of {limit:,} bytes", where)
                    chunks.append(chunk)
    except httpx.HTTPError as err:
        raise RequestError(400, f"{where}: could not fetch {url}: {err}", where) from None
    return b"".join(chunks)
