"""Example clips offered by the web UI.

The video examples are clips of a small held-out synthetic world (:mod:`mico_chat.instruct_data.synth`,
the world the embedded default is trained and evaluated on), each with one of its own open
questions, so a trained default answers them and its answers can be checked against the ground
truth in ``world.jsonl``. The audio example is three of the world's low beeps. All are written once
into ``<MICO_CHAT_HOME>/demo/`` (about a second) and reused.
"""

from __future__ import annotations

import json
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# The held-out world the examples come from: a fixed seed, so every install shows the same clips.
WORLD_SEED = 7
WORLD_CLIPS = 3
# One open (not multiple-choice) video question of each family, in this order.
FAMILIES = ("motion", "counting", "audio-visual")


@dataclass(frozen=True)
class ExampleClip:
    """One example: a media file, its kind (``video``, ``audio``, ``image``) and a question about it."""

    path: Path
    kind: str
    question: str
    answer: str | None = None  # the ground truth, where known


def example_clips(folder: Path | None = None) -> list[ExampleClip]:
    """The UI's examples, generated into ``folder`` (default ``<MICO_CHAT_HOME>/demo``) on first use."""
    from mico_chat.weights import mico_home

    folder = folder or mico_home() / "demo"
    examples = world_examples(folder / "world")
    beeps = folder / "world_beeps.wav"  # the world's low beeps (an older demo_beeps.wav had others)
    if not beeps.exists():
        write_beeps(beeps)
    return [*examples, ExampleClip(beeps, "audio", "How many beeps do you hear?", "3")]


def world_examples(world: Path) -> list[ExampleClip]:
    """One open video question per family in :data:`FAMILIES`, from a small held-out world."""
    from mico_chat.instruct_data.synth import RECORDS_FILE, WorldConfig, generate_world

    records_file = world / RECORDS_FILE
    if not records_file.exists():
        # Speech off, as in the default's training world: the same clips whether espeak-ng is installed or not.
        config = WorldConfig(speech="off")
        generate_world(world, WORLD_CLIPS, seed=WORLD_SEED, split="heldout", workers=1, config=config, progress=False)
    chosen: dict[str, ExampleClip] = {}
    for line in records_file.read_text().splitlines():
        record = json.loads(line)
        meta, media = record["meta"], record["media"]
        family = meta.get("family")
        if family not in FAMILIES or family in chosen or meta.get("form") != "open":
            continue
        if [m["modality"] for m in media][:1] != ["video"] or len(record["messages"]) != 2:
            continue
        prompt_lines = record["messages"][0]["content"].splitlines()
        question = "\n".join(text for text in prompt_lines if not text.strip().startswith("<"))  # drop placeholders
        chosen[family] = ExampleClip(world / media[0]["path"], "video", question, meta.get("answer"))
    return [chosen[f] for f in FAMILIES if f in chosen]


def write_beeps(
    path: Path, *, seconds: float = 4.0, rate: int = 16_000, starts: tuple[float, ...] = (0.3, 0.6, 0.9)
) -> Path:
    """A 16-bit mono WAV: low (500 Hz) beeps of 0.15 s at ``starts``, the synthetic world's beeps
    (:mod:`mico_chat.instruct_data.synth.factors`), so the default model knows the sound."""
    from mico_chat.instruct_data.synth import factors

    t = np.arange(int(seconds * rate)) / rate
    on = sum(((t >= s) & (t < s + factors.BEEP_ON_S)) for s in starts)
    samples = (0.4 * np.sin(2 * np.pi * factors.BEEP_HZ["low"] * t) * on * 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.wav")
    with wave.open(str(tmp), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    tmp.replace(path)
    return path
