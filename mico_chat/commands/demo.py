"""``mico-chat demo``: a chat about a generated clip with the default model, in the terminal.

The clip is the web UI's first example (:mod:`mico_chat.serve.examples`): a clip of a small held-out
synthetic world, generated on first use, so the demo needs no downloaded media and the default
(trained on that world) can be checked against the clip's ground-truth caption, printed too.
:func:`make_demo_clip` writes a clip outside that world (tests use it as plain media).
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

import numpy as np

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default")
    parser.add_argument("--question", help="default: the example's own question (its ground-truth answer is printed)")
    parser.add_argument("--out", type=Path, help="folder for the generated example world (default: the cache)")


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


def run(args: argparse.Namespace) -> int:
    from mico_chat.api import ChatModel
    from mico_chat.instruct_data.synth import read_world
    from mico_chat.presets import PRESETS, preset_note
    from mico_chat.serve.examples import world_examples
    from mico_chat.weights import mico_home

    world = args.out or (mico_home() / "demo" / "world")
    example = world_examples(world)[0]
    caption = next(e["captions"]["omni"] for e in read_world(world) if (world / e["media"]["video"]) == example.path)
    question = args.question or example.question
    print(f"clip: {example.path}\nthe clip (ground truth): {caption}")
    if not args.question:
        print(f"expected answer: {example.answer}")
    if args.model in PRESETS and preset_note(args.model):
        print(f"note: {preset_note(args.model)}")
    chat = ChatModel.load(args.model)
    print(f"you> {question}")
    print("assistant> ", end="", flush=True)
    content = [{"type": "video", "video": str(example.path)}, {"type": "text", "text": question}]
    messages = [{"role": "user", "content": content}]
    for piece in chat.stream(messages):
        print(piece, end="", flush=True)
    print()
    return 0
