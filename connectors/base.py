"""Connector base class, config and registry.

A connector projects the encoder's features of one modality into the LLM's embedding space:
``forward(features (N, L, D_enc), layout) -> (N, M, D_llm)``. ``num_tokens(config, layout)`` says
how many tokens ``M`` it emits for a layout, so the processor can expand placeholders before any
tensor exists. New connectors subclass :class:`Connector` and register with
:func:`register_connector`; nothing else changes. A connector with options of its own (the
resampler's query count, say) also subclasses :class:`ConnectorConfig` and names it as its
``config_class``: ``ConnectorConfig.from_dict`` then builds that class from the ``type`` key, so
the options travel in the model's ``config.json`` and in stage-config overrides like the others.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from types import MappingProxyType
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from mico_chat.modality import MediaLayout

TokenSelection = Literal["cls", "patches", "all"]


@dataclass
class ConnectorConfig:
    """What a connector is and which encoder tokens it reads.

    Args:
        type: registered connector name (``linear``, ``mlp2x_gelu``, ...).
        tokens: per segment, read the CLS token, the patch tokens, or both (``all``).
        pool: pool each segment's patch grid down to at most ``pool x pool`` tokens (``None``
            keeps every patch).
        pool_mode: how ``pool`` pools, ``avg`` or ``max`` (per channel, the strongest patch of
            each cell: a small object keeps its own response instead of being averaged with the
            background around it, as the encoder's ``cls_max`` global feature does).
        out_norm: end with an RMSNorm whose gain starts at the LLM's own input-embedding scale
            (set by :func:`mico_chat.builder.build_model`), so media tokens enter the LLM at the
            size of its word embeddings. Without it a connector trained at a high rate inflates
            its outputs (measured on the default recipe: 18x the word-embedding norm after stage 2),
            and the LLM's residual stream at media positions then barely changes across layers.
    """

    type: str = "mlp2x_gelu"
    tokens: TokenSelection = "all"
    pool: int | None = None
    pool_mode: Literal["avg", "max"] = "avg"
    out_norm: bool = False

    def __post_init__(self) -> None:
        if self.tokens not in ("cls", "patches", "all"):
            raise ValueError(f"connector tokens must be 'cls', 'patches' or 'all', got {self.tokens!r}")
        if self.pool is not None and self.pool < 1:
            raise ValueError(f"connector pool must be >= 1 or None, got {self.pool}")
        if self.pool_mode not in ("avg", "max"):
            raise ValueError(f"connector pool_mode must be 'avg' or 'max', got {self.pool_mode!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | ConnectorConfig) -> ConnectorConfig:
        """The config of ``data["type"]``: its connector's own ``config_class`` when it has one
        (so ``{"type": "resampler", "num_queries": 32}`` is a ``ResamplerConfig``), else ``cls``. A
        config object of another class than its type's is rebuilt the same way."""
        if isinstance(data, ConnectorConfig):
            own = _REGISTRY[data.type].config_class if data.type in _REGISTRY else type(data)
            if isinstance(data, own):
                return data
            data = data.to_dict()  # e.g. ConnectorConfig(type="resampler"): the resampler's defaults fill in
        target = cls
        name = data.get("type", cls.type)
        if cls is ConnectorConfig and name in _REGISTRY:
            target = _REGISTRY[name].config_class
        known = {f.name for f in fields(target)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"unknown connector config keys {sorted(unknown)} for type {name!r}; known: {sorted(known)}"
            )
        return target(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Connector(nn.Module):
    """Base class: token selection/pooling shared by all connectors, projection left to subclasses."""

    config_class: type[ConnectorConfig] = ConnectorConfig
    """The config this connector reads; a subclass of :class:`ConnectorConfig` for one with options."""
    fuses_audio_track: bool = False
    """As the video connector: takes a video's own audio track with its frames, aligned by time
    (``forward(..., audio, audio_layout, video_times, audio_times, span_s)``), so the processor
    gives the track no ``<audio>`` placeholder of its own (the Combiner)."""

    def __init__(self, config: ConnectorConfig, in_dim: int, out_dim: int):
        super().__init__()
        self.config = config
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.out_norm = nn.RMSNorm(out_dim, eps=1e-6) if config.out_norm else None

    @torch.no_grad()
    def match_scale(self, embeddings: torch.Tensor) -> None:
        """Start the output norm's gain at the root-mean-square of ``embeddings`` (the LLM's input
        embedding matrix), so fresh media tokens are as large as word embeddings; no-op without it."""
        if self.out_norm is not None:
            rms = embeddings.float().pow(2).mean().sqrt()
            self.out_norm.weight.fill_(rms.item())

    @staticmethod
    def pooled_grid(config: ConnectorConfig, layout: MediaLayout) -> tuple[int, int]:
        if config.pool is None:
            return (layout.grid_h, layout.grid_w)
        return (min(layout.grid_h, config.pool), min(layout.grid_w, config.pool))

    @classmethod
    def num_tokens(cls, config: ConnectorConfig, layout: MediaLayout) -> int:
        """Tokens emitted for one item with ``layout``."""
        per_segment = 0
        if config.tokens in ("cls", "all"):
            per_segment += 1
        if config.tokens in ("patches", "all"):
            grid_h, grid_w = cls.pooled_grid(config, layout)
            per_segment += grid_h * grid_w
        return layout.num_segments * per_segment

    def select(self, features: torch.Tensor, layout: MediaLayout) -> torch.Tensor:
        """Pick (and pool) the tokens this connector reads: ``(N, L, D) -> (N, M, D)``."""
        n, length, dim = features.shape
        if length != layout.num_tokens:
            raise ValueError(f"connector got {length} tokens per item, layout {layout} has {layout.num_tokens}")
        segments = features.view(n, layout.num_segments, layout.tokens_per_segment, dim)  # (N, S, 1+P, D)
        parts = []
        if self.config.tokens in ("cls", "all"):
            parts.append(segments[:, :, :1])  # (N, S, 1, D)
        if self.config.tokens in ("patches", "all"):
            patches = segments[:, :, 1:]  # (N, S, P, D)
            grid = self.pooled_grid(self.config, layout)
            if grid != (layout.grid_h, layout.grid_w):
                maps = patches.reshape(n * layout.num_segments, layout.grid_h, layout.grid_w, dim).permute(0, 3, 1, 2)
                pool = F.adaptive_max_pool2d if self.config.pool_mode == "max" else F.adaptive_avg_pool2d
                maps = pool(maps, grid)  # (N*S, D, h, w)
                patches = maps.permute(0, 2, 3, 1).reshape(n, layout.num_segments, grid[0] * grid[1], dim)
            parts.append(patches)
        return torch.cat(parts, dim=2).flatten(1, 2)  # (N, M, D)

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, features: torch.Tensor, layout: MediaLayout) -> torch.Tensor:
        """``(N, layout.num_tokens, in_dim) -> (N, num_tokens(config, layout), out_dim)``."""
        out = self.project(self.select(features, layout))
        return out if self.out_norm is None else self.out_norm(out)


_REGISTRY: dict[str, type[Connector]] = {}
CONNECTORS: Mapping[str, type[Connector]] = MappingProxyType(_REGISTRY)


def register_connector(name: str) -> Callable[[type[Connector]], type[Connector]]:
    """Class decorator: make a :class:`Connector` subclass buildable by ``name``."""

    def add(cls: type[Connector]) -> type[Connector]:
        if name in _REGISTRY:
            raise ValueError(f"connector {name!r} is already registered ({_REGISTRY[name].__name__})")
        _REGISTRY[name] = cls
        return cls

    return add


def connector_class(name: str) -> type[Connector]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown connector type {name!r}; registered: {', '.join(sorted(_REGISTRY))}") from None


def build_connector(config: ConnectorConfig | Mapping[str, Any], in_dim: int, out_dim: int) -> Connector:
    config = ConnectorConfig.from_dict(config)
    return connector_class(config.type)(config, in_dim, out_dim)
