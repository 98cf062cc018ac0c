"""Writers of small media files with known content, for the media tests (all made with PyAV,
zlib and PIL at test time; nothing is downloaded).

Video frames carry their own index: the left half of frame i is grey level 16 + 14 * (i // 16), the
right half 16 + 14 * (i % 16). Levels are 14 apart, so lossy codecs cannot blur one index into
another, and :func:`frame_index` reads it back from a decoded RGB frame.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# (container suffix, video codec): H.264 in mp4/mkv/mov, VP9 in WebM, MPEG-4 Part 2 in AVI.
VIDEO_FORMATS = [("mp4", "libx264"), ("mkv", "libx264"), ("webm", "libvpx-vp9"), ("avi", "mpeg4"), ("mov", "libx264")]
# The shared test clip (conftest's `clips`): 30 indexed frames at 10 fps.
CLIP_FRAMES = 30
CLIP_FPS = 10


def indexed_frame(index: int, width: int = 64, height: int = 48) -> np.ndarray:
    """``(height, width, 3)`` uint8 RGB frame that encodes ``index`` modulo 256."""
    index %= 256
    frame = np.empty((height, width, 3), np.uint8)
    frame[:, : width // 2] = 16 + 14 * (index // 16)
    frame[:, width // 2 :] = 16 + 14 * (index % 16)
    return frame


def frame_index(rgb: np.ndarray) -> int:
    """The index :func:`indexed_frame` encoded, read back from a decoded ``(H, W, 3)`` frame."""
    width = rgb.shape[1]
    # The centre of each half, away from chroma bleeding at the seam and codec edge effects.
    left = rgb[4:-4, 4 : width // 2 - 4].mean()
    right = rgb[4:-4, width // 2 + 4 : -4].mean()
    return int(round((left - 16) / 14)) * 16 + int(round((right - 16) / 14))


def write_indexed_video(
    path: Path,
    codec: str,
    num_frames: int,
    *,
    fps: int = 10,
    gop: int = 5,
    size: tuple[int, int] = (64, 48),
    pts: Sequence[int] | None = None,
    container_options: dict[str, str] | None = None,
    codec_options: dict[str, str] | None = None,
    audio_tone_hz: float | None = None,
    rotation: int | None = None,
) -> Path:
    """Encode frames 0..num_frames-1 (see module doc) at ``fps``, a keyframe every ``gop`` frames.

    ``pts`` gives each frame's timestamp in units of 1/fps (default 0, 1, 2, ...), for clips with
    irregular timing. ``audio_tone_hz`` adds a mono AAC/Opus track of that sine for the whole clip.
    """
    width, height = size
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.options = {**({"keyint": str(gop)} if codec == "libx264" else {}), **(codec_options or {})}
        if rotation is not None:
            stream.set_display_rotation(rotation)
        audio = None
        if audio_tone_hz is not None:
            # Opus runs at 48 kHz; FFmpeg's AAC encoder rings on a pure tone at 48 kHz, not at 44.1.
            audio_codec, audio_rate = ("libopus", 48000) if path.suffix == ".webm" else ("aac", 44100)
            audio = container.add_stream(audio_codec, rate=audio_rate)
            audio.layout = "mono"
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(indexed_frame(i, width, height), format="rgb24")
            frame.pts = i if pts is None else pts[i]
            frame.time_base = Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
        if audio is not None:
            last = num_frames if pts is None else pts[-1] + 1
            _encode_samples(container, audio, _sine(audio_tone_hz, last / fps, audio_rate, 0.5)[None, :], audio_rate)
    return path


def write_tone(
    path: Path,
    codec: str,
    *,
    freq_hz: float = 440.0,
    seconds: float = 2.0,
    sample_rate: int = 44100,
    right: str | None = None,
    container_format: str | None = None,
    container_options: dict[str, str] | None = None,
    amplitude: float = 0.5,
) -> Path:
    """A sine of ``freq_hz``. Mono, or stereo when ``right`` says what the right channel holds:
    ``"same"``, ``"inverted"`` (the negated sine) or ``"silent"``. A 20 ms fade at each end keeps
    lossy encoders from ringing at the edges, so amplitudes can be checked."""
    left = _sine(freq_hz, seconds, sample_rate, amplitude)
    if right is None:
        channels = left[None, :]
    else:
        other = {"same": left, "inverted": -left, "silent": np.zeros_like(left)}[right]
        channels = np.stack([left, other])
    with av.open(str(path), "w", format=container_format, options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=sample_rate)
        stream.layout = "mono" if right is None else "stereo"
        _encode_samples(container, stream, channels, sample_rate)
    return path


def _sine(freq_hz: float, seconds: float, sample_rate: int, amplitude: float) -> np.ndarray:
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    ramp = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02)
    return (amplitude * ramp * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def _encode_samples(container, stream, channels: np.ndarray, sample_rate: int) -> None:
    """Encode ``(C, N)`` float samples in [-1, 1] in the stream's own sample format and frame size."""
    sample_format = stream.codec_context.format.name
    frame_size = stream.codec_context.frame_size or 1024
    for start in range(0, channels.shape[1], frame_size):
        chunk = channels[:, start : start + frame_size]
        if sample_format.startswith("s16"):
            chunk = np.round(chunk * 32767).astype(np.int16)
        elif sample_format.startswith("s32"):
            chunk = np.round(chunk.astype(np.float64) * 2147483647).astype(np.int32)
        if not sample_format.endswith("p"):  # packed formats interleave channels in one plane
            chunk = chunk.T.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format=sample_format, layout=stream.layout.name)
        frame.sample_rate = sample_rate
        frame.pts = start
        container.mux(stream.encode(frame))
    container.mux(stream.encode())


def png_bytes(array: np.ndarray, bit_depth: int) -> bytes:
    """A PNG of ``array`` written with zlib: ``(H, W)`` grey or ``(H, W, 3)`` RGB, 8 or 16 bits.
    Written by hand because PIL cannot write 16-bit RGB."""
    height, width = array.shape[:2]
    color_type = 0 if array.ndim == 2 else 2
    dtype = ">u2" if bit_depth == 16 else "u1"
    rows = b"".join(b"\x00" + array[y].astype(dtype).tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(rows))
        + _png_chunk(b"IEND", b"")
    )


def png_bomb_bytes(width: int, height: int) -> bytes:
    """A valid-looking PNG header announcing ``width x height`` grey pixels, with almost no data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + _png_chunk(b"IEND", b"")
    )


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def dominant_frequency_hz(samples: np.ndarray, sample_rate: int) -> float:
    """Frequency of the largest peak of the magnitude spectrum."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * sample_rate / len(samples))
