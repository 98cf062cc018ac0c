"""Configuration of the MiCo omni-modal ViT encoder."""

from __future__ import annotations

from typing import Literal

from transformers import AutoConfig, PreTrainedConfig

from mico_chat.modality import INPUT_KINDS, MediaLayout, Modality

# Backbone shapes of the paper's presets (hidden, layers, heads, MLP). MiCo scales ViT-B to ViT-g.
ENCODER_PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(hidden_size=192, num_hidden_layers=6, num_attention_heads=3, intermediate_size=768),
    "small": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    "giant": dict(hidden_size=1408, num_hidden_layers=40, num_attention_heads=16, intermediate_size=6144),
}


class MiCoEncoderConfig(PreTrainedConfig):
    r"""One shared ViT backbone for every modality (MiCo section 3.2, design iv).

    Each input kind (RGB frames, audio spectrograms, depth, normal maps) has its own patch
    embedding; all tokens then get the *shared* position embedding of their patch index, the
    embedding of their modality and the context embedding of their segment (MiCo eq. 1).

    Args:
        hidden_size / num_hidden_layers / num_attention_heads / intermediate_size: backbone shape
            (see :data:`ENCODER_PRESETS`).
        hidden_act: MLP activation, ``"gelu"`` or ``"quick_gelu"`` (CLIP checkpoints).
        image_size, patch_size: square input side and patch side for RGB, depth and normal inputs.
        audio_num_mel_bins, audio_target_length, audio_patch_size: log-mel spectrogram clips of
            ``audio_target_length`` frames x ``audio_num_mel_bins`` bins, cut into square patches.
        max_segments: size of the context-embedding table, and the most frames/clips one item may
            have while ``context_index="absolute"``.
        frame_chunk_size: encode an item's segments in chunks of this many (``None``: all at once).
            With ``segment_attention="joint"`` the tokens of a chunk attend to each other and not
            across chunks, so the backbone's cost and memory grow linearly in the number of frames
            instead of quadratically; with ``"segment"`` the result is the same as unchunked and
            only the peak memory of one backbone call is bounded. Items with at most this many
            segments are encoded exactly as without it.
        context_index: which context-embedding row (E_ctx) segment ``s`` of ``S`` gets.
            ``"absolute"``: row ``s``, so ``S <= max_segments`` (what pretraining sees).
            ``"chunk"``: row ``s mod frame_chunk_size`` (needs ``frame_chunk_size <= max_segments``),
            so every chunk is embedded exactly as a clip of its own length; order across chunks is
            then for the connector to tell (e.g. the resampler's ``time_embed``).
            ``"interpolate"``: row ``s`` while ``S <= max_segments``; for longer items the table is
            resampled linearly to ``S`` rows (first and last rows kept), so the frames span the
            trained range in order, as ViTs interpolate position embeddings for larger images.
        max_long_segments: the most segments one item may have when ``context_index`` is
            ``"chunk"`` or ``"interpolate"``: bounds the work one request can ask for.
        modalities: modalities with a modality embedding, in table order.
        segment_attention: ``"joint"`` lets every token of an item (all its frames, and all
            modalities encoded together) attend to every other, as MiCo's multimodal context does;
            ``"segment"`` encodes each frame/clip on its own (cheaper for large backbones).
        num_sampling_contexts: size of the sampling-context table (MiCo eq. 3); 0 disables it.
        patch_bias, pre_layernorm: CLIP-style checkpoints use ``False`` / ``True``.
        patch_embedding: ``"linear"`` cuts each segment into patches and projects them (ViT);
            ``"conv"`` is a convolutional stem (Xiao et al. 2021, "Early convolutions help
            transformers see better"): log2(patch) stride-2 3x3 convolutions with GroupNorm and
            GELU, widths doubling up to ``hidden_size``, then a 1x1 projection. Same token grid;
            needs power-of-two patch sizes. On the synthetic world a supervised shape head on a
            tiny ViT learned shape only with this stem and ``pooling="cls_max"`` together
            (docs/default_model.md, "Why shape fails held out").
        pooling: the item's global feature (:meth:`MiCoEncoder.pool`): ``"cls"``, the mean over
            segments of each segment's CLS token (``hidden_size`` wide), or ``"cls_max"``, that
            mean concatenated with the maximum over every patch token (``2 * hidden_size``): a small
            object a few patches wide survives a max where a mean over all patches dilutes it;
            ``"cls_max_delta"`` adds the last segment's CLS minus the first's (``3 * hidden_size``),
            the one order-dependent part, so that pretraining heads can read a direction of motion.
    """

    model_type = "mico_encoder"

    hidden_size: int = 192
    num_hidden_layers: int = 6
    num_attention_heads: int = 3
    intermediate_size: int = 768
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    image_size: int = 224
    patch_size: int = 16
    audio_num_mel_bins: int = 64
    audio_target_length: int = 1024
    audio_patch_size: int = 16
    max_segments: int = 64
    frame_chunk_size: int | None = None
    context_index: Literal["absolute", "chunk", "interpolate"] = "absolute"
    max_long_segments: int = 512
    modalities: list[str] | None = None
    segment_attention: Literal["joint", "segment"] = "joint"
    num_sampling_contexts: int = 0
    patch_bias: bool = True
    pre_layernorm: bool = False
    patch_embedding: Literal["linear", "conv"] = "linear"
    pooling: Literal["cls", "cls_max", "cls_max_delta"] = "cls"

    def __post_init__(self, **kwargs):
        if self.modalities is None:
            self.modalities = [m.value for m in Modality]
        super().__post_init__(**kwargs)
        for name in self.modalities:
            Modality.parse(name)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}"
            )
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.audio_num_mel_bins % self.audio_patch_size or self.audio_target_length % self.audio_patch_size:
            raise ValueError(
                f"audio spectrogram {self.audio_target_length}x{self.audio_num_mel_bins} is not a multiple of "
                f"audio_patch_size {self.audio_patch_size}"
            )
        if self.segment_attention not in ("joint", "segment"):
            raise ValueError(f"segment_attention must be 'joint' or 'segment', got {self.segment_attention!r}")
        self._check_long_items()
        if self.patch_embedding not in ("linear", "conv"):
            raise ValueError(f"patch_embedding must be 'linear' or 'conv', got {self.patch_embedding!r}")
        if self.pooling not in ("cls", "cls_max", "cls_max_delta"):
            raise ValueError(f"pooling must be 'cls', 'cls_max' or 'cls_max_delta', got {self.pooling!r}")
        if self.patch_embedding == "conv":
            for kind, size in (("image", self.patch_size), ("audio", self.audio_patch_size)):
                if size < 2 or size & (size - 1):
                    raise ValueError(f"patch_embedding='conv' needs power-of-two patch sizes; {kind} patches are {size}")

    def _check_long_items(self) -> None:
        """Validate ``frame_chunk_size``, ``context_index`` and ``max_long_segments`` together."""
        if self.frame_chunk_size is not None and self.frame_chunk_size < 1:
            raise ValueError(f"frame_chunk_size must be >= 1 or None, got {self.frame_chunk_size}")
        if self.context_index not in ("absolute", "chunk", "interpolate"):
            raise ValueError(f"context_index must be 'absolute', 'chunk' or 'interpolate', got {self.context_index!r}")
        if self.context_index == "chunk" and (self.frame_chunk_size is None or self.frame_chunk_size > self.max_segments):
            raise ValueError(
                f"context_index='chunk' needs frame_chunk_size in 1..max_segments ({self.max_segments}), "
                f"got {self.frame_chunk_size}"
            )
        if self.max_long_segments < self.max_segments:
            raise ValueError(f"max_long_segments ({self.max_long_segments}) must be >= max_segments ({self.max_segments})")

    @property
    def segment_limit(self) -> int:
        """The most segments (frames, clips) one item may have: ``max_segments`` with absolute
        context indices, ``max_long_segments`` with chunk-local or interpolated ones."""
        return self.max_segments if self.context_index == "absolute" else self.max_long_segments

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> MiCoEncoderConfig:
        """A config with the backbone shape of ``preset`` (tiny, small, base, large, giant)."""
        if preset not in ENCODER_PRESETS:
            raise ValueError(f"unknown encoder preset {preset!r}; known: {', '.join(ENCODER_PRESETS)}")
        return cls(**{**ENCODER_PRESETS[preset], **overrides})

    def grid(self, input_kind: str) -> tuple[int, int]:
        """Patch grid (rows, cols) of one segment of ``input_kind``."""
        if input_kind == "audio":
            return (self.audio_target_length // self.audio_patch_size, self.audio_num_mel_bins // self.audio_patch_size)
        side = self.image_size // self.patch_size
        return (side, side)

    def patch_size_of(self, input_kind: str) -> int:
        return self.audio_patch_size if input_kind == "audio" else self.patch_size

    @property
    def input_kinds(self) -> list[str]:
        """The input kinds the configured modalities need, in a stable order."""
        kinds = {INPUT_KINDS[Modality.parse(m)] for m in self.modalities}
        return sorted(kinds)

    @property
    def pooled_size(self) -> int:
        """Width of :meth:`MiCoEncoder.pool`'s global feature."""
        return {"cls": 1, "cls_max": 2, "cls_max_delta": 3}[self.pooling] * self.hidden_size

    @property
    def max_patches(self) -> int:
        return max(h * w for h, w in (self.grid(kind) for kind in self.input_kinds))

    def layout(self, modality: str | Modality, num_segments: int) -> MediaLayout:
        """The token layout the encoder emits for one item of ``modality`` with ``num_segments``."""
        modality = Modality.parse(modality)
        if modality.value not in self.modalities:
            raise ValueError(f"this encoder has no {modality} input; it reads {', '.join(self.modalities)}")
        if not 1 <= num_segments <= self.segment_limit:
            raise ValueError(f"{modality} item has {num_segments} segments; {self._segment_limit_reason()}")
        grid_h, grid_w = self.grid(modality.input_kind)
        return MediaLayout(num_segments=num_segments, grid_h=grid_h, grid_w=grid_w)


    def _segment_limit_reason(self) -> str:
        if self.context_index == "absolute":
            return (
                f"this encoder allows 1..{self.max_segments} (max_segments: its context-embedding table); "
                "longer items need context_index='chunk' or 'interpolate' (see docs/connectors.md, Long video)"
            )
        return f"this encoder allows 1..{self.max_long_segments} (max_long_segments)"


# Auto classes (AutoConfig, and AutoTokenizer reading a saved folder) know this model type.
AutoConfig.register(MiCoEncoderConfig.model_type, MiCoEncoderConfig, exist_ok=True)
