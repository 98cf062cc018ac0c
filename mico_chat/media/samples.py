"""Sample media written from code: a short clip with a soundtrack, for tests, benchmarks and mini suites.

    make_demo_clip(Path("clip.mp4"), seconds=2.0)   # red square crossing a blue frame, 440 Hz beeps
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mico_chat.media.mp4 import write_mp4


def make_demo_clip(path: Path, *, seconds: float = 4.0, fps: int = 25, size: tuple[int, int] = (160, 120)) -> Path:
    """Write an H.264/AAC mp4: a red square moving left to right; 440 Hz beeps at 0.5, 1.5, 2.5 s."""
    width, height = size
    n_frames = int(seconds * fps)
    side = height // 3

    def frames():
        for i in range(n_frames):
            img = np.zeros((height, width, 3), np.uint8)
            img[:] = (30, 60, 200)
            x = int((width - side) * i / max(1, n_frames - 1))
            y = (height - side) // 2
            img[y : y + side, x : x + side] = (220, 30, 30)
            yield img

    rate = 16000
    t = np.arange(int(seconds * rate)) / rate
    beeps = sum(((t >= s) & (t < s + 0.3)) for s in (0.5, 1.5, 2.5))
    wave = (0.4 * np.sin(2 * np.pi * 440 * t) * beeps).astype(np.float32)
    return write_mp4(path, frames(), fps=fps, size=size, audio=wave, sample_rate=rate)
