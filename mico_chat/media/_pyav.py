"""PyAV plumbing shared by the probe, video and audio loaders: opening, error translation, timing.

Times handed to callers are seconds on the file's timeline: 0 is the container's start time, as
players and ``ffmpeg -ss`` count. Video and audio of one file share that timeline, so a frame at
``t`` and the audio window starting at ``t`` line up.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator

import av
import av.container
import av.stream

from mico_chat.media.errors import MediaError
from mico_chat.media.source import ResolvedSource

# Demuxers FFmpeg may use on our inputs. An allow-list, not FFmpeg's 400 formats: some of those
# read other files or URLs named inside the input (HLS playlists, concat lists), and some turn
# anything into "video" (the `tty` demuxer renders text files).
ALLOWED_DEMUXERS = (
    "mov", "mp4", "matroska", "webm", "avi", "mpeg", "mpegts", "flv", "asf", "ogg",
    "wav", "w64", "flac", "mp3", "aac", "aiff",
)  # fmt: skip

_MKV_DURATION_TAG = re.compile(r"^(\d+):(\d{2}):(\d{2}(?:\.\d+)?)$")


@contextlib.contextmanager
def ffmpeg_errors(name: str, action: str) -> Iterator[None]:
    """Translate PyAV/FFmpeg errors raised inside the block into ``MediaError(name, f"{action}: ...")``."""
    try:
        yield
    except av.FFmpegError as err:
        raise MediaError(name, f"{action}: {describe_ffmpeg_error(err)}") from err


def describe_ffmpeg_error(err: av.FFmpegError) -> str:
    """FFmpeg's own words for an error, without the file name PyAV appends."""
    return f"{err.strerror} (FFmpeg)" if getattr(err, "strerror", None) else f"{err} (FFmpeg)"


def open_container(src: ResolvedSource) -> av.container.InputContainer:
    """Open ``src`` for demuxing with an allowed demuxer; the caller closes it (use ``with``).

    Raises ``MediaError`` if FFmpeg does not recognise the content or recognises a format outside
    ``ALLOWED_DEMUXERS``.
    """
    file = src.path if src.path is not None else io.BytesIO(src.data)
    try:
        return av.open(
            file,
            mode="r",
            # Tags in legacy encodings must not make a readable file fail.
            metadata_errors="replace",
            container_options={"format_whitelist": ",".join(ALLOWED_DEMUXERS)},
        )
    except av.error.InvalidDataError as err:
        raise MediaError(src.name, f"not a recognisable audio/video file: {describe_ffmpeg_error(err)}") from err
    except av.error.ArgumentError as err:
        # FFmpeg answers EINVAL when the detected demuxer is not on the whitelist.
        raise MediaError(src.name, f"not a supported audio/video container: {describe_ffmpeg_error(err)}") from err
    except av.FFmpegError as err:
        raise MediaError(src.name, f"cannot open: {describe_ffmpeg_error(err)}") from err


def timeline_zero_s(container: av.container.InputContainer) -> float:
    """The container's start time in seconds: the 0 of the timeline callers see."""
    return container.start_time / av.time_base if container.start_time is not None else 0.0


def is_picture_stream(stream: av.stream.Stream) -> bool:
    """True for a video stream that is really one still picture (cover art in mp3/m4a files)."""
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def motion_video_streams(container: av.container.InputContainer) -> list[av.video.stream.VideoStream]:
    """The container's video streams, cover-art pictures excluded."""
    return [s for s in container.streams.video if not is_picture_stream(s)]


def stream_start_s(stream: av.stream.Stream, zero_s: float) -> float:
    """When the stream's first packet is presented, in timeline seconds (0.0 when unknown)."""
    if stream.start_time is None:
        return 0.0
    return float(stream.start_time * stream.time_base) - zero_s


def stream_end_s(container: av.container.InputContainer, stream: av.stream.Stream, zero_s: float) -> float | None:
    """When the stream ends, in timeline seconds, as its header says; ``None`` if no header says.

    Sources, most specific first: the stream's duration (mp4, mov, avi, wav...), Matroska's
    per-stream ``DURATION`` tag (mkv, webm), the container's duration.
    """
    start = stream_start_s(stream, zero_s)
    if stream.duration is not None and stream.duration > 0:
        return start + float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    if tag:
        match = _MKV_DURATION_TAG.match(tag.strip())
        if match:
            hours, minutes, seconds = match.groups()
            return start + int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def scan_stream_end_s(
    container: av.container.InputContainer, stream: av.stream.Stream, zero_s: float, *, stop_after_s: float
) -> float | None:
    """The stream's end found by demuxing its packets (no decoding), for files whose header states no
    duration (e.g. WebM recorded by browsers). Stops early once past ``stop_after_s``, which the
    caller's duration limit then refuses. Leaves the container rewound to its start.
    """
    end = None
    for packet in container.demux(stream):
        if packet.pts is None:
            continue
        packet_end = float((packet.pts + (packet.duration or 0)) * stream.time_base) - zero_s
        end = packet_end if end is None else max(end, packet_end)
        if end > stop_after_s:
            break
    container.seek(0)
    return end


def truncation_slack_s(header_duration_s: float) -> float:
    """How far short of the header's duration decodable data may end before the file counts as
    truncated: 1 s or 5 %, whichever is more (headers of some formats, e.g. VBR mp3, estimate)."""
    return max(1.0, 0.05 * header_duration_s)


def frame_time_s(frame: av.frame.Frame, zero_s: float) -> float | None:
    """The frame's presentation time in timeline seconds; ``None`` if the decoder gave it no pts."""
    return None if frame.pts is None else float(frame.pts * frame.time_base) - zero_s
