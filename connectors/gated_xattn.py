"""Gated cross-attention adapters: media reach the LLM through adapters in its decoder layers.

The adapter-based video-conditioned language model of the pseudo-label captioning paper (section 4,
Figure 4; the idea is Flamingo's gated xattn-dense, Alayrac et al., 2022). Where every other
connector turns media into tokens that replace placeholders in the text, here the text keeps one
marker token per item (where it stands) and no media features: chosen decoder layers get an
adapter that cross-attends from the text hidden states to the media features before the layer
runs, so the media cost the LLM's sequence one token whatever the number of frames.

One adapter, for text hidden states ``x (B, L, D)`` and media ``m (B, T, S, D)``::

    x = x + tanh(g_attn) * SepXAttn(norm(x), m)       # g_attn: (D,), a gate per dimension
    x = x + tanh(g_ffn)  * FFN(norm(x))                # g_ffn:  (D,)

Separable cross-attention (section 4.2), exactly as implemented here::

    time  = norm_t(maxpool_S(m))                       # (B, T, D): each frame's tokens max-pooled
    space = norm_s(maxpool_T(m))                       # (B, S, D): each position max-pooled over frames
    SepXAttn(q, m) = W [attn_t(q, time); attn_s(q, space)]   # (B, L, 2D) -> (B, L, D)

so a query attends over the T frames and, separately, over the S spatial tokens, at cost
``O(L(T + S))`` instead of ``O(LTS)`` for full cross-attention. This is the paper's variant
(max-pool one axis, layer-norm, attend over the other, concatenate, one linear map), not a
two-step "within each frame, then over frames" attention, which would cost ``O(LTS)`` again.
Several media items per sequence (a video and its audio track) are read together: each item gets
its modality's learned embedding (zero at the start), is pooled as above, and the queries attend
over all items' frame tokens at once and over all items' spatial tokens at once (``time =
[time_video; time_audio]``, likewise ``space``); the paper's adapters read video only, this is our
extension.

Gates are vectors, one per hidden dimension (section 4.1; the paper's "Additional findings: vector
gates improve training stability": scalar gates diverged at learning rates above 1e-3), initialised
at ``tanh(0) = 0`` (Flamingo; the model starts as the plain LLM, exactly) or ``tanh(1) ~ 0.76``
("Unreasonable effectiveness of tanh(1) initialization", after section 6 of the paper, the finding
issue 23 calls section 5's: closer to 1 helped markedly when fine-tuning without adapter
pre-training); :class:`GatedXAttnConfig`'s ``gate_init`` chooses.

Placement (Flamingo's rule): given where each item's placeholder token sits, a text position reads
only the items placed before it in its own sample (:class:`MediaKeys`), so several items per
conversation, packed rows and batches mixing rows with and without media all work; a position that
may read nothing is left exactly as the plain LLM computes it.

The hook into the LLM is a forward pre-hook on each chosen decoder layer (:meth:`GatedXAttn.attach`):
the LLM's modules and parameter names are untouched, so its pretrained weights load as before and
the adapters' weights live beside it. Media are set per forward call with :meth:`GatedXAttn.media`
(a context manager); a chosen layer that runs with no media set passes its input through unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

GateInit = Literal["zero", "one"]


@dataclass
class GatedXAttnConfig:
    """Where the adapters go and what they are.

    Args:
        layers: indices of the LLM decoder layers that get an adapter (run before the layer);
            negative indices count from the end. Flamingo puts one every few layers.
        heads: attention heads of each cross-attention; must divide the LLM's hidden size.
        ffn_mult: hidden width of each adapter's FFN, in multiples of the LLM's hidden size.
        gate_init: ``"zero"`` starts every gate at ``tanh(0) = 0`` (the model is then exactly the
            plain LLM); ``"one"`` at ``tanh(1)`` (the paper's tanh(1)-initialisation finding).
        modalities: the modalities the adapters may read, each with a learned embedding added to
            its features, so that items read together (a video and its audio track) stay apart.
    """

    layers: list[int] = field(default_factory=lambda: [0])
    heads: int = 4
    ffn_mult: int = 4
    gate_init: GateInit = "zero"
    modalities: list[str] = field(default_factory=lambda: ["image", "video", "audio", "depth"])

    def __post_init__(self) -> None:
        self.layers = [int(i) for i in self.layers]
        if not self.layers:
            raise ValueError("gated_xattn layers must name at least one decoder layer")
        for name in ("heads", "ffn_mult"):
            if getattr(self, name) < 1:
                raise ValueError(f"gated_xattn {name} must be >= 1, got {getattr(self, name)}")
        if self.gate_init not in ("zero", "one"):
            raise ValueError(f"gated_xattn gate_init must be 'zero' or 'one', got {self.gate_init!r}")
        self.modalities = [str(m) for m in self.modalities]
        if not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"gated_xattn modalities must name distinct modalities, got {self.modalities}")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | GatedXAttnConfig) -> GatedXAttnConfig:
        if isinstance(data, GatedXAttnConfig):
            return data
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown gated_xattn config keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MediaKeys:
    """One forward call's media as the adapters read them, pooled once for all adapters.

    Attributes:
        time: ``(B, Kt, D)`` each item's frames (max over its spatial tokens), a row's items
            concatenated and zero-padded to the longest row.
        space: ``(B, Ks, D)`` each item's spatial tokens (max over its frames), likewise.
        time_item, space_item: ``(B, K)`` the item each key comes from; ``-1`` on padding.
        item_position: ``(I,)`` where each item's placeholder sits in its row, or ``None``: every
            position of a row reads every item of the row.
        item_sample: ``(I,)`` the packed sample each item belongs to (with ``samples``), or ``None``.
        samples: ``(B, L)`` the packed sample of each position (several samples in one row), or ``None``.
        length: the sequence length the positions refer to; a call with another length (a decoding
            step after the prompt) reads every item of its row.
    """

    time: torch.Tensor
    space: torch.Tensor
    time_item: torch.Tensor
    space_item: torch.Tensor
    item_position: torch.Tensor | None = None
    item_sample: torch.Tensor | None = None
    samples: torch.Tensor | None = None
    length: int | None = None
    _masks: dict = field(default_factory=dict, repr=False, compare=False)  # per query length

    def masks(
        self, length: int, device: torch.device
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """``(time_mask, space_mask, reads)`` for ``length`` queries: ``(B, L, K)`` bool, True
        where a query may attend a key (Flamingo's rule: the items placed before it in its own
        sample), and ``reads (B, L)``: whether the query may read any item (a query that may not
        is pointed at key 0, and its output is discarded by the adapter). ``(None, None, None)``
        when every query reads every key. Computed once per length: every adapter of a forward call
        asks for the same ones."""
        if length not in self._masks:
            self._masks[length] = self._compute_masks(length, device)
        return self._masks[length]

    def _compute_masks(
        self, length: int, device: torch.device
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        causal = self.item_position is not None and length == self.length
        if not causal and bool((self.time_item >= 0).all()) and bool((self.space_item >= 0).all()):
            return None, None, None
        queries = torch.arange(length, device=device)

        def allowed(item_of_key: torch.Tensor) -> torch.Tensor:
            allow = (item_of_key >= 0)[:, None, :].expand(-1, length, -1)  # (B, L, K)
            if causal:
                item = item_of_key.clamp(min=0)
                allow = allow & (self.item_position[item][:, None, :] < queries[None, :, None])
                allow = allow & (self.item_sample[item][:, None, :] == self.samples[:, :, None])
            return allow

        time, space = allowed(self.time_item), allowed(self.space_item)
        reads = time.any(dim=-1)  # (B, L); the same items give both key sets
        idle = (~reads)[:, :, None]
        time = time | (idle & (torch.arange(time.shape[-1], device=device) == 0))
        space = space | (idle & (torch.arange(space.shape[-1], device=device) == 0))
        return time, space, reads


class SeparableCrossAttention(nn.Module):
    """Section 4.2: attend over frames (space max-pooled) and over positions (time max-pooled)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"gated_xattn heads ({heads}) must divide the LLM hidden size ({dim})")
        self.norm_time = nn.LayerNorm(dim)
        self.norm_space = nn.LayerNorm(dim)
        self.attn_time = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.attn_space = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.out = nn.Linear(2 * dim, dim)

    def forward(self, query: torch.Tensor, media: Sequence[torch.Tensor]) -> torch.Tensor:
        """``query (B, L, D)``, ``media``: items ``(B, T_i, S_i, D)`` -> ``(B, L, D)``; the keys are
        all items' frame tokens (``sum T_i``) and all items' spatial tokens (``sum S_i``)."""
        time = torch.cat([m.amax(dim=2) for m in media], dim=1)  # (B, sum T_i, D)
        space = torch.cat([m.amax(dim=1) for m in media], dim=1)  # (B, sum S_i, D)
        return self.attend(query, time, space)

    def attend(
        self,
        query: torch.Tensor,
        time: torch.Tensor,
        space: torch.Tensor,
        time_mask: torch.Tensor | None = None,
        space_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``query (B, L, D)`` over pooled keys ``time (B, Kt, D)`` and ``space (B, Ks, D)``;
        ``*_mask (B, L, K)`` bool, True where a query may attend a key (``None``: everywhere; every
        query must be allowed at least one key)."""
        time, space = self.norm_time(time), self.norm_space(space)
        heads = self.attn_time.num_heads
        blocked_t = None if time_mask is None else (~time_mask).repeat_interleave(heads, dim=0)  # (B*h, L, Kt)
        blocked_s = None if space_mask is None else (~space_mask).repeat_interleave(heads, dim=0)
        over_time = self.attn_time(query, time, time, attn_mask=blocked_t, need_weights=False)[0]  # (B, L, D)
        over_space = self.attn_space(query, space, space, attn_mask=blocked_s, need_weights=False)[0]  # (B, L, D)
        return self.out(torch.cat([over_time, over_space], dim=-1))  # (B, L, 2D) -> (B, L, D)


class GatedXAttnAdapter(nn.Module):
    """One adapter: pre-norm separable cross-attention and FFN, each behind a tanh vector gate."""

    def __init__(self, dim: int, heads: int, ffn_mult: int, gate_init: GateInit):
        super().__init__()
        start = 0.0 if gate_init == "zero" else 1.0
        self.norm_attn = nn.LayerNorm(dim)
        self.xattn = SeparableCrossAttention(dim, heads)
        self.gate_attn = nn.Parameter(torch.full((dim,), start))  # tanh(gate) scales each dimension
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_mult * dim), nn.GELU(), nn.Linear(ffn_mult * dim, dim))
        self.gate_ffn = nn.Parameter(torch.full((dim,), start))

    def forward(self, hidden: torch.Tensor, keys: MediaKeys) -> torch.Tensor:
        """``hidden (B, L, D)`` reading the pooled media ``keys`` (see :class:`MediaKeys`) -> ``(B, L, D)``.
        A position that may read no media item (text before the first one) is left unchanged."""
        if keys.time.shape[0] != hidden.shape[0]:
            raise ValueError(
                f"gated_xattn: media for {keys.time.shape[0]} sequences in a batch of {hidden.shape[0]} sequences; "
                "give one (B, T, S, D) item per sequence, or place the items with their rows"
            )
        time_mask, space_mask, reads = keys.masks(hidden.shape[1], hidden.device)
        attended = self.xattn.attend(self.norm_attn(hidden), keys.time.to(hidden.dtype), keys.space.to(hidden.dtype),
                                     time_mask, space_mask)  # fmt: skip
        if reads is not None:
            attended = attended * reads.unsqueeze(-1).to(hidden.dtype)  # (B, L, D): nothing to read, no change
        hidden = hidden + torch.tanh(self.gate_attn) * attended
        ffn = self.ffn(self.norm_ffn(hidden))
        if reads is not None:
            ffn = ffn * reads.unsqueeze(-1).to(hidden.dtype)
        return hidden + torch.tanh(self.gate_ffn) * ffn


class GatedXAttn(nn.Module):
    """The projection of the media to the LLM's width plus one adapter per chosen decoder layer.

    ``adapters`` is keyed by the (non-negative) layer index as a string, so the saved weights say
    which layer each adapter belongs to. Use::

        gx = GatedXAttn(config, media_dim=D_enc, llm_dim=D_llm, num_layers=len(decoder_layers))
        gx.attach(decoder_layers)                  # once, after building or loading
        with gx.media(features):                   # features (B, T, S, D_enc), one item per sequence,
            logits = llm(input_ids).logits         # or {"video": ..., "audio": ...}; no media tokens in input_ids
    """

    def __init__(self, config: GatedXAttnConfig, media_dim: int, llm_dim: int, num_layers: int):
        super().__init__()
        self.config = config
        for i in config.layers:
            if not -num_layers <= i < num_layers:
                raise ValueError(f"gated_xattn layer {i} is out of range for an LLM with {num_layers} decoder layers")
        layers = sorted({i % num_layers for i in config.layers})
        self.proj = nn.Linear(media_dim, llm_dim)
        self.modality_embeddings = nn.ParameterDict(
            {m: nn.Parameter(torch.zeros(llm_dim)) for m in config.modalities}
        )  # added after the projection; zero at the start
        self.adapters = nn.ModuleDict(
            {str(i): GatedXAttnAdapter(llm_dim, config.heads, config.ffn_mult, config.gate_init) for i in layers}
        )
        self._media: MediaKeys | None = None  # while inside ``media(...)``
        self._handles: list[RemovableHandle] = []

    def attach(self, decoder_layers: Sequence[nn.Module]) -> None:
        """Register a forward pre-hook on each chosen layer that runs its adapter on the layer's input.

        Idempotent: attaching again first removes the earlier hooks.
        """
        self.detach()
        for key, adapter in self.adapters.items():
            layer = decoder_layers[int(key)]
            self._handles.append(layer.register_forward_pre_hook(self._hook(adapter), with_kwargs=True))

    def detach(self) -> None:
        """Remove the hooks: the decoder layers run as the plain LLM's again."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, adapter: GatedXAttnAdapter):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
            if self._media is None:
                return None
            if args:
                return (adapter(args[0], self._media), *args[1:]), kwargs
            if "hidden_states" not in kwargs:
                raise TypeError("gated_xattn: the decoder layer was called without hidden_states")
            return args, {**kwargs, "hidden_states": adapter(kwargs["hidden_states"], self._media)}

        return hook

    @contextmanager
    def media(
        self,
        features: torch.Tensor | Mapping[str, torch.Tensor] | None,
        *,
        rows: Mapping[str, torch.Tensor] | None = None,
        positions: Mapping[str, torch.Tensor] | None = None,
        samples: torch.Tensor | None = None,
        batch_size: int | None = None,
    ) -> Iterator[None]:
        """Within the block, the adapters cross-attend to ``features``.

        Args:
            features: one item per sequence ``(B, T, S, D_enc)``, or ``{modality: (N_m, T_m, S_m,
                D_enc)}`` (each item gets its modality's embedding; a bare tensor gets none).
                Projected to the LLM's width once, here. ``None`` or ``{}`` leaves the LLM plain.
            rows: ``{modality: (N_m,)}`` the row of each item; ``None``: item ``k`` is row ``k``
                (then every modality has ``B`` items).
            positions: ``{modality: (N_m,)}`` where each item's placeholder sits in its row: a
                position then reads only the items placed before it (in its own packed sample,
                with ``samples``), as in Flamingo; ``None``: every position reads its row's items.
            samples: ``(B, L)`` packed-sample index of every position; required with ``positions``
                (zeros for rows of one sample each; its ``L`` is the length the positions refer to).
            batch_size: the number of rows ``B`` (with ``rows``; default: the largest row + 1).
        """
        previous = self._media
        self._media = self._keys(features, rows, positions, samples, batch_size)
        try:
            yield
        finally:
            self._media = previous

    def _keys(self, features, rows, positions, samples, batch_size) -> MediaKeys | None:
        items = {} if features is None else ({"": features} if isinstance(features, torch.Tensor) else dict(features))
        for name, item in items.items():
            if item.dim() != 4:
                where = f"{name} " if name else ""
                raise ValueError(f"gated_xattn {where}media must be (B, T, S, D), got {tuple(item.shape)}")
            if name and name not in self.modality_embeddings:
                raise ValueError(f"gated_xattn reads {list(self.modality_embeddings)}, not {name!r}")
        if not items:
            return None
        if positions is not None and (samples is None or samples.dim() != 2):
            raise ValueError("gated_xattn: positions need samples, the (B, L) packed-sample index of every position")
        if rows is None:
            sizes = {item.shape[0] for item in items.values()}
            if len(sizes) > 1:
                raise ValueError(f"gated_xattn: media items of different batch sizes {sorted(sizes)}")
            rows = {name: torch.arange(item.shape[0]) for name, item in items.items()}
        for name, item in items.items():
            for what, given in (("rows", rows), ("positions", positions)):
                if given is not None and (name not in given or given[name].shape != (item.shape[0],)):
                    raise ValueError(f"gated_xattn: {what} must give one entry per {name or 'media'} item ({item.shape[0]})")
        num_rows = batch_size if batch_size is not None else 1 + max(int(r.max()) for r in rows.values() if r.numel())
        per_row_time: list[list[torch.Tensor]] = [[] for _ in range(num_rows)]
        per_row_space: list[list[torch.Tensor]] = [[] for _ in range(num_rows)]
        item_ids_time: list[list[int]] = [[] for _ in range(num_rows)]
        item_ids_space: list[list[int]] = [[] for _ in range(num_rows)]
        item_position, item_sample = [], []
        for name, item in items.items():
            projected = self.proj(item)  # (N, T, S, D_llm)
            if name:
                projected = projected + self.modality_embeddings[name]
            for k in range(item.shape[0]):
                row = int(rows[name][k])
                if not 0 <= row < num_rows:
                    raise ValueError(f"gated_xattn: {name or 'media'} item {k} is placed in row {row} of {num_rows}")
                index = len(item_position)
                per_row_time[row].append(projected[k].amax(dim=1))  # (T, D)
                per_row_space[row].append(projected[k].amax(dim=0))  # (S, D)
                item_ids_time[row] += [index] * projected.shape[1]
                item_ids_space[row] += [index] * projected.shape[2]
                position = -1 if positions is None else int(positions[name][k])
                item_position.append(position)
                item_sample.append(-1 if positions is None else int(samples[row, position]))
        dim = self.proj.out_features
        reference = next(iter(items.values()))

        def stack(parts: list[list[torch.Tensor]]) -> torch.Tensor:
            width = max(sum(p.shape[0] for p in row) for row in parts)
            out = []
            for row in parts:
                keys = torch.cat(row) if row else reference.new_zeros(0, dim, dtype=self.proj.weight.dtype)
                out.append(torch.nn.functional.pad(keys, (0, 0, 0, width - keys.shape[0])))
            return torch.stack(out)  # (B, K, D)

        def index(ids: list[list[int]]) -> torch.Tensor:
            width = max(len(r) for r in ids)
            return torch.tensor([r + [-1] * (width - len(r)) for r in ids], device=reference.device)

        device = reference.device
        return MediaKeys(
            time=stack(per_row_time),
            space=stack(per_row_space),
            time_item=index(item_ids_time),
            space_item=index(item_ids_space),
            item_position=None if positions is None else torch.tensor(item_position, device=device),
            item_sample=None if positions is None else torch.tensor(item_sample, device=device),
            samples=None if positions is None else samples,
            length=None if positions is None else samples.shape[1],
        )
