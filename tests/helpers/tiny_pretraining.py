"""Tiny parts for pretraining tests: a WordPiece tokenizer trained in milliseconds, tiny encoder and
text configs, and a model built with the real builder."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertTokenizerFast

from mico_chat.encoders import MiCoTextConfig, build_pretraining_model

CAPTIONS = [
    "a red circle moves to the left on a black background",
    "two small green squares move up slowly on a white background",
    "three large blue triangles stay still on a gray background",
    "a yellow cross moves down fast and disappears",
    "high beeps three times right away",
    "a low rising chirp after a pause",
    "noise bursts twice, then silence",
    "someone says hello there",
]

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_bert_tokenizer() -> BertTokenizerFast:
    """Uncased WordPiece over :data:`CAPTIONS` with BERT's special tokens ([PAD] = 0)."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(CAPTIONS * 3, trainers.WordPieceTrainer(vocab_size=200, special_tokens=SPECIAL))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return BertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
    )


TINY_PT_ENCODER = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    image_size=16,
    patch_size=8,
    audio_num_mel_bins=16,
    audio_target_length=32,
    audio_patch_size=8,
    max_segments=4,
    modalities=["video", "audio", "image"],
    num_sampling_contexts=3,
)


def tiny_text_config(vocab_size: int, **overrides) -> MiCoTextConfig:
    fields = dict(
        vocab_size=vocab_size,
        hidden_size=24,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        cross_attention_layers=[1, 2],
        num_sampling_contexts=3,
    )
    return MiCoTextConfig(**{**fields, **overrides})


def tiny_pretraining_model(seed: int = 0, **fields):
    """``(model, tokenizer)``: a tiny :class:`MiCoForPretraining` in train mode."""
    tokenizer = tiny_bert_tokenizer()
    model = build_pretraining_model(
        TINY_PT_ENCODER,
        tiny_text_config(len(tokenizer)),
        tokenizer=tokenizer,
        seed=seed,
        **{"contrastive_dim": 16, "fusion_groups": ["audio+video"], "max_text_length": 32, **fields},
    )
    return model, tokenizer
