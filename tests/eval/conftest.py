from pathlib import Path

import pytest

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


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread(request):
    """The tiny model's matrices are too small to gain from threads; on a loaded 2-core machine
    two threads made these tests over ten times slower. Restored after each module; modules
    that use the real default ask for ``torch_threads`` instead."""
    import torch

    before = torch.get_num_threads()
    wanted = getattr(request.module, "TORCH_THREADS", 1)
    torch.set_num_threads(wanted or before)
    yield
    torch.set_num_threads(before)
