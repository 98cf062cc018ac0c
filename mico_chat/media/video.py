"""Sample T frames of a video uniformly by timestamp, at a cost that does not grow with its length.

The rule, for every backend: the clip window ``[start_s, end_s)`` is cut into T equal segments,
the target of segment i is its centre ``start_s + (i + 0.5) * (end_s - start_s) / T``, and the frame
returned for a target is the one on screen at that time: the last frame whose pts is at or before
the target (the first frame, for a target before it). With T larger than the number of frames in
the window some frames repeat, exactly as a player paused at those times would show them.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import av
import av.container
import numpy as np
from av.video.reformatter import VideoReformatter

from mico_chat.media._pyav import (
    describe_ffmpeg_error,
    ffmpeg_errors,
    frame_time_s,
    motion_video_streams,
    open_container,
    scan_stream_end_s,
    stream_end_s,
    stream_start_s,
    timeline_zero_s,
    truncation_slack_s,
)
from mico_chat.media.errors import MediaError, MediaLimits
from mico_chat.media.source import MediaSource, ResolvedSource, resolve_source

BACKENDS = ("pyav", "decord")

# Frame times and targets are floats; a frame counts as "at or before" a target within this
# tolerance, so that rounding in a computed target never flips an exact tie to the previous frame.
_TIE_TOLERANCE_S = 1e-6

# A seek (flush the decoder, reposition the demuxer, decode an intra frame) costs about as much as
# decoding 3 ordinary frames (measured with PyAV on 720p H.264 on a 2-core CPU: ~6 ms per seek
# and its keyframe, ~2 ms per inter frame), so a seek must skip more frames than that to pay off.
_SEEK_COST_IN_FRAMES = 3

# A keyframe's presentation time follows its mp4 index (decode) time by the B-frame reorder delay,
# a few frames; a larger gap means the seek landed on another keyframe and teaches nothing.
_MAX_INDEX_LEAD_S = 0.5

# Frames shown up to this many frame intervals before a target are decoded in full; earlier ones
# only if other frames are decoded from them (see _FrameSeeker._decode).
_FULL_DECODE_FRAMES = 2


@dataclass
class VideoClip:
    """Frames sampled from a video, with the time each was shown.

    Attributes:
        frames: ``(T, H, W, 3)`` uint8 RGB, display rotation applied.
        timestamps: ``(T,)`` float64 seconds, the pts of each returned frame on the file's
            timeline (0 = the container's start), non-decreasing.
        duration_s: the video stream's length in seconds (its end on that timeline), from the header.
        fps: the stream's average frame rate from the header; 0.0 if the header states none.
    """

    frames: np.ndarray
    timestamps: np.ndarray
    duration_s: float
    fps: float


@dataclass(frozen=True)
class _VideoHeader:
    stream: av.video.stream.VideoStream
    zero_s: float
    """The container's start time in seconds: the 0 of the timeline callers see."""
    start_s: float
    end_s: float
    fps: float


def sample_frame_times(duration_s: float, num_frames: int, start_s: float = 0.0) -> np.ndarray:
    """Target times of ``num_frames`` frames spread uniformly over ``[start_s, start_s + duration_s)``.

    Returns ``(num_frames,)`` float64 seconds: the centres ``start_s + (i + 0.5) * duration_s / num_frames``.
    Centres, not segment starts, so that the first and last frames are not the clip's very edges
    (often black or a fade) and a window's frames sit symmetrically inside it.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    if not duration_s > 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    return start_s + (np.arange(num_frames, dtype=np.float64) + 0.5) * (duration_s / num_frames)


def load_video(
    source: MediaSource,
    num_frames: int,
    *,
    start_s: float = 0.0,
    end_s: float | None = None,
    name: str | None = None,
    limits: MediaLimits = MediaLimits(),
    backend: str = "pyav",
) -> VideoClip:
    """Decode ``num_frames`` frames sampled uniformly by timestamp from ``[start_s, end_s)``.

    Args:
        source: a path, or the bytes of a whole file (mp4, mkv, webm, mov, avi, ...).
        num_frames: T, the number of frames to return (>= 1; may exceed the frames in the window).
        start_s, end_s: the window on the file's timeline in seconds; ``end_s=None`` means the end
            of the video, and an ``end_s`` past the end is cut to it.
        name: what errors call in-memory data (default ``"<bytes>"``).
        limits: size, duration and frame-size bounds, checked from the header before decoding.
        backend: ``"pyav"`` (default) or ``"decord"`` (optional dependency, ImportError without
            it; same frames by the same rule, timestamps as decord reports them in float32, no
            display rotation).

    Returns:
        A :class:`VideoClip` with ``frames`` ``(T, H, W, 3)`` uint8 RGB and ``timestamps`` ``(T,)``.
        Target i is the centre of segment i (:func:`sample_frame_times`); its frame is the last one
        whose pts is at or before the target (the first frame for a target before it).

    Cost: for a fixed T it does not grow with the clip's length. Per target, PyAV seeks only if
    the keyframe before the target lies more than 3 frames past the current decode position (a
    seek costs about 3 frames' decoding); otherwise it decodes forward. So dense targets, short
    clips and clips with sparse keyframes are decoded sequentially (as cheap as decoding all, not
    dearer), and long clips by one seek and at most one keyframe interval per target. Frames that
    no other frame depends on (most B-frames) are skipped unless shown within 2 frames of a target.

    Raises:
        MediaError: missing/empty/corrupt/unsupported file, no video stream, over a limit, or
            decodable frames ending well before the duration the header states (truncated file).
        ValueError: ``num_frames < 1``, ``start_s < 0``, ``end_s <= start_s`` or an unknown backend.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; choose one of {BACKENDS}")
    if start_s < 0:
        raise ValueError(f"start_s must be >= 0, got {start_s}")
    if end_s is not None and end_s <= start_s:
        raise ValueError(f"end_s ({end_s}) must be after start_s ({start_s})")

    src = resolve_source(source, name, limits)
    with open_container(src) as container, ffmpeg_errors(src.name, "cannot decode video"):
        header = _read_video_header(container, src.name, limits)
        if start_s >= header.end_s:
            raise MediaError(src.name, f"window starts at {start_s:.3f} s but the video ends at {header.end_s:.3f} s")
        window_end = header.end_s if end_s is None else min(end_s, header.end_s)
        targets = sample_frame_times(window_end - start_s, num_frames, start_s)
        if backend == "pyav":
            frames, times = _FrameSeeker(container, header, src.name).frames_at(targets)
    if backend == "decord":
        frames, times = _decord_frames_at(src, targets)
    return VideoClip(frames=frames, timestamps=times, duration_s=header.end_s, fps=header.fps)


def _read_video_header(container: av.container.InputContainer, name: str, limits: MediaLimits) -> _VideoHeader:
    """The first motion video stream and its timing, after checking the header against ``limits``."""
    streams = motion_video_streams(container)
    if not streams:
        found = "only audio" if container.streams.audio else "no audio either"
        raise MediaError(name, f"has no video stream ({found})")
    stream = streams[0]
    if stream.codec_context is None:
        raise MediaError(name, "FFmpeg has no decoder for its video codec")
    width, height = stream.codec_context.width, stream.codec_context.height
    if width <= 0 or height <= 0:
        raise MediaError(name, "the video stream's header states no frame size")
    limits.check_video_side(name, width, height)
    zero_s = timeline_zero_s(container)
    end_s = stream_end_s(container, stream, zero_s)
    if end_s is None:
        end_s = scan_stream_end_s(container, stream, zero_s, stop_after_s=limits.max_duration_s)
        if end_s is None:
            raise MediaError(name, "the video stream has no packets")
    limits.check_duration(name, end_s)
    rate = stream.average_rate or stream.guessed_rate
    return _VideoHeader(
        stream=stream,
        zero_s=zero_s,
        start_s=stream_start_s(stream, zero_s),
        end_s=end_s,
        fps=float(rate) if rate else 0.0,
    )


@dataclass
class _Decoded:
    frame: av.VideoFrame
    time_s: float


class _FrameSeeker:
    """Finds, for ascending target times, the frame on screen at each time, decoding little.

    State: a decoder running forward from the last seek, the last frame at or before the current
    target (``_prev``) and the frame decoded after it (``_next``). For each target it either keeps
    decoding forward or seeks, whichever decodes fewer frames: it seeks when the keyframe before
    the target lies more than ``_SEEK_COST_IN_FRAMES`` frames past the decode position. The
    keyframe comes from the demuxer's index (mp4, mov, mkv, webm and avi have one); without an
    index it is guessed from the longest keyframe interval observed so far, i.e. it decodes
    forward when the target is within that interval of the decode position. On the way to a
    target, non-reference frames shown well before it are not decoded at all (``_decode``).
    """

    def __init__(
        self,
        container: av.container.InputContainer,
        header: _VideoHeader,
        name: str,
        *,
        use_index: bool = True,
        skip_nonref: bool = True,
    ):
        self._container = container
        self._stream = header.stream
        self._header = header
        self._name = name
        self._use_index = use_index
        self._min_skip_s = _SEEK_COST_IN_FRAMES / header.fps if header.fps > 0 else 0.0
        self._decoder = None
        self._prev: _Decoded | None = None
        self._next: _Decoded | None = None
        self._last_keyframe_s: float | None = None  # the last keyframe decoded since the last seek
        self._keyframe_gap_s = 0.0  # longest stretch decoded forward without meeting a keyframe
        self._last_good_s: float | None = None  # the latest frame time decoded without error
        # One colour converter for the clip: a frame's own reformat() builds a new libswscale
        # context every time (measured 2.3 ms per 160x120 frame, vs 0.05 ms when shared).
        self._reformatter = VideoReformatter()
        self._index_lead_s = 0.0  # how far a keyframe's presentation follows its index time (B-frame delay)
        # Frames shown more than this before a target are not needed in full (see _decode);
        # None turns skipping off.
        self._skip_margin_s = _FULL_DECODE_FRAMES / header.fps if header.fps > 0 and skip_nonref else None
        self._full_decode_from_ts: float = -math.inf
        self._skipped_max_ts: int | None = None  # latest pts of a packet decoded with skipping on
        self.num_seeks = 0
        self.num_decoded = 0

    def frames_at(self, targets: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """``(T,)`` ascending target seconds -> (frames ``(T, H, W, 3)`` uint8 RGB, pts seconds ``(T,)``)."""
        frames: np.ndarray | None = None  # allocated once the first frame's size is known
        times = np.empty(len(targets), dtype=np.float64)
        last_picked: _Decoded | None = None
        for i, target in enumerate(targets):
            picked = self._frame_at(float(target))
            if picked is last_picked:  # T > frames in the window picks a frame repeatedly
                frames[i] = frames[i - 1]
            else:
                array = _to_rgb(picked.frame, like=None if frames is None else frames[0], reformatter=self._reformatter)
                if frames is None:
                    frames = np.empty((len(targets), *array.shape), dtype=np.uint8)
                frames[i] = array
                last_picked = picked
            times[i] = picked.time_s
        return frames, times

    def _frame_at(self, target_s: float) -> _Decoded:
        if self._skip_margin_s is not None:
            self._full_decode_from_ts = self._to_stream_ts(target_s - self._skip_margin_s)
        if self._decoder is None or self._should_seek(target_s):
            self._seek_before(target_s)
        while self._next is not None and self._next.time_s <= target_s + _TIE_TOLERANCE_S:
            self._prev, self._next = self._next, self._read()
        if self._prev is None:
            # Right after a seek that reached the stream's start, the target precedes the first
            # frame, which is what is on screen then. No frame at all: the data ends before.
            if self._next is None:
                raise self._ends_early(target_s)
            return self._next
        if self._skipped_max_ts is not None and self._skipped_max_ts > self._prev.frame.pts:
            # A skipped frame may lie between the answer and the target (frames are sparse here):
            # decode this stretch again in full, and stop skipping for this stream.
            self._skip_margin_s = None
            self._full_decode_from_ts = -math.inf
            self._seek_before(target_s)
            return self._frame_at(target_s)
        if self._next is None:
            self._check_not_truncated(target_s)
        return self._prev

    def _should_seek(self, target_s: float) -> bool:
        if self._next is None or target_s < self._next.time_s:
            return False  # at the end of the stream, or the answer is already decoded
        position_s = self._next.time_s
        keyframe_s = self._indexed_keyframe_before(target_s)
        if keyframe_s is None:
            # No index: the keyframe interval observed so far is the best guess of how far the
            # next keyframe can be; closer targets are reached by decoding forward.
            return target_s - position_s > max(self._keyframe_gap_s, self._min_skip_s)
        return keyframe_s + self._index_lead_s - position_s > self._min_skip_s

    def _indexed_keyframe_before(self, target_s: float) -> float | None:
        """Index time of the last keyframe shown at or before ``target_s``; ``None`` without an index.

        Index times are presentation times in Matroska but decode times in mp4, which precede
        presentation by the B-frame delay, while seeking goes by presentation time. That delay is
        learned from seeks (``_index_lead_s``) and allowed for here.
        """
        entries = self._stream.index_entries
        if not self._use_index or len(entries) == 0:
            return None
        i = entries.search_timestamp(self._to_stream_ts(target_s - self._index_lead_s), backward=True)
        if i < 0:
            return None
        return float(entries[i].timestamp * self._stream.time_base) - self._header.zero_s

    def _seek_before(self, target_s: float) -> None:
        """Seek so that the first decoded frame is at or before ``target_s`` (or the stream's first frame)."""
        predicted_s = self._indexed_keyframe_before(target_s)
        seek_s = target_s
        self._seek(seek_s)
        if predicted_s is not None and self._next is not None and self._next.frame.key_frame:
            lead_s = self._next.time_s - predicted_s
            if 0 < lead_s < _MAX_INDEX_LEAD_S:
                self._index_lead_s = max(self._index_lead_s, lead_s)
        step_s = 1.0
        while self._next is not None and self._next.time_s > target_s + _TIE_TOLERANCE_S:
            if seek_s <= self._header.start_s:
                return  # the target precedes the stream's first frame
            # Landed after the target (an imprecise index): step back further.
            seek_s = max(self._header.start_s, target_s - step_s)
            self._seek(seek_s)
            step_s *= 2

    def _seek(self, seek_s: float) -> None:
        """Seek to the keyframe at or before ``seek_s`` and decode its first frame."""
        try:
            self._container.seek(self._to_stream_ts(seek_s), stream=self._stream, backward=True)
        except av.FFmpegError as err:
            raise self._decode_failure(err) from err
        self.num_seeks += 1
        self._decoder = self._decode()
        self._skipped_max_ts = None
        self._prev = None
        self._last_keyframe_s = None
        self._next = self._read()

    def _decode(self) -> Iterator[av.VideoFrame]:
        """Decoded frames from the demuxer's position. Packets presented before
        ``_full_decode_from_ts`` have their non-reference frames (no other frame is decoded from
        them) skipped: such a frame is shown before the target's neighbourhood, so it cannot be
        the answer, and skipping saves about a third of the decoding (H.264 with B-frames)."""
        codec = self._stream.codec_context
        for packet in self._container.demux(self._stream):
            skip = packet.pts is not None and packet.pts < self._full_decode_from_ts
            codec.skip_frame = "NONREF" if skip else "DEFAULT"
            if skip:
                self._skipped_max_ts = (
                    packet.pts if self._skipped_max_ts is None else max(self._skipped_max_ts, packet.pts)
                )
            yield from packet.decode()

    def _read(self) -> _Decoded | None:
        try:
            frame = next(self._decoder, None)
        except av.FFmpegError as err:
            raise self._decode_failure(err) from err
        if frame is None:
            return None
        time_s = frame_time_s(frame, self._header.zero_s)
        if time_s is None:
            raise MediaError(self._name, "decoded video frames carry no timestamps")
        self.num_decoded += 1
        self._last_good_s = max(self._last_good_s, time_s) if self._last_good_s is not None else time_s
        if frame.key_frame:
            self._last_keyframe_s = time_s
        elif self._last_keyframe_s is not None:
            self._keyframe_gap_s = max(self._keyframe_gap_s, time_s - self._last_keyframe_s)
        return _Decoded(frame, time_s)

    def _check_not_truncated(self, target_s: float) -> None:
        """At the end of the decodable data: refuse if it ends well before the header's duration."""
        if target_s - self._prev.time_s > truncation_slack_s(self._header.end_s):
            raise self._ends_early(target_s)

    def _ends_early(self, target_s: float) -> MediaError:
        ends = (
            f"decodable video ends at {self._last_good_s:.2f} s"
            if self._last_good_s is not None
            else f"no video frame could be decoded up to {target_s:.2f} s"
        )
        return MediaError(
            self._name, f"{ends} but the header says it lasts {self._header.end_s:.2f} s (truncated or corrupt file)"
        )

    def _decode_failure(self, err: av.FFmpegError) -> MediaError:
        """Decoding failed midway: say how far it got and how long the header says the video is."""
        got = f"past {self._last_good_s:.2f} s" if self._last_good_s is not None else "any frame"
        return MediaError(
            self._name,
            f"cannot decode video {got}, though the header says it lasts {self._header.end_s:.2f} s "
            f"(truncated or corrupt file): {describe_ffmpeg_error(err)}",
        )

    def _to_stream_ts(self, time_s: float) -> int:
        return math.floor((time_s + self._header.zero_s) / self._stream.time_base)


def _to_rgb(frame: av.VideoFrame, like: np.ndarray | None, reformatter: VideoReformatter) -> np.ndarray:
    """A decoded frame as ``(H, W, 3)`` uint8 RGB, upright, sized like ``like`` if given.

    Streams may change resolution midway (WebRTC recordings do); frames are scaled to the first
    returned frame's size so the clip stacks into one array.
    """
    rotation_quarters = round(frame.rotation / 90) % 4 if frame.rotation else 0
    height, width = frame.height, frame.width
    if like is not None:
        height, width = like.shape[:2]
        if rotation_quarters % 2:
            height, width = width, height
    array = reformatter.reformat(frame, format="rgb24", width=width, height=height).to_ndarray()
    if rotation_quarters:
        # The display matrix says how far to turn the coded picture counter-clockwise to show it
        # upright (phones record portrait video as rotated landscape).
        array = np.ascontiguousarray(np.rot90(array, k=rotation_quarters))
    return array


def _decord_frames_at(src: ResolvedSource, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same sampling rule with decord's reader, which indexes every frame's time up front."""
    try:
        import decord
    except ImportError as err:
        raise ImportError("backend='decord' needs the decord package: pip install 'mico-chat[decord]'") from err
    try:
        reader = decord.VideoReader(src.path if src.path is not None else io.BytesIO(src.data))
        if len(reader) == 0:
            raise MediaError(src.name, "decord finds no video frames")
        # decord reports times as float32: compare with a tolerance relative to their size.
        starts = reader.get_frame_timestamp(np.arange(len(reader)))[:, 0].astype(np.float64)
        tolerance = np.maximum(_TIE_TOLERANCE_S, 1e-6 * np.abs(targets))
        indices = np.clip(np.searchsorted(starts, targets + tolerance, side="right") - 1, 0, len(starts) - 1)
        frames = reader.get_batch(indices.tolist()).asnumpy()
    except decord.DECORDError as err:
        raise MediaError(src.name, f"cannot decode video (decord): {err}") from err
    return frames, starts[indices]
