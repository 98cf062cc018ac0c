"""Pretraining configuration: typed dataclasses, read from YAML, then ``key=value`` overrides.

The YAML maps onto :class:`PretrainConfig` section by section (see ``configs/pretrain/``)::

    model: {encoder: {...}, text: all-minilm-l6-v2, contrastive_dim: 256, fusion_groups: [audio+video]}
    data:
      batch_size: 32
      media: {num_frames: 4, audio_clips: 1}
      datasets:
        - {name: omni, records: world/captions.jsonl, group: [video, audio], captions: [omni], ratio: 2}
        - {name: cross, records: world/captions.jsonl, group: [video, audio], captions: [vision, audio],
           cross_sample: true}
    train: {output_dir: runs/x, max_steps: 600, learning_rate: 3.0e-4, schedule: cosine}

Overrides use dotted keys and YAML values: ``train.max_steps=20``, ``data.batch_size=8``,
``model.objectives=[contrastive]``. Unknown keys and wrong types fail naming the key.
``???`` marks a value that must be set. The loading rules are those of
:mod:`mico_chat.yamlconfig`, shared with staged training (``mico_chat.training.config``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mico_chat import yamlconfig
from mico_chat.errors import ConfigError
from mico_chat.yamlconfig import REQUIRED, YamlConfig


class PretrainConfigError(ConfigError):
    """A pretraining config that cannot be used; the message names the key."""


@dataclass
class DatasetSpec:
    """One dataset of the pretraining mixture.

    Args:
        name: a label for logs and the sampling-context table.
        records: a record file (caption-pair records: media + ``captions``).
        media_root: folder the records' media paths are relative to (default: the file's folder).
        group: the modalities each sample presents; two or more form one multimodal context.
        captions: caption kinds joined into the sample's text (MiCo eq. 2), e.g. ``[omni]`` or
            ``[vision, audio]``; a record lacking one is skipped (counted).
        ratio: relative probability that a step draws its batch from this dataset (VAST/MiCo
            sample one corpus per step).
        objectives: the objectives trained on this dataset (``contrastive``, ``matching``,
            ``generation``).
        cross_sample: cross-dataset joint sampling (MiCo eq. 3): each modality of the group comes
            from an independently drawn record, and the text joins each one's caption of the
            kind at the same position in ``captions`` (so ``captions`` needs one kind per modality,
            in the group's sorted order).
        limit: use only the first ``limit`` usable records.
        grayscale: show the frames and images in grey (each pixel's channel mean in every channel),
            so the dataset's samples carry no colour.
        drop_words: words removed from the captions (whole words, case ignored), e.g. the colour
            names on a ``grayscale`` dataset, so a caption does not name what the media no longer
            shows. Colour-free views: when the world's colours and shapes are correlated, they
            make the encoder hold shape apart from colour.
        channel_shuffle: show the frames and images with their RGB channels in a random order
            other than the original (one of five, drawn per sample): every colour becomes another
            hue of different brightness, while black, grey and white stay. With the colour names
            in ``drop_words`` this is a colour-free view that, unlike ``grayscale``, keeps no
            brightness per colour; on the synthetic world it also shows shapes in colours their
            training clips never have (the held-out split's reserved pairs among them).
        reverse_time: the share of samples (0 to 1) whose video plays backwards, their captions
            rewritten by ``reverse_words``. The same clip then comes with both directions of
            motion, so direction has to be read from the order of the frames, not from what moves.
        reverse_words: pairs of words or phrases a reversed clip's caption exchanges (whole words,
            case ignored), e.g. ``[[to the left, to the right], [upward, downward],
            [appearing, disappearing]]``.
    """

    name: str = REQUIRED
    records: str = REQUIRED
    media_root: str | None = None
    group: list[str] = field(default_factory=lambda: ["video"])
    captions: list[str] = field(default_factory=lambda: ["vision"])
    ratio: float = 1.0
    objectives: list[str] = field(default_factory=lambda: ["contrastive", "matching", "generation"])
    cross_sample: bool = False
    limit: int | None = None
    grayscale: bool = False
    drop_words: list[str] = field(default_factory=list)
    channel_shuffle: bool = False
    reverse_time: float = 0.0
    reverse_words: list[list[str]] = field(default_factory=list)


@dataclass
class ModelSection:
    """The model: built from parts, or continued from a saved pretraining folder.

    Args:
        init_from: a saved :class:`~mico_chat.encoders.MiCoForPretraining` folder (with its
            tokenizer); when set, ``encoder``/``text``/head fields are ignored.
        encoder: encoder config fields (``{preset: tiny, image_size: 64, ...}``).
        text: a known text-encoder name (``all-minilm-l6-v2``) or a local BERT folder.
        text_overrides: text-tower config fields (``cross_attention_layers``, dropouts).
        contrastive_dim, temperature, label_smoothing, fusion_groups, joint_context,
        text_pooling, matching_pooling, matching_negatives, condition_tokens, generation_mask_prob,
        max_text_length: see
            :class:`~mico_chat.encoders.MiCoPretrainingConfig`.
        sampling_contexts: learn a sampling-context embedding per dataset (MiCo eq. 3).
        freeze: parameter-name prefixes kept frozen (e.g. ``text.embeddings``).
        seed: initialisation seed of everything not loaded from ``text``.
    """

    init_from: str | None = None
    encoder: dict = field(default_factory=lambda: {"preset": "tiny"})
    text: str = "all-minilm-l6-v2"
    text_overrides: dict = field(default_factory=dict)
    contrastive_dim: int = 256
    temperature: float = 0.07
    label_smoothing: float = 0.0
    fusion_groups: list[str] = field(default_factory=lambda: ["audio+video"])
    joint_context: bool = True
    text_pooling: str = "cls"
    matching_pooling: str = "cls"
    matching_negatives: str = "hard"
    condition_tokens: str = "cls_mean"
    generation_mask_prob: float = 0.6
    max_text_length: int = 40
    sampling_contexts: bool = True
    freeze: list[str] = field(default_factory=list)
    seed: int = 0


@dataclass
class DataSection:
    """Datasets, media preprocessing and batching.

    Args:
        datasets: the mixture (:class:`DatasetSpec`).
        batch_size: samples per step (per process).
        media: :class:`~mico_chat.preprocess.MediaSettings` fields (``num_frames``, ``audio_clips``).
        cache_dir: where preprocessed media tensors are cached (default ``output_dir/cache``);
            a cache is keyed by the records file, the media settings and the encoder's input shape.
        strict: stop at the first unreadable record or media file instead of skipping and counting.
        word_swaps: groups of interchangeable words or phrases (``[[circle, square], [upward,
            downward]]``). When set, every caption also gets one *swapped* copy (one occurrence of
            one group's member replaced by another member) that the contrastive loss uses as an
            extra negative caption for its media (NegCLIP-style hard negatives): a caption that
            differs from the true one in one factor, so the media features must hold that factor.
    """

    datasets: list[DatasetSpec] = field(default_factory=list)
    batch_size: int = 32
    media: dict = field(default_factory=dict)
    cache_dir: str | None = None
    strict: bool = False
    word_swaps: list[list[str]] = field(default_factory=list)


@dataclass
class EvalSection:
    """Held-out retrieval during training (optional).

    Args:
        records: a record file to evaluate on (``None``: no evaluation during training).
        groups: the query groups to evaluate, e.g. ``[video, audio]``.
        captions: caption kind per group (default: video/image -> vision, audio -> audio, else omni).
        every: evaluate every this many steps (and at the end).
        limit: evaluate on the first ``limit`` items only.
    """

    records: str | None = None
    media_root: str | None = None
    groups: list[str] = field(default_factory=lambda: ["video", "audio"])
    captions: dict = field(default_factory=dict)
    every: int = 200
    limit: int | None = None


@dataclass
class TrainSection:
    """Optimisation and run bookkeeping.

    Args:
        output_dir: checkpoints (``checkpoint-N/``), ``loss.jsonl``, ``loss.png``, the final
            model (``model/``) and the exported encoder (``encoder/``).
        max_steps: optimiser steps.
        learning_rate, weight_decay, adam_beta1, adam_beta2, max_grad_norm: AdamW and clipping
            (no weight decay on biases, norms, embeddings and the temperature).
        lr_multipliers: ``{parameter-name prefix: factor}``; a parameter takes the factor of the
            longest prefix that matches it (e.g. freshly initialised fusion layers learning faster
            than pretrained ones).
        schedule: ``linear`` or ``cosine`` decay after ``warmup_steps`` of linear warm-up.
        save_steps, save_total_limit: checkpoint period and how many to keep.
        resume: ``auto`` continues from the newest complete checkpoint in ``output_dir``;
            ``false`` refuses to start over an existing one; a path resumes from that checkpoint.
        mixed_precision: ``no``, ``bf16`` or ``fp16`` (accelerate).
        deepspeed: a DeepSpeed JSON config (GPU runs under ``accelerate launch``).
        gradient_checkpointing: recompute encoder and text activations in the backward pass.
        torch_threads: CPU threads (``None``: torch's default).
        objectives: restrict every dataset to these objectives (``None``: each dataset's own), for
            ablations such as contrastive-only (MiCo Table 7 rows l-n).
    """

    output_dir: str = REQUIRED
    max_steps: int = 1000
    learning_rate: float = 1e-4
    lr_multipliers: dict = field(default_factory=dict)
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    max_grad_norm: float = 1.0
    schedule: str = "linear"
    warmup_steps: int = 0
    seed: int = 0
    logging_steps: int = 10
    save_steps: int = 200
    save_total_limit: int = 2
    resume: bool | str = "auto"
    mixed_precision: str = "no"
    deepspeed: str | None = None
    gradient_checkpointing: bool = False
    torch_threads: int | None = None
    objectives: list[str] | None = None


@dataclass
class PretrainConfig(YamlConfig):
    """A whole pretraining run (see the module docstring for the YAML shape)."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)


# ---------------------------------------------------------------------------------------- loading
def parse_override(text: str) -> tuple[str, Any]:
    """``"train.max_steps=20"`` -> ``("train.max_steps", 20)``; ``data.datasets.0.ratio=2`` indexes lists."""
    return yamlconfig.parse_override(text, PretrainConfigError)


def config_from_dict(
    data: Mapping[str, Any], overrides: Sequence[str] = (), *, source: str = "config"
) -> PretrainConfig:
    """Build a :class:`PretrainConfig` from a mapping plus ``key=value`` overrides; check it."""
    return yamlconfig.build_config(
        PretrainConfig, data, overrides, source=source, error=PretrainConfigError, validate=validate
    )


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> PretrainConfig:
    """Read a YAML config and apply ``key=value`` overrides; raises :class:`PretrainConfigError`.

    Relative ``records``/``media_root`` paths stay relative to the working directory.
    """
    return config_from_dict(yamlconfig.read_yaml(path, PretrainConfigError), overrides, source=str(path))


def validate(config: PretrainConfig, source: str = "config") -> None:
    """Cross-field checks that types alone cannot express."""
    from mico_chat.encoders import OBJECTIVES, parse_group

    def fail(message: str) -> None:
        raise PretrainConfigError(f"{source}: {message}")

    if not config.data.datasets:
        fail("data.datasets lists no dataset")
    names = [d.name for d in config.data.datasets]
    if len(set(names)) != len(names):
        fail(f"dataset names repeat: {names}")
    for i, spec in enumerate(config.data.datasets):
        where = f"data.datasets.{i} ({spec.name})"
        try:
            group = parse_group(spec.group)
        except ValueError as err:
            fail(f"{where}.group: {err}")
        if spec.ratio <= 0:
            fail(f"{where}.ratio must be > 0, got {spec.ratio}")
        bad = set(spec.objectives) - set(OBJECTIVES)
        if bad or not spec.objectives:
            fail(f"{where}.objectives must be a non-empty subset of {list(OBJECTIVES)}, got {spec.objectives}")
        if "matching" in spec.objectives and "contrastive" not in spec.objectives:
            fail(f"{where}: matching mines hard negatives from the contrastive similarities; add contrastive")
        if not spec.captions:
            fail(f"{where}.captions lists no caption kind")
        if spec.cross_sample and (len(group) < 2 or len(spec.captions) != len(group)):
            fail(f"{where}: cross_sample needs a group of 2+ modalities and one caption kind per modality")
        if spec.grayscale and not any(m.input_kind == "rgb" for m in group):
            fail(f"{where}.grayscale: the group {[m.value for m in group]} has no frames or images to show in grey")
        if spec.channel_shuffle and not any(m.input_kind == "rgb" for m in group):
            fail(f"{where}.channel_shuffle: the group {[m.value for m in group]} has no frames or images to recolour")
        if not 0.0 <= spec.reverse_time <= 1.0:
            fail(f"{where}.reverse_time is a share of samples in [0, 1], got {spec.reverse_time}")
        if spec.reverse_time and [m.value for m in group] != ["video"]:
            fail(f"{where}.reverse_time plays a video backwards: the group must be [video] alone, got {[m.value for m in group]}")
        if any(len(pair) != 2 or not all(isinstance(w, str) and w.strip() for w in pair) for pair in spec.reverse_words):
            fail(f"{where}.reverse_words must list [word, word] pairs, got {spec.reverse_words!r}")
        if spec.reverse_words and not spec.reverse_time:
            fail(f"{where}.reverse_words without reverse_time would never apply")
        if spec.channel_shuffle and spec.grayscale:
            fail(f"{where}: channel_shuffle and grayscale together show grey frames only; choose one")
        if not all(isinstance(w, str) and w.strip() for w in spec.drop_words):
            fail(f"{where}.drop_words must list non-empty words, got {spec.drop_words!r}")
        if len(group) > 1 and config.model.init_from is None:
            key = "+".join(m.value for m in group)
            if key not in {"+".join(m.value for m in parse_group(g)) for g in config.model.fusion_groups}:
                fail(f"{where}: group {key} needs model.fusion_groups to include it")
    if train_objectives := config.train.objectives:
        if set(train_objectives) - set(OBJECTIVES):
            fail(f"train.objectives must be a subset of {list(OBJECTIVES)}, got {train_objectives}")
        if "matching" in train_objectives and "contrastive" not in train_objectives:
            fail("train.objectives: matching mines hard negatives from the contrastive similarities; add contrastive")
        for spec in config.data.datasets:
            if not set(spec.objectives) & set(train_objectives):
                fail(f"dataset {spec.name} keeps no objective under train.objectives={train_objectives}")
    for prefix, factor in config.train.lr_multipliers.items():
        if not isinstance(factor, (int, float)) or isinstance(factor, bool) or factor <= 0:
            fail(f"train.lr_multipliers.{prefix} must be a positive number, got {factor!r}")
    if config.data.batch_size < 2:
        fail("data.batch_size must be >= 2 (the contrastive loss needs negatives)")
    for i, group in enumerate(config.data.word_swaps):
        words = [w.strip().lower() for w in group] if isinstance(group, list) else []
        if len(words) < 2 or not all(isinstance(w, str) and w.strip() for w in group) or len(set(words)) != len(words):
            fail(f"data.word_swaps.{i} must list two or more distinct non-empty words, got {group!r}")
    train = config.train
    if train.max_steps < 1:
        fail("train.max_steps must be >= 1")
    if train.schedule not in ("linear", "cosine"):
        fail(f"train.schedule must be linear or cosine, got {train.schedule!r}")
    if not 0 <= train.warmup_steps < train.max_steps:
        fail(f"train.warmup_steps must be in [0, max_steps), got {train.warmup_steps}")
    if train.mixed_precision not in ("no", "bf16", "fp16"):
        fail(f"train.mixed_precision must be no, bf16 or fp16, got {train.mixed_precision!r}")
    if isinstance(train.resume, str) and train.resume != "auto" and not Path(train.resume).is_dir():
        fail(f"train.resume: {train.resume} is not a checkpoint folder")
    if train.save_steps < 1 or train.logging_steps < 1 or train.save_total_limit < 1:
        fail("train.save_steps, train.logging_steps and train.save_total_limit must be >= 1")
    if config.eval.records is not None and config.eval.every < 1:
        fail("eval.every must be >= 1")
