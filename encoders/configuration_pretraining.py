"""Configuration of the MiCo pretraining model: omni-modal encoder + text tower + heads."""

from __future__ import annotations

import math
from typing import Literal

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from mico_chat.modality import Modality

from .configuration_mico import MiCoEncoderConfig
from .configuration_text import MiCoTextConfig
from .context import group_key, parse_group

OBJECTIVES: tuple[str, ...] = ("contrastive", "matching", "generation")


class MiCoPretrainingConfig(PreTrainedConfig):
    r"""MiCo pretraining (MiCo sections 3.3-3.4, VAST section 4): the omni-modal ViT, a BERT text
    tower with cross-attention, and the heads of the three objectives.

    Args:
        encoder_config: the omni-modal ViT (:class:`MiCoEncoderConfig`).
        text_config: the text tower (:class:`MiCoTextConfig`).
        contrastive_dim: size of the shared space of the contrastive loss (MiCo eq. 4).
        temperature: initial temperature; the model learns ``logit_scale = log(1 / temperature)``
            (clamped at ``log(max_logit_scale)``), i.e. the learnable parameter of eq. 4.
        label_smoothing: of the contrastive cross-entropies (VAST's code uses 0.1; eq. 4 has none).
        fusion_groups: modality groups encoded as one multimodal context whose global feature is a
            linear map of the concatenated per-modality features (MiCo's ``contra_head_va``),
            e.g. ``["audio+video"]``.
        joint_context: encode a group of two or more modalities as one multimodal context (MiCo
            eq. 1: every token attends across modalities). ``False`` encodes each modality on its
            own, as MiCo's released model does (it fuses modalities only in the text tower).
        text_pooling: the caption's global feature: the ``"cls"`` state (VAST, MiCo) or the
            ``"mean"`` of its token states (how sentence encoders such as all-MiniLM-L6-v2 pool).
        matching_pooling: what the matching head reads after the cross-attention layers: the
            ``"cls"`` state (VAST, MiCo) or the ``"mean"`` of the caption's token states.
        matching_negatives: ``"hard"`` draws each negative with probability ``softmax`` of the
            contrastive similarities (ALBEF, VAST, MiCo); ``"random"`` draws it uniformly. See
            docs/pretraining.md: on the synthetic world the head of a locked
            mean-pooled tower learned far faster with the latter.
        condition_tokens: which encoder tokens the text tower's cross-attention reads: ``"all"``,
            or ``"cls_mean"`` (per segment the CLS token and the mean of its patches, as MiCo's
            ``pool_video`` option; much cheaper).
        generation_mask_prob: fraction of caption tokens masked for caption generation (eq. 6: 0.6).
        mask_token_id, random_token_start: the tokenizer's [MASK] id, and the first ordinary
            word-piece id (masked tokens are replaced 80 % by [MASK], 10 % by a random ordinary
            token, 10 % kept, as BERT and VAST do).
        max_text_length: captions are truncated to this many tokens.
        group_sampling_contexts: ``{group: sampling-context id}`` used when embedding a group at
            evaluation (MiCo eq. 3); the pretraining recipe fills it from its datasets.
    """

    model_type = "mico_pretraining"
    sub_configs_defaults = {
        "encoder_config": SubConfigSpec(MiCoEncoderConfig),
        "text_config": SubConfigSpec(MiCoTextConfig),
    }

    encoder_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    contrastive_dim: int = 256
    temperature: float = 0.07
    max_logit_scale: float = 100.0
    label_smoothing: float = 0.0
    fusion_groups: list[str] | None = None
    joint_context: bool = True
    text_pooling: Literal["cls", "mean"] = "cls"
    matching_pooling: Literal["cls", "mean"] = "cls"
    matching_negatives: Literal["hard", "random"] = "hard"
    condition_tokens: Literal["all", "cls_mean"] = "cls_mean"
    generation_mask_prob: float = 0.6
    mask_token_id: int = 103
    random_token_start: int = 999
    max_text_length: int = 40
    group_sampling_contexts: dict | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.fusion_groups = [group_key(parse_group(g)) for g in (self.fusion_groups or [])]
        for g in self.fusion_groups:
            missing = [m for m in parse_group(g) if m.value not in self.encoder_config.modalities]
            if missing or len(parse_group(g)) < 2:
                raise ValueError(f"fusion group {g!r} needs two or more of the encoder's modalities")
        if self.text_pooling not in ("cls", "mean"):
            raise ValueError(f"text_pooling must be 'cls' or 'mean', got {self.text_pooling!r}")
        if self.matching_pooling not in ("cls", "mean"):
            raise ValueError(f"matching_pooling must be 'cls' or 'mean', got {self.matching_pooling!r}")
        if self.matching_negatives not in ("hard", "random"):
            raise ValueError(f"matching_negatives must be 'hard' or 'random', got {self.matching_negatives!r}")
        if self.condition_tokens not in ("all", "cls_mean"):
            raise ValueError(f"condition_tokens must be 'all' or 'cls_mean', got {self.condition_tokens!r}")
        if not 0.0 < self.generation_mask_prob <= 1.0:
            raise ValueError(f"generation_mask_prob must be in (0, 1], got {self.generation_mask_prob}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 <= self.random_token_start < self.text_config.vocab_size:
            raise ValueError(f"random_token_start {self.random_token_start} outside the vocabulary")
        if self.max_text_length > self.text_config.max_position_embeddings:
            raise ValueError(
                f"max_text_length {self.max_text_length} > the text tower's {self.text_config.max_position_embeddings} positions"
            )
        self.group_sampling_contexts = {
            group_key(parse_group(g)): int(i) for g, i in (self.group_sampling_contexts or {}).items()
        }

    @property
    def modalities(self) -> list[Modality]:
        return [Modality.parse(m) for m in self.encoder_config.modalities]

    @property
    def initial_logit_scale(self) -> float:
        return math.log(1.0 / self.temperature)


# Auto classes (AutoConfig, and AutoTokenizer reading a saved folder) know this model type.
AutoConfig.register(MiCoPretrainingConfig.model_type, MiCoPretrainingConfig, exist_ok=True)
