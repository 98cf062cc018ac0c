import pytest


@pytest.fixture(scope="session")
def tiny():
    """A tiny assembled model and processor (built once per session; treat as read-only)."""
    from helpers.tiny import tiny_model

    return tiny_model()
