"""Resampler: K learned queries cross-attend over all of an item's encoder tokens.

The Perceiver Resampler of Flamingo (Alayrac et al., 2022, section 2.1 and appendix A.1.1; the
Q-Former of BLIP-2 is the same idea with a text branch, which this connector does not have). Where
the token-wise projectors emit a fixed number of tokens *per frame*, the resampler emits
``num_queries`` tokens per item whatever its number of frames (or audio clips), so a long video
costs the LLM no more tokens than a short one.

Per item::

    keys    = select(features) (+ time embedding of each token's frame)   # (N, S*t, D_enc)
    latents = queries                                                      # (N, K, D_enc)
    depth x:  latents += attn(norm(latents), norm([keys; latents]))        # pre-norm cross-attention
              latents += mlp(norm(latents))
    out     = proj(norm(latents))                                          # (N, K, D_llm)

As in Flamingo, the latents attend to the media tokens *and* to themselves (the keys and values
are the concatenation), and the layers work at the encoder's width; one linear map at the end
goes to the LLM's. The base class's ``tokens``/``pool`` options choose which encoder tokens are
keys (per frame: CLS, patches or both, patches average-pooled), and ``out_norm`` ends with the
RMSNorm matched to the LLM's embedding scale, as for every connector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mico_chat.modality import MediaLayout

from .base import Connector, ConnectorConfig, register_connector


@dataclass
class ResamplerConfig(ConnectorConfig):
    """:class:`ConnectorConfig` plus the resampler's own options.

    Args:
        num_queries: K, the learned queries, and so the tokens one item becomes (Flamingo: 64).
        depth: cross-attention + MLP layers (Flamingo: 6).
        heads: attention heads; must divide the encoder's hidden size.
        mlp_ratio: hidden width of each layer's MLP, in multiples of the encoder's hidden size.
        time_embed: add a learned embedding of each token's frame (segment) index to the keys, so
            the queries can tell frame order apart (without it the output does not depend on the
            order of the frames: attention is a set operation).
        max_frames: rows of the time-embedding table: the most frames (segments) an item may have
            when ``time_embed`` is on and ``time_index="absolute"``.
        time_index: which time-embedding row frame ``s`` of ``S`` gets: ``"absolute"``, row ``s``
            (``S <= max_frames``); ``"interpolate"``, row ``s`` while ``S <= max_frames``, and for
            longer items the table linearly resampled to ``S`` rows (first and last kept), so a
            512-frame video reads the same table in order (the encoder's ``context_index`` rule).
    """

    type: str = "resampler"
    num_queries: int = 32
    depth: int = 2
    heads: int = 4
    mlp_ratio: int = 4
    time_embed: bool = False
    max_frames: int = 64
    time_index: Literal["absolute", "interpolate"] = "absolute"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.time_index not in ("absolute", "interpolate"):
            raise ValueError(f"resampler time_index must be 'absolute' or 'interpolate', got {self.time_index!r}")
        for name in ("num_queries", "depth", "heads", "mlp_ratio", "max_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"resampler {name} must be >= 1, got {getattr(self, name)}")


class CrossAttentionBlock(nn.Module):
    """One pre-norm resampler layer: the latents cross-attend to ``[media; latents]``, then an MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, latents: torch.Tensor, media: torch.Tensor) -> torch.Tensor:
        """``latents (N, K, D)``, ``media (N, L, D)`` -> updated latents ``(N, K, D)``."""
        query = self.norm_latents(latents)
        keys = torch.cat([self.norm_media(media), query], dim=1)  # (N, L+K, D)
        latents = latents + self.attn(query, keys, keys, need_weights=False)[0]
        return latents + self.mlp(self.norm_mlp(latents))


@register_connector("resampler")
class ResamplerConnector(Connector):
    """Perceiver resampler: ``num_queries`` tokens per item, whatever its number of frames."""

    config_class = ResamplerConfig

    def __init__(self, config: ResamplerConfig, in_dim: int, out_dim: int):
        super().__init__(config, in_dim, out_dim)
        if in_dim % config.heads:
            raise ValueError(f"resampler heads ({config.heads}) must divide the encoder hidden size ({in_dim})")
        self.queries = nn.Parameter(0.02 * torch.randn(config.num_queries, in_dim))  # (K, D_enc)
        self.time_embedding = nn.Parameter(0.02 * torch.randn(config.max_frames, in_dim)) if config.time_embed else None
        self.layers = nn.ModuleList(CrossAttentionBlock(in_dim, config.heads, config.mlp_ratio) for _ in range(config.depth))
        self.norm = nn.LayerNorm(in_dim)
        self.proj = nn.Linear(in_dim, out_dim)

    @classmethod
    def num_tokens(cls, config: ResamplerConfig, layout: MediaLayout) -> int:
        """``num_queries``, whatever the layout; an item with more frames than the time-embedding
        table raises here, so the processor reports it before any tensor is decoded."""
        if config.time_embed and config.time_index == "absolute" and layout.num_segments > config.max_frames:
            raise ValueError(
                f"resampler time embeddings cover {config.max_frames} frames, the item has {layout.num_segments}; "
                "raise the connector's max_frames or set its time_index to 'interpolate'"
            )
        return config.num_queries

    def time_rows(self, num_frames: int) -> torch.Tensor:
        """The time embedding of each of ``num_frames`` frames, ``(S, D_enc)`` (see ``time_index``)."""
        table = self.time_embedding  # (max_frames, D_enc)
        if self.config.time_index == "interpolate" and num_frames > table.shape[0]:
            rows = F.interpolate(table.T[None].float(), size=num_frames, mode="linear", align_corners=True)
            return rows[0].T.to(table.dtype)
        return table[:num_frames]

    def forward(self, features: torch.Tensor, layout: MediaLayout) -> torch.Tensor:
        """``(N, layout.num_tokens, in_dim) -> (N, num_queries, out_dim)``."""
        self.num_tokens(self.config, layout)  # the frame-count check
        keys = self.select(features, layout)  # (N, S*t, D_enc), frame-major
        if self.time_embedding is not None:
            per_frame = keys.shape[1] // layout.num_segments
            rows = self.time_rows(layout.num_segments).repeat_interleave(per_frame, dim=0)  # (S*t, D_enc)
            keys = keys + rows.to(keys.dtype)
        latents = self.queries.to(keys.dtype).expand(keys.shape[0], -1, -1)  # (N, K, D_enc)
        for layer in self.layers:
            latents = layer(latents, keys)
        out = self.proj(self.norm(latents))  # (N, K, D_llm)
        return out if self.out_norm is None else self.out_norm(out)
