"""The BERT-style text tower of MiCo pretraining (VAST section 4.2, MiCo section 3.4).

One BERT encoder serves three passes:

- **unimodal** (contrastive): bidirectional self-attention over a caption, no media; the [CLS]
  state is the caption's global feature;
- **matching**: the same caption, with cross-attention layers attending to media condition tokens;
- **generation**: 60 % of the caption masked, *causal* self-attention (a token sees only the
  tokens before it) plus cross-attention; masked tokens are predicted by the BERT prediction head.

Parameter names follow ``transformers``' ``BertModel`` (``embeddings.*``, ``encoder.layer.N.*``,
``crossattention.*``), so BERT checkpoints such as all-MiniLM-L6-v2 load key for key and
checkpoints of VAST/MiCo's BERT map one to one. Unlike ``BertModel`` the causal mask is chosen per
call, not fixed by the config, because one tower runs both bidirectional and causal passes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer

from .configuration_text import MiCoTextConfig


class ZeroInitEmbedding(nn.Embedding):
    """An embedding table initialised to zeros (a new sampling context starts as a no-op)."""


class TextEmbeddings(nn.Module):
    """Word + absolute position + token-type (+ sampling-context, MiCo eq. 3) embeddings, LayerNorm, dropout."""

    def __init__(self, config: MiCoTextConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)  # E'_pos
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.sampling_embedding = (
            ZeroInitEmbedding(config.num_sampling_contexts, config.hidden_size)
            if config.num_sampling_contexts > 0
            else None
        )
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, sampling_context: torch.Tensor | None = None) -> torch.Tensor:
        length = input_ids.shape[1]
        if length > self.position_embeddings.num_embeddings:
            raise ValueError(
                f"text of {length} tokens; the tower has {self.position_embeddings.num_embeddings} positions"
            )
        x = self.word_embeddings(input_ids)  # (B, L, D)
        x = x + self.position_embeddings.weight[:length] + self.token_type_embeddings.weight[0]
        if sampling_context is not None:
            if self.sampling_embedding is None:
                raise ValueError("sampling_context given but the text tower has num_sampling_contexts=0")
            x = x + self.sampling_embedding(sampling_context)[:, None, :]  # E'_Sam, one per caption
        return self.dropout(self.LayerNorm(x))


class TextAttentionCore(nn.Module):
    """Query/key/value projections and scaled dot-product attention (``BertSelfAttention``'s names)."""

    def __init__(self, config: MiCoTextConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.dropout = config.attention_probs_dropout_prob
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``x (B, L, D)`` attends to ``context (B, M, D)``; ``mask`` broadcasts to ``(B, H, L, M)``, True = attend."""
        b, length, _ = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, t.shape[1], self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, *, hd)

        out = F.scaled_dot_product_attention(
            heads(self.query(x)),
            heads(self.key(context)),
            heads(self.value(context)),
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
        )  # (B, H, L, hd)
        return out.transpose(1, 2).reshape(b, length, -1)


class TextAttentionOutput(nn.Module):
    def __init__(self, config: MiCoTextConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, attended: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(attended)) + residual)  # post-LN, as BERT


class TextAttention(nn.Module):
    """Attention block: ``self`` (the core) and ``output`` (projection + residual + LayerNorm)."""

    def __init__(self, config: MiCoTextConfig):
        super().__init__()
        self.self = TextAttentionCore(config)
        self.output = TextAttentionOutput(config)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(x, context, mask), x)


class TextIntermediate(nn.Module):
    def __init__(self, config: MiCoTextConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class TextOutput(nn.Module):
    def __init__(self, config: MiCoTextConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class TextLayer(GradientCheckpointingLayer):
    """Self-attention, optional cross-attention to media condition tokens, feed-forward."""

    def __init__(self, config: MiCoTextConfig, cross_attention: bool):
        super().__init__()
        self.attention = TextAttention(config)
        self.crossattention = TextAttention(config) if cross_attention else None
        self.intermediate = TextIntermediate(config)
        self.output = TextOutput(config)

    def forward(
        self,
        hidden: torch.Tensor,
        self_mask: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
        condition_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hidden = self.attention(hidden, hidden, self_mask)
        if condition is not None and self.crossattention is not None:
            hidden = self.crossattention(hidden, condition, condition_mask)
        return self.output(self.intermediate(hidden), hidden)


class TextEncoder(nn.Module):
    def __init__(self, config: MiCoTextConfig):
        super().__init__()
        cross = set(config.cross_attention_layers)
        self.layer = nn.ModuleList([TextLayer(config, i in cross) for i in range(config.num_hidden_layers)])


class MiCoTextPreTrainedModel(PreTrainedModel):
    config: MiCoTextConfig
    config_class = MiCoTextConfig
    base_model_prefix = "text"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["TextLayer"]
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, ZeroInitEmbedding):
            init.zeros_(module.weight)


class MiCoTextModel(MiCoTextPreTrainedModel):
    """BERT encoder whose passes choose their mask and whether to attend to media.

    ``forward(input_ids, attention_mask) -> (B, L, D)`` hidden states; ``[:, 0]`` is the [CLS]
    feature. See :meth:`forward` for the causal and cross-attention options and :meth:`run_layers`
    for resuming from an intermediate layer.
    """

    def __init__(self, config: MiCoTextConfig):
        super().__init__(config)
        self.embeddings = TextEmbeddings(config)
        self.encoder = TextEncoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embeddings.word_embeddings = value

    @staticmethod
    def self_attention_mask(attention_mask: torch.Tensor | None, length: int, causal: bool) -> torch.Tensor | None:
        """``(B, L)`` padding mask (1 = token) -> boolean ``(B, 1, L, L)`` (True = may attend), or None."""
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]  # (B, 1, 1, L) keys
        if causal:
            device = None if attention_mask is None else attention_mask.device
            tril = torch.ones(length, length, dtype=torch.bool, device=device).tril()[None, None]  # (1, 1, L, L)
            mask = tril if mask is None else mask & tril
        return mask

    def run_layers(
        self,
        hidden: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        start: int = 0,
        stop: int | None = None,
        causal: bool = False,
        condition: torch.Tensor | None = None,
        condition_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run layers ``start .. stop - 1`` on ``hidden (B, L, D)``.

        Args:
            attention_mask: ``(B, L)`` 1 for tokens, 0 for padding.
            causal: each token attends only to itself and earlier tokens (generation pass).
            condition: ``(B, M, D)`` media condition tokens for the cross-attention layers.
            condition_mask: ``(B, M)`` 1 for condition tokens, 0 for padding (default: all valid).
        """
        self_mask = self.self_attention_mask(attention_mask, hidden.shape[1], causal)
        cond_mask = None if condition_mask is None else condition_mask.bool()[:, None, None, :]
        for layer in self.encoder.layer[start:stop]:
            hidden = layer(hidden, self_mask, condition, cond_mask)
        return hidden

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        causal: bool = False,
        condition: torch.Tensor | None = None,
        condition_mask: torch.Tensor | None = None,
        sampling_context: torch.Tensor | None = None,
        stop: int | None = None,
    ) -> torch.Tensor:
        """Hidden states ``(B, L, D)`` of ``input_ids (B, L)`` after layer ``stop - 1`` (default: all).

        ``sampling_context (B,)`` adds the text-side sampling-context embedding (MiCo eq. 3).
        """
        hidden = self.embeddings(input_ids, sampling_context)  # (B, L, D)
        return self.run_layers(
            hidden,
            attention_mask,
            stop=stop,
            causal=causal,
            condition=condition,
            condition_mask=condition_mask,
        )

    @classmethod
    def from_bert(cls, path: str | os.PathLike, **overrides) -> tuple[MiCoTextModel, list[str]]:
        """Load a Hugging Face BERT folder (``config.json`` + ``model.safetensors``).

        ``overrides`` change config fields (e.g. ``cross_attention_layers=[4, 5]``,
        ``num_sampling_contexts=3``, dropouts). Returns the model and the names of the parameters
        the checkpoint did not have (cross-attention, sampling embeddings), which keep their fresh
        initialisation. A checkpoint key that fits nothing, or a shape mismatch, raises.
        """
        from safetensors.torch import load_file

        folder = Path(path)
        config_file, weights_file = folder / "config.json", folder / "model.safetensors"
        for needed in (config_file, weights_file):
            if not needed.is_file():
                raise FileNotFoundError(f"{needed}: missing; expected a Hugging Face BERT folder")
        config = MiCoTextConfig.from_bert_config(json.loads(config_file.read_text()), **overrides)
        model = cls(config)
        state = load_file(str(weights_file))
        prefix = "bert."  # BertForMaskedLM-style checkpoints nest the encoder
        state = {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state.items()}
        ignored = ("embeddings.position_ids", "embeddings.token_type_ids", "pooler.")
        state = {k: v for k, v in state.items() if not k.startswith(ignored) and not k.startswith("cls.")}
        own = model.state_dict()
        unknown = sorted(set(state) - set(own))
        if unknown:
            raise ValueError(f"{weights_file}: {len(unknown)} tensors fit no text-tower parameter, e.g. {unknown[:3]}")
        for key, value in state.items():
            if tuple(value.shape) != tuple(own[key].shape):
                raise ValueError(
                    f"{weights_file}: {key} has shape {tuple(value.shape)}, the tower has {tuple(own[key].shape)}"
                )
        model.load_state_dict(state, strict=False)
        return model, sorted(set(own) - set(state))


class PredictionTransform(nn.Module):
    def __init__(self, config: MiCoTextConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(x)))


class BertPredictionHead(nn.Module):
    """BERT's vanilla prediction layer (dense + act + LayerNorm, then the word embeddings transposed).

    Names follow ``cls.predictions`` of ``BertForMaskedLM``: ``transform.dense``,
    ``transform.LayerNorm``, ``bias``; the decoder weight is the text tower's word-embedding matrix,
    passed at call time, so nothing needs tying.
    """

    def __init__(self, config: MiCoTextConfig):
        super().__init__()
        self.transform = PredictionTransform(config)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        """``hidden (..., D)`` -> vocabulary logits ``(..., V)``."""
        return F.linear(self.transform(hidden), word_embeddings, self.bias)
