"""Omni-modal encoders: the MiCo ViT (one backbone for images, video frames, audio spectrograms,
depth and normal maps), and later its pretraining heads, text tower and checkpoint converters."""

from .configuration_mico import ENCODER_PRESETS, MiCoEncoderConfig
from .modeling_mico import MiCoEncoder, MiCoEncoderPreTrainedModel

__all__ = ["ENCODER_PRESETS", "MiCoEncoder", "MiCoEncoderConfig", "MiCoEncoderPreTrainedModel"]
