"""Shared fixtures of the serving tests: generated media, a saved tiny model, a running API server."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mico_chat.api import ChatModel, GenerationSettings
from mico_chat.media.samples import make_demo_clip
from mico_chat.serve.examples import write_beeps

TINY_NAME = "tiny-mico"


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


def data_url(path: Path, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode()}"


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    """The tiny model saved as a MiCo-Chat folder, as a user would serve one."""
    from helpers.tiny import tiny_model

    folder = tmp_path_factory.mktemp("tiny-model")
    model, processor = tiny_model()
    ChatModel(model, processor).save_pretrained(folder)
    return folder


@dataclass
class RunningApi:
    url: str
    chat: ChatModel
    engine: object
    config: object

    def client(self, api_key: str = "unused"):
        from openai import OpenAI

        return OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=60)


def start_api(tiny_folder: Path, max_waiting: int = 16, **config_overrides):
    """Engine + FastAPI app on a free loopback port, serving the tiny model (tight limits)."""
    from mico_chat.serve.config import ApiConfig, ServeLimits
    from mico_chat.serve.engine import ChatEngine, EngineConfig
    from mico_chat.serve.openai_api import build_api
    from mico_chat.serve.server import BackgroundServer

    chat = ChatModel.load(tiny_folder)
    chat.defaults = GenerationSettings(max_new_tokens=12)
    engine = ChatEngine(chat, EngineConfig(max_batch_size=4, max_waiting=max_waiting, batch_window_s=0.05))
    limits = ServeLimits(max_body_bytes=3 << 20, max_media_bytes=1 << 20, max_media_duration_s=3.0, max_new_tokens=64,
                         max_text_chars=50_000)  # fmt: skip
    config = ApiConfig(model_name=TINY_NAME, limits=limits, **config_overrides)
    server = BackgroundServer(build_api(engine, config)).start()
    return server, RunningApi(server.url, chat, engine, config)


@pytest.fixture(scope="module")
def api(tiny_folder):
    server, running = start_api(tiny_folder)
    yield running
    server.stop()
    running.engine.close()
