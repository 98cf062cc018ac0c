"""Training configuration: typed dataclasses, read from YAML, then ``key=value`` overrides.

One YAML per (LLM, stage) under ``configs/<llm>/``; its header holds the launch command. The
file maps onto :class:`TrainConfig` section by section::

    stage: stage1_align          # or {name: new_modality, modalities: [depth]}
    model: {preset: default, chat_template: plain}
    data: {train: [captions.jsonl], packing: true}
    train: {output_dir: runs/x, learning_rate: 1.0e-3}
    lora: {r: 128, alpha: 256}          # used by the LoRA stages only
    quantization: {bits: 4}              # used by stage2_qlora only

Command-line overrides use dotted keys and YAML values: ``train.learning_rate=1e-4``,
``data.train=[a.jsonl,b.jsonl]``, ``model.llm=/models/vicuna-7b-v1.5``. A value of ``???`` in a
shipped config marks what the user must set; loading fails with the key's name until it is.
Unknown keys and wrong types fail the same way, naming the key (never silently ignored). The
loading rules are those of :mod:`mico_chat.yamlconfig`, shared with pretraining.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mico_chat import yamlconfig
from mico_chat.yamlconfig import REQUIRED, YamlConfig

from .errors import TrainConfigError


@dataclass
class StageSection:
    """What is trained (see :mod:`mico_chat.training.stages`).

    Args:
        name: a registered stage (``stage1_align``, ``stage2_instruct``, ``stage2_lora``,
            ``stage2_qlora``, ``new_modality``).
        modalities: whose connectors train; ``None`` means every connector of the model
            (``new_modality`` requires a list).
        extra_trainable: more parameter-name patterns (``fnmatch`` style, e.g.
            ``encoder.patch_embeddings.depth.*`` for a new input kind) made trainable on top of
            the stage's own.
    """

    yaml_shorthand: ClassVar[str] = "name"  # `stage: stage1_align` names the stage

    name: str = REQUIRED
    modalities: list[str] | None = None
    extra_trainable: list[str] = field(default_factory=list)


@dataclass
class ModelSection:
    """Where the model comes from.

    Args:
        preset: build from a preset (:mod:`mico_chat.presets`): LLM + encoder + connectors.
        init_from: a saved MiCo-Chat folder (e.g. stage 1's exported model); when set it is
            used instead of ``preset``.
        llm: replace the preset's LLM with this local Hugging Face folder or known name.
        encoder: overrides of the preset's encoder config (e.g. ``{preset: large}``), or
            ``{pretrained: FOLDER}``: the encoder a ``mico-chat pretrain`` run exported (its
            ``encoder/`` folder), config and weights, instead of the preset's encoder.
        connectors: overrides of the preset's connector configs, per modality.
        gated_xattn: a :class:`~mico_chat.connectors.GatedXAttnConfig` dict: build the preset's
            model with gated cross-attention adapters (media reach the LLM through them, not as
            tokens; see docs/connectors.md). A saved folder (``init_from``) keeps its own choice.
        encoder_weights: a safetensors file of pretrained encoder weights (names with or without
            the ``encoder.`` prefix) loaded after building.
        chat_template: prompt format (``plain`` for stage 1, ``llm``/``vicuna_v1`` afterwards);
            ``None`` keeps the model's.
        system_prompt: set the model's system prompt (kept in the exported model and preset, so
            inference uses the one training used); ``None`` keeps the model's.
        dtype: parameter dtype: ``auto`` (bfloat16 when training in bf16 on a GPU, else
            float32), ``float32``, ``bfloat16``, ``float16``.
        attn_implementation: the LLM's attention backend (``sdpa``, ``flash_attention_2``, ``eager``).
        grey_views: set the model's colour-free views (``[video]``: each video is also read in
            grey, its tokens after the video's own; see :class:`~mico_chat.configuration.MiCoChatConfig`);
            ``None`` keeps the model's. A connector reads both views, so a saved folder's trained
            connector serves the grey tokens from the first step.
    """

    preset: str | None = "default"
    init_from: str | None = None
    llm: str | None = None
    encoder: dict = field(default_factory=dict)
    connectors: dict = field(default_factory=dict)
    gated_xattn: dict | None = None
    encoder_weights: str | None = None
    chat_template: str | None = None
    system_prompt: str | None = None
    dtype: str = "auto"
    attn_implementation: str = "sdpa"
    grey_views: list[str] | None = None


@dataclass
class DataSection:
    """Records -> samples.

    Args:
        train: record files (``.jsonl``/``.json``, see :mod:`mico_chat.instruct_data.records`).
        media_root: folder media paths are relative to (default: each record file's folder).
        caption_kinds: for caption-pair records, the caption kinds to use, in order of preference.
        instruction: user text after the media placeholders when a caption pair becomes a
            conversation (the ``plain`` template drops it; stage 2 reads it).
        strict: stop at the first bad record instead of skipping and counting it.
        max_length: longest sample in tokens (media tokens included); longer records are skipped
            and counted (never truncated: a cut would split media tokens). ``None``: the LLM's
            context size.
        packing: concatenate the samples of a batch into rows with per-sample position ids
            (attention never crosses samples) instead of padding them.
        pack_length: longest packed row (``None``: the whole batch in one row).
        probe_media: read each media file's header during the scan, so unreadable files are
            skipped before training starts.
        cache_encoder_features: run the frozen encoder once over the data before training and
            train on its cached outputs (needs a frozen encoder; memory: see docs).
        cache_dtype: dtype the cached features are stored in.
        feature_store: with ``cache_encoder_features``: read the features from this store (made by
            ``mico-chat data encode-features``) instead of running the encoder before training. A
            store made by another encoder or with other media settings is refused (its manifest).
        media_settings: overrides of the processor's media settings (``num_frames``, ...).
        limit: use only the first ``limit`` good samples (records, or conversations once
            ``merge_turns`` joins them; smoke runs and ablations).
        merge_turns: join records about the same media (a clip's questions) into one
            conversation of up to this many user turns, so the media are read once for all of them
            (LLaVA's multi-turn records; 1: off), never two that answer each other. See
            :func:`mico_chat.training.data.merge_turns`.
    """

    train: list[str] = field(default_factory=lambda: [REQUIRED])
    media_root: str | None = None
    caption_kinds: list[str] = field(default_factory=lambda: ["omni", "vision", "audio", "subtitle"])
    instruction: str | None = None
    strict: bool = False
    max_length: int | None = None
    packing: bool = False
    pack_length: int | None = None
    probe_media: bool = True
    cache_encoder_features: bool = False
    cache_dtype: str = "float32"
    feature_store: str | None = None
    media_settings: dict = field(default_factory=dict)
    limit: int | None = None
    merge_turns: int = 1


@dataclass
class LoraSection:
    """LoRA adapters on the LLM's linear layers (LLaVA-1.5's LoRA setting by default)."""

    r: int = 128
    alpha: int = 256
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    bias: str = "none"


@dataclass
class QuantizationSection:
    """bitsandbytes quantization of the frozen LLM (QLoRA)."""

    bits: int = 4
    quant_type: str = "nf4"
    double_quant: bool = True
    compute_dtype: str = "auto"


@dataclass
class TrainSection:
    """Optimisation and run bookkeeping; mapped onto ``transformers.TrainingArguments``.

    Args beyond ``TrainingArguments``' own names:
        connector_lr: a separate learning rate for the connectors (LLaVA's ``mm_projector_lr``).
        encoder_lr: a separate learning rate for encoder parameters a stage trains
            (``stage.extra_trainable: ["encoder.*"]``).
        lexical_max_df: for ``stage1_lexical``, words in more than this share of the captions are
            template words and not aligned to (see :func:`mico_chat.training.lexical.content_token_mask`).
        warmup_ratio: linear warm-up as a fraction of the total steps.
        group_by_length: batches of similar length (less padding; the order stays seeded).
        resume: ``auto`` resumes from the newest complete checkpoint in ``output_dir`` if there
            is one; ``false`` starts fresh; a path resumes from that checkpoint.
        export: write the final model (LoRA merged) to ``output_dir/model``, loadable by
            ``ChatModel.load``.
        bf16: ``auto`` = on when a CUDA device with bf16 is present (never on a CPU); ``native`` =
            that, or training on a CPU that computes bf16 natively (AVX512_BF16, AMX: autocast
            only, weights stay as ``model.dtype`` says). On other CPUs bf16 autocast is far slower
            than float32 (16x on an AVX2 EPYC, docs/benchmarks.md).
        use_cpu: ``auto`` = when no CUDA device is present.
    """

    output_dir: str = REQUIRED
    max_steps: int = -1
    num_train_epochs: float = 1.0
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-5
    connector_lr: float | None = None
    encoder_lr: float | None = None
    lexical_max_df: float = 0.4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    lr_scheduler_type: str = "cosine"
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    bf16: bool | str = "auto"
    fp16: bool = False
    gradient_checkpointing: bool = False
    group_by_length: bool = True
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int | None = 2
    seed: int = 42
    deepspeed: str | None = None
    dataloader_num_workers: int = 0
    use_cpu: bool | str = "auto"
    resume: bool | str = "auto"
    export: bool = True
    report_to: list[str] = field(default_factory=lambda: ["none"])


@dataclass
class TrainConfig(YamlConfig):
    """A whole training run (see the module docstring for the YAML shape)."""

    stage: StageSection = field(default_factory=StageSection)
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    lora: LoraSection = field(default_factory=LoraSection)
    quantization: QuantizationSection = field(default_factory=QuantizationSection)


# ---------------------------------------------------------------------------------------- loading
def parse_override(text: str) -> tuple[str, Any]:
    """``"train.learning_rate=1e-4"`` -> ``("train.learning_rate", 1e-4)`` with the value read as YAML."""
    return yamlconfig.parse_override(text, TrainConfigError)


def config_from_dict(data: Mapping[str, Any], overrides: Sequence[str] = (), *, source: str = "config") -> TrainConfig:
    """Build a :class:`TrainConfig` from a mapping plus ``key=value`` overrides; check it."""
    return yamlconfig.build_config(
        TrainConfig, data, overrides, source=source, error=TrainConfigError, validate=validate
    )


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML config and apply ``key=value`` overrides; raises :class:`TrainConfigError`."""
    return config_from_dict(yamlconfig.read_yaml(path, TrainConfigError), overrides, source=str(path))


def validate(config: TrainConfig, source: str = "config") -> None:
    """Cross-field checks that types alone cannot express."""
    from .stages import STAGES

    def fail(message: str) -> None:
        raise TrainConfigError(f"{source}: {message}")

    stage = config.stage
    if stage.name not in STAGES:
        fail(f"stage.name {stage.name!r} is not a registered stage; known: {', '.join(STAGES)}")
    if STAGES[stage.name].needs_modalities and not stage.modalities:
        fail(f"stage {stage.name} trains the connectors of named modalities: set stage.modalities=[depth]")
    model = config.model
    if model.preset is None and model.init_from is None:
        fail("set model.preset (build from a preset) or model.init_from (a saved MiCo-Chat folder)")
    if model.init_from is not None and (model.llm or model.encoder or model.connectors or model.gated_xattn):
        fail(
            "model.init_from is a saved MiCo-Chat folder with its own LLM, encoder, connectors and adapters; "
            "model.llm/encoder/connectors/gated_xattn apply to presets only"
        )
    if model.dtype not in ("auto", "float32", "bfloat16", "float16"):
        fail(f"model.dtype must be auto, float32, bfloat16 or float16, got {model.dtype!r}")
    data = config.data
    if not data.train:
        fail("data.train lists no record files")
    if data.max_length is not None and data.max_length < 8:
        fail(f"data.max_length {data.max_length} is too small")
    if data.pack_length is not None and not data.packing:
        fail("data.pack_length needs data.packing=true")
    if data.cache_dtype not in ("float32", "bfloat16", "float16"):
        fail(f"data.cache_dtype must be float32, bfloat16 or float16, got {data.cache_dtype!r}")
    if data.feature_store is not None and not data.cache_encoder_features:
        fail("data.feature_store is read only with data.cache_encoder_features: true")
    train = config.train
    if train.max_steps <= 0 and train.num_train_epochs <= 0:
        fail("set train.max_steps or train.num_train_epochs to a positive value")
    if train.per_device_train_batch_size < 1 or train.gradient_accumulation_steps < 1:
        fail("train.per_device_train_batch_size and train.gradient_accumulation_steps must be >= 1")
    if train.fp16 and train.bf16 is True:
        fail("train.fp16 and train.bf16 cannot both be true")
    if not 0 <= train.warmup_ratio < 1:
        fail(f"train.warmup_ratio must be in [0, 1), got {train.warmup_ratio}")
    if isinstance(train.bf16, str) and train.bf16 not in ("auto", "native"):
        fail(f"train.bf16 must be true, false, auto or native, got {train.bf16!r}")
    if isinstance(train.use_cpu, str) and train.use_cpu != "auto":
        fail(f"train.use_cpu must be true, false or auto, got {train.use_cpu!r}")
    if train.save_steps < 1 or train.logging_steps < 1:
        fail("train.save_steps and train.logging_steps must be >= 1")
    if config.quantization.bits not in (4, 8):
        fail(f"quantization.bits must be 4 or 8, got {config.quantization.bits}")
    if STAGES[stage.name].quantize and train.deepspeed:
        fail(f"stage {stage.name} (bitsandbytes-quantized LLM) does not run under DeepSpeed; remove train.deepspeed")
