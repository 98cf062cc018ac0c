"""Partition-and-Conquer's Combiner: time-aligned video + audio snippets fused into m tokens each.

Section 3.2 of "Partition and Conquer": its two Combiners, the causal Transformer
(``variant: transformer``, below) and the Token Turing Machine (``variant: ttm``: a token memory
read, processed and written once per snippet, ``connectors/ttm.py``). An item's video and audio
features are partitioned into ``T`` snippets by *time*: snippet ``t`` holds every feature whose
timestamp lies in ``[t, t+1) * span / T``, so the latest feature of snippet ``t`` is earlier than
the earliest of snippet ``t+1`` (the paper's condition on ``v_t``, ``a_t``). A Transformer reads
all snippets' features ``c_t = (v_t, a_t)`` under the chunk-level causal mask of eq. 2 / eq. 8: a token of snippet ``t`` attends to every
token of snippets ``<= t`` (within its snippet in both directions, never to a later one), so
``x_t = Combiner(c_1, ..., c_t)``. ``x_t`` is ``m`` tokens read out of snippet ``t``:

- ``readout: last`` (the paper's Transformer Combiner, Figure 3a): the outputs of the snippet's
  last ``m`` features in time order; every snippet must hold at least ``m`` features;
- ``readout: queries`` (its "CLS combiner", Figure 3c): ``m`` learned summary tokens appended
  per snippet, under the same mask; a snippet with no audio, or no frame, still gives ``m`` tokens.

The TTM variant reads the same snippets one at a time, in order (its causality comes from the
recurrence, not a mask), and pools its ``m`` outputs per snippet, so an empty snippet is no error.
``T * m`` LLM tokens per item whatever its frames and audio windows, for either variant.

Timestamps come from the media layout and settings, not from token indices (the two disagree as
soon as the audio windows do not cover the video evenly, e.g. one 10 s audio window on a 60 s
video):

- video frame ``i`` of ``F``: the centre of its segment, ``(i + 0.5) * video_s / F`` (the rule of
  :func:`mico_chat.media.video.sample_frame_times` that ``load_video`` samples files by; its CLS
  and patch tokens all carry that time);
- audio: ``K`` windows placed as :func:`mico_chat.preprocess.waveform_to_fbank` places them, each
  cut into rows of ``audio_patch_size`` fbank frames (10 ms hop, 25 ms window); a row's time is
  the centre of the real samples it covers; rows that are padding past the audio's end carry
  ``NaN`` and take no part. The Combiner reads one token per row (the row's patches averaged
  over frequency; the window's CLS token spans the whole window and is not used).

One departure from the paper: the features are the MiCo encoder's per-frame tokens rather than
sparse 3D tubes. The Combiner works at the encoder's width and ends with a projection to the
LLM's (and the shared ``out_norm``).

Registered as ``combiner``, it is the model's *video* connector
(``model.connectors={video: {type: combiner}}``). Called as ``forward(features, layout)`` it reads
the frames alone, timed as the loader samples them (segment centres of the item's span), so the
processor's placeholder count, training, save/load and stage configs all work. It also says
``fuses_audio_track``: the processor then keeps a video file's audio track as that video's own
(no ``<audio>`` item), and the model encodes it and makes the full call above with timestamps
from both windows' lengths (``MiCoChatForConditionalGeneration.encode_media``; docs/connectors.md).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from mico_chat.modality import MediaLayout

from .base import Connector, ConnectorConfig, register_connector
from .ttm import TokenTuringMachine, group_by_snippet

COMBINER_CONFIG = "combiner_config.json"
COMBINER_WEIGHTS = "combiner.safetensors"


@dataclass
class CombinerConfig(ConnectorConfig):
    """:class:`ConnectorConfig` plus the Combiner's own options (``tokens``/``pool`` pick the video
    tokens of each frame, as for every connector).

    Args:
        num_snippets: T, the time-aligned snippets an item is cut into.
        snippet_tokens: m, the combined tokens per snippet (the paper's m = 32).
        variant: ``transformer`` (the causal Transformer Combiner over all snippets under the
            chunk-level mask) or ``ttm`` (the Token Turing Machine Combiner: a token memory read,
            processed and written once per snippet, ``connectors/ttm.py``).
        readout: ``transformer`` only: ``last`` (the outputs of each snippet's last m features in
            time order, the paper's main Combiner) or ``queries`` (m learned tokens per snippet,
            its CLS variant). The TTM pools its m outputs per snippet.
        depth: Transformer layers (the paper: 8; for ``ttm`` the processor's, the paper: 2).
        heads: attention heads; must divide the encoder's hidden size.
        mlp_ratio: MLP width in multiples of the encoder's hidden size.
        memory_tokens: ``ttm`` only: tokens in the memory (the paper: 256).
        read_tokens: ``ttm`` only: tokens Read gives the processor per snippet (the paper: 512).
    """

    type: str = "combiner"
    num_snippets: int = 4
    snippet_tokens: int = 8
    variant: Literal["transformer", "ttm"] = "transformer"
    depth: int = 2
    heads: int = 4
    mlp_ratio: int = 4
    readout: Literal["last", "queries"] = "last"
    memory_tokens: int = 16
    read_tokens: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.variant not in ("transformer", "ttm"):
            raise ValueError(f"combiner variant must be 'transformer' or 'ttm', got {self.variant!r}")
        if self.readout not in ("last", "queries"):
            raise ValueError(f"combiner readout must be 'last' or 'queries', got {self.readout!r}")
        for name in ("num_snippets", "snippet_tokens", "depth", "heads", "mlp_ratio", "memory_tokens", "read_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"combiner {name} must be >= 1, got {getattr(self, name)}")


# ---------------------------------------------------------------------------------- timestamps
def video_frame_times(num_frames: int, video_s: float) -> torch.Tensor:
    """``(F,)`` float64 seconds from the item's start: frame ``i`` at the centre of its segment,
    the rule ``load_video`` samples a file by."""
    from mico_chat.media.video import sample_frame_times

    return torch.from_numpy(sample_frame_times(video_s, num_frames))


def audio_row_times(num_clips: int, audio_s: float, encoder: Any) -> torch.Tensor:
    """``(K, rows)`` float64 seconds from the item's start of each audio patch row (``rows =
    audio_target_length / audio_patch_size``); ``NaN`` for rows that hold only padding.

    ``encoder`` is the :class:`~mico_chat.encoders.MiCoEncoderConfig` (patch size, clip length).
    Windows are placed by :func:`mico_chat.preprocess.audio_window_starts`; fbank frame ``f`` of a
    window starting at sample ``s`` covers samples ``[s + 160 f, s + 160 f + 400)`` and exists
    while that lies inside the audio (Kaldi's ``snip_edges``); the rest of the window is padding.
    """
    from mico_chat.preprocess import (
        AUDIO_SAMPLE_RATE,
        FBANK_SHIFT_SAMPLES,
        FBANK_WINDOW_SAMPLES,
        audio_clip_samples,
        audio_window_starts,
    )

    num_samples = round(audio_s * AUDIO_SAMPLE_RATE)
    patch = encoder.audio_patch_size
    rows = encoder.audio_target_length // patch
    clip = audio_clip_samples(encoder)
    times = torch.full((num_clips, rows), math.nan, dtype=torch.float64)
    for k, start in enumerate(audio_window_starts(num_samples, num_clips, encoder).tolist()):
        end = min(start + clip, num_samples)  # the window's real samples: [start, end)
        length = end - start
        # waveform_to_fbank pads a window shorter than one fbank frame to one frame.
        frames = 1 + (length - FBANK_WINDOW_SAMPLES) // FBANK_SHIFT_SAMPLES if length >= FBANK_WINDOW_SAMPLES else 1
        for r in range(rows):
            first, last = r * patch, min((r + 1) * patch, frames) - 1
            if first >= frames or length <= 0:
                break
            lo = start + first * FBANK_SHIFT_SAMPLES
            hi = min(start + last * FBANK_SHIFT_SAMPLES + FBANK_WINDOW_SAMPLES, end)
            times[k, r] = (lo + hi) / 2 / AUDIO_SAMPLE_RATE
    return times


def snippet_index(times: torch.Tensor, span_s: torch.Tensor, num_snippets: int) -> torch.Tensor:
    """Snippet of each timestamp: ``floor(t / span * T)`` clamped to ``[0, T-1]``; ``-1`` for NaN.

    ``times (N, ...)`` and ``span_s (N,)``: the span ``[0, span_s)`` of each item is cut into
    ``num_snippets`` equal parts, so every time in snippet ``t`` is earlier than every time in ``t+1``.
    """
    span = span_s.to(torch.float64).view(-1, *([1] * (times.dim() - 1)))
    index = torch.floor(times.to(torch.float64) / span * num_snippets).clamp(0, num_snippets - 1)
    return torch.where(torch.isnan(times), -1, index.nan_to_num(-1)).long()


def chunk_causal_mask(snippets: torch.Tensor) -> torch.Tensor:
    """Eq. 2 / eq. 8's chunk-level causal mask: ``snippets (N, L)`` (``-1``: padding) -> allowed
    ``(N, L, L)``, ``allowed[n, i, j]`` = token ``i`` may attend to token ``j``.

    Token ``i`` of snippet ``t`` sees every token of snippets ``<= t``, in its own snippet in both
    directions. Padding tokens are seen by nobody; they themselves see every other token (their
    outputs are never read, and a row with nothing to attend to would give NaN).
    """
    big = torch.iinfo(snippets.dtype).max
    keys = torch.where(snippets < 0, big, snippets)  # padding: later than everything
    queries = torch.where(snippets < 0, big - 1, snippets)
    return keys.unsqueeze(1) <= queries.unsqueeze(2)  # (N, L, L)


# ---------------------------------------------------------------------------------- module
@register_connector("combiner")
class TimeAlignedCombiner(Connector):
    """The Combiner over time-aligned video and audio (see the module docstring): the causal
    Transformer (``variant: transformer``) or the Token Turing Machine (``variant: ttm``).

    ``forward(video, video_layout, audio, audio_layout, video_times, audio_times, span_s)`` ->
    ``(N, T * m, out_dim)``, snippet-major: tokens ``[t*m, (t+1)*m)`` are ``x_t``.
    """

    config_class = CombinerConfig
    fuses_audio_track = True

    def __init__(self, config: CombinerConfig, in_dim: int, out_dim: int):
        super().__init__(config, in_dim, out_dim)
        if in_dim % config.heads:
            raise ValueError(f"combiner heads ({config.heads}) must divide the encoder hidden size ({in_dim})")
        self.summary = self.snippet_embedding = self.layers = self.ttm = None
        if config.variant == "ttm":
            # The recurrence orders the snippets, so the TTM needs no snippet embedding.
            self.type_embedding = nn.Parameter(0.02 * torch.randn(2, in_dim))  # video, audio
            self.ttm = TokenTuringMachine(
                in_dim, config.memory_tokens, config.read_tokens, config.snippet_tokens,
                config.depth, config.heads, config.mlp_ratio,
            )  # fmt: skip
        else:
            queries = config.readout == "queries"
            if queries:
                self.summary = nn.Parameter(0.02 * torch.randn(config.snippet_tokens, in_dim))  # (m, D)
            self.snippet_embedding = nn.Parameter(0.02 * torch.randn(config.num_snippets, in_dim))  # (T, D)
            # video, audio[, summary]
            self.type_embedding = nn.Parameter(0.02 * torch.randn(3 if queries else 2, in_dim))
            layer = nn.TransformerEncoderLayer(
                in_dim, config.heads, config.mlp_ratio * in_dim, dropout=0.0, activation="gelu",
                batch_first=True, norm_first=True,
            )  # fmt: skip
            self.layers = nn.TransformerEncoder(layer, config.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(in_dim)
        self.proj = nn.Linear(in_dim, out_dim)

    @classmethod
    def num_tokens(cls, config: CombinerConfig, layout: MediaLayout | None = None) -> int:
        """``T * m`` per item, whatever its frames and audio clips.

        With the video ``layout`` (the per-modality connector's call, frames alone), variant
        ``transformer`` and readout ``last``, a snippet with fewer than m video tokens raises here,
        so the processor reports it before any tensor is decoded."""
        if layout is not None and config.variant == "transformer" and config.readout == "last":
            frames = layout.num_segments
            per_frame = super().num_tokens(config, MediaLayout(1, layout.grid_h, layout.grid_w))
            snippets = snippet_index(video_frame_times(frames, 1.0)[None], torch.ones(1), config.num_snippets)
            fewest = int(torch.bincount(snippets[0], minlength=config.num_snippets).min()) * per_frame
            if fewest < config.snippet_tokens:
                raise ValueError(
                    f"combiner: {frames} frames of {per_frame} tokens leave a snippet (of {config.num_snippets}) "
                    f"{fewest} features, fewer than snippet_tokens={config.snippet_tokens} for readout 'last'; "
                    "use more frames, fewer snippets or readout 'queries'"
                )
        return config.num_snippets * config.snippet_tokens

    def audio_rows(self, audio: torch.Tensor, layout: MediaLayout) -> torch.Tensor:
        """``(N, K*(1+P), D)`` -> ``(N, K*rows, D)``: each window's patch rows averaged over frequency."""
        n, length, dim = audio.shape
        if length != layout.num_tokens:
            raise ValueError(f"combiner got {length} audio tokens per item, layout {layout} has {layout.num_tokens}")
        patches = audio.view(n, layout.num_segments, layout.tokens_per_segment, dim)[:, :, 1:]  # (N, K, P, D)
        rows = patches.reshape(n, layout.num_segments, layout.grid_h, layout.grid_w, dim).mean(dim=3)
        return rows.flatten(1, 2)  # (N, K*rows, D)

    def forward(
        self,
        video: torch.Tensor,
        video_layout: MediaLayout,
        audio: torch.Tensor | None = None,
        audio_layout: MediaLayout | None = None,
        video_times: torch.Tensor | None = None,
        audio_times: torch.Tensor | None = None,
        span_s: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        """Fuse each item's video and audio into ``T * m`` tokens.

        Args:
            video: ``(N, F*(1+P), D)`` encoder features of the frames.
            audio: ``(N, K*(1+P_a), D)`` encoder features of the audio windows, or ``None``.
            video_times: ``(N, F)`` (or ``(F,)`` for all items) seconds of each frame
                (:func:`video_frame_times`); ``None`` without audio: the frames are the segment
                centres of a unit span (how the loader samples them, whatever the duration).
            audio_times: ``(N, K, rows)`` (or ``(K, rows)``) seconds of each audio patch row,
                ``NaN`` for padding (:func:`audio_row_times`).
            span_s: ``(N,)`` (or a float) seconds of each item's time span, cut into T snippets.

        Returns ``(N, T*m, out_dim)``.
        """
        config: CombinerConfig = self.config
        n = video.shape[0]
        if video_times is None or span_s is None:
            if audio is not None or video_times is not None or span_s is not None:
                raise ValueError("combiner: give video_times and span_s together (and audio_times with audio)")
            video_times, span_s = video_frame_times(video_layout.num_segments, 1.0), 1.0
        span_s = torch.as_tensor(span_s, dtype=torch.float64, device=video.device).expand(n)
        video_tokens = self.select(video, video_layout)  # (N, F*t, D), frame-major
        video_times = video_times.to(video.device, torch.float64).expand(n, -1)
        if video_times.shape[1] != video_layout.num_segments:
            raise ValueError(f"video_times has {video_times.shape[1]} times for {video_layout.num_segments} frames")
        per_frame = video_tokens.shape[1] // video_layout.num_segments
        parts = [video_tokens + self.type_embedding[0]]
        times = [video_times.repeat_interleave(per_frame, dim=1)]  # (N, F*t) seconds of each token
        if audio is not None:
            if audio_layout is None or audio_times is None:
                raise ValueError("combiner audio needs its layout and audio_times")
            rows = self.audio_rows(audio, audio_layout)  # (N, K*rows, D)
            audio_times = audio_times.to(audio.device, torch.float64).expand(n, -1, -1)
            if tuple(audio_times.shape[1:]) != (audio_layout.num_segments, audio_layout.grid_h):
                raise ValueError(
                    f"audio_times is {tuple(audio_times.shape[1:])} per item; the audio layout has "
                    f"{audio_layout.num_segments} windows of {audio_layout.grid_h} patch rows"
                )
            parts.append(rows + self.type_embedding[1])
            times.append(audio_times.flatten(1))  # (N, K*rows), NaN: padding
        token_times = torch.cat(times, dim=1)  # (N, L)
        snippets = snippet_index(token_times, span_s, config.num_snippets)  # (N, L), -1: padding
        if self.ttm is not None:
            grouped, present = group_by_snippet(torch.cat(parts, dim=1), snippets, config.num_snippets)
            picked = self.ttm(grouped, present)  # (N, T*m, D)
        else:
            picked = self.transformer(parts, snippets, token_times)  # (N, T*m, D)
        out = self.proj(self.norm(picked))  # (N, T*m, D_llm)
        return out if self.out_norm is None else self.out_norm(out)

    def transformer(self, parts: list[torch.Tensor], snippets: torch.Tensor, token_times: torch.Tensor) -> torch.Tensor:
        """The causal Transformer Combiner: ``parts`` (the video tokens and audio rows, ``(N, *, D)``
        each, type embeddings added), their ``snippets`` and ``token_times`` ``(N, L)`` ->
        ``(N, T*m, D)``, the ``m`` outputs read out of each snippet."""
        config: CombinerConfig = self.config
        n, device, dtype = snippets.shape[0], parts[0].device, parts[0].dtype
        m, num_snippets = config.snippet_tokens, config.num_snippets
        if self.summary is not None:
            summary = (self.summary.unsqueeze(0) + self.snippet_embedding.unsqueeze(1)).flatten(0, 1)  # (T*m, D)
            parts = [*parts, (summary + self.type_embedding[2]).to(dtype).expand(n, -1, -1)]
            summary_snip = torch.arange(num_snippets, device=device).repeat_interleave(m)  # (T*m,)
            snippets = torch.cat([snippets, summary_snip.expand(n, -1)], dim=1)
        tokens = torch.cat(parts, dim=1)  # (N, L', D)
        tokens = tokens + self.snippet_embedding[snippets.clamp(min=0)].to(tokens.dtype)
        blocked = ~chunk_causal_mask(snippets)  # (N, L', L'), True: may not attend
        blocked = blocked.repeat_interleave(config.heads, dim=0)  # (N*heads, L', L')
        hidden = self.layers(tokens, mask=blocked)  # (N, L', D)
        if self.summary is not None:
            return hidden[:, -num_snippets * m :]  # (N, T*m, D)
        positions = self.last_per_snippet(snippets, token_times)  # (N, T*m)
        return hidden.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))

    def last_per_snippet(self, snippets: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """Positions of each snippet's last ``m`` tokens in time order (ties: token order):
        ``snippets, times (N, L)`` -> ``(N, T*m)``, snippet-major. Raises if a snippet has fewer."""
        num_snippets, m = self.config.num_snippets, self.config.snippet_tokens
        key = torch.where(snippets < 0, num_snippets, snippets)  # padding sorts last
        order = torch.argsort(times.nan_to_num(0.0), dim=1, stable=True)
        order = order.gather(1, torch.argsort(key.gather(1, order), dim=1, stable=True))  # by snippet, then time
        counts = nn.functional.one_hot(key, num_snippets + 1).sum(dim=1)[:, :num_snippets]  # (N, T)
        short = (counts < m).nonzero()
        if len(short):
            item, snippet = short[0].tolist()
            raise ValueError(
                f"combiner snippet {snippet} of item {item} holds {counts[item, snippet].item()} features, fewer than "
                f"snippet_tokens={m} for readout 'last'; use fewer snippets, more frames, or readout 'queries'"
            )
        ends = counts.cumsum(dim=1).unsqueeze(-1)  # (N, T, 1)
        positions = ends - m + torch.arange(m, device=snippets.device)  # (N, T, m) into the sorted order
        return order.gather(1, positions.flatten(1))  # (N, T*m)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``combiner_config.json`` (config and widths) and ``combiner.safetensors``."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        payload = {"config": self.config.to_dict(), "in_dim": self.in_dim, "out_dim": self.out_dim}
        (directory / COMBINER_CONFIG).write_text(json.dumps(payload, indent=2) + "\n")
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, directory / COMBINER_WEIGHTS)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> TimeAlignedCombiner:
        """Load what :meth:`save_pretrained` wrote."""
        from safetensors.torch import load_file

        directory = Path(directory)
        path = directory / COMBINER_CONFIG
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no combiner config (is {directory} a saved Combiner?)")
        payload = json.loads(path.read_text())
        module = cls(CombinerConfig.from_dict(payload["config"]), payload["in_dim"], payload["out_dim"])
        module.load_state_dict(load_file(directory / COMBINER_WEIGHTS))
        return module
