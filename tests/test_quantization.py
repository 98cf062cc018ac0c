"""4-bit / 8-bit loading (bitsandbytes) and multi-device placement of the LLM."""

from __future__ import annotations

import pytest
import torch

from mico_chat.api import ChatModel, llm_placement

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
    assert eight["dtype"] == torch.float16  # LLM.int8 computes in float16
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
    assert next(chat.model.encoder.parameters()).dtype == torch.float32
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
