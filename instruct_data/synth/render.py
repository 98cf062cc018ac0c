"""Render a :class:`~.scene.Scene`: video frames, the audio waveform, the still image and its depth map,
and write them as an H.264/AAC mp4, an RGB png and a 16-bit depth png.

Every output is a pure function of the scene (noise is drawn from a generator seeded by the scene),
and the encoders run single-threaded with fixed options, so the same scene gives byte-identical
files.
"""

from __future__ import annotations

import os
import wave
from pathlib import Path

import numpy as np
from PIL import Image

from mico_chat.media.mp4 import write_mp4

from . import factors as F
from .scene import Scene

SAMPLE_RATE = 16_000
# x264: one thread (determinism; parallelism comes from worker processes), a keyframe every second
# so any frame is cheap to seek to, near-lossless quality for flat colours.
X264_OPTIONS = {"preset": "ultrafast", "crf": "18", "threads": "1"}
AAC_OPTIONS = {"aac_coder": "fast"}  # 3x faster than the default coder; beeps and chirps stay clean


# ------------------------------------------------------------------------------------------ shapes
def shape_mask(shape: str, side: int) -> np.ndarray:
    """``(side, side)`` bool mask of ``shape`` filling its bounding square."""
    c = (side - 1) / 2
    y, x = np.mgrid[0:side, 0:side].astype(np.float64)
    if shape == "circle":
        return (x - c) ** 2 + (y - c) ** 2 <= (side / 2) ** 2
    if shape == "square":
        return np.ones((side, side), bool)
    if shape == "triangle":  # apex up, base along the bottom row
        half_width = (y + 0.5) / side * (side / 2)
        return np.abs(x - c) <= half_width
    if shape == "cross":  # a plus sign, arms a third of the side thick
        arm = side / 6
        return (np.abs(x - c) <= arm) | (np.abs(y - c) <= arm)
    raise ValueError(f"unknown shape {shape!r}; known: {', '.join(F.SHAPES)}")


def label_map(scene: Scene, t: float, mask: np.ndarray | None = None) -> np.ndarray:
    """``(H, W)`` uint8: 1 where an object covers the pixel at time ``t``, else 0 (background)."""
    labels = np.zeros((scene.height, scene.width), np.uint8)
    mask = shape_mask(scene.shape, scene.side) if mask is None else mask
    for x, y, side in scene.boxes(t):
        labels[y : y + side, x : x + side] |= mask
    return labels


def palette(scene: Scene) -> np.ndarray:
    """``(2, 3)`` uint8 RGB: background, object colour."""
    return np.array([F.BACKGROUNDS[scene.background], F.COLOURS[scene.colour]], np.uint8)


def rgb_frame(scene: Scene, t: float) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB frame at time ``t``."""
    return palette(scene)[label_map(scene, t)]


def depth_map(scene: Scene, t: float) -> np.ndarray:
    """``(H, W)`` uint16 depth in millimetres at time ``t``: the wall, and the objects in front of it."""
    depth = np.full((scene.height, scene.width), F.WALL_DEPTH_MM, np.uint16)
    depth[label_map(scene, t) == 1] = F.OBJECT_DEPTH_MM[scene.size]
    return depth


def _yuv_lut(rgb: np.ndarray) -> np.ndarray:
    """BT.601 limited-range Y, U, V of each palette colour (what FFmpeg assumes for untagged yuv420p)."""
    m = np.array([[0.256788, 0.504129, 0.097906], [-0.148223, -0.290993, 0.439216], [0.439216, -0.367788, -0.071427]])
    return rgb.astype(np.float64) @ m.T + np.array([16.0, 128.0, 128.0])  # (2, 3)


def yuv420_tables(lut: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lookup tables for :func:`yuv420_frame`: luma per label ``(2,)`` and chroma per object share of a
    2x2 block ``(5, 2)`` (0 to 4 object pixels: the block's average of the two colours' U and V)."""
    luma = np.rint(lut[:, 0]).astype(np.uint8)
    share = np.arange(5)[:, None] / 4
    chroma = np.rint(lut[0, 1:] + (lut[1, 1:] - lut[0, 1:]) * share).astype(np.uint8)
    return luma, chroma


def yuv420_frame(labels: np.ndarray, tables: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Label map ``(H, W)`` -> packed yuv420p ``(H * 3 // 2, W)`` uint8, chroma averaged over 2x2 blocks."""
    h, w = labels.shape
    luma, chroma_table = tables
    y = luma[labels]
    share = labels[0::2, 0::2] + labels[1::2, 0::2] + labels[0::2, 1::2] + labels[1::2, 1::2]  # (H/2, W/2) in 0..4
    chroma = chroma_table[share]  # (H/2, W/2, 2)
    return np.concatenate([y.ravel(), chroma[..., 0].ravel(), chroma[..., 1].ravel()]).reshape(h * 3 // 2, w)


# ------------------------------------------------------------------------------------------- audio
def _ramp(n: int, ramp: int) -> np.ndarray:
    env = np.ones(n)
    r = min(ramp, n // 2)
    if r:
        edge = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, r))
        env[:r], env[-r:] = edge, edge[::-1]
    return env


def _band_noise(rng: np.random.Generator, n: int, band: tuple[float, float]) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spectrum[(freqs < band[0]) | (freqs > band[1])] = 0
    noise = np.fft.irfft(spectrum, n)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def waveform(scene: Scene, speech: np.ndarray | None = None) -> np.ndarray:
    """``(round(duration * 16000),)`` float32 mono waveform of the scene's sound.

    ``speech`` holds the 16 kHz samples of the spoken phrase for a speech scene.
    """
    n = int(round(scene.duration_s * SAMPLE_RATE))
    out = np.zeros(n)
    spec = scene.sound
    rng = np.random.default_rng([scene.seed, F.SPLITS[scene.split], scene.index, 7])
    for start_s, end_s in spec.events:
        a, b = int(round(start_s * SAMPLE_RATE)), min(int(round(end_s * SAMPLE_RATE)), n)
        m = b - a
        t = np.arange(m) / SAMPLE_RATE
        if spec.sound == "beeps":
            piece = 0.5 * np.sin(2 * np.pi * spec.frequency_hz * t) * _ramp(m, 80)
        elif spec.sound == "chirp":  # exponential sweep: equal time per octave, as heard
            f0, f1 = spec.frequency_hz
            k = np.log(f1 / f0) / (m / SAMPLE_RATE)
            phase = 2 * np.pi * f0 * (np.exp(k * t) - 1) / k
            piece = 0.5 * np.sin(phase) * _ramp(m, 160)
        elif spec.sound == "noise":
            piece = 0.2 * _band_noise(rng, m, F.NOISE_BAND_HZ[spec.pitch]) * _ramp(m, 160)
        elif spec.sound == "speech":
            if speech is None:
                raise ValueError(f"{scene.id}: a speech scene needs the spoken samples")
            piece = speech[:m] * 0.9 / (np.abs(speech).max() + 1e-9)
            piece = np.pad(piece, (0, m - len(piece)))
        else:
            raise ValueError(f"{scene.id}: sound {spec.sound!r} has no events to render")
        out[a:b] += piece
    return np.clip(out, -1, 1).astype(np.float32)


# ------------------------------------------------------------------------------------------ writing
def write_clip(path: str | os.PathLike, scene: Scene, audio: np.ndarray) -> None:
    """Write the scene as mp4: H.264 yuv420p at ``scene.fps`` + AAC mono 16 kHz, atomically."""
    tables = yuv420_tables(_yuv_lut(palette(scene)))
    mask = shape_mask(scene.shape, scene.side)

    def frames():
        previous_boxes, planes = None, None
        for i in range(scene.num_frames):
            t = scene.frame_time(i)
            boxes = scene.boxes(t)
            if boxes != previous_boxes:  # still objects: re-use the last frame's planes
                planes = yuv420_frame(label_map(scene, t, mask), tables)
                previous_boxes = boxes
            yield planes

    write_mp4(
        path, frames(), fps=scene.fps, size=(scene.width, scene.height), frame_format="yuv420p",
        audio=audio, sample_rate=SAMPLE_RATE, video_options={**X264_OPTIONS, "g": str(scene.fps)},
        audio_options=AAC_OPTIONS, threads=1,
    )  # fmt: skip


def write_png(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``(H, W, 3)`` uint8 as RGB png or ``(H, W)`` uint16 as 16-bit grey png, atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{path}: write uint8 RGB or uint16 depth, got {array.dtype}")
    image = Image.fromarray(array)  # uint16 (H, W) -> mode I;16, a 16-bit grey png
    image.save(tmp, format="png", compress_level=1)
    tmp.replace(path)


def read_wav_mono(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """A 16-bit PCM wav as float64 mono samples in [-1, 1] and its sample rate."""
    with wave.open(str(path), "rb") as handle:
        rate, channels, width = handle.getframerate(), handle.getnchannels(), handle.getsampwidth()
        raw = handle.readframes(handle.getnframes())
    if width != 2:
        raise ValueError(f"{path}: expected 16-bit PCM, got {8 * width}-bit")
    samples = np.frombuffer(raw, "<i2").astype(np.float64) / 32768.0
    return samples.reshape(-1, channels).mean(axis=1), rate


def resample(samples: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Linear-interpolation resampling (enough for speech placed in a synthetic clip)."""
    if rate == target or len(samples) == 0:
        return samples
    n = int(round(len(samples) * target / rate))
    return np.interp(np.arange(n) * rate / target, np.arange(len(samples)), samples)
