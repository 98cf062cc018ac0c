"""Tiny training fixtures: a saved tiny MiCo-Chat model and generated record files.

The synthetic tasks cannot be solved without the media: the answer is the colour of a
solid-colour image, or the side on which a depth map holds the near object.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}
SIDES = ("left", "right")


def save_tiny_model(folder: Path, chat_template: str = "llm", seed: int = 0) -> Path:
    """A tiny MiCo-Chat model (tests/helpers/tiny.py) saved as a folder ``ChatModel.load`` reads."""
    from .tiny import tiny_model

    from mico_chat.api import ChatModel

    model, processor = tiny_model(chat_template=chat_template, seed=seed)
    ChatModel(model, processor).save_pretrained(folder)
    return folder


def colour_images(folder: Path, n: int, seed: int = 0, size: int = 24) -> list[tuple[str, str]]:
    """``n`` solid-colour PNGs (with a little noise) in ``folder``; returns ``(file name, colour)``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    out = []
    for i in range(n):
        colour = names[i % len(names)]
        pixels = np.clip(np.array(COLOURS[colour]) + rng.integers(-20, 21, size=(size, size, 3)), 0, 255).astype(
            np.uint8
        )
        name = f"img_{i:04d}.png"
        Image.fromarray(pixels).save(folder / name)
        out.append((name, colour))
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def colour_qa_records(folder: Path, n: int, seed: int = 0) -> Path:
    """Stage-2 records: ``<image> What colour is this picture?`` -> ``red`` (etc.)."""
    images = colour_images(folder / "images", n, seed)
    rows = [
        {
            "id": f"colour-{i}",
            "media": [{"modality": "image", "path": f"images/{name}"}],
            "conversations": [
                {"from": "human", "value": "<image>\nWhat colour is this picture?"},
                {"from": "gpt", "value": colour},
            ],
        }
        for i, (name, colour) in enumerate(images)
    ]
    return write_jsonl(folder / "colour_qa.jsonl", rows)


def colour_caption_records(folder: Path, n: int, seed: int = 0) -> Path:
    """Stage-1 caption pairs: an image and ``a picture that is all red``."""
    images = colour_images(folder / "images", n, seed)
    rows = [
        {
            "id": f"caption-{i}",
            "media": [{"modality": "image", "path": f"images/{name}"}],
            "captions": {"vision": f"a picture that is all {colour}"},
        }
        for i, (name, colour) in enumerate(images)
    ]
    return write_jsonl(folder / "captions.jsonl", rows)


def depth_records(folder: Path, n: int, seed: int = 0, size: int = 32) -> Path:
    """New-modality records: a depth map whose near square is on the left or right -> ``left``/``right``."""
    rng = np.random.default_rng(seed)
    (folder / "depth").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        side = SIDES[i % 2]
        depth = np.full((size, size), 5.0, np.float32) + rng.random((size, size), dtype=np.float32) * 0.2
        cols = slice(2, size // 2 - 2) if side == "left" else slice(size // 2 + 2, size - 2)
        depth[size // 4 : 3 * size // 4, cols] = 1.0
        name = f"depth/d_{i:04d}.npy"
        np.save(folder / name, depth)
        rows.append(
            {
                "id": f"depth-{i}",
                "media": [{"modality": "depth", "path": name}],
                "conversations": [
                    {"from": "human", "value": "<depth>\nOn which side is the nearest object?"},
                    {"from": "gpt", "value": side},
                ],
            }
        )
    return write_jsonl(folder / "depth.jsonl", rows)


def tiny_config(model_dir: Path, records: Path, output_dir: Path, stage: str | dict, **sections) -> dict:
    """A config dict for a tiny run (no export, quiet, CPU); ``sections`` update its sections."""
    config = {
        "stage": stage,
        "model": {"preset": None, "init_from": str(model_dir)},
        "data": {"train": [str(records)], "probe_media": True},
        "train": {
            "output_dir": str(output_dir),
            "max_steps": 4,
            "per_device_train_batch_size": 4,
            "learning_rate": 1e-3,
            "warmup_ratio": 0.0,
            "lr_scheduler_type": "constant",
            "logging_steps": 1,
            "save_steps": 1000,
            "seed": 0,
            "export": False,
            "resume": False,
        },
    }
    for name, values in sections.items():
        if isinstance(values, dict):
            config.setdefault(name, {}).update(values)
        else:
            config[name] = values
    return config
