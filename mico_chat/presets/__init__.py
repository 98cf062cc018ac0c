"""Named model presets: a JSON file per preset in this folder.

A preset names its LLM (a known fetchable name or a local folder), the encoder and connector
configs, the media settings, and optionally a safetensors file (beside the JSON) with the
weights the LLM does not provide: encoder, connectors and LLM deltas (low-rank factor pairs, see
:func:`mico_chat.builder.load_extra_weights`). Loading a preset builds the model with
:func:`mico_chat.builder.build_model` and then loads those weights. A preset JSON elsewhere (e.g.
one :func:`mico_chat.presets.export.export_preset` wrote) loads by its path.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class PresetSpec:
    """One preset JSON, typed. Unknown keys are an error (a misspelt key must not fall back to a
    default in silence).

    Attributes:
        llm: a known fetchable LLM name or a local folder.
        encoder: :class:`~mico_chat.encoders.MiCoEncoderConfig` fields, or ``{"preset": name, ...}``.
        connectors: ``{modality: connector config}`` (:class:`~mico_chat.connectors.ConnectorConfig`).
        grey_views: modalities also read in grey (:class:`~mico_chat.configuration.MiCoChatConfig`).
        chat_template: ``"llm"`` (the LLM's own) or a template name.
        system_prompt: the default system prompt (``None``: the template's).
        media_settings: :class:`~mico_chat.preprocess.MediaSettings` fields.
        seed: seeds the untrained parts before weights load.
        weights: a safetensors file beside the JSON with the encoder, connectors and LLM deltas.
        trained: whether the encoder and connectors are trained (the UI warns when not).
        description, note, card: what the preset is, what a user should know before chatting with
            it, and its model card (a markdown file beside the JSON).
        eval: the held-out figures an exported preset carries (``mico-chat pipeline``).
        path: the JSON file it was read from (not a JSON key).
    """

    llm: str
    encoder: dict[str, Any]
    connectors: dict[str, Any] = field(default_factory=dict)
    grey_views: list[str] = field(default_factory=list)
    chat_template: str = "llm"
    system_prompt: str | None = None
    media_settings: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    weights: str | None = None
    trained: bool = False
    description: str = ""
    note: str = ""
    card: str | None = None
    eval: dict[str, Any] = field(default_factory=dict)
    path: Path | None = field(default=None, compare=False)

    @classmethod
    def keys(cls) -> list[str]:
        """The JSON keys a preset may hold."""
        return [f.name for f in dataclasses.fields(cls) if f.name != "path"]

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str | os.PathLike = "preset") -> PresetSpec:
        """Check ``raw`` (a parsed preset JSON) and build the spec; errors name ``source``, and a path
        ``source`` is where the spec looks for its weights file."""
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{source}: a preset is a JSON object, got {type(raw).__name__}")
        known = cls.keys()
        unknown = sorted(set(raw) - set(known))
        if unknown:
            names = ", ".join(map(repr, unknown))
            raise ConfigError(f"{source}: unknown preset key(s) {names}; known: {', '.join(known)}")
        missing = [k for k in ("llm", "encoder") if k not in raw]
        if missing:
            raise ConfigError(f"{source}: missing preset key(s) {', '.join(missing)}")
        kinds = {
            "llm": str, "encoder": dict, "connectors": (dict, type(None)), "grey_views": list, "chat_template": str,
            "system_prompt": (str, type(None)), "media_settings": dict, "seed": int, "weights": (str, type(None)),
            "trained": bool, "description": str, "note": str, "card": (str, type(None)), "eval": dict,
        }  # fmt: skip
        for key, value in raw.items():
            bad_bool = isinstance(value, bool) and key == "seed"
            if not isinstance(value, kinds[key]) or bad_bool:
                raise ConfigError(f"{source}: preset key {key!r} has a {type(value).__name__}: {value!r:.60}")
        values = dict(raw)
        values["connectors"] = dict(values.get("connectors") or {})
        return cls(**values, path=Path(source) if isinstance(source, os.PathLike) else None)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (defaults included, ``path`` left out)."""
        return {k: getattr(self, k) for k in self.keys()}

    def weights_file(self) -> Path | None:
        """The weights file beside the JSON, or ``None`` when the preset ships none."""
        if not self.weights:
            return None
        base = self.path.parent if self.path is not None else HERE
        return base / self.weights


def read_preset(name: str | os.PathLike) -> PresetSpec:
    """The preset (a name in this folder or a ``.json`` path) as a checked :class:`PresetSpec`;
    an unknown name, invalid JSON or an unknown key raises :class:`ConfigError`."""
    path = preset_file(name)
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from None
    return PresetSpec.from_dict(raw, source=path)


UNTRAINED_NOTE = (
    "This preset's encoder and connectors are not trained: text chat is real, answers about media "
    "content are not meaningful."
)


def preset_note(name: str | os.PathLike) -> str:
    """What a user should know before chatting with a preset: its ``note`` (a trained preset's
    scope, e.g. the world it was trained on), or that it is untrained."""
    spec = read_preset(name)
    return spec.note if spec.trained else UNTRAINED_NOTE


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
    llm_name = str(llm) if llm is not None else spec.llm
    path = resolve_model_path(llm_name, auto_fetch=auto_fetch)
    model, processor = build_model(
        path,
        encoder=spec.encoder,
        connectors=spec.connectors or None,
        grey_views=spec.grey_views,
        chat_template=spec.chat_template,
        system_prompt=spec.system_prompt,
        settings=MediaSettings.from_dict(spec.media_settings),
        dtype=dtype,
        seed=spec.seed,
        llm_name=llm_name,
        llm_load_kwargs=llm_load_kwargs,
    )
    if spec.weights:
        if llm is not None:
            raise ValueError(f"preset {name!r} ships weights trained with {spec.llm}; they do not fit {llm_name}")
        load_extra_weights(model, spec.weights_file())
    return model, processor
