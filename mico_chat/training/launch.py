"""Process environment for DeepSpeed runs that were not started by a launcher.

``deepspeed`` and ``torchrun`` set ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT`` for every process they start. A plain ``mico-chat train ... train.deepspeed=...``
is one process; DeepSpeed still initialises a process group, so it needs the same variables for a
world of one. DeepSpeed also compiles C++ ops on first use (on CPU: its shared-memory
communication op, about 50 s); ``TORCH_EXTENSIONS_DIR`` under ``$MICO_CHAT_HOME`` keeps the build
across runs.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def single_process_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables to add for a one-process DeepSpeed run; ``{}`` when a launcher set them."""
    if any(key in environ for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE")):
        return {}
    return {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }


def extensions_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``TORCH_EXTENSIONS_DIR`` under ``$MICO_CHAT_HOME`` unless it is set already."""
    if "TORCH_EXTENSIONS_DIR" in environ:
        return {}
    from mico_chat.weights import mico_home

    return {"TORCH_EXTENSIONS_DIR": str(mico_home() / "torch_extensions")}


def prepare_deepspeed_environment() -> dict[str, str]:
    """Add what a one-process DeepSpeed run needs to ``os.environ``; returns what was added.

    Called by the training recipe (the program), never at import time.
    """
    added = {**single_process_env(os.environ), **extensions_env(os.environ)}
    os.environ.update(added)
    return added
