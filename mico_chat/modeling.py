"""``MiCoChatForConditionalGeneration``: MiCo encoder -> per-modality connector -> causal LLM.

Media features replace the embeddings of their placeholder tokens (``masked_scatter``); the
processor has already expanded each placeholder to exactly as many tokens as the connector emits,
and a count mismatch raises here rather than silently truncating.

With ``config.gated_xattn`` set, media instead reach the LLM through gated cross-attention adapters
(:class:`~mico_chat.connectors.GatedXAttn`): forward pre-hooks on the chosen decoder layers run an
adapter over each layer's input, cross-attending to the encoder features of the call's media; the
text holds no media tokens and the connectors are not used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModelForCausalLM, LogitsProcessorList, PreTrainedModel
from transformers.modeling_outputs import ModelOutput

from mico_chat.connectors import GatedXAttn, GatedXAttnConfig, build_connector
from mico_chat.encoders import MiCoEncoder
from mico_chat.modality import MediaLayout, Modality
from mico_chat.preprocess import grayscale

from .configuration import MiCoChatConfig
from .contrast import MediaContrastLogitsProcessor, noise_like, noise_like_media


def encode_views(
    encoder: nn.Module, inputs: Mapping[str | Modality, torch.Tensor], grey_views: Sequence[str] = ()
) -> dict[Modality, torch.Tensor]:
    """``encoder``'s outputs ``{modality: (N, S*(1+P), D)}``; for a modality in ``grey_views`` the
    outputs for its values in grey appended along the tokens, ``(N, 2*S*(1+P), D)``."""
    inputs = {Modality.parse(m): v for m, v in inputs.items()}
    features = encoder(inputs)
    grey = {m: grayscale(v) for m, v in inputs.items() if m.value in grey_views}
    if grey:
        for modality, feats in encoder(grey).items():
            features[modality] = torch.cat([features[modality], feats], dim=1)
    return features


class MediaTokenMismatchError(ValueError):
    """The prompt's placeholder tokens do not match the media features."""


@dataclass
class MiCoChatOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    past_key_values: object | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class MiCoChatPreTrainedModel(PreTrainedModel):
    config: MiCoChatConfig
    config_class = MiCoChatConfig
    base_model_prefix = ""
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MiCoEncoderLayer", "LlamaDecoderLayer"]
    _skip_keys_device_placement = ["past_key_values"]
    _supports_sdpa = True
    _supports_flash_attn = True


class MiCoChatForConditionalGeneration(MiCoChatPreTrainedModel):
    """The assembled chat model.

    Submodules: ``encoder`` (:class:`MiCoEncoder`), ``connectors`` (``ModuleDict`` keyed by modality
    name), ``language_model`` (any ``AutoModelForCausalLM``) and, with ``config.gated_xattn``,
    ``gated_xattn`` (:class:`GatedXAttn`, hooked into the LLM's decoder layers; else ``None``).
    """

    def __init__(self, config: MiCoChatConfig, language_model: PreTrainedModel | None = None):
        """``language_model``: an already-loaded LLM to use instead of a fresh one from ``config.text_config``."""
        super().__init__(config)
        self.encoder = MiCoEncoder(config.encoder_config)
        llm_dim = config.text_config.hidden_size
        enc_dim = config.encoder_config.hidden_size
        self.connectors = nn.ModuleDict(
            {m.value: build_connector(config.connector_config(m), enc_dim, llm_dim) for m in config.modalities}
        )
        if language_model is not None and language_model.config.hidden_size != llm_dim:
            raise ValueError(
                f"language_model hidden size {language_model.config.hidden_size} != text_config {llm_dim}"
            )
        if language_model is not None:
            config.text_config = language_model.config  # one config object, so resizing updates both
        self.language_model = language_model or AutoModelForCausalLM.from_config(config.text_config)
        self.gated_xattn: GatedXAttn | None = None
        if config.gated_xattn is not None:
            layers = self._decoder_layers()
            self.gated_xattn = GatedXAttn(GatedXAttnConfig.from_dict(config.gated_xattn), enc_dim, llm_dim, len(layers))
        self.post_init()
        if self.gated_xattn is not None:
            self.gated_xattn.attach(self._decoder_layers())

    def _decoder_layers(self) -> nn.ModuleList:
        """The LLM's decoder layers (``language_model.get_decoder().layers``, as in LLaMA-family models)."""
        layers = getattr(self.language_model.get_decoder(), "layers", None)
        if not isinstance(layers, nn.ModuleList):
            raise ValueError(
                f"gated_xattn needs an LLM whose decoder has a .layers ModuleList; {type(self.language_model).__name__} has none"
            )
        return layers

    # HF plumbing: embeddings live in the LLM.
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    # ------------------------------------------------------------------ media
    def encode_media(
        self,
        media: Mapping[str | Modality, torch.Tensor] | None = None,
        encoder_features: Mapping[str | Modality, torch.Tensor] | None = None,
        video_audio: torch.Tensor | None = None,
        video_spans: torch.Tensor | None = None,
    ) -> dict[Modality, torch.Tensor]:
        """Encoder + connector per modality: ``{modality: values} -> {modality: (N, M, d_llm)}``.

        ``values`` are the processor's tensors for ``N`` items (shapes: see :class:`MiCoEncoder`).
        ``encoder_features`` are encoder outputs computed earlier, ``{modality: (N, S*(1+P), D)}``
        (a frozen encoder's cached features during training); they skip the encoder. A modality
        may come one way or the other, not both.

        ``video_audio (N_video, K, F, M)`` and ``video_spans (N_video, 2)`` (``[video_s, audio_s]``
        seconds; :meth:`MiCoChatProcessor.collate`) are the video items' own audio tracks, which a
        video connector that fuses them (the Combiner) reads with the frames, aligned by time.
        """
        features, layouts = self._encoder_features(media, encoder_features)
        if video_audio is not None and Modality.VIDEO not in features:
            raise ValueError("video_audio given without video media")
        projected = {}
        for modality, feats in features.items():
            if modality is Modality.VIDEO and video_audio is not None:
                if modality.value in self.config.grey_views:
                    raise ValueError("grey_views and a video connector that fuses the audio track do not combine")
                projected[modality] = self._fuse_track(feats, layouts[modality], video_audio, video_spans)
                continue
            connector = self.connectors[modality.value]
            if modality.value in self.config.grey_views:  # [colour; grey] features: each view its own tokens
                colour, grey = feats.chunk(2, dim=1)
                projected[modality] = torch.cat([connector(colour, layouts[modality]), connector(grey, layouts[modality])], 1)
                continue
            projected[modality] = connector(feats, layouts[modality])  # (N, M, d_llm)
        return projected

    def _fuse_track(
        self, video: torch.Tensor, layout: MediaLayout, audio: torch.Tensor, spans: torch.Tensor | None
    ) -> torch.Tensor:
        """The video connector on the frames' features ``(N, F*(1+P), D)`` and their tracks' fbank
        windows ``audio (N, K, F_a, M)``, each frame and audio patch row timed from ``spans (N, 2)``."""
        from mico_chat.connectors.combiner import audio_row_times, video_frame_times

        connector = self.connectors[Modality.VIDEO.value]
        if not type(connector).fuses_audio_track:
            raise ValueError(
                f"video_audio given, but the video connector ({connector.config.type}) fuses no audio track"
            )
        n = video.shape[0]
        if spans is None or tuple(spans.shape) != (n, 2) or audio.shape[0] != n:
            raise ValueError(
                f"video_audio {tuple(audio.shape)} and video_spans {None if spans is None else tuple(spans.shape)} "
                f"must cover the {n} video items, with [video_s, audio_s] per item"
            )
        spans = spans.detach().to("cpu", torch.float64)
        if not (spans[:, 0] > 0).all():
            raise ValueError(f"video_spans: every video window needs a positive length, got {spans[:, 0].tolist()}")
        audio_layout = self.encoder.layout(Modality.AUDIO, self.encoder.as_segments(Modality.AUDIO, audio).shape[1])
        audio_features = self.encoder({Modality.AUDIO: audio})[Modality.AUDIO]  # (N, K*(1+P_a), D)
        config = self.config.encoder_config
        video_times = torch.stack([video_frame_times(layout.num_segments, float(v)) for v in spans[:, 0]])  # (N, F)
        audio_times = torch.stack([audio_row_times(audio_layout.num_segments, float(a), config) for a in spans[:, 1]])
        return connector(
            video, layout, audio_features, audio_layout, video_times, audio_times, spans.max(dim=1).values
        )  # (N, T*m, d_llm)

    def _encoder_features(
        self,
        media: Mapping[str | Modality, torch.Tensor] | None,
        encoder_features: Mapping[str | Modality, torch.Tensor] | None,
    ) -> tuple[dict[Modality, torch.Tensor], dict[Modality, MediaLayout]]:
        """Encoder outputs ``{modality: (N, S*(1+P), D)}`` and their layouts, from media or cached features.

        For a modality in ``config.grey_views`` the features are ``(N, 2*S*(1+P), D)``: those of the
        frames as they are, then those of the same frames in grey (cached features hold both so);
        the layout is one view's.
        """
        inputs = {Modality.parse(m): v for m, v in (media or {}).items() if v is not None and v.numel() > 0}
        cached = {Modality.parse(m): f for m, f in (encoder_features or {}).items() if f is not None and f.numel() > 0}
        both = sorted(str(m) for m in set(inputs) & set(cached))
        if both:
            raise ValueError(f"{', '.join(both)}: give media or encoder_features for a modality, not both")
        features: dict[Modality, torch.Tensor] = self.encode_items(inputs) if inputs else {}
        layouts = {m: self.encoder.layout(m, self.encoder.as_segments(m, v).shape[1]) for m, v in inputs.items()}
        for modality, feats in cached.items():
            per_segment = self.encoder.layout(modality, 1).tokens_per_segment
            views = 2 if modality.value in self.config.grey_views else 1
            if feats.dim() != 3 or feats.shape[1] % (views * per_segment):
                raise ValueError(
                    f"{modality} encoder_features must be (N, {views}*S*{per_segment}, D), got {tuple(feats.shape)}"
                )
            features[modality] = feats
            layouts[modality] = self.encoder.layout(modality, feats.shape[1] // (views * per_segment))
        return features, layouts

    def encode_items(self, inputs: Mapping[str | Modality, torch.Tensor]) -> dict[Modality, torch.Tensor]:
        """The encoder's outputs for the processor's tensors, ``{modality: (N, S*(1+P), D)}``; for a
        modality in ``config.grey_views``, the outputs for its frames in grey appended along the
        tokens, ``(N, 2*S*(1+P), D)`` (what a feature cache stores for it)."""
        return encode_views(self.encoder, inputs, self.config.grey_views)

    def adapter_media(
        self,
        media: Mapping[str | Modality, torch.Tensor] | None = None,
        encoder_features: Mapping[str | Modality, torch.Tensor] | None = None,
        input_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
    ) -> AbstractContextManager:
        """With ``gated_xattn``: a context in which the adapters attend to these media's encoder
        features, reshaped per item to ``(T=S segments, 1+P tokens, D)`` (time x space).

        With ``input_ids``, each item is placed where its placeholder token sits (the ``k``-th item
        of a modality at the ``k``-th placeholder of that modality, row by row): a text position
        reads only the items placed before it in its own sample (packed samples restart their
        ``position_ids`` at 0), so a conversation may hold several items, a video and its audio
        track among them. Without ``input_ids``, item ``k`` belongs to row ``k`` and every position
        reads it. No media: the plain LLM."""
        if self.gated_xattn is None:
            raise ValueError("adapter_media needs a model built with gated_xattn")
        features, layouts = self._encoder_features(media, encoder_features)
        items = {}
        for modality, feats in sorted(features.items(), key=lambda kv: kv[0].value):
            layout = layouts[modality]
            items[modality.value] = feats.view(feats.shape[0], layout.num_segments, layout.tokens_per_segment, -1)
        if not items or input_ids is None:
            return self.gated_xattn.media(items or None)
        rows, positions = {}, {}
        for name, item in items.items():
            token_id = self.config.media_token_ids.get(name)
            where = (input_ids == token_id).nonzero() if token_id is not None else input_ids.new_zeros(0, 2)  # (N, 2)
            if where.shape[0] != item.shape[0]:
                raise MediaTokenMismatchError(
                    f"{name}: the prompt has {where.shape[0]} {Modality(name).placeholder} tokens but {item.shape[0]} "
                    f"{name} items are given; one placeholder token per item (MiCoChatProcessor puts them)"
                )
            rows[name], positions[name] = where[:, 0], where[:, 1]
        if position_ids is None:
            samples = torch.zeros_like(input_ids)
        else:
            samples = (position_ids.expand_as(input_ids) == 0).long().cumsum(dim=1) - 1  # (B, L)
        return self.gated_xattn.media(items, rows=rows, positions=positions, samples=samples, batch_size=input_ids.shape[0])

    def embed_inputs(
        self,
        input_ids: torch.LongTensor,
        media: Mapping[str | Modality, torch.Tensor] | None = None,
        encoder_features: Mapping[str | Modality, torch.Tensor] | None = None,
        video_audio: torch.Tensor | None = None,
        video_spans: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """LLM input embeddings ``(B, L, d_llm)`` with each placeholder run replaced by its media
        features (``video_audio``/``video_spans``: the videos' fused tracks, see :meth:`encode_media`).

        With ``gated_xattn`` the media are not merged here (they go to the adapters, see
        :meth:`adapter_media`): the plain token embeddings, each item's one placeholder token included.
        """
        embeds = self.get_input_embeddings()(input_ids)  # (B, L, d)
        if self.gated_xattn is not None:
            if video_audio is not None:
                raise ValueError("video_audio is for a video connector that fuses tracks, not gated_xattn")
            return embeds
        projected = self.encode_media(media, encoder_features, video_audio, video_spans)
        token_ids = self.config.media_token_ids
        for modality in self.config.modalities:
            token_id = token_ids.get(modality.value)
            if token_id is None:
                if modality in projected:
                    raise MediaTokenMismatchError(f"{modality} features given but the model has no {modality} token id")
                continue
            mask = input_ids == token_id  # (B, L)
            num_slots = int(mask.sum())
            feats = projected.get(modality)
            num_feats = 0 if feats is None else feats.shape[0] * feats.shape[1]
            if num_slots != num_feats:
                raise MediaTokenMismatchError(
                    f"{modality}: the prompt has {num_slots} {modality.placeholder} tokens but the media give "
                    f"{num_feats} feature tokens; expand placeholders with MiCoChatProcessor"
                )
            if num_feats:
                embeds = embeds.masked_scatter(mask.unsqueeze(-1), feats.to(embeds.dtype).reshape(-1, embeds.shape[-1]))
        return embeds

    # ------------------------------------------------------------------ forward / generate
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        media: Mapping[str, torch.Tensor] | None = None,
        labels: torch.LongTensor | None = None,
        encoder_features: Mapping[str, torch.Tensor] | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor | str = 0,
        video_audio: torch.Tensor | None = None,
        video_spans: torch.Tensor | None = None,
        **kwargs,
    ) -> MiCoChatOutput:
        """Causal-LM forward. ``labels`` (``-100`` = ignored) give the shifted next-token loss.

        ``logits_to_keep="labels"`` (what the training collators ask for) computes the LM head only
        at the positions that predict a trained token: the loss is the same, but the head (a fifth
        of SmolLM2-135M's FLOPs per token, 49k words) runs on the answers alone, and ``logits``
        holds those positions only, ``(B, K, V)``.

        ``encoder_features`` replace ``media`` for modalities whose encoder outputs were computed
        beforehand, ``video_audio``/``video_spans`` carry the videos' fused audio tracks (see
        :meth:`encode_media`). Packed rows (several samples in one row, each with
        position ids from 0 and no ``attention_mask``) attend only within each sample when
        ``use_cache=False``.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_inputs(input_ids, media, encoder_features, video_audio, video_spans)
        elif (media or encoder_features or video_audio is not None) and self.gated_xattn is None:
            raise ValueError("media must be merged before passing inputs_embeds (use embed_inputs)")
        adapters = (
            nullcontext()
            if self.gated_xattn is None
            else self.adapter_media(media, encoder_features, input_ids=input_ids, position_ids=position_ids)
        )
        with adapters:
            return self._forward_llm(
                inputs_embeds, attention_mask, position_ids, past_key_values, labels, use_cache, logits_to_keep, **kwargs
            )

    def _forward_llm(
        self, inputs_embeds, attention_mask, position_ids, past_key_values, labels, use_cache, logits_to_keep, **kwargs
    ) -> MiCoChatOutput:
        """The LLM on merged embeddings (the adapters' media, if any, already set)."""
        if isinstance(logits_to_keep, str):
            if logits_to_keep != "labels" or labels is None:
                raise ValueError(
                    f"logits_to_keep must be an int, a tensor, or 'labels' together with labels; got {logits_to_keep!r}"
                )
            return self._forward_at_labels(inputs_embeds, attention_mask, position_ids, labels, use_cache, **kwargs)
        out = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )
        return MiCoChatOutput(
            loss=out.loss,
            logits=out.logits,
            past_key_values=out.past_key_values,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )

    def _forward_at_labels(self, inputs_embeds, attention_mask, position_ids, labels, use_cache, **kwargs):
        """The shifted next-token loss with the LM head applied only where a label follows."""
        num_items = kwargs.pop("num_items_in_batch", None)
        keep = (labels[:, 1:] != -100).any(dim=0).nonzero().flatten()  # positions t predicting token t+1
        out = self.language_model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
            use_cache=use_cache, logits_to_keep=keep, **kwargs,
        )  # fmt: skip
        targets = labels[:, keep + 1]
        logits = out.logits.float()
        loss = nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="sum"
        )
        count = num_items if num_items is not None else (targets != -100).sum()
        loss = loss / torch.as_tensor(count, device=loss.device, dtype=loss.dtype)
        return MiCoChatOutput(loss=loss, logits=out.logits, hidden_states=out.hidden_states, attentions=out.attentions)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        media: Mapping[str, torch.Tensor] | None = None,
        video_audio: torch.Tensor | None = None,
        video_spans: torch.Tensor | None = None,
        media_contrast: float = 0.0,
        media_contrast_cutoff: float = 0.1,
        **generate_kwargs,
    ) -> torch.LongTensor:
        """Generate continuations; returns only the new tokens, ``(B, new)``.

        The media are encoded once and merged into the prompt embeddings (with ``gated_xattn``:
        set for the adapters for the whole decode); the LLM's own ``generate`` then decodes
        (greedy, sampling, streamers and stopping criteria all apply).

        ``media_contrast`` > 0 decodes media-contrastively (:mod:`mico_chat.contrast`, VCD): each
        step's scores are contrasted with those of the same prompt over Gaussian-noise media, with
        that strength (alpha) and plausibility cutoff ``media_contrast_cutoff``.
        """
        inputs_embeds = self.embed_inputs(input_ids, media, video_audio=video_audio, video_spans=video_spans)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if media_contrast > 0:
            if self.gated_xattn is not None:
                raise ValueError("media_contrast needs media tokens in the prompt; gated_xattn models have none")
            if generate_kwargs.get("num_beams", 1) > 1 or generate_kwargs.get("num_return_sequences", 1) > 1:
                raise ValueError("media_contrast decodes one sequence per prompt (no beams, one return sequence)")
            track = None if video_audio is None else noise_like(video_audio, seed=1)
            negative = self.embed_inputs(input_ids, noise_like_media(media), video_audio=track, video_spans=video_spans)
            contrast = MediaContrastLogitsProcessor(
                self.language_model, negative, attention_mask, alpha=media_contrast, cutoff=media_contrast_cutoff
            )
            generate_kwargs["logits_processor"] = LogitsProcessorList(
                [*generate_kwargs.get("logits_processor", []), contrast]
            )
        with nullcontext() if self.gated_xattn is None else self.adapter_media(media, input_ids=input_ids):
            return self.language_model.generate(
                inputs_embeds=inputs_embeds, attention_mask=attention_mask, **generate_kwargs
            )
