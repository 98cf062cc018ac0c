"""Generated media and tiny parts for pretraining and retrieval tests (no downloads).

:func:`make_av_world` writes short H.264/AAC clips of a coloured square moving left or right
while a tone beeps once or twice at a low or high pitch, and caption-pair records with vision,
audio and omni captions, so every caption is exactly true of its clip.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
from transformers import BertConfig, BertModel

from .tiny_pretraining import tiny_bert_tokenizer

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 70), "blue": (40, 90, 230), "yellow": (240, 215, 40)}
PITCHES = {"low": 500.0, "high": 1500.0}


def write_clip(
    path: Path,
    colour: str,
    direction: str,
    pitch: str,
    beeps: int,
    *,
    size: int = 32,
    seconds: float = 1.0,
    fps: int = 10,
) -> None:
    import av

    rate = 16000
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "threads": "1"})
        video.width = video.height = size
        video.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=rate)
        audio.layout = "mono"
        frames = int(seconds * fps)
        side = size // 3
        for i in range(frames):
            img = np.full((size, size, 3), 30, np.uint8)
            t = i / max(1, frames - 1)
            x = int((size - side) * (t if direction == "right" else 1 - t))
            img[size // 3 : size // 3 + side, x : x + side] = COLOURS[colour]
            for packet in video.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        n = int(seconds * rate)
        tt = np.arange(n) / rate
        gate = sum(((tt >= s) & (tt < s + 0.2)) for s in (0.1, 0.5)[:beeps])
        wave = (0.4 * np.sin(2 * np.pi * PITCHES[pitch] * tt) * gate).astype(np.float32)
        for start in range(0, n, 1024):
            frame = av.AudioFrame.from_ndarray(wave[None, start : start + 1024], format="flt", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            for packet in audio.encode(frame):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)


def make_av_world(out: Path, n: int, *, seed: int = 0, size: int = 32) -> Path:
    """Write ``n`` clips under ``out/media`` and ``out/captions.jsonl``; returns the records path."""
    rng = np.random.default_rng(seed)
    (out / "media").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        colour = list(COLOURS)[rng.integers(len(COLOURS))]
        direction = ["left", "right"][rng.integers(2)]
        pitch = list(PITCHES)[rng.integers(2)]
        beeps = int(rng.integers(1, 3))
        name = f"media/clip{i:04d}.mp4"
        write_clip(out / name, colour, direction, pitch, beeps, size=size)
        vision = f"a {colour} square moves {direction}"
        sound = f"{'one' if beeps == 1 else 'two'} {pitch} beep{'s' if beeps == 2 else ''}"
        lines.append(
            {
                "id": f"clip{i:04d}",
                "media": [{"modality": "video", "path": name}, {"modality": "audio", "path": name}],
                "captions": {"vision": vision, "audio": sound, "omni": f"{vision} while {sound} sound"},
            }
        )
    records = out / "captions.jsonl"
    records.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return records


def tiny_bert_folder(out: Path) -> Path:
    """A tiny BERT (random weights) with the tiny WordPiece tokenizer, saved as a Hugging Face folder."""
    tokenizer = tiny_bert_tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=24, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    BertModel(config, add_pooling_layer=False).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


TINY_RUN_ENCODER = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "image_size": 16,
    "patch_size": 8,
    "audio_num_mel_bins": 16,
    "audio_target_length": 32,
    "audio_patch_size": 8,
    "max_segments": 4,
    "modalities": ["video", "audio"],
}


def tiny_run_config(records: Path, bert: Path, output_dir: Path, **train) -> dict:
    """A pretraining config dict over :func:`make_av_world` data with tiny parts."""
    return {
        "model": {
            "encoder": TINY_RUN_ENCODER,
            "text": str(bert),
            "text_overrides": {"cross_attention_layers": [1]},
            "contrastive_dim": 16,
            "max_text_length": 24,
        },
        "data": {
            "batch_size": 4,
            "media": {"num_frames": 2, "audio_clips": 1},
            "cache_dir": str(output_dir.parent / "cache"),
            "datasets": [
                {
                    "name": "omni",
                    "records": str(records),
                    "group": ["video", "audio"],
                    "captions": ["omni"],
                    "ratio": 1,
                },
                {"name": "vision", "records": str(records), "group": ["video"], "captions": ["vision"], "ratio": 1},
                {
                    "name": "audio",
                    "records": str(records),
                    "group": ["audio"],
                    "captions": ["audio"],
                    "objectives": ["contrastive"],
                    "ratio": 1,
                },
                {
                    "name": "cross",
                    "records": str(records),
                    "group": ["audio", "video"],
                    "captions": ["audio", "vision"],
                    "cross_sample": True,
                    "ratio": 1,
                },
            ],  # fmt: skip
        },
        "train": {
            "output_dir": str(output_dir),
            "max_steps": 4,
            "learning_rate": 1e-3,
            "save_steps": 2,
            "logging_steps": 1,
            "warmup_steps": 1,
            **train,
        },  # fmt: skip
    }
