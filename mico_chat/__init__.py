"""MiCo-Chat: omni-modal chat assistants (video, audio, image, depth) on LLaMA-family LLMs.

The one Python API is :class:`ChatModel`::

    from mico_chat import ChatModel
    chat = ChatModel.load("default")
    chat.chat([{"role": "user", "content": [{"type": "video", "video": "clip.mp4"},
                                            {"type": "text", "text": "What happens?"}]}])

Heavy modules are imported on first use so ``import mico_chat`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_LAZY = {
    "ChatModel": "mico_chat.api",
    "GenerationSettings": "mico_chat.api",
    "MiCoChatConfig": "mico_chat.configuration",
    "MiCoChatForConditionalGeneration": "mico_chat.modeling",
    "MiCoChatProcessor": "mico_chat.processing",
    "Modality": "mico_chat.modality",
}

__all__ = sorted(_LAZY) + ["__version__"]

if TYPE_CHECKING:
    from .api import ChatModel, GenerationSettings
    from .configuration import MiCoChatConfig
    from .modality import Modality
    from .modeling import MiCoChatForConditionalGeneration
    from .processing import MiCoChatProcessor


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mico_chat' has no attribute {name!r}")
