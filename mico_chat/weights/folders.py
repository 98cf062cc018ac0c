"""Validation of local Hugging Face model folders, from file headers alone (no tensor is loaded)."""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from mico_chat.weights.errors import WeightsError
from mico_chat.weights.manifest import MANIFEST_NAME, verify
from mico_chat.weights.registry import KNOWN_WEIGHTS


@dataclasses.dataclass(frozen=True)
class ModelFolder:
    """What :func:`inspect_model_folder` found in a Hugging Face model folder.

    Attributes:
        path: the folder (absolute).
        config: the parsed ``config.json``.
        weight_format: ``"safetensors"``, or ``"pytorch"`` for ``pytorch_model*.bin`` files, which
            must be loaded with ``torch.load(..., weights_only=True)`` (transformers does so).
        weight_files: the weight files, sharded or not, all checked present and complete.
        tokenizer_files: tokenizer files present (may be empty: the caller decides if it needs one).
    """

    path: Path
    config: Mapping[str, Any]
    weight_format: Literal["safetensors", "pytorch"]
    weight_files: tuple[Path, ...]
    tokenizer_files: tuple[Path, ...]


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json", "vocab.txt")


def _read_json(path: Path, *, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise WeightsError(
            f"{path} is not valid JSON ({error.msg} at line {error.lineno} column {error.colno}); "
            f"re-download the {what}."
        ) from error
    except (OSError, UnicodeDecodeError) as error:
        raise WeightsError(f"{path} cannot be read ({error}); re-download the {what}.") from error


def _check_safetensors(path: Path, *, listed_in: Path | None = None) -> None:
    """Check that ``path`` is a complete safetensors file, from its header alone (no tensor is read).

    The format is an 8-byte little-endian header length, a JSON header giving each tensor's byte
    range, then the data; a complete file ends exactly where the last range ends.
    """
    where = f" (listed in {listed_in.name})" if listed_in is not None else ""
    redo = "re-download it"
    if not path.is_file():
        raise WeightsError(f"weight file {path}{where} does not exist; {redo}.")
    size = path.stat().st_size
    if size == 0:
        raise WeightsError(
            f"weight file {path}{where} is empty (0 bytes): the download did not finish; {redo}."
        )
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise WeightsError(f"weight file {path}{where} is truncated ({size} bytes, no header); {redo}.")
        (header_size,) = struct.unpack("<Q", prefix)
        if header_size > size - 8:
            raise WeightsError(
                f"weight file {path}{where} is truncated or not safetensors: its header claims "
                f"{header_size} bytes but the file has {size}; {redo}."
            )
        try:
            header = json.loads(handle.read(header_size))
            ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
        except (
            json.JSONDecodeError,
            UnicodeDecodeError,
            AttributeError,
            KeyError,
            IndexError,
            TypeError,
        ) as error:
            raise WeightsError(
                f"weight file {path}{where} has a corrupt safetensors header ({error}); {redo}."
            ) from error
    expected = 8 + header_size + max(ends, default=0)
    if size != expected:
        state = "truncated" if size < expected else "longer than its header describes"
        raise WeightsError(
            f"weight file {path}{where} is {state}: {size} bytes, its header describes {expected}; {redo}."
        )


def _check_torch_bin(path: Path, *, listed_in: Path | None = None) -> None:
    """Check that ``path`` is a complete zip-format torch checkpoint, from the zip directory alone."""
    where = f" (listed in {listed_in.name})" if listed_in is not None else ""
    if not path.is_file():
        raise WeightsError(f"weight file {path}{where} does not exist; re-download it.")
    if path.stat().st_size == 0:
        raise WeightsError(
            f"weight file {path}{where} is empty (0 bytes): the download did not finish; re-download it."
        )
    # torch.save writes a zip archive whose directory sits at the end, so truncation breaks it.
    if not zipfile.is_zipfile(path):
        raise WeightsError(
            f"weight file {path}{where} is truncated or in the legacy (pre-1.6) torch format, which "
            "cannot be loaded safely; re-download it, or convert the model to safetensors."
        )


def _sharded_files(folder: Path, index_name: str, check: Callable[..., None]) -> tuple[Path, ...]:
    index_path = folder / index_name
    index = _read_json(index_path, what="model's index file")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise WeightsError(f"{index_path} has no 'weight_map' table; re-download the model's index file.")
    shards = tuple(folder / name for name in sorted(set(weight_map.values())))
    for shard in shards:
        if not shard.exists():
            raise WeightsError(
                f"{index_path} points at shard {shard.name}, which is missing from {folder}; "
                "the download is incomplete: fetch the missing shard."
            )
        check(shard, listed_in=index_path)
    return shards


def inspect_model_folder(path: str | os.PathLike[str]) -> ModelFolder:
    """Validate a local Hugging Face model folder without loading any tensor.

    Accepted layouts, in order of preference: ``model.safetensors.index.json`` plus every shard it
    lists; ``model.safetensors``; ``pytorch_model.bin.index.json`` plus shards; ``pytorch_model.bin``.
    Each weight file is checked to exist, be non-empty and be complete (from its header). If the
    folder holds a ``mico_manifest.json``, or is a folder of a weights cache, every file is also
    checked against the manifest (:func:`verify`).

    Returns a :class:`ModelFolder`. Raises WeightsError naming the missing or broken file.
    """
    folder = Path(path).expanduser().absolute()
    if not folder.exists():
        raise WeightsError(
            f"model folder {folder} does not exist; pass a known name ({', '.join(KNOWN_WEIGHTS)}) "
            "or the path of a Hugging Face model folder."
        )
    if not folder.is_dir():
        hint = (
            " Convert a GGUF file first with mico_chat.weights.convert_gguf_to_hf."
            if folder.suffix == ".gguf"
            else ""
        )
        raise WeightsError(
            f"{folder} is a file; a model must be a Hugging Face folder (config.json + weights).{hint}"
        )
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise WeightsError(
            f"{config_path} is missing: {folder} is not a Hugging Face model folder, "
            "or its download is incomplete."
        )
    config = _read_json(config_path, what="model's config.json")
    if not isinstance(config, dict) or "model_type" not in config:
        raise WeightsError(
            f"{config_path} has no 'model_type' entry, so transformers cannot tell which model to build; "
            "re-download the model's config.json."
        )

    weight_format: Literal["safetensors", "pytorch"]
    if (folder / "model.safetensors.index.json").is_file():
        weight_format = "safetensors"
        weight_files = _sharded_files(folder, "model.safetensors.index.json", _check_safetensors)
    elif (folder / "model.safetensors").exists():
        weight_format = "safetensors"
        _check_safetensors(folder / "model.safetensors")
        weight_files = (folder / "model.safetensors",)
    elif (folder / "pytorch_model.bin.index.json").is_file():
        weight_format = "pytorch"
        weight_files = _sharded_files(folder, "pytorch_model.bin.index.json", _check_torch_bin)
    elif (folder / "pytorch_model.bin").exists():
        weight_format = "pytorch"
        _check_torch_bin(folder / "pytorch_model.bin")
        weight_files = (folder / "pytorch_model.bin",)
    else:
        present = sorted(
            p.name for p in folder.iterdir() if p.suffix in {".safetensors", ".bin", ".gguf", ".pt", ".ckpt"}
        )
        seen = f" It holds {', '.join(present)}, but no index naming them as model shards." if present else ""
        raise WeightsError(
            f"{folder} has no model weights: expected model.safetensors, or model.safetensors.index.json "
            f"with its shards (or pytorch_model.bin / pytorch_model.bin.index.json).{seen} "
            "Finish or redo the download."
        )
    # A folder of a weights cache (its lock file sits beside it) is trusted only with its manifest.
    if (folder / MANIFEST_NAME).exists() or (folder.parent / f".{folder.name}.lock").exists():
        verify(folder)
    tokenizer_files = tuple(folder / name for name in _TOKENIZER_FILES if (folder / name).is_file())
    return ModelFolder(folder, MappingProxyType(config), weight_format, weight_files, tokenizer_files)
