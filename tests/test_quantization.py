"""4-bit / 8-bit loading (bitsandbytes) and multi-device placement of the LLM."""

from __future__ import annotations

import pytest
import torch

from mico_chat.api import ChatModel
from mico_chat.loading import llm_placement

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def test_placement_arguments():
    assert llm_placement(None, None, torch.device("cpu"), torch.float32) == {}
    four = llm_placement("4bit", None, torch.device("cpu"), torch.float32)
    config = four["quantization_config"]
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_compute_dtype == torch.float32
    assert set(config.llm_int8_skip_modules) == {"lm_head", "encoder", "connectors"}
    assert four["device_map"] == {"": "cpu"}
    eight = llm_placement("8bit", "auto", torch.device("cuda"), torch.bfloat16)
    assert eight["quantization_config"].load_in_8bit and eight["device_map"] == "auto"
    assert llm_placement(None, "auto", torch.device("cuda"), torch.bfloat16) == {"device_map": "auto"}
    with pytest.raises(ValueError, match="4bit"):
        llm_placement("3bit", None, torch.device("cpu"), torch.float32)


@pytest.mark.slow
@pytest.mark.parametrize(("quantization", "layer"), [("4bit", "Linear4bit"), ("8bit", "Linear8bitLt")])
def test_quantized_default_still_knows_paris(quantization, layer):
    chat = ChatModel.load("default", quantization=quantization, device="cpu")
    llm = chat.model.language_model
    assert type(llm.model.layers[0].mlp.down_proj).__name__ == layer
    assert type(llm.lm_head).__name__ == "Linear"  # kept in full precision
    # LLM.int8 computes in float16 only, so an 8-bit model runs in float16 throughout.
    expected = torch.float16 if quantization == "8bit" else torch.float32
    assert next(chat.model.encoder.parameters()).dtype == expected and chat.model.get_input_embeddings().weight.dtype == expected
    assert "Paris" in chat.chat(FRANCE, max_new_tokens=8)


@pytest.mark.gpu
@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_quantized_default_on_a_gpu(quantization):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    chat = ChatModel.load("default", quantization=quantization, device="cuda")
    assert chat.device.type == "cuda" and chat.model.get_input_embeddings().weight.device.type == "cuda"
    assert "Paris" in chat.chat(FRANCE, max_new_tokens=12)


@pytest.mark.gpu
def test_device_map_spreads_the_llm_over_gpus():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two or more GPUs")
    chat = ChatModel.load("default", device_map="balanced", dtype="bfloat16")
    devices = set(chat.model.language_model.hf_device_map.values())
    assert len(devices) >= 2, chat.model.language_model.hf_device_map
    assert chat.device == chat.model.get_input_embeddings().weight.device
    assert "Paris" in chat.chat(FRANCE, max_new_tokens=12)


@pytest.mark.parametrize(("quantization", "layer"), [("4bit", "Linear4bit"), ("8bit", "Linear8bitLt")])
def test_a_saved_folder_loads_quantized_with_encoder_and_connectors_kept(tmp_path, quantization, layer):
    from helpers.tiny import TINY_CONNECTORS, TINY_ENCODER, tiny_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    from mico_chat.builder import build_model

    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, bos_token_id=1, eos_token_id=3, pad_token_id=3,
    )  # fmt: skip  (bitsandbytes' CPU kernels want widths that are multiples of 64)
    torch.manual_seed(0)
    llm = LlamaForCausalLM._from_config(config, attn_implementation="sdpa").eval()
    model, processor = build_model(llm, tokenizer=tokenizer, encoder=TINY_ENCODER, connectors=TINY_CONNECTORS, llm_name="tiny-128")
    ChatModel(model, processor).save_pretrained(tmp_path)
    full = ChatModel.load(tmp_path, device="cpu")
    quantized = ChatModel.load(tmp_path, device="cpu", quantization=quantization)
    assert type(quantized.model.language_model.model.layers[0].mlp.up_proj).__name__ == layer
    kept = {type(m).__name__ for name, m in quantized.model.named_modules() if name.startswith(("encoder", "connectors"))}
    assert not any("4bit" in k or "8bit" in k for k in kept)
    dtype = next(quantized.model.encoder.parameters()).dtype  # float16 for 8-bit (LLM.int8's only dtype)
    for name, tensor in quantized.model.encoder.state_dict().items():
        assert torch.equal(tensor, full.model.encoder.state_dict()[name].to(dtype)), name
    inputs = full._inputs([[{"role": "user", "content": "hello world"}]])
    with torch.no_grad():
        a = full.model(**inputs).logits[0, -1].float()
        b = quantized.model(**inputs).logits[0, -1].float()
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.95  # same model, quantization noise only
