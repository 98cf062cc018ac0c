"""Helpers of the serving tests that test modules import: a data URL of a file, and the tiny
model's API on a free loopback port. (Kept out of tests/serve/conftest.py: ``from conftest import``
finds whichever conftest.py comes first on sys.path, which depends on what pytest collected.)"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

from mico_chat.api import ChatModel, GenerationSettings

TINY_NAME = "tiny-mico"


def data_url(path: Path, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode()}"


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
