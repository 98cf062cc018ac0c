"""Fixtures for the data-pipeline tests."""

import pytest
from helpers.llm_stubs import OpenAIStub


@pytest.fixture
def openai_stub():
    """``openai_stub(reply)`` -> a running :class:`OpenAIStub` (shut down after the test)."""
    stubs = []

    def start(reply):
        stub = OpenAIStub(reply).__enter__()
        stubs.append(stub)
        return stub

    yield start
    for stub in stubs:
        stub.__exit__(None, None, None)
