"""Turn a trained MiCo-Chat folder into a small preset: a JSON plus the weights the LLM lacks.

    from mico_chat.presets.export import export_preset
    export_preset("runs/default-model/stage2/model", "out/", name="default", llm="smollm2-135m-instruct")
    # out/default.json, out/default.safetensors (encoder, connectors, LoRA deltas), out/default.md
    ChatModel.load("out/default.json")            # or copy the files into mico_chat/presets/

The preset rebuilds the model the way every preset is built (the LLM fetched by name, the
tokenizer extended with the placeholders, encoder and connectors from their configs), then loads
the weights file: encoder and connector tensors whole, and each changed LLM matrix as a low-rank
pair ``(delta_b, delta_a)``. A LoRA-merged matrix differs from the base by exactly ``B @ A``
(rank <= r), so a truncated SVD of the difference recovers it; storing ``r * (in + out)`` numbers
instead of ``in * out`` keeps the shipped file small (SmolLM2-135M with r=32 on every linear layer:
about 11 M numbers instead of 135 M).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass(frozen=True)
class ExportSummary:
    """What :func:`export_preset` wrote: files, tensor counts, size, worst reconstruction error."""

    preset: Path
    weights: Path
    card: Path | None
    whole: int
    deltas: int
    max_rank: int
    size_bytes: int
    max_abs_error: float

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in self.__dict__.items()}


def encoder_spec(config: Any) -> dict[str, Any]:
    """An encoder config as the plain dict a preset holds (only the encoder's own fields)."""
    own = set(type(config).__annotations__)
    return {k: v for k, v in config.to_dict().items() if k in own}


def low_rank(
    delta: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    rel_tol: float = 1e-4,
    max_rank: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(B, A)`` with ``B @ A ~= delta`` (``(out, r)``, ``(r, in)``), or None when ``delta`` is not low-rank.

    The rank is the number of singular values above both ``rel_tol`` times the largest and the
    rounding-noise floor of ``weight`` (the merged matrix ``delta`` was taken from); it must stay
    below a quarter of the smaller side (else the pair would not be smaller than the matrix).

    The floor matters when the update is tiny next to the weights (a short run, a small learning
    rate): ``(W + B @ A) - W`` in float32 carries rounding noise of about ``eps * |W|`` per entry,
    whose largest singular value is near ``eps * |W| * (sqrt(out) + sqrt(in)) / 3``; the floor is
    three times that. Counting the noise as signal would inflate the rank, machine-dependently,
    above the LoRA rank.
    """
    u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    if s.numel() == 0 or s[0] == 0:
        return None
    threshold = rel_tol * float(s[0])
    if weight is not None and weight.is_floating_point():
        eps = torch.finfo(weight.dtype).eps
        out_features, in_features = delta.shape
        floor = eps * float(weight.abs().max()) * (out_features**0.5 + in_features**0.5)
        threshold = max(threshold, floor)
    rank = int((s > threshold).sum())
    if rank == 0:
        return None  # nothing above rounding noise: the caller stores the matrix whole
    limit = min(delta.shape) // 4 if max_rank is None else max_rank
    if rank > limit:
        return None
    root = s[:rank].sqrt()  # split the singular values evenly so both halves keep a similar scale
    return (u[:, :rank] * root).float(), (root[:, None] * vh[:rank]).float()


def export_preset(
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    name: str = "default",
    llm: str | None = None,
    description: str = "",
    dtype: str = "float16",
    card: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> ExportSummary:
    """Write ``out_dir/<name>.json`` and ``<name>.safetensors`` (and ``<name>.md`` when ``card`` is given).

    Args:
        model_dir: a trained MiCo-Chat folder (``ChatModel.save_pretrained``, a training run's ``model/``).
        llm: the base LLM the preset names (a known fetchable name or a folder); default: the
            model's ``llm_name_or_path``.
        dtype: storage dtype of the weights file (``float16`` halves it; loading casts back).
        card: the model card's markdown text.
        extra: more fields for the preset JSON (e.g. ``{"eval": {...}}``).

    The export is checked before it returns: the preset is loaded back and every exported tensor
    compared with the trained model; ``max_abs_error`` is the largest difference (storage dtype
    rounding only).
    """
    from safetensors.torch import save_file

    from mico_chat.loading import load_folder

    from . import PresetSpec, load_preset

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trained, processor = load_folder(Path(model_dir), dtype=torch.float32)
    config = trained.config
    spec: dict[str, Any] = {
        "description": description or f"MiCo-Chat exported from {model_dir}",
        "llm": llm or config.llm_name_or_path,
        "chat_template": config.chat_template,
        "system_prompt": config.system_prompt,
        "encoder": encoder_spec(config.encoder_config),
        "connectors": {k: dict(v) for k, v in config.connectors.items()},
        "grey_views": list(config.grey_views),
        "media_settings": processor.settings.to_dict(),
        "seed": 0,
        "weights": None,
        "trained": True,
        **dict(extra or {}),
    }
    preset = out / f"{name}.json"
    spec = PresetSpec.from_dict(spec, source=preset).to_dict()  # an unknown ``extra`` key fails here
    preset.write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    # The base exactly as loading the preset will build it; whatever differs gets stored.
    base, _ = load_preset(preset)
    base_state, trained_state = base.state_dict(), trained.state_dict()
    if set(base_state) != set(trained_state):
        odd = sorted(set(base_state) ^ set(trained_state))
        raise ValueError(f"{model_dir}: the preset rebuilds a different architecture (e.g. {odd[:3]})")
    tensors: dict[str, torch.Tensor] = {}
    whole = deltas = max_rank = 0
    store = DTYPES[dtype]
    for key, value in trained_state.items():
        if tuple(value.shape) != tuple(base_state[key].shape):
            raise ValueError(
                f"{model_dir}: {key} has shape {tuple(value.shape)}, the rebuilt preset {tuple(base_state[key].shape)}"
            )
        if key.startswith(("encoder.", "connectors.")) or not value.is_floating_point():
            tensors[key] = value.to(store) if value.is_floating_point() else value
            whole += 1
            continue
        delta = value - base_state[key]
        if not torch.any(delta):
            continue  # untouched LLM weight (the preset's LLM provides it)
        pair = low_rank(delta, weight=value) if delta.ndim == 2 else None
        if pair is None:
            tensors[key] = value.to(store)
            whole += 1
        else:
            tensors[key + ".delta_b"], tensors[key + ".delta_a"] = pair[0].to(store), pair[1].to(store)
            deltas += 1
            max_rank = max(max_rank, pair[0].shape[1])
    weights = out / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, weights, metadata={"format": "pt"})
    spec["weights"] = weights.name
    card_path = None
    if card is not None:
        card_path = out / f"{name}.md"
        card_path.write_text(card, encoding="utf-8")
        spec["card"] = card_path.name
    preset.write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    loaded, _ = load_preset(preset)
    loaded_state = loaded.state_dict()
    error = max(
        (float((loaded_state[k] - v).abs().max()) for k, v in trained_state.items() if v.is_floating_point()),
        default=0.0,
    )
    return ExportSummary(preset, weights, card_path, whole, deltas, max_rank, weights.stat().st_size, error)
