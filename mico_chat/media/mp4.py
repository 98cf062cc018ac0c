"""Writing media: an H.264/AAC mp4 from frames and a mono waveform, atomically.

    write_mp4(Path("clip.mp4"), frames, fps=25, size=(160, 120), audio=wave)   # frames: (H, W, 3) uint8

The one mp4 writer of the project: the demo clip (:mod:`mico_chat.media.samples`) and the synthetic
world's clips (:mod:`instruct_data.synth.render`) both go through it. With ``threads=1`` and fixed
encoder options the same input gives byte-identical files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from fractions import Fraction
from pathlib import Path

import numpy as np

AUDIO_FRAME = 1024
"""Samples per AAC input frame."""


def write_mp4(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    *,
    fps: int,
    size: tuple[int, int],
    frame_format: str = "rgb24",
    audio: np.ndarray | None = None,
    sample_rate: int = 16_000,
    video_options: Mapping[str, str] | None = None,
    audio_options: Mapping[str, str] | None = None,
    threads: int | None = None,
) -> Path:
    """Write ``frames`` (H.264 yuv420p at ``fps``) and ``audio`` (AAC mono) to ``path``.

    Args:
        frames: one array per frame in ``frame_format``: ``"rgb24"`` ``(H, W, 3)`` uint8, or
            ``"yuv420p"`` planes ``(H * 3 // 2, W)`` uint8.
        size: ``(width, height)`` of every frame.
        audio: mono float32 samples in [-1, 1] at ``sample_rate``; ``None``: no audio stream.
        video_options, audio_options: encoder options (e.g. x264's ``preset``, ``crf``, ``g``).
        threads: encoder threads (1 for byte-identical output).

    The file appears only when complete (written to ``<name>.tmp`` and renamed). Returns ``path``.
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    width, height = size
    try:
        with av.open(str(tmp), "w", format="mp4") as container:
            video = container.add_stream("libx264", rate=fps, options=dict(video_options or {}))
            video.width, video.height, video.pix_fmt = width, height, "yuv420p"
            if threads is not None:
                video.codec_context.thread_count = threads
            sound = None
            if audio is not None:
                sound = container.add_stream("aac", rate=sample_rate, options=dict(audio_options or {}))
                sound.layout = "mono"
            for i, array in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(array, format=frame_format)
                frame.pts = i
                for packet in video.encode(frame):
                    container.mux(packet)
            for packet in video.encode():
                container.mux(packet)
            if sound is not None:
                samples = np.ascontiguousarray(audio, dtype=np.float32)
                if samples.ndim != 1:
                    raise ValueError(f"{path}: audio must be mono (samples,), got shape {samples.shape}")
                for start in range(0, len(samples), AUDIO_FRAME):
                    piece = samples[None, start : start + AUDIO_FRAME]
                    frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout="mono")
                    frame.sample_rate = sample_rate
                    frame.pts = start
                    frame.time_base = Fraction(1, sample_rate)
                    for packet in sound.encode(frame):
                        container.mux(packet)
                for packet in sound.encode():
                    container.mux(packet)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)
    return path
