"""Fixtures for the data-pipeline tests."""

import os
from pathlib import Path

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


@pytest.fixture(scope="module")
def ray_cluster():
    """A local 2-CPU cluster whose workers can import the tests' helpers; shut down after the module."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    pythonpath = os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})  # fmt: skip
    yield ray
    ray.shutdown()
