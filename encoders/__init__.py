"""Omni-modal encoders: the MiCo ViT (one backbone for images, video frames, audio spectrograms,
depth and normal maps), the BERT-style text tower, the pretraining heads and losses (MiCo eq. 1-6),
and converters for external checkpoints (Hugging Face CLIP vision towers, MiCo's release)."""

from .configuration_mico import ENCODER_PRESETS, MiCoEncoderConfig
from .configuration_pretraining import OBJECTIVES, MiCoPretrainingConfig
from .configuration_text import MiCoTextConfig
from .context import group_key, join_captions, parse_group
from .modeling_mico import MiCoEncoder, MiCoEncoderPreTrainedModel
from .modeling_pretraining import MiCoForPretraining, PretrainingBatch, PretrainingOutput, build_pretraining_model
from .modeling_text import BertPredictionHead, MiCoTextModel

__all__ = [
    "ENCODER_PRESETS",
    "OBJECTIVES",
    "BertPredictionHead",
    "MiCoEncoder",
    "MiCoEncoderConfig",
    "MiCoEncoderPreTrainedModel",
    "MiCoForPretraining",
    "MiCoPretrainingConfig",
    "MiCoTextConfig",
    "MiCoTextModel",
    "PretrainingBatch",
    "PretrainingOutput",
    "build_pretraining_model",
    "group_key",
    "join_captions",
    "parse_group",
]
