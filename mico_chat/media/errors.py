"""The one error type of the media package, and the limits every loader enforces."""

from __future__ import annotations

from dataclasses import dataclass


class MediaError(Exception):
    """A media file could not be read: missing, empty, corrupt, unsupported, truncated or over a limit.

    Every loader in :mod:`mico_chat.media` raises this and nothing else for a problem with the
    media itself (decoder and image-library errors are translated and chained as ``__cause__``).
    Wrong arguments (``num_frames=0``, an unknown backend) raise ``ValueError`` instead.

    Attributes:
        path: the file path, or ``"<bytes>"`` (or the caller's ``name=``) for in-memory data.
        reason: what is wrong, in words, e.g. ``"empty file (0 bytes)"``.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self):
        # Errors cross process boundaries (DataLoader workers); the default pickling would call
        # MediaError(message) with one argument and fail.
        return (type(self), (self.path, self.reason))


class MediaTooLargeError(MediaError):
    """The media is over a limit (bytes, pixels, frame side, duration, audio to decode) or PIL's
    own decompression-bomb guard: not broken, too big. Servers answer it with 413, not 400."""


@dataclass(frozen=True)
class MediaLimits:
    """Bounds on the time and memory one load may cost; checked from headers before decoding.

    The defaults suit a local machine serving one user. A server facing untrusted uploads may
    tighten them; a batch job over long recordings may loosen ``max_duration_s`` and
    ``max_audio_decode_s``.
    """

    max_bytes: int = 1 << 30
    """Refuse files larger than this (checked with ``stat``, before anything is read)."""
    max_pixels: int = 64_000_000
    """Refuse images and maps with more pixels than this (checked from the header)."""
    max_duration_s: float = 4 * 3600
    """Refuse media whose header states a longer duration."""
    max_audio_decode_s: float = 600.0
    """Never decode more than this much audio in one call; ask for a window instead."""
    max_video_side: int = 8192
    """Refuse videos whose frame width or height exceeds this."""

    def __post_init__(self) -> None:
        for field_name in ("max_bytes", "max_pixels", "max_duration_s", "max_audio_decode_s", "max_video_side"):
            if not getattr(self, field_name) > 0:
                raise ValueError(f"MediaLimits.{field_name} must be positive, got {getattr(self, field_name)!r}")

    # Each check raises MediaTooLargeError(name, ...) naming the limit, so a caller knows which knob to turn.

    def check_bytes(self, name: str, num_bytes: int) -> None:
        if num_bytes > self.max_bytes:
            raise MediaTooLargeError(
                name,
                f"file is {_human_bytes(num_bytes)}, over the limit of {_human_bytes(self.max_bytes)} "
                "(MediaLimits.max_bytes)",
            )

    def check_pixels(self, name: str, width: int, height: int) -> None:
        if width * height > self.max_pixels:
            raise MediaTooLargeError(
                name,
                f"image is {width}x{height} = {width * height:,} pixels, over the limit of {self.max_pixels:,} "
                "(MediaLimits.max_pixels; a decompression bomb?)",
            )

    def check_video_side(self, name: str, width: int, height: int) -> None:
        if max(width, height) > self.max_video_side:
            raise MediaTooLargeError(
                name,
                f"frame size {width}x{height} exceeds {self.max_video_side} pixels per side "
                "(MediaLimits.max_video_side)",
            )

    def check_duration(self, name: str, duration_s: float) -> None:
        if duration_s > self.max_duration_s:
            raise MediaTooLargeError(
                name,
                f"lasts {duration_s:.0f} s ({duration_s / 3600:.1f} h), over the limit of "
                f"{self.max_duration_s:.0f} s (MediaLimits.max_duration_s)",
            )

    def check_audio_decode(self, name: str, duration_s: float) -> None:
        if duration_s > self.max_audio_decode_s:
            raise MediaTooLargeError(
                name,
                f"asks to decode {duration_s:.1f} s of audio, over the limit of {self.max_audio_decode_s:.0f} s "
                "per call (MediaLimits.max_audio_decode_s); load a window with start_s/duration_s",
            )


def _human_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit} ({n} bytes)"
    return f"{n} bytes"
