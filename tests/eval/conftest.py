import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # fake_judge helper

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def tiny_chat(tiny):
    """A ChatModel over the tiny model (read-only; shared by the session)."""
    from mico_chat.api import ChatModel

    model, processor = tiny
    return ChatModel(model, processor, name="tiny")


@pytest.fixture(scope="session")
def mini_data(tmp_path_factory):
    """Mini suites of every benchmark, built once: {name: data path}."""
    from mico_chat.eval.minisuite import build_all

    return build_all(tmp_path_factory.mktemp("mini"))
