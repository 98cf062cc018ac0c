"""``MiCoChatConfig``: encoder + one connector per modality + LLM, with the prompt format."""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from mico_chat.connectors import ConnectorConfig, GatedXAttnConfig, connector_class
from mico_chat.encoders import MiCoEncoderConfig
from mico_chat.modality import MediaLayout, Modality

from .templates import TEMPLATES


class MiCoChatConfig(PreTrainedConfig):
    r"""Configuration of :class:`~mico_chat.modeling.MiCoChatForConditionalGeneration`.

    Args:
        encoder_config: the omni-modal encoder (:class:`MiCoEncoderConfig` or its dict).
        text_config: the LLM's config (any causal LM ``AutoConfig`` knows; LLaMA by default).
        connectors: ``{modality: ConnectorConfig dict}``; modalities without an entry get the
            default ``mlp2x_gelu`` over all tokens.
        media_token_ids: ``{modality: token id}`` of the placeholder tokens in the LLM's vocabulary
            (filled when the tokenizer is extended, see :func:`mico_chat.builder.build_model`).
        chat_template: name of the prompt format in :data:`mico_chat.templates.TEMPLATES`.
        system_prompt: system message put first in every conversation that has none, at training and
            at inference alike (``None``: the template's own default, e.g. SmolLM2's 20-token one).
        llm_name_or_path: where the LLM weights came from (a known name or a folder); recorded so a
            checkpoint that stores only the non-LLM weights can be completed.
        gated_xattn: a :class:`~mico_chat.connectors.GatedXAttnConfig` dict to bring media in through
            gated cross-attention adapters in the LLM's decoder layers instead of as tokens: the
            processor then puts no media tokens in the text (:meth:`num_media_tokens` is 0) and
            the per-modality connectors are not used. ``None`` (default): media as tokens.
        grey_views: modalities with colour input (``video``, ``image``) whose items the model also
            reads in grey: the encoder runs a second time on the frames with each pixel's channel
            mean in every channel, and the connector's tokens of that colour-free view follow the
            item's own (twice the item's tokens). Where training pairs colours with shapes, an
            encoder's features of colour frames can hold shape only together with colour, while its
            features of grey frames hold it alone (docs/default_model.md).
    """

    model_type = "mico_chat"
    sub_configs_defaults = {
        "encoder_config": SubConfigSpec(MiCoEncoderConfig),
        "text_config": SubConfigSpec(AutoConfig, model_type="llama"),
    }

    encoder_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    connectors: dict | None = None
    media_token_ids: dict | None = None
    chat_template: str = "llm"
    system_prompt: str | None = None
    llm_name_or_path: str | None = None
    tie_word_embeddings: bool = False
    gated_xattn: dict | None = None
    grey_views: list | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # Tied input/output embeddings are a property of the LLM (SmolLM2 ties them); mirror it.
        if self.text_config.tie_word_embeddings:
            self.tie_word_embeddings = True
        connectors = dict(self.connectors or {})
        for modality in self.encoder_config.modalities:
            connectors.setdefault(modality, ConnectorConfig().to_dict())
        unknown = set(connectors) - set(self.encoder_config.modalities)
        if unknown:
            raise ValueError(f"connectors for {sorted(unknown)} but the encoder reads {self.encoder_config.modalities}")
        self.connectors = {m: ConnectorConfig.from_dict(c).to_dict() for m, c in connectors.items()}
        self.media_token_ids = {str(Modality.parse(m)): int(i) for m, i in (self.media_token_ids or {}).items()}
        if self.gated_xattn is not None:
            self.gated_xattn = GatedXAttnConfig.from_dict(self.gated_xattn).to_dict()
        self.set_grey_views(self.grey_views or [])
        if self.chat_template not in TEMPLATES:
            raise ValueError(f"unknown chat_template {self.chat_template!r}; registered: {', '.join(TEMPLATES)}")

    def set_grey_views(self, modalities: list[str]) -> None:
        """Set ``grey_views`` (see the class docstring), checking each is a colour input."""
        views = sorted({Modality.parse(m).value for m in modalities})
        for m in views:
            if m not in self.encoder_config.modalities or Modality(m).input_kind != "rgb":
                raise ValueError(f"grey_views: {m} is not a colour input of this encoder ({self.encoder_config.modalities})")
        if views and self.gated_xattn is not None:
            raise ValueError("grey_views adds media tokens; gated_xattn models have none")
        self.grey_views = views

    @property
    def modalities(self) -> list[Modality]:
        return [Modality.parse(m) for m in self.encoder_config.modalities]

    @property
    def context_length(self) -> int | None:
        """The LLM's context in tokens (``text_config.max_position_embeddings``); ``None`` when its config has none."""
        return getattr(self.text_config, "max_position_embeddings", None)

    def connector_config(self, modality: str | Modality) -> ConnectorConfig:
        modality = Modality.parse(modality)
        if modality.value not in self.connectors:
            raise ValueError(f"this model has no connector for {modality}; it reads {', '.join(self.connectors)}")
        return ConnectorConfig.from_dict(self.connectors[modality.value])

    def num_media_tokens(self, modality: str | Modality, num_segments: int) -> int:
        """How many LLM tokens one ``modality`` item with ``num_segments`` segments becomes (1 with
        ``gated_xattn``: the media reach the LLM through its adapters, and the one placeholder token
        only marks where the item stands, whatever its number of frames); twice the connector's
        tokens for a modality in ``grey_views``."""
        layout: MediaLayout = self.encoder_config.layout(modality, num_segments)
        if self.gated_xattn is not None:
            return 1
        config = self.connector_config(modality)
        views = 2 if Modality.parse(modality).value in self.grey_views else 1
        return views * connector_class(config.type).num_tokens(config, layout)


# Auto classes (AutoConfig, and AutoTokenizer reading a saved folder) know this model type.
AutoConfig.register(MiCoChatConfig.model_type, MiCoChatConfig, exist_ok=True)
