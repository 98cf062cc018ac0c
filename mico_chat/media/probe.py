"""Read what a media file holds from its header, and guess the modality of an input of unknown kind."""

from __future__ import annotations

from dataclasses import dataclass

from mico_chat.media._pyav import (
    ffmpeg_errors,
    motion_video_streams,
    open_container,
    scan_stream_end_s,
    stream_end_s,
    timeline_zero_s,
)
from mico_chat.media.audio import audio_end_s
from mico_chat.media.errors import MediaError, MediaLimits
from mico_chat.media.image import NPY_MAGIC, identify_image, png_header, read_npy_shape
from mico_chat.media.source import MediaSource, ResolvedSource, resolve_source

MEDIA_KINDS = ("video", "audio", "image", "depth", "normal")


@dataclass
class MediaInfo:
    """What a file holds, from its header (nothing decoded).

    Attributes:
        path: the path, or the name given to in-memory data.
        kind: ``"video"`` (has a motion video stream), ``"audio"`` (audio only) or ``"image"``
            (a picture, or a 2-D/3-D ``.npy`` raster).
        duration_s: length in seconds (the longest stream); ``None`` for images.
        fps: average frame rate of the video stream; ``None`` without one.
        width, height: frame or image size in pixels, as coded (before any display rotation).
        has_video, has_audio: whether a motion video stream / an audio stream is present
            (cover art in audio files does not count as video).
        audio_sample_rate: of the first audio stream, in Hz.
        num_frames: frame count the header states; ``None`` where it states none (mkv, webm).
    """

    path: str
    kind: str
    duration_s: float | None
    fps: float | None
    width: int | None
    height: int | None
    has_video: bool
    has_audio: bool
    audio_sample_rate: int | None
    num_frames: int | None


def probe(source: MediaSource, *, name: str | None = None, limits: MediaLimits = MediaLimits()) -> MediaInfo:
    """Describe a video, audio or image file from its header.

    The header is checked against ``limits`` (size, duration, frame size, pixel count), so probing
    an upload first refuses it before anything is decoded. Raises ``MediaError`` for missing,
    empty, unrecognisable or over-limit files.
    """
    return _probe_resolved(resolve_source(source, name, limits), limits)


def _probe_resolved(src: ResolvedSource, limits: MediaLimits) -> MediaInfo:
    head = src.read_head(64)
    if head.startswith(NPY_MAGIC):
        shape = read_npy_shape(src, limits)
        if len(shape) not in (2, 3):
            raise MediaError(src.name, f"holds an array of shape {shape}, not an image-like raster")
        return _image_info(src.name, width=shape[1], height=shape[0])
    image_size = identify_image(src, limits)
    if image_size is not None:
        return _image_info(src.name, *image_size)
    return _probe_container(src, limits)


def media_kind_of(source: MediaSource, name: str | None = None, *, limits: MediaLimits = MediaLimits()) -> str:
    """Guess an input's modality: ``"video"``, ``"audio"``, ``"image"``, ``"depth"`` or ``"normal"``.

    A guess for inputs that arrive without one (uploads, mixed folders); code that knows the
    modality should say so. The rules, from the header, not the extension alone:
    ``.npy`` arrays of shape (H, W) or (H, W, 1) are depth, (H, W, 3) normals; a 16-bit grey PNG is
    depth; other pictures are images; audio/video containers are video if they hold a motion
    video stream, else audio (so a browser's audio-only ``.webm`` recording is audio).
    Raises ``MediaError`` when the content is none of these.
    """
    src = resolve_source(source, name, limits)
    head = src.read_head(64)
    if head.startswith(NPY_MAGIC):
        shape = read_npy_shape(src, limits)
        if len(shape) == 2 or (len(shape) == 3 and shape[2] == 1):
            return "depth"
        if len(shape) == 3 and shape[2] == 3:
            return "normal"
        raise MediaError(
            src.name, f"holds an array of shape {shape}: neither a depth (H, W) nor a normal (H, W, 3) map"
        )
    png = png_header(head)
    if png is not None and png.bit_depth == 16 and png.is_grey:
        return "depth"
    return _probe_resolved(src, limits).kind


def _image_info(name: str, width: int, height: int) -> MediaInfo:
    return MediaInfo(
        path=name, kind="image", duration_s=None, fps=None, width=width, height=height,
        has_video=False, has_audio=False, audio_sample_rate=None, num_frames=None,
    )  # fmt: skip


def _probe_container(src: ResolvedSource, limits: MediaLimits) -> MediaInfo:
    with open_container(src) as container, ffmpeg_errors(src.name, "cannot read header"):
        videos = motion_video_streams(container)
        audios = list(container.streams.audio)
        if not videos and not audios:
            raise MediaError(src.name, "holds neither a video nor an audio stream")
        zero_s = timeline_zero_s(container)
        ends = []
        width = height = fps = num_frames = None
        if videos:
            video = videos[0]
            if video.codec_context is not None:  # None when FFmpeg has no decoder for the codec
                width, height = video.codec_context.width, video.codec_context.height
                limits.check_video_side(src.name, width, height)
            rate = video.average_rate or video.guessed_rate
            fps = float(rate) if rate else None
            num_frames = video.frames or None
            ends.append(stream_end_s(container, video, zero_s))
        if audios:
            ends.append(audio_end_s(src, container, audios[0], zero_s))
        known = [end for end in ends if end is not None]
        if known:
            duration_s = max(known)
        else:
            stream = videos[0] if videos else audios[0]
            duration_s = scan_stream_end_s(container, stream, zero_s, stop_after_s=limits.max_duration_s)
        if duration_s is not None:
            limits.check_duration(src.name, duration_s)
        return MediaInfo(
            path=src.name,
            kind="video" if videos else "audio",
            duration_s=duration_s,
            fps=fps,
            width=width,
            height=height,
            has_video=bool(videos),
            has_audio=bool(audios),
            audio_sample_rate=audios[0].codec_context.sample_rate if audios and audios[0].codec_context else None,
            num_frames=num_frames,
        )
