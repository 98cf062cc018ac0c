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


# Long video (docs/connectors.md, "Long video"): frames encoded 16 at a time with chunk-local
# context embeddings, up to 512 per item; a resampler reads them all and emits 8 tokens, its time
# table (16 rows) interpolated for longer items.
LONG_VIDEO_ENCODER = {**TINY_ENCODER, "frame_chunk_size": 16, "context_index": "chunk", "max_long_segments": 512}
LONG_VIDEO_CONNECTORS = {
    **TINY_CONNECTORS,
    "video": {"type": "resampler", "num_queries": 8, "depth": 1, "heads": 4, "time_embed": True, "max_frames": 16,
              "time_index": "interpolate"},
}


def tiny_model(
    chat_template: str = "llm",
    seed: int = 0,
    gated_xattn: dict | None = None,
    encoder: dict | None = None,
    connectors: dict | None = None,
    **settings,
):
    """``(model, processor)`` from :func:`mico_chat.builder.build_model` with tiny parts
    (``gated_xattn``: with gated cross-attention adapters, see ``connectors/gated_xattn.py``;
    ``encoder``/``connectors``: e.g. :data:`LONG_VIDEO_ENCODER`, :data:`LONG_VIDEO_CONNECTORS`;
    ``None``: :data:`TINY_ENCODER`, :data:`TINY_CONNECTORS`, read at call time so tests may patch them)."""
    from mico_chat.builder import build_model
    from mico_chat.preprocess import MediaSettings

    tokenizer = tiny_tokenizer()
    llm = tiny_llm(len(tokenizer), seed=seed)
    return build_model(
        llm,
        tokenizer=tokenizer,
        encoder=TINY_ENCODER if encoder is None else encoder,
        connectors=TINY_CONNECTORS if connectors is None else connectors,
        chat_template=chat_template,
        settings=MediaSettings(**{"num_frames": 4, **settings}),
        seed=seed,
        llm_name="tiny-llama",
        gated_xattn=gated_xattn,
    )


def preset_recipe(folder, *overrides: str, stage: str = "stage1_align"):
    """A ``TrainRecipe`` over a tiny preset (a saved tiny LLaMA, :data:`TINY_ENCODER`,
    :data:`TINY_CONNECTORS`, 4 frames) with stage-config ``overrides``, e.g. a connector chosen as
    ``model.connectors={video: {type: resampler}}``: how a user picks one per stage."""
    import json
    from pathlib import Path

    from mico_chat.training import TrainRecipe, config_from_dict

    folder = Path(folder)
    tokenizer = tiny_tokenizer()
    tiny_llm(len(tokenizer)).save_pretrained(folder / "llm")
    tokenizer.save_pretrained(folder / "llm")
    preset = folder / "tiny_preset.json"
    spec = {"llm": str(folder / "llm"), "encoder": TINY_ENCODER, "connectors": TINY_CONNECTORS}
    preset.write_text(json.dumps({**spec, "media_settings": {"num_frames": 4}}))
    base = {
        "stage": stage,
        "model": {"preset": str(preset)},
        "data": {"train": ["unused.jsonl"]},
        "train": {"output_dir": str(folder / "run")},
    }
    return TrainRecipe(config_from_dict(base, list(overrides)), progress=False)


def assert_reloads_identically(model, processor, conversation, folder, connector_class) -> None:
    """Save ``model`` and ``processor`` to ``folder``, load them back, and check that the video
    connector keeps its class, config and tensors, the processor its token ids, the model its logits."""
    from mico_chat.loading import load_folder

    batch = processor(conversation)
    with torch.no_grad():
        before = model(**batch).logits
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    loaded, loaded_processor = load_folder(folder, dtype=torch.float32)
    assert isinstance(loaded.connectors["video"], connector_class)
    assert loaded.config.connector_config("video") == model.config.connector_config("video")
    for name, tensor in model.connectors["video"].state_dict().items():
        assert torch.equal(loaded.connectors["video"].state_dict()[name], tensor), name
    again = loaded_processor(conversation)
    assert torch.equal(again["input_ids"], batch["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(**again).logits, before)
