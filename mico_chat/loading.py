"""Loading saved models: a MiCo-Chat folder, and where (and how quantized) its LLM is placed.

:func:`load_folder` reads a folder :meth:`mico_chat.api.ChatModel.save_pretrained` (or a training
run) wrote; :func:`llm_placement` turns ``quantization`` / ``device_map`` into ``from_pretrained``
arguments; :func:`bnb_config` is the one bitsandbytes config builder (the chat API and QLoRA
training both use it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .modeling import MiCoChatForConditionalGeneration
from .processing import MiCoChatProcessor


def bnb_config(
    bits: int,
    *,
    compute_dtype: torch.dtype,
    skip: Sequence[str],
    quant_type: str = "nf4",
    double_quant: bool = True,
):
    """A ``BitsAndBytesConfig``: 4-bit (``quant_type``, optional double quantization, matmuls in
    ``compute_dtype``) or 8-bit (LLM.int8); the modules named in ``skip`` stay unquantized."""
    from transformers import BitsAndBytesConfig

    if bits == 4:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=quant_type,
            bnb_4bit_use_double_quant=double_quant,
            bnb_4bit_compute_dtype=compute_dtype,
            llm_int8_skip_modules=list(skip),
        )
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(skip))
    raise ValueError(f"bits must be 4 or 8, got {bits!r}")


def llm_placement(
    quantization: str | None, device_map: str | dict[str, Any] | None, device: torch.device, dtype: torch.dtype
) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments for a quantized and/or spread LLM (empty for a plain load).

    Only the LLM's linear layers are quantized: ``llm_int8_skip_modules`` keeps ``lm_head`` and, when a
    whole MiCo-Chat folder is loaded, the ``encoder`` and ``connectors`` in ``dtype``.
    """
    kwargs: dict[str, Any] = {}
    if quantization is not None:
        bits = {"4bit": 4, "8bit": 8}.get(quantization)
        if bits is None:
            raise ValueError(f"quantization must be '4bit' or '8bit', got {quantization!r}")
        kwargs["quantization_config"] = bnb_config(
            bits, compute_dtype=dtype, skip=["lm_head", "encoder", "connectors"]
        )
    if device_map is not None:
        kwargs["device_map"] = device_map
    elif quantization is not None:
        kwargs["device_map"] = {"": str(device)}  # bitsandbytes quantizes while placing the weights
    return kwargs


def load_folder(
    directory: Path, *, dtype: torch.dtype, load_kwargs: Mapping[str, Any] | None = None
) -> tuple[MiCoChatForConditionalGeneration, MiCoChatProcessor]:
    """Load a folder written by :meth:`ChatModel.save_pretrained` (clear errors for anything else)."""
    config_path = directory / "config.json"
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such model folder (and not a preset name)")
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: missing; {directory} is not a saved MiCo-Chat model")
    try:
        model_type = json.loads(config_path.read_text()).get("model_type")
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_path}: not valid JSON ({err})") from None
    if model_type != "mico_chat":
        raise ValueError(
            f"{directory} holds a {model_type!r} model, not a MiCo-Chat one; to chat with media around this LLM "
            f"use ChatModel.load('untrained', llm='{directory}') (untrained encoder and connectors) or train one"
        )
    model = MiCoChatForConditionalGeneration.from_pretrained(directory, **{"dtype": dtype, **(load_kwargs or {})})
    processor = MiCoChatProcessor.from_pretrained(directory, config=model.config)
    return model, processor
