"""Decode audio (an audio file or the audio track of a video) to mono float samples at a fixed rate."""

from __future__ import annotations

import itertools
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import av
import av.container
import numpy as np

from mico_chat.media._pyav import (
    describe_ffmpeg_error,
    ffmpeg_errors,
    frame_time_s,
    open_container,
    stream_end_s,
    stream_start_s,
    timeline_zero_s,
    truncation_slack_s,
)
from mico_chat.media.errors import MediaError, MediaLimits
from mico_chat.media.source import MediaSource, ResolvedSource, resolve_source

# Seek this far before the window so the decoder has warmed up by its first sample (see
# _AudioWindowDecoder._frames_from); decoding 0.5 s of audio costs about a millisecond.
_SEEK_PREROLL_S = 0.5
# Input kept on each side of the window, so the resampler's filter sees the samples around it.
_RESAMPLER_CONTEXT_S = 0.01
# Samples handed to the resampler at once.
_RESAMPLE_CHUNK = 1 << 16


@dataclass
class Waveform:
    """Mono audio.

    Attributes:
        samples: ``(N,)`` float32 in [-1, 1]; sample j plays at ``start_s + j / sample_rate`` on the
            file's timeline, where ``start_s`` is the one asked of :func:`load_audio`.
        sample_rate: samples per second.
        duration_s: ``N / sample_rate``.
    """

    samples: np.ndarray
    sample_rate: int
    duration_s: float


def load_audio(
    source: MediaSource,
    *,
    sample_rate: int = 16000,
    start_s: float = 0.0,
    duration_s: float | None = None,
    name: str | None = None,
    limits: MediaLimits = MediaLimits(),
) -> Waveform:
    """Decode ``[start_s, start_s + duration_s)`` of the first audio track, resampled to mono.

    Args:
        source: a path or the bytes of a whole file: audio (wav, flac, mp3, ogg, m4a, ...) or a
            video whose audio track is wanted (mp4, mkv, webm, mov, avi, ...).
        sample_rate: output rate in Hz (FFmpeg's resampler via PyAV's ``AudioResampler``).
        start_s: where the window starts on the file's timeline. The file is seeked there, so a
            window late in a long file costs about as much as one at its start.
        duration_s: window length; ``None`` means to the end of the track. A window running past
            the end is cut to it.
        name: what errors call in-memory data (default ``"<bytes>"``).
        limits: ``max_duration_s`` refuses long files from the header; ``max_audio_decode_s``
            refuses windows longer than that (pass a shorter ``duration_s``) instead of cutting them.

    Returns:
        A :class:`Waveform`, ``samples`` ``(N,)`` float32 in [-1, 1], N = round(window * sample_rate)
        when the file holds the whole window. Channels are averaged with equal weights.

    Raises:
        MediaError: missing/empty/corrupt/unsupported file, no audio track, over a limit, a window
            starting after the end, or decodable audio ending well before the header's duration.
        ValueError: ``sample_rate <= 0``, ``start_s < 0`` or ``duration_s <= 0``.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if start_s < 0:
        raise ValueError(f"start_s must be >= 0, got {start_s}")
    if duration_s is not None and duration_s <= 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")

    src = resolve_source(source, name, limits)
    with open_container(src) as container, ffmpeg_errors(src.name, "cannot decode audio"):
        if not container.streams.audio:
            found = "only video" if container.streams.video else "no video either"
            raise MediaError(src.name, f"has no audio track ({found})")
        stream = container.streams.audio[0]
        if stream.codec_context is None:
            raise MediaError(src.name, "FFmpeg has no decoder for its audio codec")
        zero_s = timeline_zero_s(container)
        end_s = audio_end_s(src, container, stream, zero_s)  # None for headerless streams (raw AAC)
        if end_s is not None:
            limits.check_duration(src.name, end_s)
            if start_s >= end_s:
                raise MediaError(src.name, f"window starts at {start_s:.3f} s but the audio ends at {end_s:.3f} s")
        if duration_s is not None:
            stop_s = start_s + duration_s
            if end_s is not None:
                stop_s = min(stop_s, end_s)
            limits.check_audio_decode(src.name, stop_s - start_s)
        elif end_s is not None:
            stop_s = end_s
            limits.check_audio_decode(src.name, stop_s - start_s)
        else:
            # No duration anywhere: decode up to the limit, and refuse if the track goes on.
            stop_s = start_s + limits.max_audio_decode_s
        window = _AudioWindowDecoder(container, stream, src.name, zero_s, sample_rate, end_s)
        samples, reached_end = window.decode(start_s, stop_s)

    if end_s is None and duration_s is None and not reached_end:
        raise MediaError(
            src.name,
            f"states no duration and runs past {limits.max_audio_decode_s:.0f} s of audio, the limit per call "
            "(MediaLimits.max_audio_decode_s); load a window with start_s/duration_s",
        )
    if reached_end and end_s is not None:
        decoded_end_s = start_s + len(samples) / sample_rate
        if min(stop_s, end_s) - decoded_end_s > truncation_slack_s(end_s):
            raise MediaError(
                src.name,
                f"decodable audio ends at {decoded_end_s:.2f} s but the header says it lasts {end_s:.2f} s "
                "(truncated or corrupt file)",
            )
    if len(samples) == 0:
        raise MediaError(src.name, f"no audio could be decoded at {start_s:.3f} s")
    # Lossy decoders overshoot full scale slightly; the contract is [-1, 1].
    samples = np.clip(samples, -1.0, 1.0, out=samples)
    return Waveform(samples=samples, sample_rate=sample_rate, duration_s=len(samples) / sample_rate)


def audio_end_s(
    src: ResolvedSource, container: av.container.InputContainer, stream: av.stream.Stream, zero_s: float
) -> float | None:
    """When the audio stream ends according to the file's header, in timeline seconds.

    For WAV, FFmpeg trims a data chunk that claims more bytes than the file holds to what is there,
    hiding a truncated upload; the chunk's own size is used instead when it claims more.
    """
    end_s = stream_end_s(container, stream, zero_s)
    if container.format.name == "wav":
        declared_s = _wav_declared_duration_s(src.read_head(4096))
        if declared_s is not None and (end_s is None or declared_s > end_s):
            end_s = declared_s
    return end_s


def _wav_declared_duration_s(head: bytes) -> float | None:
    """Duration a RIFF/WAVE header declares (data chunk size / byte rate); ``None`` if the header
    is not plain RIFF or leaves the size open (0 or 0xFFFFFFFF, as streaming writers do)."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    byte_rate = None
    pos = 12
    while pos + 8 <= len(head):
        chunk_id, size = head[pos : pos + 4], struct.unpack("<I", head[pos + 4 : pos + 8])[0]
        if chunk_id == b"fmt " and pos + 20 <= len(head):
            byte_rate = struct.unpack("<I", head[pos + 16 : pos + 20])[0]
        elif chunk_id == b"data":
            if not byte_rate or size in (0, 0xFFFFFFFF):
                return None
            return size / byte_rate
        pos += 8 + size + (size & 1)  # chunks are padded to an even size
    return None


class _AudioWindowDecoder:
    """Decodes a window of one audio stream to mono float32 at a fixed rate.

    Samples are decoded and averaged to mono at the stream's own rate, cut to the window at that
    rate's precision, and only then resampled, so a window's samples fall on the same time grid
    (``start_s + j / rate``) wherever the decoder happened to start.
    """

    def __init__(
        self, container: av.container.InputContainer, stream: av.audio.stream.AudioStream, name: str,
        zero_s: float, sample_rate: int, header_end_s: float | None,
    ):  # fmt: skip
        self._container = container
        self._stream = stream
        self._name = name
        self._zero_s = zero_s
        self._stream_start_s = stream_start_s(stream, zero_s)
        self._rate = sample_rate
        self._header_end_s = header_end_s
        self._last_good: av.AudioFrame | None = None  # the last frame decoded without error

    def decode(self, start_s: float, stop_s: float) -> tuple[np.ndarray, bool]:
        """Samples for ``[start_s, stop_s)`` (fewer if the stream ends first), and whether it ended."""
        frames = self._frames_from(start_s)
        collected = _MonoCollector()
        first_s: float | None = None
        source_rate = 0
        have = needed = 0
        reached_end = True
        for frame in frames:
            if first_s is None:
                first_s, source_rate = frame_time_s(frame, self._zero_s), frame.sample_rate
                if first_s is None:
                    raise MediaError(self._name, "decoded audio frames carry no timestamps")
                # A little past stop_s too, so the resampler's filter has context for the last samples.
                needed = math.ceil((stop_s + _RESAMPLER_CONTEXT_S - first_s) * source_rate)
            if frame.sample_rate != source_rate:
                raise MediaError(
                    self._name, f"the audio's sample rate changes midway ({source_rate} -> {frame.sample_rate} Hz)"
                )
            collected.add(frame)
            have += frame.samples
            if have >= needed:
                reached_end = False
                break
        if first_s is None:
            raise MediaError(self._name, f"no audio could be decoded at {start_s:.3f} s")

        source = collected.samples()
        offset = round((start_s - first_s) * source_rate)
        if offset < 0:
            # The track starts after start_s: nothing plays before it, so pad with silence to keep
            # sample j at start_s + j / rate (audio stays aligned with video frames).
            source = np.concatenate([np.zeros(-offset, np.float32), source])
            offset = 0
        # Keep some decoded audio before start_s as the resampler's left context: a whole number
        # of output samples long, so the output grid stays on start_s.
        left, left_out = _left_context(source_rate, self._rate, available=offset)
        source = source[offset - left : offset + math.ceil((stop_s + _RESAMPLER_CONTEXT_S - start_s) * source_rate)]
        samples = _resample(source, source_rate, self._rate)
        return samples[left_out : left_out + round((stop_s - start_s) * self._rate)], reached_end

    def _frames_from(self, start_s: float) -> Iterator[av.AudioFrame]:
        """Decoded frames from at or before ``start_s`` (or from the stream's first frame)."""
        # Decoders need some audio before the first useful sample: MP3's bit reservoir, AAC's and
        # Vorbis's overlapped transforms and Opus's pre-skip produce silence or garbage right
        # after a seek. Starting earlier and dropping what precedes start_s avoids both.
        seek_s = max(self._stream_start_s, start_s - _SEEK_PREROLL_S)
        step_s = 1.0
        while True:
            try:
                self._container.seek(self._to_stream_ts(seek_s), stream=self._stream, backward=True)
            except av.FFmpegError as err:
                raise self._decode_failure(err) from err
            frames = self._frames()
            first = next(frames, None)
            if first is None:
                raise MediaError(self._name, f"no audio could be decoded at {start_s:.3f} s")
            first_s = frame_time_s(first, self._zero_s)
            if first_s is None or first_s <= seek_s or seek_s <= self._stream_start_s:
                return itertools.chain([first], frames)
            # Some demuxers (mp3, wav without index) land after the target: seek further back.
            seek_s = max(self._stream_start_s, seek_s - step_s)
            step_s *= 2

    def _frames(self) -> Iterator[av.AudioFrame]:
        """The stream's decoded frames from the current position; a decoding error mid-stream
        becomes a MediaError saying how far decoding got."""
        frames = self._container.decode(self._stream)
        while True:
            try:
                frame = next(frames, None)
            except av.FFmpegError as err:
                raise self._decode_failure(err) from err
            if frame is None:
                return
            self._last_good = frame
            yield frame

    def _decode_failure(self, err: av.FFmpegError) -> MediaError:
        last_s = frame_time_s(self._last_good, self._zero_s) if self._last_good is not None else None
        if last_s is not None:
            last_s += self._last_good.samples / self._last_good.sample_rate
        got = f"past {last_s:.2f} s" if last_s is not None else "any audio"
        header = f", though the header says it lasts {self._header_end_s:.2f} s" if self._header_end_s else ""
        return MediaError(
            self._name, f"cannot decode audio {got}{header} (truncated or corrupt file): {describe_ffmpeg_error(err)}"
        )

    def _to_stream_ts(self, time_s: float) -> int:
        return math.floor((time_s + self._zero_s) / self._stream.time_base)


class _MonoCollector:
    """Collects decoded frames (any sample format, any channel layout) as mono float32 at their rate.

    Channels are averaged with equal weights here rather than by FFmpeg's downmix matrices, so the
    rule is explicit. Frames are averaged in batches (one numpy call per ``_BATCH`` frames, not per
    frame: a minute of AAC is 2,600 frames), and a batch ends where the input's format or layout
    changes midway (broadcast streams switch between stereo and 5.1).
    """

    _BATCH = 256

    def __init__(self) -> None:
        self._pending: list[np.ndarray] = []  # (C, n) float32 planes of the current batch
        self._mono: list[np.ndarray] = []
        self._converter: av.AudioResampler | None = None  # to planar float; None when already so
        self._input_kind: tuple[str, str] | None = None

    def add(self, frame: av.AudioFrame) -> None:
        kind = (frame.format.name, frame.layout.name)
        if kind != self._input_kind:
            self._average_pending()
            self._input_kind = kind
            # Only the sample format changes (layout and rate kept), which needs no buffering.
            self._converter = None if frame.format.name == "fltp" else av.AudioResampler(format="fltp")
        if self._converter is None:
            self._pending.append(frame.to_ndarray())
        else:
            self._pending.extend(f.to_ndarray() for f in self._converter.resample(frame))
        if len(self._pending) >= self._BATCH:
            self._average_pending()

    def samples(self) -> np.ndarray:
        """All samples collected so far, ``(n,)`` float32."""
        self._average_pending()
        return np.concatenate(self._mono) if self._mono else np.zeros(0, np.float32)

    def _average_pending(self) -> None:
        if self._pending:
            planes = np.concatenate(self._pending, axis=1)  # (C, n)
            self._mono.append(planes.mean(axis=0, dtype=np.float32) if planes.shape[0] > 1 else planes[0])
            self._pending = []


def _left_context(source_rate: int, rate: int, available: int) -> tuple[int, int]:
    """Input samples to keep before the window (at most ``available``, about _RESAMPLER_CONTEXT_S)
    and the output samples they become; both whole, so the window's first output sample falls
    exactly at its start. ``(0, 0)`` when the rates make such a span impractically long."""
    unit = source_rate // math.gcd(source_rate, rate)  # input samples per whole number of output samples
    units = min(math.ceil(_RESAMPLER_CONTEXT_S * source_rate / unit), available // unit)
    if unit > _RESAMPLER_CONTEXT_S * source_rate * 10 or units <= 0:
        return 0, 0
    return units * unit, units * unit * rate // source_rate


def _resample(samples: np.ndarray, source_rate: int, rate: int) -> np.ndarray:
    """``(n,)`` float32 at ``source_rate`` -> float32 at ``rate`` with FFmpeg's resampler (swresample)."""
    if source_rate == rate or len(samples) == 0:
        return samples.astype(np.float32, copy=False)
    resampler = av.AudioResampler(format="fltp", layout="mono", rate=rate)
    out: list[np.ndarray] = []
    for begin in range(0, len(samples), _RESAMPLE_CHUNK):
        frame = av.AudioFrame.from_ndarray(samples[None, begin : begin + _RESAMPLE_CHUNK], format="fltp", layout="mono")
        frame.sample_rate = source_rate
        out.extend(f.to_ndarray()[0] for f in resampler.resample(frame))
    out.extend(f.to_ndarray()[0] for f in resampler.resample(None))
    return np.concatenate(out) if out else np.zeros(0, np.float32)
