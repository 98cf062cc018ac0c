"""``MiCoForPretraining``: the omni-modal ViT, a BERT text tower and the heads of MiCo's three
objectives (MiCo section 3.4, Algorithm 1; VAST section 4.2).

One training step takes a batch of one modality group (see :mod:`.context`) with its captions:

1. the group's media are encoded, several modalities as one multimodal context (eq. 1), and
   pooled into a global feature; captions are encoded by the text tower (eq. 2);
2. **contrastive** (eq. 4): symmetric InfoNCE between media and caption features with a learnable
   temperature;
3. **matching** (eq. 5): the text tower re-reads each caption with cross-attention to the media's
   condition tokens; a two-layer head tells matched pairs from hard negatives mined from the
   contrastive similarities (one negative medium per caption, one negative caption per medium);
4. **generation** (eq. 6): 60 % of caption tokens masked, causal self-attention, cross-attention to
   the media; BERT's prediction head reconstructs the masked tokens.

The total loss is the unweighted sum of the objectives a dataset asks for.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import ModelOutput

from mico_chat.modality import MediaLayout, Modality

from .configuration_mico import MiCoEncoderConfig
from .configuration_pretraining import OBJECTIVES, MiCoPretrainingConfig
from .configuration_text import MiCoTextConfig
from .context import group_key, parse_group
from .losses import contrastive_loss, generation_loss, mask_caption_tokens, matching_loss, sample_hard_negatives
from .modeling_mico import MiCoEncoder
from .modeling_text import BertPredictionHead, MiCoTextModel

Encoded = dict[Modality, tuple[torch.Tensor, MediaLayout]]


@dataclass
class PretrainingBatch:
    """One step's input: ``N`` samples of one modality group with their captions.

    Attributes:
        group: the modalities every sample presents (``("audio", "video")`` = one joint context).
        media: ``{modality name: values}`` in the encoder's input shapes (see :class:`MiCoEncoder`).
        input_ids, attention_mask: ``(N, L)`` tokenised captions ([CLS] ... [SEP], right-padded).
        sampling_context: ``(N,)`` sampling-context ids (MiCo eq. 3) or ``None``.
        caption_ids: ``(N,)`` ids equal for identical caption texts (they are never used as each
            other's negatives), or ``None``.
        objectives: the objectives to compute, a subset of :data:`OBJECTIVES`.
        negative_input_ids, negative_attention_mask: ``(N, L')`` one hard-negative caption per
            sample (a copy of its caption wrong in one word), or ``None``; used by the contrastive
            loss as extra captions for the media->text direction.
        negative_valid: ``(N,)`` bool, False where a caption had nothing to swap (that row's
            negative is ignored).
    """

    group: tuple[Modality, ...]
    media: Mapping[str, torch.Tensor]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    sampling_context: torch.Tensor | None = None
    caption_ids: torch.Tensor | None = None
    objectives: tuple[str, ...] = OBJECTIVES
    negative_input_ids: torch.Tensor | None = None
    negative_attention_mask: torch.Tensor | None = None
    negative_valid: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> PretrainingBatch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return PretrainingBatch(
            group=self.group,
            media={k: v.to(device) for k, v in self.media.items()},
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            sampling_context=move(self.sampling_context),
            caption_ids=move(self.caption_ids),
            objectives=self.objectives,
            negative_input_ids=move(self.negative_input_ids),
            negative_attention_mask=move(self.negative_attention_mask),
            negative_valid=move(self.negative_valid),
        )


@dataclass
class PretrainingOutput(ModelOutput):
    """``loss``: sum of the computed objectives; ``losses``: each objective's value (detached);
    ``logits``: the scaled media x caption similarities of the contrastive loss ``(N, N)``."""

    loss: torch.Tensor | None = None
    losses: dict[str, torch.Tensor] | None = None
    logits: torch.Tensor | None = None


class ConditionAdapter(nn.Module):
    """Encoder tokens of one modality -> condition tokens for the text tower's cross-attention.

    Linear + LayerNorm into the text width, plus a learned embedding per segment (frame / clip)
    and one per modality (MiCo's ``hidden_trans_*``, ``*_frame_embedding``, ``*_type_embeddings``).
    """

    def __init__(self, encoder_dim: int, text_dim: int, max_segments: int):
        super().__init__()
        self.proj = nn.Linear(encoder_dim, text_dim)
        self.norm = nn.LayerNorm(text_dim, eps=1e-12)
        self.segment_embedding = nn.Embedding(max_segments, text_dim)
        self.type_embedding = nn.Parameter(torch.zeros(text_dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(N, S, T, D_enc)`` -> ``(N, S * T, D_text)``."""
        n, s, t, _ = tokens.shape
        if s > self.segment_embedding.num_embeddings:
            raise ValueError(
                f"the condition adapter's segment table covers {self.segment_embedding.num_embeddings} segments "
                f"(max_segments), the items have {s}; pretraining takes no items longer than max_segments"
            )
        x = self.norm(self.proj(tokens))  # (N, S, T, Dt)
        x = x + self.segment_embedding.weight[:s, None, :] + self.type_embedding
        return x.reshape(n, s * t, -1)


class MatchingHead(nn.Module):
    """Two-layer MLP on the [CLS] state: match / no-match logits (MiCo's ``itm_head``)."""

    def __init__(self, hidden: int, act: str = "gelu"):
        super().__init__()
        self.linear1 = nn.Linear(hidden, hidden)
        self.act = ACT2FN[act]
        self.layernorm = nn.LayerNorm(hidden, eps=1e-12)
        self.linear2 = nn.Linear(hidden, 2)

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.layernorm(self.act(self.linear1(cls))))


class MiCoForPretrainingPreTrainedModel(PreTrainedModel):
    config: MiCoPretrainingConfig
    config_class = MiCoPretrainingConfig
    base_model_prefix = "mico"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MiCoEncoderLayer", "TextLayer"]
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, MiCoForPretraining):
            init.constant_(module.logit_scale, self.config.initial_logit_scale)
        if isinstance(module, ConditionAdapter):
            init.normal_(module.type_embedding, mean=0.0, std=0.02)
        if isinstance(module, BertPredictionHead):
            init.zeros_(module.bias)


class MiCoForPretraining(MiCoForPretrainingPreTrainedModel):
    """Encoder (``encoder``), text tower (``text``), prediction head (``lm_head``) and the heads of
    the contrastive (``contrastive_heads``, ``fusion_heads``, ``text_head``, ``logit_scale``) and
    matching (``condition_adapters``, ``matching_head``) objectives.

    After pretraining, :meth:`export_encoder` gives the :class:`MiCoEncoder` the chat model uses.
    """

    def __init__(self, config: MiCoPretrainingConfig):
        super().__init__(config)
        enc, txt = config.encoder_config, config.text_config
        dim = config.contrastive_dim
        self.encoder = MiCoEncoder(enc)
        self.text = MiCoTextModel(txt)
        self.lm_head = BertPredictionHead(txt)
        self.contrastive_heads = nn.ModuleDict({m: nn.Linear(enc.pooled_size, dim, bias=False) for m in enc.modalities})
        self.fusion_heads = nn.ModuleDict(
            {g: nn.Linear(len(parse_group(g)) * enc.pooled_size, dim) for g in config.fusion_groups}
        )
        self.text_head = nn.Linear(txt.hidden_size, dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(config.initial_logit_scale))
        self.condition_adapters = nn.ModuleDict(
            {m: ConditionAdapter(enc.hidden_size, txt.hidden_size, enc.max_segments) for m in enc.modalities}
        )
        self.matching_head = MatchingHead(txt.hidden_size, txt.hidden_act)
        self.post_init()

    # ------------------------------------------------------------------ media side
    def encode_group(
        self,
        group: Sequence[Modality | str],
        media: Mapping[str, torch.Tensor],
        *,
        sampling_context: torch.Tensor | None = None,
    ) -> Encoded:
        """Encode the group's media; two or more modalities form one multimodal context (eq. 1)
        unless ``config.joint_context`` is off.

        Returns ``{modality: (features (N, S * (1 + P), D), layout)}``.
        """
        group = parse_group(group)
        missing = [m.value for m in group if m.value not in media]
        if missing:
            raise ValueError(f"group {group_key(group)} needs media for {missing}")
        inputs = {m: media[m.value] for m in group}
        features = self.encoder(
            inputs, joint=self.config.joint_context and len(group) > 1, sampling_context=sampling_context
        )
        return {
            m: (features[m], self.encoder.layout(m, self.encoder.as_segments(m, inputs[m]).shape[1])) for m in group
        }

    def media_features(self, encoded: Encoded) -> torch.Tensor:
        """Global, L2-normalised contrastive feature of each sample: ``(N, contrastive_dim)``."""
        group = tuple(encoded)
        mode = self.encoder.config.pooling
        pooled = [MiCoEncoder.pool(feats, layout, mode) for feats, layout in encoded.values()]  # [(N, pooled_size)]
        if len(group) == 1:
            z = self.contrastive_heads[group[0].value](pooled[0])
        else:
            key = group_key(group)
            if key not in self.fusion_heads:
                raise ValueError(f"no fusion head for group {key}; configured: {list(self.fusion_heads)}")
            z = self.fusion_heads[key](torch.cat(pooled, dim=-1))
        return F.normalize(z, dim=-1)

    def condition_tokens(self, encoded: Encoded) -> torch.Tensor:
        """Cross-attention inputs for the text tower: ``(N, M, D_text)``, the group's modalities concatenated."""
        parts = []
        for modality, (feats, layout) in encoded.items():
            tokens = feats.view(feats.shape[0], layout.num_segments, layout.tokens_per_segment, -1)  # (N, S, T, D)
            if self.config.condition_tokens == "cls_mean":
                tokens = torch.stack([tokens[:, :, 0], tokens[:, :, 1:].mean(2)], dim=2)  # (N, S, 2, D)
            parts.append(self.condition_adapters[modality.value](tokens))
        return torch.cat(parts, dim=1)

    # ------------------------------------------------------------------ text side
    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, sampling_context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unimodal pass: ``(hidden (N, L, D), hidden at the first cross-attention layer (N, L, D))``.

        The second is where the matching pass resumes with cross-attention: layers below it read
        the caption alone and are shared by both passes.
        """
        first = self.config.text_config.first_cross_attention_layer
        # A frozen unimodal path (a locked text tower) needs no autograd graph.
        frozen = not any(p.requires_grad for n, p in self.text.named_parameters() if ".crossattention." not in n)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            lower = self.text(input_ids, attention_mask, sampling_context=sampling_context, stop=first)
            upper = self.text.run_layers(lower, attention_mask, start=first)
        return upper, lower

    @staticmethod
    def pool_text(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
        """``(N, D)``: the [CLS] state (``"cls"``) or the mean of the real tokens' states (``"mean"``)."""
        if pooling == "mean":
            weights = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (N, L, 1)
            return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return hidden[:, 0]

    def text_features(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """L2-normalised contrastive feature of each caption: ``(N, contrastive_dim)``, from its
        [CLS] state (VAST) or the mean of its token states (``text_pooling="mean"``, the pooling
        sentence encoders such as all-MiniLM-L6-v2 are trained with)."""
        return F.normalize(self.text_head(self.pool_text(hidden, attention_mask, self.config.text_pooling)), dim=-1)

    def matching_logits(
        self, lower: torch.Tensor, attention_mask: torch.Tensor, condition: torch.Tensor
    ) -> torch.Tensor:
        """Match / no-match logits ``(P, 2)`` of captions (their hidden states at the first
        cross-attention layer, ``(P, L, D)``) against condition tokens ``(P, M, D)``; the head
        reads the [CLS] state or the token mean (``config.matching_pooling``)."""
        first = self.config.text_config.first_cross_attention_layer
        hidden = self.text.run_layers(lower, attention_mask, start=first, condition=condition)
        return self.matching_head(self.pool_text(hidden, attention_mask, self.config.matching_pooling))

    def generation_logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        condition: torch.Tensor,
        positions: torch.Tensor,
        sampling_context: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Vocabulary logits ``(K, V)`` at the ``K`` True ``positions (N, L)`` of a causal pass
        over ``input_ids`` with cross-attention to ``condition``."""
        hidden = self.text(
            input_ids, attention_mask, causal=True, condition=condition, sampling_context=sampling_context
        )  # (N, L, D)
        return self.lm_head(hidden[positions], self.text.embeddings.word_embeddings.weight)

    # ------------------------------------------------------------------ training
    def forward(self, batch: PretrainingBatch, *, generator: torch.Generator | None = None) -> PretrainingOutput:
        """Compute ``batch.objectives`` (see module docstring); ``generator`` drives the hard-negative
        draws and the caption masking."""
        unknown = set(batch.objectives) - set(OBJECTIVES)
        if unknown or not batch.objectives:
            raise ValueError(f"objectives must be a non-empty subset of {OBJECTIVES}, got {batch.objectives}")
        if "contrastive" not in batch.objectives and "matching" in batch.objectives:
            raise ValueError("matching mines its hard negatives from the contrastive similarities; add 'contrastive'")
        sc = batch.sampling_context
        encoded = self.encode_group(batch.group, batch.media, sampling_context=sc)
        losses: dict[str, torch.Tensor] = {}
        logits = None
        needs_condition = bool({"matching", "generation"} & set(batch.objectives))
        condition = self.condition_tokens(encoded) if needs_condition else None
        if "contrastive" in batch.objectives:
            hidden, lower = self.encode_text(batch.input_ids, batch.attention_mask, sc)
            media = self.media_features(encoded)
            text = self.text_features(hidden, batch.attention_mask)
            scale = self.logit_scale.clamp(max=math.log(self.config.max_logit_scale))
            negatives = None
            if batch.negative_input_ids is not None and bool(batch.negative_valid.any()):
                keep = batch.negative_valid.bool()
                neg_mask = batch.negative_attention_mask[keep]
                neg_hidden, _ = self.encode_text(
                    batch.negative_input_ids[keep], neg_mask, None if sc is None else sc[keep]
                )
                negatives = self.text_features(neg_hidden, neg_mask)
            losses["contrastive"], logits = contrastive_loss(
                media, text, scale, label_smoothing=self.config.label_smoothing, negatives=negatives
            )
            if "matching" in batch.objectives:
                losses["matching"] = self._matching_loss(batch, lower, condition, logits, generator)
        if "generation" in batch.objectives:
            losses["generation"] = self._generation_loss(batch, condition, generator)
        loss = sum(losses.values())
        return PretrainingOutput(loss=loss, losses={k: v.detach() for k, v in losses.items()}, logits=logits)

    def _matching_loss(
        self,
        batch: PretrainingBatch,
        lower: torch.Tensor,
        condition: torch.Tensor,
        logits: torch.Tensor,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        same = None
        if batch.caption_ids is not None:
            same = batch.caption_ids[:, None] == batch.caption_ids[None, :]  # identical captions
        neg_media, neg_text = self.draw_negatives(logits, same, generator)
        mask = batch.attention_mask
        lowers = torch.cat([lower, lower, lower[neg_text]])  # (3N, L, D)
        masks = torch.cat([mask, mask, mask[neg_text]])
        conditions = torch.cat([condition, condition[neg_media], condition])  # (3N, M, D)
        n = lower.shape[0]
        labels = torch.cat([torch.ones(n), torch.zeros(2 * n)]).long().to(lower.device)
        return matching_loss(self.matching_logits(lowers, masks, conditions), labels)

    def draw_negatives(
        self, logits: torch.Tensor, same: torch.Tensor | None, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(negative medium per caption (N,), negative caption per medium (N,))``: drawn by
        ``softmax`` of the contrastive ``logits (N media, N captions)`` (``matching_negatives="hard"``)
        or uniformly (``"random"``); never the positive, never an identical caption (``same``)."""
        if self.config.matching_negatives == "random":
            logits = torch.zeros_like(logits)  # a uniform softmax over the allowed columns
        neg_media = sample_hard_negatives(logits.T, same, generator=generator)  # per caption: a medium
        neg_text = sample_hard_negatives(logits, same, generator=generator)  # per medium: a caption
        return neg_media, neg_text

    def _generation_loss(
        self, batch: PretrainingBatch, condition: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        masked, labels = mask_caption_tokens(
            batch.input_ids,
            batch.attention_mask,
            mask_prob=self.config.generation_mask_prob,
            mask_token_id=self.config.mask_token_id,
            random_token_range=(self.config.random_token_start, self.config.text_config.vocab_size),
            generator=generator,
        )
        positions = labels != -100
        logits = self.generation_logits(masked, batch.attention_mask, condition, positions, batch.sampling_context)
        return generation_loss(logits, labels[positions])

    # ------------------------------------------------------------------ inference
    def sampling_context_for(self, group: Sequence[Modality | str], n: int) -> torch.Tensor | None:
        """The sampling-context ids ``(n,)`` the group was trained with, or ``None`` when it has none."""
        index = self.config.group_sampling_contexts.get(group_key(parse_group(group)))
        if index is None or self.config.encoder_config.num_sampling_contexts == 0:
            return None
        return torch.full((n,), index, dtype=torch.long, device=self.logit_scale.device)

    @torch.no_grad()
    def embed_media(
        self, group: Sequence[Modality | str], media: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Retrieval features of media items: ``(features (N, C), condition tokens (N, M, D_text))``."""
        n = next(iter(media.values())).shape[0]
        encoded = self.encode_group(group, media, sampling_context=self.sampling_context_for(group, n))
        return self.media_features(encoded), self.condition_tokens(encoded)

    @torch.no_grad()
    def embed_text(
        self, group: Sequence[Modality | str], input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Retrieval features of captions: ``(features (N, C), hidden at the first cross-attention layer)``."""
        hidden, lower = self.encode_text(
            input_ids, attention_mask, self.sampling_context_for(group, input_ids.shape[0])
        )
        return self.text_features(hidden, attention_mask), lower

    @torch.no_grad()
    def match_probability(
        self, lower: torch.Tensor, attention_mask: torch.Tensor, condition: torch.Tensor
    ) -> torch.Tensor:
        """Probability ``(P,)`` that each caption matches its condition tokens (the matching head)."""
        return torch.softmax(self.matching_logits(lower, attention_mask, condition).float(), dim=-1)[:, 1]

    def export_encoder(self, *, fold_sampling_contexts: bool = True) -> MiCoEncoder:
        """A standalone copy of the encoder for the chat model.

        With ``fold_sampling_contexts`` each single-modality group's sampling-context embedding
        is added into that modality's embedding (both are added to every token of the modality,
        so single-modality encodings are unchanged) and the sampling table is dropped: the chat
        model, which passes no sampling context, then sees the features retrieval used.
        """
        config = MiCoEncoderConfig(**self.config.encoder_config.to_dict())
        state = {k: v.detach().clone() for k, v in self.encoder.state_dict().items()}
        if fold_sampling_contexts and config.num_sampling_contexts > 0:
            table = state.pop("sampling_embedding.weight")
            for index, modality in enumerate(config.modalities):
                sc = self.config.group_sampling_contexts.get(modality)
                if sc is not None:
                    state["modality_embedding.weight"][index] += table[sc]
            config.num_sampling_contexts = 0
        encoder = MiCoEncoder(config)
        encoder.load_state_dict(state)
        return encoder.eval()


def build_pretraining_model(
    encoder: MiCoEncoderConfig | Mapping,
    text: MiCoTextConfig | str | os.PathLike,
    *,
    tokenizer=None,
    text_overrides: Mapping | None = None,
    seed: int = 0,
    **config_fields,
) -> MiCoForPretraining:
    """A pretraining model with a fresh encoder and a text tower from a BERT folder or a config.

    Args:
        encoder: encoder config or its dict (``{"preset": "tiny", ...}`` picks a preset shape).
        text: a Hugging Face BERT folder (e.g. all-MiniLM-L6-v2) whose weights initialise the
            tower, or a :class:`MiCoTextConfig` for a freshly initialised one.
        tokenizer: when given, its [MASK] id and first ordinary word-piece id fill the config.
        text_overrides: text-config fields to change (``cross_attention_layers``, dropouts, ...).
        seed: seeds the initialisation of everything not loaded from the BERT folder.
        config_fields: other :class:`MiCoPretrainingConfig` fields.
    """
    if not isinstance(encoder, MiCoEncoderConfig):
        spec = dict(encoder)
        preset = spec.pop("preset", None)
        encoder = MiCoEncoderConfig.from_preset(preset, **spec) if preset else MiCoEncoderConfig(**spec)
    text_model = None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if isinstance(text, MiCoTextConfig):
            text_config = MiCoTextConfig(**{**text.to_dict(), **dict(text_overrides or {})})
        else:
            text_model, _ = MiCoTextModel.from_bert(text, **dict(text_overrides or {}))
            text_config = text_model.config
        if tokenizer is not None:
            config_fields.setdefault("mask_token_id", tokenizer.mask_token_id)
            config_fields.setdefault("random_token_start", first_plain_token_id(tokenizer))
        config = MiCoPretrainingConfig(encoder_config=encoder, text_config=text_config, **config_fields)
        model = MiCoForPretraining(config)
    if text_model is not None:
        model.text.load_state_dict(text_model.state_dict())
    return model


def first_plain_token_id(tokenizer) -> int:
    """The first vocabulary id that is neither a special token nor a BERT ``[unusedN]`` slot."""
    special = set(tokenizer.all_special_ids)
    vocab = tokenizer.get_vocab()
    for token, index in sorted(vocab.items(), key=lambda kv: kv[1]):
        if index not in special and not (token.startswith("[") and token.endswith("]")):
            return index
    raise ValueError("the tokenizer has no ordinary token")
