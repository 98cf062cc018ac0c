"""Tiny components for fast tests: a byte-level BPE tokenizer with a ChatML template, a tiny LLaMA,
a tiny encoder config, and a model assembled from them with the real builder."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "What is the capital of France? The capital of France is Paris.",
    "A red square moves from left to right on a blue background while a tone beeps three times.",
    "How many beeps do you hear? I hear three beeps. What colour is the circle? The circle is green.",
    "USER: ASSISTANT: system user assistant hello world video audio image depth normal",
] * 4


def tiny_tokenizer(vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained in milliseconds; EOS/pad ``<|im_end|>``, BOS ``<s>``, ChatML template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<s>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
    )
    fast.chat_template = CHATML
    return fast


def tiny_llm(vocab_size: int, seed: int = 0, tie: bool = True) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=tie,
        bos_token_id=1,
        eos_token_id=3,
        pad_token_id=3,
        initializer_range=0.4,  # large enough that greedy decoding of a random model varies its tokens
    )
    torch.manual_seed(seed)
    # sdpa, as from_pretrained picks: a saved-and-reloaded model must compute identically.
    return LlamaForCausalLM._from_config(config, attn_implementation="sdpa").eval()


TINY_ENCODER = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    image_size=32,
    patch_size=8,
    audio_num_mel_bins=32,
    audio_target_length=64,
    audio_patch_size=16,
    max_segments=16,
)

TINY_CONNECTORS = {
    "video": {"type": "mlp2x_gelu", "tokens": "all", "pool": 2},
    "audio": {"type": "linear", "tokens": "cls"},
    "image": {"type": "mlp2x_gelu", "tokens": "all"},
}


def tiny_model(chat_template: str = "llm", seed: int = 0, gated_xattn: dict | None = None, **settings):
    """``(model, processor)`` from :func:`mico_chat.builder.build_model` with tiny parts
    (``gated_xattn``: with gated cross-attention adapters, see ``connectors/gated_xattn.py``)."""
    from mico_chat.builder import build_model
    from mico_chat.preprocess import MediaSettings

    tokenizer = tiny_tokenizer()
    llm = tiny_llm(len(tokenizer), seed=seed)
    return build_model(
        llm,
        tokenizer=tokenizer,
        encoder=TINY_ENCODER,
        connectors=TINY_CONNECTORS,
        chat_template=chat_template,
        settings=MediaSettings(**{"num_frames": 4, **settings}),
        seed=seed,
        llm_name="tiny-llama",
        gated_xattn=gated_xattn,
    )
