import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/tiny.py helpers


@pytest.fixture(scope="session")
def tiny():
    """A tiny assembled model and processor (built once per session; treat as read-only)."""
    from tiny import tiny_model

    return tiny_model()
