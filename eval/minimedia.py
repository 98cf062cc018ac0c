"""What mini suites are made of: generic items (:class:`MiniItem`) and generated media (:class:`MiniMedia`).

Each benchmark turns items into its official layout (``Benchmark.build_mini``) and says which
items it asks about the generated media (``Benchmark.mini_items``); :mod:`mico_chat.eval.minisuite`
builds them all. Media are simple images (PIL shapes), 1-2 s H.264/AAC clips and 16 kHz tones,
each made on first use (seconds).
"""

from __future__ import annotations

import json
import math
import shutil
import wave
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class MiniItem:
    """One generic benchmark item.

    Args:
        media: the image, video or audio file the question is about.
        question: the question (for captioning: unused, the benchmark's prompt is asked).
        answer: the ground truth (``Yes``/``No`` for MME; one of ``options`` for MMBench).
        options: multiple-choice options (MMBench).
        category: the subtask or category (MME subtask, MMBench category, ``temporal`` or
            ``generic`` for Video-ChatGPT).
        references: extra ground truths (Clotho: five captions; ClothoAQA: annotators' answers).
        question2: a paraphrase of ``question`` (Video-ChatGPT consistency pairs).
        meta: benchmark-specific extras (MMBench ``l2-category``, ``hint``).
    """

    media: Path
    question: str
    answer: str
    options: tuple[str, ...] = ()
    category: str = ""
    references: tuple[str, ...] = ()
    question2: str = ""
    meta: Mapping[str, str] = field(default_factory=dict)


SHAPES = {"square": "red", "circle": "green", "triangle": "blue"}
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 70, 220),
    "yellow": (230, 210, 40),
    "white": (240, 240, 240),
}


def make_image(path: Path, shape: str, colour: str, background: str = "white", size: int = 64) -> Path:
    """A PNG (or JPEG by suffix) of one filled shape on a plain background."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), COLOURS[background])
    draw = ImageDraw.Draw(img)
    box = (size // 4, size // 4, 3 * size // 4, 3 * size // 4)
    if shape == "square":
        draw.rectangle(box, fill=COLOURS[colour])
    elif shape == "circle":
        draw.ellipse(box, fill=COLOURS[colour])
    else:
        draw.polygon([(size // 2, size // 4), (size // 4, 3 * size // 4), (3 * size // 4, 3 * size // 4)], fill=COLOURS[colour])
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def make_tone(path: Path, frequency: float, seconds: float = 1.0, beeps: int = 1, rate: int = 16000) -> Path:
    """A 16 kHz mono 16-bit WAV: ``beeps`` short tones of ``frequency`` Hz."""
    t = np.arange(int(seconds * rate)) / rate
    slot = seconds / beeps
    gate = ((t % slot) < slot * 0.6).astype(np.float32)
    wave_ = 0.3 * np.sin(2 * math.pi * frequency * t) * gate
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((wave_ * 32767).astype("<i2").tobytes())
    return path


class MiniMedia:
    """The generated media under ``root``, each kind made on first access.

    ``images[shape, colour]``: 64x64 PNGs of the three shapes in red, green and blue;
    ``clips``: three clips of a red square crossing a blue frame with beeps (1, 1.5 and 2 s);
    ``tones[hz]``: WAVs of 440 Hz (one beep), 880 Hz (two) and 220 Hz (three).
    """

    def __init__(self, root: Path):
        self.root = Path(root)

    @cached_property
    def images(self) -> dict[tuple[str, str], Path]:
        return {
            (shape, colour): make_image(self.root / f"{shape}_{colour}.png", shape, colour)
            for shape in SHAPES
            for colour in ("red", "green", "blue")
        }

    @cached_property
    def clips(self) -> list[Path]:
        from mico_chat.media.samples import make_demo_clip  # deferred: mico_chat.media brings in torch

        return [make_demo_clip(self.root / f"clip{i}.mp4", seconds=1.0 + 0.5 * i, fps=8, size=(64, 48)) for i in range(3)]

    @cached_property
    def tones(self) -> dict[int, Path]:
        return {f: make_tone(self.root / f"tone_{f}hz.wav", f, seconds=1.0, beeps=b) for f, b in ((440, 1), (880, 2), (220, 3))}


def copy_file(src: Path, dst: Path) -> Path:
    """Copy ``src`` to ``dst`` (folders made) unless ``dst`` exists; returns ``dst``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        shutil.copyfile(src, dst)
    return dst


def write_json(path: Path, payload: object) -> None:
    """``payload`` as indented JSON (folders made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
