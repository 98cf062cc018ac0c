"""Named model presets: a JSON file per preset in this folder.

A preset names its LLM (a known fetchable name or a local folder), the encoder and connector
configs, the media settings, and optionally a safetensors file (beside the JSON) with the
weights the LLM does not provide: encoder, connectors and LLM deltas (low-rank factor pairs, see
:func:`mico_chat.builder.load_extra_weights`). Loading a preset builds the model with
:func:`mico_chat.builder.build_model` and then loads those weights. A preset JSON elsewhere (e.g.
one :func:`mico_chat.presets.export.export_preset` wrote) loads by its path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from mico_chat.errors import ConfigError

HERE = Path(__file__).parent
PRESETS: Mapping[str, Path] = MappingProxyType({p.stem: p for p in sorted(HERE.glob("*.json"))})


def preset_file(name: str | os.PathLike) -> Path:
    """The JSON file of a preset name, or ``name`` itself when it is a ``.json`` file."""
    if str(name) in PRESETS:
        return PRESETS[str(name)]
    if str(name).endswith(".json") and Path(name).is_file():
        return Path(name)
    raise ConfigError(f"unknown preset {str(name)!r}; known: {', '.join(PRESETS)} (or a preset .json file)")


def is_preset(name: str | os.PathLike) -> bool:
    return str(name) in PRESETS or (str(name).endswith(".json") and Path(name).is_file())


def read_preset(name: str | os.PathLike) -> dict[str, Any]:
    """The preset's JSON as a dict; an unknown name raises :class:`ConfigError`."""
    path = preset_file(name)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from None


UNTRAINED_NOTE = (
    "This preset's encoder and connectors are not trained: text chat is real, answers about media "
    "content are not meaningful."
)


def preset_note(name: str | os.PathLike) -> str:
    """What a user should know before chatting with a preset: its ``note`` (a trained preset's
    scope, e.g. the world it was trained on), or that it is untrained."""
    spec = read_preset(name)
    if not spec.get("trained", False):
        return UNTRAINED_NOTE
    return str(spec.get("note", ""))


def load_preset(
    name: str | os.PathLike,
    *,
    llm: str | os.PathLike | None = None,
    dtype: torch.dtype = torch.float32,
    auto_fetch: bool = True,
    llm_load_kwargs: Mapping[str, Any] | None = None,
):
    """Build the preset's model and processor (``llm`` replaces the preset's LLM).

    ``llm_load_kwargs`` go to the LLM's ``from_pretrained`` (quantization, ``device_map``).
    """
    from mico_chat.builder import build_model, load_extra_weights
    from mico_chat.preprocess import MediaSettings
    from mico_chat.weights import resolve_model_path

    spec = read_preset(name)
    llm_name = str(llm) if llm is not None else spec["llm"]
    path = resolve_model_path(llm_name, auto_fetch=auto_fetch)
    model, processor = build_model(
        path,
        encoder=spec["encoder"],
        connectors=spec.get("connectors"),
        chat_template=spec.get("chat_template", "llm"),
        system_prompt=spec.get("system_prompt"),
        settings=MediaSettings.from_dict(spec.get("media_settings", {})),
        dtype=dtype,
        seed=int(spec.get("seed", 0)),
        llm_name=llm_name,
        llm_load_kwargs=llm_load_kwargs,
    )
    if spec.get("weights"):
        if llm is not None:
            raise ValueError(f"preset {name!r} ships weights trained with {spec['llm']}; they do not fit {llm_name}")
        load_extra_weights(model, preset_file(name).parent / spec["weights"])
    return model, processor
