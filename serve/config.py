"""Typed settings of the servers: request limits, the HTTP API, the web UI."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from mico_chat.media import MediaLimits

MiB = 1 << 20


@dataclass(frozen=True)
class ServeLimits:
    """What one request may cost; checked before anything is decoded.

    Args:
        max_body_bytes: HTTP request body (base64 media included); larger -> 413.
        max_media_bytes: one decoded media item (an upload, a data URL's payload); larger -> 413.
        max_media_duration_s: one video or audio, from its header; longer -> 413.
        max_pixels: one image or video frame (width x height); larger -> 413.
        max_media_items: media parts in one request; more -> 400.
        max_new_tokens: the most a request may ask to generate; more -> 400.
        max_messages: messages in one conversation; more -> 400.
        max_text_chars: characters of text in one request, all messages together; more -> 400,
            before any tokenizing (a 60 MiB text message, under the body limit, once took the
            server to 10 GB while it was tokenized only to be refused for its token count).
    """

    max_body_bytes: int = 64 * MiB
    max_media_bytes: int = 48 * MiB
    max_media_duration_s: float = 600.0
    max_pixels: int = 16_000_000
    max_media_items: int = 8
    max_new_tokens: int = 1024
    max_messages: int = 64
    max_text_chars: int = 200_000

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_media_bytes", "max_media_duration_s", "max_pixels", "max_media_items",
                     "max_new_tokens", "max_messages", "max_text_chars"):  # fmt: skip
            if not getattr(self, name) > 0:
                raise ValueError(f"ServeLimits.{name} must be positive, got {getattr(self, name)!r}")

    @property
    def media_limits(self) -> MediaLimits:
        """The same bounds in the form the media loaders enforce them while decoding."""
        return MediaLimits(max_bytes=self.max_media_bytes, max_pixels=self.max_pixels, max_duration_s=self.max_media_duration_s)


@dataclass(frozen=True)
class ApiConfig:
    """The OpenAI-compatible HTTP API.

    Args:
        model_name: the id clients put in ``model`` (and ``GET /v1/models`` lists).
        api_key: when set, every ``/v1`` request needs ``Authorization: Bearer <api_key>``.
        allowed_media_hosts: hosts whose ``http(s)`` media URLs the server may fetch. Empty (the
            default) means the server never makes a request on a client's behalf.
        remote_timeout_s: connect + read timeout for those fetches.
        limits: request limits.
    """

    model_name: str
    api_key: str | None = None
    allowed_media_hosts: tuple[str, ...] = ()
    remote_timeout_s: float = 10.0
    limits: ServeLimits = field(default_factory=ServeLimits)

    @staticmethod
    def key_from_env() -> str | None:
        """``MICO_CHAT_API_KEY`` (keeps the key out of ``ps`` output and shell history)."""
        return os.environ.get("MICO_CHAT_API_KEY") or None
