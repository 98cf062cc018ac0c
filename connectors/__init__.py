"""Connectors: per-modality maps from encoder features into the LLM's embedding space (see docs/connectors.md)."""

from .base import (
    CONNECTORS,
    Connector,
    ConnectorConfig,
    build_connector,
    connector_class,
    register_connector,
)
from .combiner import CombinerConfig, TimeAlignedCombiner
from .gated_xattn import GatedXAttn, GatedXAttnAdapter, GatedXAttnConfig, SeparableCrossAttention
from .projectors import LinearConnector, MLPConnector
from .resampler import ResamplerConfig, ResamplerConnector
from .ttm import TokenLearner, TokenTuringMachine
from .vidla import VidLAConfig, VidLAConnector

__all__ = [
    "CONNECTORS",
    "CombinerConfig",
    "Connector",
    "ConnectorConfig",
    "GatedXAttn",
    "GatedXAttnAdapter",
    "GatedXAttnConfig",
    "LinearConnector",
    "MLPConnector",
    "ResamplerConfig",
    "ResamplerConnector",
    "SeparableCrossAttention",
    "TimeAlignedCombiner",
    "TokenLearner",
    "TokenTuringMachine",
    "VidLAConfig",
    "VidLAConnector",
    "build_connector",
    "connector_class",
    "register_connector",
]
