"""VidLA's hierarchical temporal attention as a connector: [CLS] + U*V [MST] tokens per item.

Section 4 and Figure 3 of "VidLA: Video-Language Alignment at Scale" (Rizve et al., 2024;
``shared/papers/vidla.txt``). The paper builds it into CLIP's vision encoder; here a few such
layers run over the MiCo encoder's per-frame tokens. An item of ``T`` frames with ``N`` tokens per
frame (``select``: with ``tokens: patches``, the paper's setting, the frame's patches, pooled with
``pool``; with ``all`` the frame's CLS token is one more position) is the sequence

    Z = [CLS; MST_0 .. MST_{UV-1}; patch tokens of frame 0 .. frame T-1]    # (1 + U*V + T*N, D)

with ``U`` temporal levels of ``V`` [MST] tokens each (the first ``V`` are level 0, ...). Each
layer (eq. 1, eq. 2)::

    patches += MMSA(LN(patches), M~)        # spatially local temporal attention, patch tubes
    Z       += MMSA(LN(Z), M)                # global spatio-temporal attention
    Z       += MLP(LN(Z))

under the paper's masks (True here = "may attend", the paper's 0; False = its -inf):

- ``M~`` (:func:`temporal_mask`): patch ``i`` sees patch ``j`` iff ``mod(|j - i|, N) = 0``: the
  same spatial position in every frame, a "tube". It is computed as attention over each tube's
  ``T`` tokens (cost ``O(T^2 N)``, not ``O((TN)^2)``), equal to the masked form (tested).
- ``M`` (:func:`global_mask`), rows stacked ``[M^CLS; M^MST; M^PATCH]``:
  [CLS] sees everything (the aggregator); [MST] ``i`` of level ``u = floor(i/V)`` sees the [MST]
  tokens of levels ``<= u`` and the patches of every ``r^u``-th frame (``mod(floor(j/N), r^u) = 0``);
  a patch sees all U*V [MST] tokens and the patches of its own frame. Neither [MST] nor patch
  tokens see [CLS].

One reading had to be chosen: the formula ``M^PATCH = [0, M~^G]`` writes its first block as a
``TN x (1+UV)`` zero matrix, which would let patches see [CLS]; the text says (twice, and so does
Figure 3's caption) that patches attend to their frame's patches and the [MST] tokens, and that
"both patch and [MST] tokens do not attend to the [CLS] token". The text is followed. For the
[MST] tokens the formulas and the text agree (level ``u`` sees levels ``<= u``) and are followed;
Figure 3's caption words it otherwise ("[MST]-0 ... attending to ... [MST] tokens of lower
temporal resolution", i.e. coarser levels).

The connector emits the final [CLS] and [MST] tokens and, with ``frame_tokens = F > 0``, up to
``F`` pooled frame tokens (each frame's tokens averaged, then the frames averaged in ``min(T, F)``
contiguous groups), all through a LayerNorm and one linear map to the LLM's width (and the shared
``out_norm``): ``1 + U*V + min(T, F)`` tokens per item, bounded whatever the number of frames.

Departures from the paper: the layers are new, working at the encoder's width over its output
(which already carries MiCo's per-frame context embedding; ``time_embed`` adds a learned one of
the connector's own), rather than CLIP's layers made temporal; so the temporal attention is not
zero-initialised (the paper does that to start as close as possible to pretrained CLIP).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mico_chat.modality import MediaLayout

from .base import Connector, ConnectorConfig, register_connector


@dataclass
class VidLAConfig(ConnectorConfig):
    """:class:`ConnectorConfig` plus VidLA's own options. ``tokens``/``pool`` pick the ``N`` tokens
    per frame the layers read: ``patches`` is the paper's setting; with ``all`` (every connector's
    default) each frame's CLS token is one more spatial position, with a tube of its own.

    Args:
        levels: U, temporal levels of [MST] tokens (the paper: 3).
        mst_per_level: V, [MST] tokens per level (the paper: 4).
        temporal_scale: r; level ``u``'s [MST] tokens read the patches of every ``r^u``-th frame
            (the paper: 2; 1 makes every level read every frame).
        frame_tokens: F, emit up to F pooled frame tokens after the [CLS] and [MST] tokens
            (0: none, the paper's video representation is the [CLS] token alone).
        depth: hierarchical temporal attention layers (the paper: CLIP's 12).
        heads: attention heads; must divide the encoder's hidden size.
        mlp_ratio: MLP width in multiples of the encoder's hidden size.
        time_embed: add a learned embedding of each token's frame index before the first layer.
        max_frames: rows of the time-embedding table: the most frames an item may have with
            ``time_embed``.
    """

    type: str = "vidla"
    levels: int = 3
    mst_per_level: int = 4
    temporal_scale: int = 2
    frame_tokens: int = 0
    depth: int = 2
    heads: int = 4
    mlp_ratio: int = 4
    time_embed: bool = False
    max_frames: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("levels", "mst_per_level", "temporal_scale", "depth", "heads", "mlp_ratio", "max_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"vidla {name} must be >= 1, got {getattr(self, name)}")
        if self.frame_tokens < 0:
            raise ValueError(f"vidla frame_tokens must be >= 0, got {self.frame_tokens}")

    @property
    def num_mst(self) -> int:
        """U * V, the [MST] tokens."""
        return self.levels * self.mst_per_level


# ---------------------------------------------------------------------------------- masks
def temporal_mask(frames: int, patches: int) -> torch.Tensor:
    """The spatially local temporal mask ``M~``: ``(TN, TN)`` bool, ``[i, j]`` = patch ``i`` may
    attend to patch ``j``, iff ``mod(|j - i|, N) = 0`` (tokens ordered frame-major: ``t*N + n``)."""
    index = torch.arange(frames * patches)
    return (index[None, :] - index[:, None]).abs() % patches == 0


def global_mask(frames: int, patches: int, levels: int, mst_per_level: int, temporal_scale: int) -> torch.Tensor:
    """The global spatio-temporal mask ``M = [M^CLS; M^MST; M^PATCH]``: ``(L, L)`` bool with
    ``L = 1 + UV + TN``, ``[i, j]`` = token ``i`` may attend to token ``j`` (order: [CLS], the
    [MST] tokens level by level, the patches frame-major). See the module docstring."""
    num_mst, num_patches = levels * mst_per_level, frames * patches
    first = 1 + num_mst  # index of the first patch token
    allowed = torch.zeros(first + num_patches, first + num_patches, dtype=torch.bool)
    allowed[0] = True  # M^CLS: all zeros
    level = torch.arange(num_mst) // mst_per_level  # floor(i / V)
    frame = torch.arange(num_patches) // patches  # floor(j / N)
    allowed[1:first, 1:first] = level[:, None] >= level[None, :]  # M~^{MST,self}
    allowed[1:first, first:] = frame[None, :] % (temporal_scale ** level)[:, None] == 0  # M~^{MST,patch}
    allowed[first:, 1:first] = True  # patches see every [MST]
    allowed[first:, first:] = frame[:, None] == frame[None, :]  # M~^G: same frame
    return allowed


# ---------------------------------------------------------------------------------- module
class HierarchicalTemporalBlock(nn.Module):
    """One layer: spatially local temporal attention over the patch tubes (eq. 1), then global
    spatio-temporal attention under ``M`` and an MLP (eq. 2), all pre-norm with residuals."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm_temporal = nn.LayerNorm(dim)
        self.temporal = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_global = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def temporal_step(self, patches: torch.Tensor, frames: int) -> torch.Tensor:
        """Eq. 1 on ``patches (B, T*N, D)``, frame-major: each spatial position attends over its
        own tube of ``T`` tokens, which is masked attention under :func:`temporal_mask`."""
        b, length, dim = patches.shape
        per_frame = length // frames
        tubes = patches.view(b, frames, per_frame, dim).transpose(1, 2).reshape(b * per_frame, frames, dim)
        x = self.norm_temporal(tubes)  # (B*N, T, D)
        tubes = tubes + self.temporal(x, x, x, need_weights=False)[0]
        return tubes.view(b, per_frame, frames, dim).transpose(1, 2).reshape(b, length, dim)

    def forward(self, sequence: torch.Tensor, frames: int, summary: int, blocked: torch.Tensor) -> torch.Tensor:
        """``sequence (B, summary + T*N, D)`` ([CLS] and [MST] first, then the patches) -> same
        shape; ``blocked (L, L)``: True where ``M`` is -inf (``~global_mask``)."""
        patches = self.temporal_step(sequence[:, summary:], frames)  # [CLS], [MST] skip this step
        sequence = torch.cat([sequence[:, :summary], patches], dim=1)
        x = self.norm_global(sequence)
        sequence = sequence + self.attn(x, x, x, attn_mask=blocked, need_weights=False)[0]
        return sequence + self.mlp(self.norm_mlp(sequence))


@register_connector("vidla")
class VidLAConnector(Connector):
    """VidLA's hierarchical temporal attention: ``1 + U*V (+ min(T, F))`` tokens per item."""

    config_class = VidLAConfig

    def __init__(self, config: VidLAConfig, in_dim: int, out_dim: int):
        super().__init__(config, in_dim, out_dim)
        if in_dim % config.heads:
            raise ValueError(f"vidla heads ({config.heads}) must divide the encoder hidden size ({in_dim})")
        self.cls = nn.Parameter(0.02 * torch.randn(1, in_dim))  # (1, D_enc)
        self.mst = nn.Parameter(0.02 * torch.randn(config.num_mst, in_dim))  # (U*V, D_enc), level-major
        self.time_embedding = nn.Parameter(0.02 * torch.randn(config.max_frames, in_dim)) if config.time_embed else None
        self.layers = nn.ModuleList(
            HierarchicalTemporalBlock(in_dim, config.heads, config.mlp_ratio) for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(in_dim)
        self.proj = nn.Linear(in_dim, out_dim)

    @classmethod
    def num_tokens(cls, config: VidLAConfig, layout: MediaLayout) -> int:
        """``1 + U*V + min(T, frame_tokens)`` for ``T = layout.num_segments`` frames: at most
        ``1 + U*V + frame_tokens`` whatever the frames. An item with more frames than the
        time-embedding table raises here, so the processor reports it before any tensor is decoded."""
        if config.time_embed and layout.num_segments > config.max_frames:
            raise ValueError(
                f"vidla time embeddings cover {config.max_frames} frames, the item has {layout.num_segments}; "
                "raise the connector's max_frames"
            )
        return 1 + config.num_mst + min(layout.num_segments, config.frame_tokens)

    def forward(self, features: torch.Tensor, layout: MediaLayout) -> torch.Tensor:
        """``(N, layout.num_tokens, in_dim) -> (N, num_tokens(config, layout), out_dim)``: [CLS],
        the [MST] tokens level by level, then the pooled frame tokens in time order."""
        config: VidLAConfig = self.config
        count = self.num_tokens(config, layout)  # also the frame-count check
        frames = layout.num_segments
        patches = self.select(features, layout)  # (N, T*t, D_enc), frame-major
        n, length, dim = patches.shape
        if self.time_embedding is not None:
            frame = torch.arange(frames, device=patches.device).repeat_interleave(length // frames)  # (T*t,)
            patches = patches + self.time_embedding[frame].to(patches.dtype)
        summary = 1 + config.num_mst
        learned = torch.cat([self.cls, self.mst]).to(patches.dtype).expand(n, -1, -1)  # (N, 1+UV, D_enc)
        sequence = torch.cat([learned, patches], dim=1)  # (N, 1+UV+T*t, D_enc)
        allowed = global_mask(frames, length // frames, config.levels, config.mst_per_level, config.temporal_scale)
        blocked = ~allowed.to(patches.device)
        for layer in self.layers:
            sequence = layer(sequence, frames, summary, blocked)
        out = sequence[:, :summary]  # (N, 1+UV, D_enc)
        groups = count - summary
        if groups:
            per_frame = sequence[:, summary:].view(n, frames, length // frames, dim).mean(dim=2)  # (N, T, D_enc)
            pooled = F.adaptive_avg_pool1d(per_frame.transpose(1, 2), groups).transpose(1, 2)  # (N, F', D_enc)
            out = torch.cat([out, pooled], dim=1)
        out = self.proj(self.norm(out))  # (N, count, D_llm)
        return out if self.out_norm is None else self.out_norm(out)
