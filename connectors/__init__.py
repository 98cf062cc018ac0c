"""Connectors: per-modality projections from encoder features into the LLM's embedding space."""

from .base import (
    CONNECTORS,
    Connector,
    ConnectorConfig,
    build_connector,
    connector_class,
    register_connector,
)
from .projectors import LinearConnector, MLPConnector

__all__ = [
    "CONNECTORS",
    "Connector",
    "ConnectorConfig",
    "LinearConnector",
    "MLPConnector",
    "build_connector",
    "connector_class",
    "register_connector",
]
