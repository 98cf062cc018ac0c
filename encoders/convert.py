"""Load external checkpoints into MiCo-Chat's encoder and pretraining model.

- :func:`load_clip_vision` / :func:`clip_vision_to_mico`: a Hugging Face CLIP vision tower
  (``CLIPVisionModel``, or the vision half of ``CLIPModel``) becomes a :class:`MiCoEncoder` that
  computes the same features (CLIP uses quick-GELU, a pre-LayerNorm, no patch bias; the encoder's
  config carries all three). Modality and context embeddings stay zero, so an image encodes as in
  CLIP, with CLIP's post-LayerNorm applied to every token.
- :func:`convert_mico_checkpoint`: the layout of MiCo's released checkpoints (the ``MiCo`` module
  of github.com/invictus717/MiCo, ``model/mico.py``: an EVA-CLIP or OpenAI-CLIP ViT under
  ``vision_encoder.visual``, a BERT with cross-attention under ``multimodal_encoder``, and the
  ``contra_head_*``, ``itm_head``, ``hidden_trans_*``, ``*_frame_embedding``, ``*_type_embeddings``
  heads) becomes a :class:`MiCoForPretraining`.

Files are read with safetensors, or with ``torch.load(weights_only=True)`` for ``.pt``/``.bin``:
never an unrestricted unpickle (:func:`load_state_dict_file`).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .configuration_mico import MiCoEncoderConfig
from .configuration_pretraining import MiCoPretrainingConfig
from .configuration_text import MiCoTextConfig
from .modeling_mico import MiCoEncoder
from .modeling_pretraining import MiCoForPretraining

StateDict = dict[str, torch.Tensor]


class CheckpointError(ValueError):
    """A checkpoint that does not have the expected layout; the message names the key or file."""


def load_state_dict_file(path: str | os.PathLike) -> StateDict:
    """Read tensors from ``.safetensors`` (safetensors) or ``.pt``/``.pth``/``.bin``/``.ckpt``
    (``torch.load(weights_only=True)``: tensors and plain containers only, no code runs).

    A ``{"model": ..., "state_dict": ...}`` wrapper is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.suffix not in (".pt", ".pth", ".bin", ".ckpt"):
        raise CheckpointError(f"{path}: unknown checkpoint format {path.suffix!r} (use .safetensors or .pt/.bin)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError / RuntimeError subclasses here
        raise CheckpointError(f"{path}: not a plain tensor checkpoint ({type(err).__name__}: {err})") from None
    for key in ("model", "state_dict", "module"):
        if isinstance(data, Mapping) and key in data and isinstance(data[key], Mapping):
            data = data[key]
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path}: expected a mapping of parameter names to tensors")
    return dict(data)


@dataclass
class ConversionReport:
    """What a conversion did: ``ignored`` checkpoint keys (not used by this architecture) and
    ``initialised`` model parameters the checkpoint did not provide (fresh initialisation)."""

    ignored: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------- helpers
def _take(state: StateDict, key: str, where: str) -> torch.Tensor:
    if key not in state:
        raise CheckpointError(f"{where}: missing {key}")
    return state.pop(key)


def _resize_grid(pos: torch.Tensor, new_grid: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize ``(1 + g*g, D)`` position embeddings (CLS first) to ``(1 + h*w, D)``."""
    cls, grid = pos[:1], pos[1:]
    side = math.isqrt(grid.shape[0])
    if side * side != grid.shape[0]:
        raise CheckpointError(f"position embeddings of {grid.shape[0]} patches are not a square grid")
    if (side, side) == tuple(new_grid):
        return pos
    x = grid.reshape(side, side, -1).permute(2, 0, 1)[None].float()  # (1, D, g, g)
    x = F.interpolate(x, size=new_grid, mode="bilinear", align_corners=False)
    return torch.cat([cls, x[0].permute(1, 2, 0).reshape(new_grid[0] * new_grid[1], -1).to(pos.dtype)])


ZERO_EMBEDDINGS = ("modality_embedding", "context_embedding", "sampling_embedding")


def _fit_encoder_state(
    encoder_config: MiCoEncoderConfig, rgb: StateDict, report: ConversionReport, derive_kinds: bool
) -> StateDict:
    """Complete a converted RGB ViT state dict for a :class:`MiCoEncoder`: position embeddings
    resized to each grid, other input kinds' patch embeddings derived from the RGB one when their
    patch size matches (a 1-channel input as a grey image: the RGB kernel summed over channels, as
    MiCo feeds spectrograms and depth maps through its RGB patch embedding), zero modality/context
    embeddings, and everything else freshly initialised (listed in the report)."""
    model = MiCoEncoder(encoder_config)
    own = model.state_dict()
    out: StateDict = {}
    pos = rgb.pop("position_embedding.weight")
    rgb_grid = encoder_config.grid("rgb")
    pos = _resize_grid(pos, rgb_grid)
    table = own["position_embedding.weight"].clone()
    rows = min(table.shape[0], pos.shape[0])
    table[:rows] = pos[:rows]
    if table.shape[0] > pos.shape[0]:
        report.initialised.append(f"position_embedding.weight[{pos.shape[0]}:]")
    out["position_embedding.weight"] = table
    weight = rgb.pop("patch_embeddings.rgb.weight")
    bias = rgb.pop("patch_embeddings.rgb.bias", None)
    for kind in encoder_config.input_kinds:
        key = f"patch_embeddings.{kind}"
        if kind == "rgb" or (kind == "normal" and derive_kinds):
            out[f"{key}.weight"] = weight.clone()
        elif derive_kinds and encoder_config.patch_size_of(kind) == encoder_config.patch_size:
            out[f"{key}.weight"] = weight.sum(1, keepdim=True)
        else:
            continue  # fresh initialisation, reported below
        if encoder_config.patch_bias:
            if bias is None:
                raise CheckpointError("the encoder config wants a patch bias but the checkpoint has none")
            out[f"{key}.bias"] = bias.clone()
    out.update(rgb)
    unknown = sorted(set(out) - set(own))
    if unknown:
        raise CheckpointError(f"converted keys fit no encoder parameter, e.g. {unknown[:3]}")
    for key, value in out.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise CheckpointError(
                f"{key}: converted shape {tuple(value.shape)}, the encoder has {tuple(own[key].shape)}"
            )
    for key in sorted(set(own) - set(out)):
        out[key] = torch.zeros_like(own[key]) if key.startswith(ZERO_EMBEDDINGS) else own[key]
        if not key.startswith(ZERO_EMBEDDINGS):
            report.initialised.append(key)
    return out


# ---------------------------------------------------------------------------------- HF CLIP
def clip_vision_to_mico(
    state_dict: Mapping[str, torch.Tensor],
    clip_config: Mapping | object,
    *,
    derive_kinds: bool = True,
    **encoder_overrides,
) -> tuple[MiCoEncoderConfig, StateDict, ConversionReport]:
    """Convert a Hugging Face CLIP vision tower.

    Args:
        state_dict: ``CLIPVisionModel`` or ``CLIPModel`` weights (``vision_model.`` prefix optional).
        clip_config: the ``CLIPVisionConfig`` (or ``CLIPConfig``, or their dicts).
        derive_kinds: derive the audio/depth/normal patch embeddings from the RGB one (see
            :func:`_fit_encoder_state`); otherwise they keep a fresh initialisation.
        encoder_overrides: other :class:`MiCoEncoderConfig` fields (``modalities``,
            ``max_segments``, audio shape, a new ``image_size``: position embeddings are then
            resized bilinearly).

    Returns:
        ``(encoder config, encoder state dict, report)``.
    """
    cfg = clip_config.to_dict() if hasattr(clip_config, "to_dict") else dict(clip_config)
    if "vision_config" in cfg:
        cfg = dict(cfg["vision_config"])
    encoder_config = MiCoEncoderConfig(
        **{
            "hidden_size": cfg["hidden_size"],
            "num_hidden_layers": cfg["num_hidden_layers"],
            "num_attention_heads": cfg["num_attention_heads"],
            "intermediate_size": cfg["intermediate_size"],
            "hidden_act": cfg.get("hidden_act", "quick_gelu"),
            "layer_norm_eps": cfg.get("layer_norm_eps", 1e-5),
            "image_size": cfg["image_size"],
            "patch_size": cfg["patch_size"],
            "patch_bias": False,
            "pre_layernorm": True,
            **encoder_overrides,
        }
    )
    report = ConversionReport()
    state: StateDict = {}
    for key, value in state_dict.items():
        name = key[len("vision_model.") :] if key.startswith("vision_model.") else key
        if key.startswith(("text_model.", "text_projection", "visual_projection", "logit_scale")):
            report.ignored.append(key)
        else:
            state[name] = value
    where = "CLIP vision checkpoint"
    rgb: StateDict = {
        "class_embedding": _take(state, "embeddings.class_embedding", where),
        "patch_embeddings.rgb.weight": _take(state, "embeddings.patch_embedding.weight", where),
        "position_embedding.weight": _take(state, "embeddings.position_embedding.weight", where),
        "pre_layernorm.weight": _take(state, "pre_layrnorm.weight", where),
        "pre_layernorm.bias": _take(state, "pre_layrnorm.bias", where),
        "post_layernorm.weight": _take(state, "post_layernorm.weight", where),
        "post_layernorm.bias": _take(state, "post_layernorm.bias", where),
    }
    state.pop("embeddings.position_ids", None)
    for i in range(encoder_config.num_hidden_layers):
        for part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "layer_norm1",
                     "layer_norm2", "mlp.fc1", "mlp.fc2"):  # fmt: skip
            for leaf in ("weight", "bias"):
                rgb[f"layers.{i}.{part}.{leaf}"] = _take(state, f"encoder.layers.{i}.{part}.{leaf}", where)
    if state:
        raise CheckpointError(f"{where}: {len(state)} unexpected tensors, e.g. {sorted(state)[:3]}")
    return encoder_config, _fit_encoder_state(encoder_config, rgb, report, derive_kinds), report


def load_clip_vision(path: str | os.PathLike, **encoder_overrides) -> MiCoEncoder:
    """A :class:`MiCoEncoder` from a Hugging Face CLIP folder (``config.json`` + ``model.safetensors``)."""
    folder = Path(path)
    config_file = folder / "config.json"
    weights = folder / "model.safetensors"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file}: missing; expected a Hugging Face CLIP folder")
    config = json.loads(config_file.read_text())
    if config.get("model_type") not in ("clip", "clip_vision_model"):
        raise CheckpointError(f"{config_file}: model_type {config.get('model_type')!r} is not a CLIP model")
    encoder_config, state, _ = clip_vision_to_mico(load_state_dict_file(weights), config, **encoder_overrides)
    encoder = MiCoEncoder(encoder_config)
    encoder.load_state_dict(state)
    return encoder.eval()


# ---------------------------------------------------------------------------------- MiCo release
# Vision towers MiCo's code can build (``model_cfg.vision_encoder_type``): heads, LayerNorm eps, MLP act.
MICO_VISION_TOWERS: Mapping[str, dict] = {
    "evaclip01_giant": {"num_attention_heads": 16, "layer_norm_eps": 1e-6, "hidden_act": "gelu"},
    "clip_vit_base_16": {"num_attention_heads": 12, "layer_norm_eps": 1e-5, "hidden_act": "quick_gelu"},
    "clip_vit_large_14_336px": {"num_attention_heads": 16, "layer_norm_eps": 1e-5, "hidden_act": "quick_gelu"},
}
UNSUPPORTED_TOWERS = {
    "evaclip02_base": "EVA02 (rotary position embeddings, SwiGLU, sub-LayerNorms)",
    "evaclip02_base_self": "EVA02 (rotary position embeddings, SwiGLU, sub-LayerNorms)",
    "evaclip02_large": "EVA02 (rotary position embeddings, SwiGLU, sub-LayerNorms)",
    "evaclip02_bige": "EVA02 (rotary position embeddings, SwiGLU, sub-LayerNorms)",
}
# MiCo's heads per modality: (contrastive head, condition projection, frame embedding, type embedding) prefixes.
MICO_MODALITY_HEADS: Mapping[str, str] = {"video": "vision", "image": "vision", "audio": "audio", "depth": "depth"}
# MiCo's multi-modality contrastive heads: name -> (its concatenation order, our group).
MICO_FUSION_HEADS: Mapping[str, tuple[tuple[str, ...], str]] = {
    "contra_head_va": (("video", "audio"), "audio+video"),
    "contra_head_id": (("image", "depth"), "depth+image"),
}


def _rename_mico_keys(state: Mapping[str, torch.Tensor]) -> StateDict:
    """The renames MiCo's own loader applies (``video`` -> ``vision``, ``*clip_model`` -> ``vision_encoder``)."""
    out: StateDict = {}
    for key, value in state.items():
        if "video" in key:
            key = key.replace("video", "vision")
        elif "evaclip_model" in key:
            key = key.replace("evaclip_model", "vision_encoder")
        elif "clip_model" in key:
            key = key.replace("clip_model", "vision_encoder")
        out[key] = value.float()
    return out


def _mico_vision(state: StateDict, tower: dict, report: ConversionReport) -> tuple[dict, StateDict]:
    """Take ``vision_encoder.visual.*`` out of ``state``; return encoder config fields and an RGB ViT state."""
    prefix = "vision_encoder.visual."
    where = "MiCo checkpoint"
    visual = {k[len(prefix) :]: state.pop(k) for k in [k for k in state if k.startswith(prefix)]}
    for key in [k for k in state if k.startswith("vision_encoder.")]:
        report.ignored.append(key)  # the CLIP text tower and logit scale: MiCo deletes them
        state.pop(key)
    if not visual:
        raise CheckpointError(f"{where}: no vision_encoder.visual.* tensors")
    rgb: StateDict = {}
    if "patch_embed.proj.weight" in visual:  # EVA-CLIP (EVA01)
        if any(k.endswith(("inner_attn_ln.weight", "ffn_ln.weight", "q_proj.weight")) or "rope" in k for k in visual):
            raise CheckpointError(f"{where}: an EVA02 tower (rotary embeddings / sub-LayerNorms) is not supported")
        patch = _take(visual, "patch_embed.proj.weight", where)
        rgb["patch_embeddings.rgb.weight"] = patch
        rgb["patch_embeddings.rgb.bias"] = _take(visual, "patch_embed.proj.bias", where)
        rgb["class_embedding"] = _take(visual, "cls_token", where).reshape(-1)
        rgb["position_embedding.weight"] = _take(visual, "pos_embed", where)[0]
        layers = sorted({int(m.group(1)) for k in visual if (m := re.match(r"blocks\.(\d+)\.", k))})
        for i in layers:
            b = f"blocks.{i}."
            qkv = _take(visual, b + "attn.qkv.weight", where)
            q, k, v = qkv.chunk(3, dim=0)
            q_bias = visual.pop(b + "attn.q_bias", torch.zeros(q.shape[0]))
            v_bias = visual.pop(b + "attn.v_bias", torch.zeros(q.shape[0]))
            gamma_1, gamma_2 = visual.pop(b + "gamma_1", None), visual.pop(b + "gamma_2", None)
            proj_w, proj_b = _take(visual, b + "attn.proj.weight", where), _take(visual, b + "attn.proj.bias", where)
            fc2_w, fc2_b = _take(visual, b + "mlp.fc2.weight", where), _take(visual, b + "mlp.fc2.bias", where)
            if gamma_1 is not None:  # layer scale: x + gamma * f(x) == x + f'(x) with f' rows scaled
                proj_w, proj_b = proj_w * gamma_1[:, None], proj_b * gamma_1
            if gamma_2 is not None:
                fc2_w, fc2_b = fc2_w * gamma_2[:, None], fc2_b * gamma_2
            o = f"layers.{i}."
            rgb.update({
                o + "self_attn.q_proj.weight": q, o + "self_attn.q_proj.bias": q_bias,
                o + "self_attn.k_proj.weight": k, o + "self_attn.k_proj.bias": torch.zeros_like(q_bias),
                o + "self_attn.v_proj.weight": v, o + "self_attn.v_proj.bias": v_bias,
                o + "self_attn.out_proj.weight": proj_w, o + "self_attn.out_proj.bias": proj_b,
                o + "layer_norm1.weight": _take(visual, b + "norm1.weight", where),
                o + "layer_norm1.bias": _take(visual, b + "norm1.bias", where),
                o + "layer_norm2.weight": _take(visual, b + "norm2.weight", where),
                o + "layer_norm2.bias": _take(visual, b + "norm2.bias", where),
                o + "mlp.fc1.weight": _take(visual, b + "mlp.fc1.weight", where),
                o + "mlp.fc1.bias": _take(visual, b + "mlp.fc1.bias", where),
                o + "mlp.fc2.weight": fc2_w, o + "mlp.fc2.bias": fc2_b,
            })  # fmt: skip
        if "norm.weight" not in visual:
            raise CheckpointError(f"{where}: the EVA tower has no final 'norm' (mean-pooling towers are not supported)")
        rgb["post_layernorm.weight"] = _take(visual, "norm.weight", where)
        rgb["post_layernorm.bias"] = _take(visual, "norm.bias", where)
        fields = {"patch_bias": True, "pre_layernorm": False}
        intermediate = rgb["layers.0.mlp.fc1.weight"].shape[0]
    elif "conv1.weight" in visual:  # OpenAI CLIP
        patch = _take(visual, "conv1.weight", where)
        rgb["patch_embeddings.rgb.weight"] = patch
        rgb["class_embedding"] = _take(visual, "class_embedding", where)
        rgb["position_embedding.weight"] = _take(visual, "positional_embedding", where)
        for ours, theirs in (("pre_layernorm", "ln_pre"), ("post_layernorm", "ln_post")):
            for leaf in ("weight", "bias"):
                rgb[f"{ours}.{leaf}"] = _take(visual, f"{theirs}.{leaf}", where)
        layers = sorted({int(m.group(1)) for k in visual if (m := re.match(r"transformer\.resblocks\.(\d+)\.", k))})
        for i in layers:
            b, o = f"transformer.resblocks.{i}.", f"layers.{i}."
            for name, chunk_w, chunk_b in zip(
                ("q_proj", "k_proj", "v_proj"),
                _take(visual, b + "attn.in_proj_weight", where).chunk(3),
                _take(visual, b + "attn.in_proj_bias", where).chunk(3),
            ):
                rgb[o + f"self_attn.{name}.weight"], rgb[o + f"self_attn.{name}.bias"] = chunk_w, chunk_b
            for ours, theirs in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"),
                                 ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):  # fmt: skip
                for leaf in ("weight", "bias"):
                    rgb[o + f"{ours}.{leaf}"] = _take(visual, b + f"{theirs}.{leaf}", where)
        fields = {"patch_bias": False, "pre_layernorm": True}
        intermediate = rgb["layers.0.mlp.fc1.weight"].shape[0]
    else:
        raise CheckpointError(f"{where}: vision_encoder.visual is neither an EVA-CLIP nor an OpenAI-CLIP ViT")
    for key in list(visual):
        if key.startswith(("head.", "proj", "fc_norm")):
            report.ignored.append(prefix + key)  # CLIP's image projection: MiCo's retrieval path does not use it
            visual.pop(key)
    if visual:
        raise CheckpointError(f"{where}: unexpected vision tensors, e.g. {sorted(visual)[:3]}")
    grid = math.isqrt(rgb["position_embedding.weight"].shape[0] - 1)
    fields.update(
        hidden_size=patch.shape[0],
        num_hidden_layers=len(layers),
        intermediate_size=intermediate,
        patch_size=patch.shape[-1],
        image_size=grid * patch.shape[-1],
        num_attention_heads=tower["num_attention_heads"],
        layer_norm_eps=tower["layer_norm_eps"],
        hidden_act=tower["hidden_act"],
    )
    return fields, rgb


def _mico_text(
    state: StateDict, num_attention_heads: int, report: ConversionReport
) -> tuple[MiCoTextConfig, StateDict]:
    prefix = "multimodal_encoder.bert."
    where = "MiCo checkpoint"
    bert = {k[len(prefix) :]: state.pop(k) for k in [k for k in state if k.startswith(prefix)]}
    if not bert:
        raise CheckpointError(f"{where}: no multimodal_encoder.bert.* tensors")
    for key in [
        k for k in bert if k.startswith("pooler.") or k in ("embeddings.position_ids", "embeddings.token_type_ids")
    ]:
        report.ignored.append(prefix + key)
        bert.pop(key)
    words = bert["embeddings.word_embeddings.weight"]
    layers = sorted({int(m.group(1)) for k in bert if (m := re.match(r"encoder\.layer\.(\d+)\.", k))})
    cross = sorted({int(m.group(1)) for k in bert if (m := re.match(r"encoder\.layer\.(\d+)\.crossattention\.", k))})
    config = MiCoTextConfig(
        vocab_size=words.shape[0],
        hidden_size=words.shape[1],
        num_hidden_layers=len(layers),
        num_attention_heads=num_attention_heads,
        intermediate_size=bert["encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position_embeddings=bert["embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=bert["embeddings.token_type_embeddings.weight"].shape[0],
        cross_attention_layers=cross,
    )
    out = {f"text.{k}": v for k, v in bert.items()}
    head = "multimodal_encoder.cls.predictions."
    for ours, theirs in (("transform.dense", "transform.dense"), ("transform.LayerNorm", "transform.LayerNorm")):
        for leaf in ("weight", "bias"):
            out[f"lm_head.{ours}.{leaf}"] = _take(state, f"{head}{theirs}.{leaf}", where)
    out["lm_head.bias"] = _take(state, f"{head}bias", where)
    decoder = state.pop(f"{head}decoder.weight", None)
    state.pop(f"{head}decoder.bias", None)
    if decoder is not None and not torch.equal(decoder, words):
        raise CheckpointError(f"{where}: {head}decoder.weight is not tied to the word embeddings")
    return config, out


def convert_mico_checkpoint(
    state_dict: Mapping[str, torch.Tensor],
    model_cfg: Mapping | None = None,
    *,
    vision_encoder_type: str | None = None,
    text_num_attention_heads: int | None = None,
    modalities: tuple[str, ...] = ("image", "video", "audio", "depth"),
    mask_token_id: int = 103,
    random_token_start: int = 999,
) -> tuple[MiCoForPretraining, ConversionReport]:
    """A :class:`MiCoForPretraining` holding a MiCo release checkpoint.

    Args:
        state_dict: the checkpoint's tensors (``ckpt/model_step_N.pt`` read with
            :func:`load_state_dict_file`).
        model_cfg: ``model_cfg`` of the release's ``log/hps.json`` (``vision_encoder_type``,
            ``pool_video``, ``max_*_sample_num``, ``audio_melbins``, ``audio_target_length``, ...).
        vision_encoder_type: overrides ``model_cfg["vision_encoder_type"]``; one of
            :data:`MICO_VISION_TOWERS`.
        text_num_attention_heads: heads of the BERT (default: hidden size / 64, BERT's convention).
        modalities: the encoder's modalities.
        mask_token_id, random_token_start: [MASK] and the first ordinary word piece of the
            tokenizer (bert-base-uncased: 103 and 999), used when the model is trained further.

    The ViT reads every modality as MiCo does: audio spectrograms and depth maps through the RGB
    patch embedding (as grey images, see :func:`_fit_encoder_state`), each modality encoded
    separately (``joint_context=False``: MiCo's released model fuses modalities only in the text
    tower's cross-attention). Subtitle heads (``contra_head_s``, ``*_vs``, ``*_vas``) have no
    counterpart and are reported as ignored.
    """
    cfg = dict(model_cfg or {})
    report = ConversionReport()
    tower_name = vision_encoder_type or cfg.get("vision_encoder_type")
    if tower_name in UNSUPPORTED_TOWERS:
        raise CheckpointError(f"vision tower {tower_name!r} is {UNSUPPORTED_TOWERS[tower_name]}: not supported")
    if tower_name not in MICO_VISION_TOWERS:
        raise CheckpointError(f"unknown vision tower {tower_name!r}; known: {', '.join(MICO_VISION_TOWERS)}")
    state = _rename_mico_keys(state_dict)
    vision_fields, rgb = _mico_vision(state, MICO_VISION_TOWERS[tower_name], report)
    text_dim = state["multimodal_encoder.bert.embeddings.word_embeddings.weight"].shape[1]
    text_config, text_state = _mico_text(state, text_num_attention_heads or max(1, text_dim // 64), report)
    grid = vision_fields["image_size"] // vision_fields["patch_size"]
    frame_tables = {
        m: state.get(f"{MICO_MODALITY_HEADS[m]}_frame_embedding") for m in modalities if m in MICO_MODALITY_HEADS
    }
    max_segments = max([8] + [t.shape[1] for t in frame_tables.values() if t is not None])
    encoder_config = MiCoEncoderConfig(
        **vision_fields,
        audio_num_mel_bins=int(cfg.get("audio_melbins", grid * vision_fields["patch_size"])),
        audio_target_length=int(cfg.get("audio_target_length", grid * vision_fields["patch_size"])),
        audio_patch_size=vision_fields["patch_size"],
        max_segments=max_segments,
        modalities=list(modalities),
    )
    encoder_state = _fit_encoder_state(encoder_config, rgb, report, derive_kinds=True)

    consumed: set[str] = set()

    def read(key: str) -> torch.Tensor:
        if key not in state:
            raise CheckpointError(f"MiCo checkpoint: missing {key}")
        consumed.add(key)
        return state[key]

    heads: StateDict = {"text_head.weight": read("contra_head_t.linear.weight")}
    for m in modalities:
        theirs = MICO_MODALITY_HEADS.get(m)
        if theirs is None:
            continue
        if f"contra_head_{theirs[0]}.linear.weight" in state:
            heads[f"contrastive_heads.{m}.weight"] = read(f"contra_head_{theirs[0]}.linear.weight")
        for leaf, ours in (
            ("0.weight", "proj.weight"),
            ("0.bias", "proj.bias"),
            ("1.weight", "norm.weight"),
            ("1.bias", "norm.bias"),
        ):
            if f"hidden_trans_{theirs}_multimodal.{leaf}" in state:
                heads[f"condition_adapters.{m}.{ours}"] = read(f"hidden_trans_{theirs}_multimodal.{leaf}")
        if frame_tables.get(m) is not None:
            table = read(f"{theirs}_frame_embedding")  # (1, n, D); resized as MiCo does (nearest)
            table = F.interpolate(table.permute(0, 2, 1), size=max_segments, mode="nearest").permute(0, 2, 1)
            heads[f"condition_adapters.{m}.segment_embedding.weight"] = table[0]
        if f"{theirs}_type_embeddings" in state:
            heads[f"condition_adapters.{m}.type_embedding"] = read(f"{theirs}_type_embeddings").reshape(-1)
    fusion_groups = []
    for name, (order, group) in MICO_FUSION_HEADS.items():
        if f"{name}.weight" not in state or not set(order) <= set(modalities):
            continue
        blocks = dict(zip(order, read(f"{name}.weight").split(encoder_config.hidden_size, dim=1)))
        heads[f"fusion_heads.{group}.weight"] = torch.cat([blocks[m] for m in sorted(order)], dim=1)  # our order
        heads[f"fusion_heads.{group}.bias"] = read(f"{name}.bias")
        fusion_groups.append(group)
    temp = read("contra_temp")
    heads["logit_scale"] = torch.log(1.0 / temp.reshape(()))
    for leaf in (
        "linear1.weight",
        "linear1.bias",
        "layernorm.weight",
        "layernorm.bias",
        "linear2.weight",
        "linear2.bias",
    ):
        heads[f"matching_head.{leaf}"] = read(f"itm_head.{leaf}")
    report.ignored.extend(sorted(set(state) - consumed))
    config = MiCoPretrainingConfig(
        encoder_config=encoder_config,
        text_config=text_config,
        contrastive_dim=heads["text_head.weight"].shape[0],
        temperature=float(temp),
        fusion_groups=fusion_groups,
        condition_tokens="cls_mean" if cfg.get("pool_video") else "all",
        max_text_length=int(cfg.get("max_caption_len", 40)),
        joint_context=False,
        mask_token_id=mask_token_id,
        random_token_start=random_token_start,
    )
    model = MiCoForPretraining(config)
    full = {f"encoder.{k}": v for k, v in encoder_state.items()} | text_state | heads
    own = model.state_dict()
    for key, value in full.items():
        if key not in own:
            raise CheckpointError(f"converted key {key} fits no parameter")
        if tuple(value.shape) != tuple(own[key].shape):
            raise CheckpointError(f"{key}: converted shape {tuple(value.shape)}, the model has {tuple(own[key].shape)}")
    missing = sorted(set(own) - set(full))
    report.initialised.extend(k for k in missing if not k.startswith("encoder."))
    model.load_state_dict(full, strict=False)
    return model.eval(), report
