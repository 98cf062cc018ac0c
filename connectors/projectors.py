"""Token-wise projectors: the LLaVA-style linear and two-layer GELU MLP connectors."""

from __future__ import annotations

import torch
from torch import nn

from .base import Connector, ConnectorConfig, register_connector


@register_connector("linear")
class LinearConnector(Connector):
    """One linear map per token (LLaVA v1)."""

    def __init__(self, config: ConnectorConfig, in_dim: int, out_dim: int):
        super().__init__(config, in_dim, out_dim)
        self.proj = nn.Linear(in_dim, out_dim)

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(tokens)


@register_connector("mlp2x_gelu")
class MLPConnector(Connector):
    """Linear -> GELU -> linear per token (LLaVA-1.5's ``mlp2x_gelu``)."""

    def __init__(self, config: ConnectorConfig, in_dim: int, out_dim: int):
        super().__init__(config, in_dim, out_dim)
        self.fc1 = nn.Linear(in_dim, out_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(out_dim, out_dim)

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(tokens)))
