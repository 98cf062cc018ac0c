"""Shared fixtures of the serving tests: generated media, a saved tiny model, a running API server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.serve_api import start_api
from PIL import Image

from mico_chat.api import ChatModel
from mico_chat.media.samples import make_demo_clip
from mico_chat.serve.examples import write_beeps

@pytest.fixture(scope="session")
def serve_media(tmp_path_factory) -> dict[str, Path]:
    """A 1 s clip with audio, a 4 s clip, a 1 s beep WAV, a PNG, and a corrupt 'mp4'."""
    root = tmp_path_factory.mktemp("serve-media")
    image = root / "square.png"
    pixels = np.zeros((48, 64, 3), np.uint8)
    pixels[12:36, 20:44] = (220, 30, 30)
    Image.fromarray(pixels).save(image)
    corrupt = root / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    return {
        "clip": make_demo_clip(root / "clip.mp4", seconds=1.0, size=(64, 48)),
        "long_clip": make_demo_clip(root / "long.mp4", seconds=4.0, size=(64, 48)),
        "wav": write_beeps(root / "beeps.wav", seconds=1.0, starts=(0.2, 0.6)),
        "image": image,
        "corrupt": corrupt,
    }


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    """The tiny model saved as a MiCo-Chat folder, as a user would serve one."""
    from helpers.tiny import tiny_model

    folder = tmp_path_factory.mktemp("tiny-model")
    model, processor = tiny_model()
    ChatModel(model, processor).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def api(tiny_folder):
    server, running = start_api(tiny_folder)
    yield running
    server.stop()
    running.engine.close()
