"""Configuration of the BERT-style text tower used for MiCo pretraining and retrieval."""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig


class MiCoTextConfig(PreTrainedConfig):
    r"""A BERT encoder (post-LayerNorm, absolute positions) with optional cross-attention layers.

    The BERT fields mean what they mean in ``transformers.BertConfig``, so a BERT checkpoint's
    ``config.json`` (e.g. all-MiniLM-L6-v2) converts field by field (:meth:`from_bert_config`).

    Args:
        cross_attention_layers: indices of the layers that get a cross-attention block (VAST
            section 4.2: the text encoder attends to the media features for matching and
            generation). ``None`` means every layer, as VAST does; ``[]`` none. Layers below the
            first cross-attention layer are *unimodal*: their output for a caption is the same in
            the contrastive and the matching pass, so the pretraining model computes them once.
        num_sampling_contexts: size of the text-side sampling-context table (MiCo eq. 3, the
            ``E_Sam`` added to caption embeddings); 0 disables it.
    """

    model_type = "mico_text"

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    cross_attention_layers: list[int] | None = None
    num_sampling_contexts: int = 0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}"
            )
        if self.cross_attention_layers is None:
            self.cross_attention_layers = list(range(self.num_hidden_layers))
        layers = sorted({int(i) for i in self.cross_attention_layers})
        bad = [i for i in layers if not 0 <= i < self.num_hidden_layers]
        if bad:
            raise ValueError(f"cross_attention_layers {bad} outside 0..{self.num_hidden_layers - 1}")
        self.cross_attention_layers = layers

    @property
    def first_cross_attention_layer(self) -> int:
        """Index of the first layer with cross-attention (``num_hidden_layers`` when there is none)."""
        return self.cross_attention_layers[0] if self.cross_attention_layers else self.num_hidden_layers

    @classmethod
    def from_bert_config(cls, bert: dict | PreTrainedConfig, **overrides) -> MiCoTextConfig:
        """The tower config for a BERT checkpoint's config (a dict or a ``BertConfig``)."""
        data = bert.to_dict() if isinstance(bert, PreTrainedConfig) else dict(bert)
        if data.get("model_type", "bert") != "bert":
            raise ValueError(f"expected a BERT config, got model_type {data.get('model_type')!r}")
        if data.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("only absolute position embeddings are supported")
        fields = (
            "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
            "type_vocab_size", "initializer_range", "layer_norm_eps", "pad_token_id",
        )  # fmt: skip
        return cls(**{**{k: data[k] for k in fields if k in data}, **overrides})


# Auto classes (AutoConfig, and AutoTokenizer reading a saved folder) know this model type.
AutoConfig.register(MiCoTextConfig.model_type, MiCoTextConfig, exist_ok=True)
