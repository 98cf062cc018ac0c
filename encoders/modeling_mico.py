"""The MiCo omni-modal ViT encoder (MiCo sections 3.2-3.3).

One transformer backbone reads every modality. An item of modality ``m`` with ``S`` segments
(video frames, audio clips; 1 for images and maps) becomes, per segment ``s``,

    [CLS, patch_1 .. patch_P] + E_pos[0..P] + E_mod[m] + E_ctx[s]

(eq. 1: shared position embeddings, modality embeddings, context embeddings), and the segments
are concatenated. Long items (hundreds of frames) can be encoded in chunks of
``config.frame_chunk_size`` segments, with context embeddings chunk-local or interpolated
(``config.context_index``), so memory grows linearly in the number of frames. Several modalities
of the same items can be encoded in one multimodal context: their token sequences are
concatenated before the backbone, so every token attends across modalities. An optional sampling-context embedding (eq. 3) marks which dataset combination an
item was drawn from during pretraining.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer

from mico_chat.modality import INPUT_CHANNELS, MediaLayout, Modality

from .configuration_mico import MiCoEncoderConfig


class MiCoAttention(nn.Module):
    """Multi-head self-attention (separate q/k/v projections, as CLIP checkpoints store them)."""

    def __init__(self, config: MiCoEncoderConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.dropout = config.attention_dropout
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, length, _ = hidden_states.shape  # (B, L, D)

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, L, hd)

        q, k, v = heads(self.q_proj(hidden_states)), heads(self.k_proj(hidden_states)), heads(self.v_proj(hidden_states))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attention_mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, L, hd)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, -1))


class MiCoMLP(nn.Module):
    def __init__(self, config: MiCoEncoderConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class MiCoEncoderLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block."""

    def __init__(self, config: MiCoEncoderConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = MiCoAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MiCoMLP(config)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        hidden_states = hidden_states + self.self_attn(self.layer_norm1(hidden_states), attention_mask)
        return hidden_states + self.mlp(self.layer_norm2(hidden_states))


class ConvPatchEmbedding(nn.Module):
    """Convolutional stem with a patch embedding's contract: ``(B, C, H, W) -> (B, D, H/p, W/p)``.

    log2(p) stride-2 3x3 convolutions, each followed by GroupNorm(1) and GELU, with widths
    doubling up to ``dim`` (``dim / 2**(k-1)`` .. ``dim``), then a 1x1 projection (Xiao et al. 2021).
    """

    def __init__(self, in_channels: int, dim: int, patch_size: int, bias: bool = True):
        super().__init__()
        steps = patch_size.bit_length() - 1  # log2(patch_size)
        widths = [max(dim >> (steps - 1 - i), 8) for i in range(steps)]
        layers: list[nn.Module] = []
        channels = in_channels
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.GroupNorm(1, width), nn.GELU()]
            channels = width
        self.stem = nn.Sequential(*layers)
        self.proj = nn.Conv2d(channels, dim, 1, bias=bias)

    @property
    def weight(self) -> torch.Tensor:
        """The projection's weight: callers read the embedding's dtype from here, as from a Conv2d."""
        return self.proj.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.stem(x))


def patch_embedding(config: MiCoEncoderConfig, kind: str) -> nn.Module:
    """The patch embedding of one input kind: a strided projection or a convolutional stem."""
    size = config.patch_size_of(kind)
    if config.patch_embedding == "conv":
        return ConvPatchEmbedding(INPUT_CHANNELS[kind], config.hidden_size, size, bias=config.patch_bias)
    return nn.Conv2d(INPUT_CHANNELS[kind], config.hidden_size, kernel_size=size, stride=size, bias=config.patch_bias)


class MiCoEncoderPreTrainedModel(PreTrainedModel):
    config: MiCoEncoderConfig
    config_class = MiCoEncoderConfig
    base_model_prefix = "encoder"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MiCoEncoderLayer"]
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, MiCoEncoder):
            init.normal_(module.class_embedding, mean=0.0, std=self.config.initializer_range)
            # Modality, context and sampling embeddings start at zero: an untrained (or CLIP-initialised)
            # encoder then behaves exactly like a plain ViT, and the embeddings grow during pretraining.
            init.zeros_(module.modality_embedding.weight)
            init.zeros_(module.context_embedding.weight)
            if module.sampling_embedding is not None:
                init.zeros_(module.sampling_embedding.weight)


class MiCoEncoder(MiCoEncoderPreTrainedModel):
    """Omni-modal ViT: ``forward({modality: values}) -> {modality: (N, S * (1 + P), D)}``.

    Input shapes per modality (``N`` items, ``S`` segments):

    - image, depth, normal: ``(N, C, H, W)`` or ``(N, S, C, H, W)``; depth may be ``(N, H, W)``
    - video: ``(N, T, 3, H, W)``
    - audio: log-mel clips ``(N, K, frames, mel_bins)`` or one clip ``(N, frames, mel_bins)``
    """

    def __init__(self, config: MiCoEncoderConfig):
        super().__init__(config)
        dim = config.hidden_size
        self.patch_embeddings = nn.ModuleDict({kind: patch_embedding(config, kind) for kind in config.input_kinds})
        self.class_embedding = nn.Parameter(torch.zeros(dim))
        self.position_embedding = nn.Embedding(1 + config.max_patches, dim)  # E_pos, shared by all modalities
        self.modality_embedding = nn.Embedding(len(config.modalities), dim)  # E_mod
        self.context_embedding = nn.Embedding(config.max_segments, dim)  # E_ctx
        self.sampling_embedding = (
            nn.Embedding(config.num_sampling_contexts, dim) if config.num_sampling_contexts > 0 else None
        )
        self.pre_layernorm = nn.LayerNorm(dim, eps=config.layer_norm_eps) if config.pre_layernorm else nn.Identity()
        self.layers = nn.ModuleList([MiCoEncoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.post_layernorm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.post_init()

    # ------------------------------------------------------------------ inputs
    def as_segments(self, modality: Modality, values: torch.Tensor) -> torch.Tensor:
        """Bring ``values`` of ``modality`` to ``(N, S, C, H, W)``; raise on shapes that do not fit."""
        kind = modality.input_kind
        channels = INPUT_CHANNELS[kind]
        x = values
        if kind == "audio":
            if x.dim() == 3:  # (N, frames, mel) -> one clip
                x = x.unsqueeze(1)
            if x.dim() == 4:  # (N, K, frames, mel)
                x = x.unsqueeze(2)
        elif x.dim() == 3 and channels == 1:  # (N, H, W) depth map
            x = x.unsqueeze(1).unsqueeze(1)
        elif x.dim() == 4:  # (N, C, H, W) -> one segment
            x = x.unsqueeze(1)
        if x.dim() != 5 or x.shape[2] != channels:
            raise ValueError(
                f"{modality} values must be (N, S, {channels}, H, W)-shaped (see MiCoEncoder docs), got {tuple(values.shape)}"
            )
        expected = self._expected_hw(kind)
        if tuple(x.shape[-2:]) != expected:
            raise ValueError(f"{modality} values are {tuple(x.shape[-2:])} per segment; this encoder expects {expected}")
        return x

    def _expected_hw(self, kind: str) -> tuple[int, int]:
        if kind == "audio":
            return (self.config.audio_target_length, self.config.audio_num_mel_bins)
        return (self.config.image_size, self.config.image_size)

    def layout(self, modality: str | Modality, num_segments: int) -> MediaLayout:
        return self.config.layout(modality, num_segments)

    def embed(
        self, modality: str | Modality, values: torch.Tensor, sampling_context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Token embeddings of one modality, before the backbone: ``(N, S * (1 + P), D)``."""
        modality = Modality.parse(modality)
        x = self.as_segments(modality, values)  # (N, S, C, H, W)
        n, s = x.shape[:2]
        self.config.layout(modality, s)  # raises, naming the limit, for an item with too many segments
        patch_embed = self.patch_embeddings[modality.input_kind]
        x = x.flatten(0, 1).to(patch_embed.weight.dtype)  # (N*S, C, H, W)
        patches = patch_embed(x).flatten(2).transpose(1, 2)  # (N*S, P, D)
        cls = self.class_embedding.expand(patches.shape[0], 1, -1)  # (N*S, 1, D)
        tokens = torch.cat([cls, patches], dim=1)  # (N*S, 1+P, D)
        tokens = tokens + self.position_embedding.weight[: tokens.shape[1]]  # shared E_pos
        tokens = tokens.view(n, s, tokens.shape[1], -1)  # (N, S, 1+P, D)
        mod_index = self.config.modalities.index(modality.value)
        tokens = tokens + self.modality_embedding.weight[mod_index]  # E_mod
        tokens = tokens + self.context_rows(s)[:, None, :]  # E_ctx per segment
        if sampling_context is not None:
            if self.sampling_embedding is None:
                raise ValueError("sampling_context given but the encoder has num_sampling_contexts=0")
            tokens = tokens + self.sampling_embedding(sampling_context)[:, None, None, :]  # E_sam
        return tokens.flatten(1, 2)  # (N, S*(1+P), D)

    def context_rows(self, num_segments: int) -> torch.Tensor:
        """The context embedding (E_ctx) of each of an item's ``num_segments`` segments, ``(S, D)``,
        by ``config.context_index``: row ``s``; row ``s mod frame_chunk_size`` (``"chunk"``); or,
        past ``max_segments``, the table linearly resampled to ``S`` rows (``"interpolate"``)."""
        table = self.context_embedding.weight  # (max_segments, D)
        mode = self.config.context_index
        if mode == "chunk":
            index = torch.arange(num_segments, device=table.device) % self.config.frame_chunk_size
            return table[index]
        if mode == "interpolate" and num_segments > table.shape[0]:
            rows = F.interpolate(table.T[None].float(), size=num_segments, mode="linear", align_corners=True)
            return rows[0].T.to(table.dtype)  # (S, D)
        return table[:num_segments]

    # ------------------------------------------------------------------ backbone
    def backbone(self, tokens: torch.Tensor, segment_length: int | None = None) -> torch.Tensor:
        """Run the transformer on ``(N, L, D)`` tokens; with ``segment_length`` each chunk of that
        length attends only to itself (``segment_attention="segment"``)."""
        n, length, dim = tokens.shape
        if segment_length is not None:
            tokens = tokens.reshape(n * (length // segment_length), segment_length, dim)
        hidden = self.pre_layernorm(tokens)
        for layer in self.layers:
            hidden = layer(hidden)
        hidden = self.post_layernorm(hidden)
        return hidden.reshape(n, length, dim)

    def backbone_chunked(self, tokens: torch.Tensor, segment_length: int) -> torch.Tensor:
        """The backbone over one modality's ``(N, S * segment_length, D)`` tokens, ``frame_chunk_size``
        segments at a time (all at once without it, or when the item is no longer than a chunk).

        Within a chunk, attention follows ``segment_attention``; across chunks there is none, so
        each chunk's output equals encoding that chunk as an item of its own (with the context
        embeddings it was given), and the cost grows linearly in ``S``.
        """
        per_segment = segment_length if self.config.segment_attention == "segment" else None
        chunk = self.config.frame_chunk_size
        if chunk is None or tokens.shape[1] <= chunk * segment_length:
            return self.backbone(tokens, per_segment)
        parts = tokens.split(chunk * segment_length, dim=1)  # S/chunk pieces of (N, chunk * seg, D)
        return torch.cat([self.backbone(part, per_segment) for part in parts], dim=1)  # (N, S * seg, D)

    def forward(
        self,
        inputs: Mapping[str | Modality, torch.Tensor],
        *,
        joint: bool = False,
        sampling_context: torch.Tensor | None = None,
    ) -> dict[Modality, torch.Tensor]:
        """Encode each modality of ``inputs``; return ``{modality: (N, S * (1 + P), D)}``.

        With ``joint=True`` all modalities (which must have the same ``N``) are concatenated into
        one multimodal context before the backbone and split again afterwards. Otherwise each
        modality goes through :meth:`backbone_chunked` (``frame_chunk_size`` segments at a time).
        """
        embedded = {
            Modality.parse(m): self.embed(m, v, sampling_context=sampling_context) for m, v in inputs.items()
        }
        segment_lengths = {
            m: 1 + self.config.grid(m.input_kind)[0] * self.config.grid(m.input_kind)[1] for m in embedded
        }
        per_segment = self.config.segment_attention == "segment"
        if not joint or len(embedded) == 1:
            return {m: self.backbone_chunked(t, segment_lengths[m]) for m, t in embedded.items()}
        sizes = {m: t.shape[0] for m, t in embedded.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"joint encoding needs the same number of items per modality, got {sizes}")
        if per_segment:
            raise ValueError("joint multimodal context needs segment_attention='joint'")
        chunk = self.config.frame_chunk_size
        too_long = {str(m): t.shape[1] // segment_lengths[m] for m, t in embedded.items()}
        if chunk is not None and max(too_long.values()) > chunk:
            raise ValueError(
                f"joint multimodal context is encoded whole, but these items have {too_long} segments, more than "
                f"frame_chunk_size={chunk}; encode the modalities separately (joint=False) for long items"
            )
        lengths = [t.shape[1] for t in embedded.values()]
        fused = self.backbone(torch.cat(list(embedded.values()), dim=1))  # (N, sum L, D)
        return dict(zip(embedded, fused.split(lengths, dim=1)))

    @staticmethod
    def pool(features: torch.Tensor, layout: MediaLayout, mode: str = "cls") -> torch.Tensor:
        """Global item embedding (``config.pooling``): the mean over segments of each segment's CLS
        token, ``(N, D)``; with ``mode="cls_max"`` followed by the maximum over all patch tokens of
        all segments, ``(N, 2 * D)``; with ``"cls_max_delta"`` followed by the last segment's CLS
        minus the first's, ``(N, 3 * D)``: the only part that depends on the segments' order, so
        a head on it can tell a clip from the same clip played backwards (a direction of motion)."""
        n = features.shape[0]
        tokens = features.view(n, layout.num_segments, layout.tokens_per_segment, -1)  # (N, S, 1+P, D)
        cls = tokens[:, :, 0].mean(dim=1)  # (N, D)
        if mode == "cls":
            return cls
        if mode in ("cls_max", "cls_max_delta"):
            parts = [cls, tokens[:, :, 1:].amax(dim=(1, 2))]
            if mode == "cls_max_delta":
                parts.append(tokens[:, -1, 0] - tokens[:, 0, 0])
            return torch.cat(parts, dim=-1)  # (N, 2D) or (N, 3D)
        raise ValueError(f"pooling must be 'cls', 'cls_max' or 'cls_max_delta', got {mode!r}")
