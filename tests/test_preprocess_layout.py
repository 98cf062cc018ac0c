"""Preprocessed tensors are contiguous whatever layout the decoder handed over."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mico_chat.encoders import MiCoEncoderConfig
from mico_chat.modality import Modality
from mico_chat.preprocess import MediaSettings, preprocess

S = 16
ENCODER = MiCoEncoderConfig(
    hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=S, patch_size=8
)


@pytest.mark.parametrize(
    "modality, source, shape",
    [
        (Modality.IMAGE, np.full((S, S, 3), 128, np.uint8), (1, 3, S, S)),  # no resize: a bare permute
        (Modality.IMAGE, np.full((2 * S, 3 * S, 3), 128, np.uint8), (1, 3, S, S)),
        (Modality.VIDEO, np.full((4, S, S, 3), 128, np.uint8), (2, 3, S, S)),
        (Modality.NORMAL, np.ones((S, S, 3), np.float32) / np.sqrt(3), (1, 3, S, S)),
        (Modality.DEPTH, np.linspace(1, 2, 4 * S * S, dtype=np.float32).reshape(2 * S, 2 * S), (1, 1, S, S)),
    ],
)
def test_outputs_are_contiguous(modality, source, shape):
    x = preprocess(modality, source, MediaSettings(num_frames=2), ENCODER)
    assert tuple(x.shape) == shape and x.dtype == torch.float32
    assert x.is_contiguous() and x.stride() == torch.empty(shape).stride()
