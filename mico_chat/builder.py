"""Assemble a MiCo-Chat model around an LLM: extend its tokenizer, add encoder and connectors.

``build_model`` is the one place a model is put together from parts; presets, training recipes
and tests all call it. Loading a *saved* MiCo-Chat folder is ``from_pretrained`` instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tokenizers import AddedToken
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from mico_chat.encoders import MiCoEncoder, MiCoEncoderConfig
from mico_chat.modality import Modality

from .configuration import MiCoChatConfig
from .modeling import MiCoChatForConditionalGeneration
from .preprocess import MediaSettings
from .processing import MiCoChatProcessor


def extend_tokenizer(tokenizer: Any, modalities: list[Modality]) -> dict[str, int]:
    """Add each modality's placeholder as a special token; return ``{modality: token id}``.

    A pad token is set to the EOS token when the tokenizer has none (left padding for batched
    generation needs one; the attention mask hides it).
    """
    tokens = [AddedToken(m.placeholder, special=True, normalized=False, lstrip=False, rstrip=False) for m in modalities]
    tokenizer.add_tokens(tokens, special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return {m.value: tokenizer.convert_tokens_to_ids(m.placeholder) for m in modalities}


def build_model(
    llm: str | os.PathLike | PreTrainedModel,
    *,
    encoder: MiCoEncoderConfig | Mapping[str, Any] | str | os.PathLike | None = None,
    connectors: Mapping[str, Mapping[str, Any]] | None = None,
    chat_template: str = "llm",
    system_prompt: str | None = None,
    settings: MediaSettings | None = None,
    tokenizer: Any = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    llm_name: str | None = None,
    llm_load_kwargs: Mapping[str, Any] | None = None,
    gated_xattn: Mapping[str, Any] | None = None,
    grey_views: Sequence[str] = (),
) -> tuple[MiCoChatForConditionalGeneration, MiCoChatProcessor]:
    """A MiCo-Chat model with the LLM's pretrained weights and freshly initialised encoder/connectors.

    Args:
        llm: a Hugging Face causal-LM folder (resolved with :func:`mico_chat.weights.resolve_model_path`
            when it is a known name such as ``smollm2-135m-instruct``), or an LLM module already loaded
            (then ``tokenizer`` is required).
        encoder: encoder config or its dict (``{"preset": "tiny", ...}`` picks a preset shape), or a
            pretrained encoder folder (``MiCoEncoder.save_pretrained``, e.g. the ``encoder/`` a
            ``mico-chat pretrain`` run exports; also as ``{"pretrained": folder}``): its config and
            weights are used.
        connectors: ``{modality: connector config}``.
        chat_template: prompt format name (``llm``, ``vicuna_v1``, ``plain``).
        system_prompt: the system message of conversations that bring none (``None``: the template's).
        settings: media settings of the processor.
        seed: seeds the initialisation of encoder and connectors, so an untrained model is reproducible.
        llm_name: what to record as ``llm_name_or_path`` (defaults to ``llm``).
        llm_load_kwargs: extra ``from_pretrained`` arguments for the LLM (``quantization_config``,
            ``device_map``); a quantized LLM keeps its own dtypes and placement.
        gated_xattn: a :class:`~mico_chat.connectors.GatedXAttnConfig` dict: media reach the LLM
            through gated cross-attention adapters instead of as tokens (see ``MiCoChatConfig``).
        grey_views: modalities also read in grey, their tokens after the item's own (``MiCoChatConfig``).

    Returns:
        ``(model, processor)``; the model is in eval mode.
    """
    if isinstance(llm, PreTrainedModel):
        if tokenizer is None:
            raise ValueError("build_model with an LLM module needs its tokenizer")
        language_model = llm
        llm_name = llm_name or getattr(llm.config, "_name_or_path", None)
    else:
        from .weights import resolve_model_path  # deferred: pulls in the fetch machinery

        path = resolve_model_path(llm)
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
        language_model = AutoModelForCausalLM.from_pretrained(path, **{"dtype": dtype, **(llm_load_kwargs or {})})
        llm_name = llm_name or str(llm)
    pretrained_encoder = _pretrained_encoder_folder(encoder)
    encoder_config = MiCoEncoderConfig.from_pretrained(pretrained_encoder) if pretrained_encoder else _encoder_config(encoder)
    token_ids = extend_tokenizer(tokenizer, [Modality.parse(m) for m in encoder_config.modalities])
    config = MiCoChatConfig(
        encoder_config=encoder_config,
        text_config=language_model.config,
        connectors=dict(connectors or {}),
        media_token_ids=token_ids,
        chat_template=chat_template,
        system_prompt=system_prompt,
        llm_name_or_path=llm_name,
        gated_xattn=None if gated_xattn is None else dict(gated_xattn),
        grey_views=list(grey_views),
    )
    attn_implementation = language_model.config._attn_implementation or "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MiCoChatForConditionalGeneration(config, language_model=language_model)
    if pretrained_encoder is not None:
        model.encoder.load_state_dict(MiCoEncoder.from_pretrained(pretrained_encoder).state_dict())
    # Wrapping resets the LLM's attention backend; keep what it was loaded with (from_pretrained's choice).
    model.language_model.set_attn_implementation(attn_implementation)
    # New placeholder rows start at the mean embedding; they are replaced by media features anyway.
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    _init_new_rows(model, first_new=min(token_ids.values()))
    for connector in model.connectors.values():
        connector.match_scale(model.get_input_embeddings().weight)
    model.language_model.config.vocab_size = model.get_input_embeddings().weight.shape[0]
    if getattr(language_model, "is_quantized", False) or getattr(language_model, "hf_device_map", None):
        model.encoder.to(dtype)  # quantized or spread weights keep their own dtype and devices
        model.connectors.to(dtype)
    else:
        model.to(dtype)
    model.eval()
    return model, MiCoChatProcessor(tokenizer, model.config, settings)


def _pretrained_encoder_folder(encoder: Any) -> str | None:
    """The folder of a pretrained encoder given as a path or ``{"pretrained": path}``, else None."""
    if isinstance(encoder, Mapping) and "pretrained" in encoder:
        if len(encoder) > 1:
            raise ValueError(f"a pretrained encoder takes its config from its folder; drop {sorted(set(encoder) - {'pretrained'})}")
        encoder = encoder["pretrained"]
    if not isinstance(encoder, (str, os.PathLike)):
        return None
    folder = os.fspath(encoder)
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise FileNotFoundError(f"{folder}: not a saved MiCo encoder (no config.json)")
    return folder


def _encoder_config(encoder: MiCoEncoderConfig | Mapping[str, Any] | None) -> MiCoEncoderConfig:
    if isinstance(encoder, MiCoEncoderConfig):
        return encoder
    spec = dict(encoder or {})
    preset = spec.pop("preset", None)
    return MiCoEncoderConfig.from_preset(preset, **spec) if preset else MiCoEncoderConfig(**spec)


@torch.no_grad()
def _init_new_rows(model: MiCoChatForConditionalGeneration, first_new: int) -> None:
    """Set added vocabulary rows (input and untied output) to the mean of the existing rows."""
    for matrix in {id(m): m for m in (model.get_input_embeddings().weight, model.get_output_embeddings().weight)}.values():
        if matrix.shape[0] > first_new:
            matrix[first_new:] = matrix[:first_new].mean(dim=0, keepdim=True)


DELTA_A, DELTA_B = ".delta_a", ".delta_b"


def load_extra_weights(model: MiCoChatForConditionalGeneration, path: str | os.PathLike) -> list[str]:
    """Load a safetensors file of model parameters on top of a built model; returns the keys loaded.

    A key names a parameter or buffer, whose tensor replaces it, or is a low-rank delta pair
    ``NAME.delta_b`` (out, r) and ``NAME.delta_a`` (r, in): ``NAME += delta_b @ delta_a`` (how a
    LoRA-tuned LLM ships without its full weights). Every key must fit an existing tensor's name
    and shape: a file meant for another architecture raises instead of half-loading.
    """
    from safetensors.torch import load_file

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: weights file missing")
    tensors = load_file(path)
    own = model.state_dict()
    deltas = {k[: -len(DELTA_A)] for k in tensors if k.endswith(DELTA_A)} | {k[: -len(DELTA_B)] for k in tensors if k.endswith(DELTA_B)}
    full = {k: v for k, v in tensors.items() if not k.endswith((DELTA_A, DELTA_B))}
    unknown = sorted(k for k in [*full, *deltas] if k not in own)
    if unknown:
        raise ValueError(f"{path}: {len(unknown)} tensors do not belong to this model, e.g. {unknown[:3]}")
    unpaired = sorted(k for k in deltas if k + DELTA_A not in tensors or k + DELTA_B not in tensors)
    if unpaired:
        raise ValueError(f"{path}: delta of {unpaired[0]} lacks its {DELTA_A} or {DELTA_B} half")
    shapes = {**{k: tuple(v.shape) for k, v in full.items()},
              **{k: (tensors[k + DELTA_B].shape[0], tensors[k + DELTA_A].shape[1]) for k in deltas}}  # fmt: skip
    wrong = [k for k, shape in shapes.items() if shape != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise ValueError(f"{path}: {k} has shape {shapes[k]}, the model has {tuple(own[k].shape)}")
    model.load_state_dict(full, strict=False)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in deltas:
            weight = params[name]
            delta = tensors[name + DELTA_B].float() @ tensors[name + DELTA_A].float()  # (out, r) @ (r, in)
            weight.add_(delta.to(weight.device, weight.dtype))
    return sorted(tensors)
