"""Sample media written from code: a short clip with a soundtrack, for tests, benchmarks and mini suites.

    make_demo_clip(Path("clip.mp4"), seconds=2.0)   # red square crossing a blue frame, 440 Hz beeps
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def make_demo_clip(path: Path, *, seconds: float = 4.0, fps: int = 25, size: tuple[int, int] = (160, 120)) -> Path:
    """Write an H.264/AAC mp4: a red square moving left to right; 440 Hz beeps at 0.5, 1.5, 2.5 s."""
    import av

    width, height = size
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("aac", rate=16000)
        audio.layout = "mono"
        n_frames = int(seconds * fps)
        side = height // 3
        for i in range(n_frames):
            img = np.zeros((height, width, 3), np.uint8)
            img[:] = (30, 60, 200)
            x = int((width - side) * i / max(1, n_frames - 1))
            y = (height - side) // 2
            img[y : y + side, x : x + side] = (220, 30, 30)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        rate = 16000
        t = np.arange(int(seconds * rate)) / rate
        beeps = sum(((t >= s) & (t < s + 0.3)) for s in (0.5, 1.5, 2.5))
        wave = (0.4 * np.sin(2 * np.pi * 440 * t) * beeps).astype(np.float32)
        chunk = 1024
        for start in range(0, len(wave), chunk):
            piece = wave[start : start + chunk][None, :]
            frame = av.AudioFrame.from_ndarray(piece, format="flt", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            for packet in audio.encode(frame):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)
    tmp.replace(path)
    return path
