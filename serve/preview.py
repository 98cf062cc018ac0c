"""What the model will see and hear of an upload: the sampled frames and the waveform.

The frames come from :func:`mico_chat.media.load_video` with the number of frames the request will
use, so the preview shows exactly the frames the encoder reads (before resizing). The waveform is
the 16 kHz mono signal the audio features are computed from, drawn as a min/max envelope.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mico_chat.media import MediaError, MediaLimits, load_audio, load_video, probe

WAVEFORM_RATE = 16_000


@dataclass
class Preview:
    """Frames ``[(H, W, 3) uint8, caption]`` and a waveform figure (or ``None``), plus a one-line summary."""

    frames: list[tuple[np.ndarray, str]]
    waveform: object | None  # matplotlib Figure
    summary: str


def preview_media(path: str, kind: str, *, num_frames: int, with_audio: bool, limits: MediaLimits) -> Preview:
    """Sampled frames (videos), waveform (audio, or a video's track when ``with_audio``), a summary.

    Raises ``MediaError`` for unreadable or over-limit files, with the file named.
    """
    info = probe(path, limits=limits)
    frames: list[tuple[np.ndarray, str]] = []
    waveform = None
    facts = []
    if kind == "video":
        if not info.has_video:
            raise MediaError(path, "holds no video stream (upload it as audio instead)")
        clip = load_video(path, num_frames, limits=limits)
        frames = [(frame, f"{t:.2f} s") for frame, t in zip(clip.frames, clip.timestamps)]
        facts.append(f"video {info.width}x{info.height}, {clip.duration_s:.1f} s, {num_frames} frames sampled")
        if info.has_audio and with_audio:
            waveform = waveform_figure(load_audio(path, sample_rate=WAVEFORM_RATE, limits=limits).samples)
            facts.append("with its audio track")
        elif info.has_audio:
            facts.append("audio track ignored (setting)")
        else:
            facts.append("no audio track")
    elif kind == "audio":
        wave = load_audio(path, sample_rate=WAVEFORM_RATE, limits=limits)
        waveform = waveform_figure(wave.samples)
        facts.append(f"audio, {wave.duration_s:.1f} s")
    else:
        facts.append(f"image {info.width}x{info.height}")
    return Preview(frames, waveform, "; ".join(facts))


def waveform_envelope(samples: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Min and max of ``samples`` ``(N,)`` over ``columns`` equal spans: ``(starts, lows, highs)``,
    each ``(min(columns, N),)``; ``starts`` are sample indices."""
    n = len(samples)
    columns = max(1, min(columns, n))
    edges = np.linspace(0, n, columns + 1).astype(int)
    lows = np.array([samples[a:b].min() if b > a else 0.0 for a, b in zip(edges[:-1], edges[1:])])
    highs = np.array([samples[a:b].max() if b > a else 0.0 for a, b in zip(edges[:-1], edges[1:])])
    return edges[:-1], lows, highs


def waveform_figure(samples: np.ndarray, rate: int = WAVEFORM_RATE, *, width_px: int = 600):
    """A small matplotlib figure of ``samples`` ``(N,)`` in [-1, 1]: min/max per pixel column."""
    from matplotlib.figure import Figure  # a bare Figure renders with Agg: no pyplot, no display needed

    starts, lows, highs = waveform_envelope(samples, width_px)
    fig = Figure(figsize=(6, 1.6), dpi=100)
    ax = fig.add_subplot()
    ax.fill_between(starts / rate, lows, highs, color="#3b6fd4", linewidth=0)
    ax.set_xlim(0, max(1, len(samples)) / rate)
    ax.set_ylim(-1, 1)
    ax.set_xlabel("seconds")
    ax.set_yticks([])
    ax.spines[["top", "right", "left"]].set_visible(False)
    fig.tight_layout()
    return fig
