"""bench/bench_profile_train.py on the tiny model: its JSON holds every figure, and the figures add up."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from mico_chat.templates import VicunaV1Template, get_template

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_profile_train.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_profile_train", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


SYSTEM = {"role": "system", "content": "Be brief."}
TURNS = [
    {"role": "user", "content": "<image>\nWhat colour is it?"},
    {"role": "assistant", "content": "red"},
    {"role": "user", "content": "And the shape?"},
    {"role": "assistant", "content": "a square"},
]


@pytest.mark.parametrize(
    ("template", "with_system", "prefix"),
    [
        ("llm", True, "<|im_start|>system\nBe brief.<|im_end|>\n"),
        ("llm", False, ""),  # the tiny ChatML template adds no system prompt of its own
        ("vicuna_v1", True, "Be brief. "),
        ("vicuna_v1", False, VicunaV1Template.default_system + " "),  # the template's default counts
        ("plain", True, ""),
    ],
)
def test_system_prefix_is_the_rendering_before_the_first_user_turn(bench, template, with_system, prefix):
    from helpers.tiny import tiny_tokenizer

    chat = get_template(template, tiny_tokenizer(), ["<image>"])
    messages = [SYSTEM, *TURNS] if with_system else TURNS
    rendered = "".join(s.text for s in chat.segments(messages))
    at = bench.system_prefix_chars(chat, messages)
    assert rendered[:at] == prefix


@pytest.mark.slow  # trains
def test_tiny_profile_with_levers(bench, tmp_path, capsys):
    out = tmp_path / "profile.json"
    argv = ["--tiny", "--warmup", "1", "--steps", "1", "--threads", "1", "--levers", "--no-progress", "--out", str(out),
            "train.bf16=false"]  # a bf16 Trainer in this process would fix accelerate's state for later tests
    assert bench.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["stage"] == "stage2_lora" and result["steps"] == 1 and result["warmup"] == 1

    tokens = result["tokens"]
    mean = tokens["mean_tokens"]
    kinds = ("system", "media", "question", "answer")
    assert all(mean[k] >= 0 for k in (*kinds, "padding"))
    assert mean["system"] > 0 and mean["media"] > 0 and mean["answer"] > 0  # a system prompt, media, answers
    assert math.isclose(sum(mean[k] for k in kinds), mean["length"], rel_tol=1e-9)
    assert math.isclose(mean["length"] + mean["padding"], mean["padded_length"], rel_tol=1e-9)
    assert 0 < tokens["supervised_fraction"] <= 1
    assert tokens["samples"] > 0 and tokens["answers_per_sample"] >= 1

    step = result["step"]
    parts = step["parts_s"]
    assert set(parts) == set(bench.PARTS)
    assert all(seconds >= -1e-6 for seconds in parts.values()), parts
    assert parts["llm_forward"] > 0 and parts["llm_backward"] > 0 and parts["optimizer"] > 0
    assert sum(parts.values()) <= step["step_s"] * (1 + 1e-6) + 1e-6
    assert step["tokens_per_s"] > 0 and step["records_per_s"] > 0 and step["load_s"] >= 0

    flops = result["flops"]
    assert flops["per_step"] > 0 and flops["achieved_gflops_per_s"] > 0 and flops["vs_roofline"] > 0
    assert "2*T*P" in flops["formula"] and flops["other_precision"]["precision"] == "bf16 autocast"
    for dtype in ("float32", "bfloat16"):
        rates = result["roofline"][dtype]
        assert set(rates) == {"hidden_x_hidden", "hidden_x_intermediate", "hidden_x_vocab", "best"}
        assert all(rate > 0 for rate in rates.values())

    levers = result["levers"]
    assert set(levers) == {"merge_turns", "head_on_labels", "system_prompt", "bf16_autocast", "threads"}
    for row in levers.values():
        assert row["tokens_per_s_ratio"] > 0 and row["records_per_s_ratio"] > 0
    assert levers["head_on_labels"]["off"]["head_positions_per_step"] > step["head_positions_per_step"]
    assert levers["merge_turns"]["off"]["arm"]["merge_turns"] == 1
    assert levers["threads"]["on"]["arm"]["threads"] == 2

    printed = capsys.readouterr().out
    assert "| tokens per sample |" in printed and "| step part" in printed and "| lever |" in printed
