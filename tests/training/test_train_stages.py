"""Each stage is a declaration of what trains: the exact trainable names, per stage."""

import pytest

from mico_chat.training import TrainConfigError, TrainRecipe, config_from_dict, trainable_parameter_names
from mico_chat.training.stages import STAGES, lora_target_regex

CONNECTORS = sorted(
    f"connectors.{m}.{layer}.{kind}"
    for m, layers in {
        "audio": ["proj"],  # linear
        "depth": ["fc1", "fc2"],  # mlp2x_gelu
        "image": ["fc1", "fc2"],
        "normal": ["fc1", "fc2"],
        "video": ["fc1", "fc2"],
    }.items()
    for layer in layers
    for kind in ("weight", "bias")
)


def staged(tiny_dir, data_dir, tmp_path, stage, **sections):
    from helpers.train_fixtures import tiny_config

    recipe = TrainRecipe(
        config_from_dict(tiny_config(tiny_dir, data_dir["qa"], tmp_path / "run", stage, **sections)), progress=False
    )
    model, _ = recipe.build_model(quantize=False)
    all_names = sorted(n for n, _ in model.named_parameters())
    return recipe.apply_stage(model), all_names


def test_registry_lists_the_seven_stages():
    assert list(STAGES) == [
        "stage1_align", "stage1_lexical", "stage2_instruct", "stage2_lora", "stage2_frozen", "stage2_qlora",
        "new_modality",
    ]  # fmt: skip
    assert STAGES["stage1_align"].chat_template == "plain"
    assert STAGES["stage2_qlora"].quantize and STAGES["stage2_qlora"].lora


def test_stage1_trains_exactly_the_connectors(tiny_dir, data_dir, tmp_path):
    model, _ = staged(tiny_dir, data_dir, tmp_path, "stage1_align")
    assert trainable_parameter_names(model) == CONNECTORS


def test_stage1_trains_the_gated_xattn_adapters_of_a_model_that_has_them(data_dir, tmp_path):
    from helpers.tiny import tiny_model

    model, processor = tiny_model(gated_xattn={"layers": [1], "heads": 4, "ffn_mult": 2})
    model.save_pretrained(tmp_path / "gated")
    processor.save_pretrained(tmp_path / "gated")
    staged_model, all_names = staged(tmp_path / "gated", data_dir, tmp_path, "stage1_align")
    adapters = [n for n in all_names if n.startswith("gated_xattn.")]
    assert "gated_xattn.adapters.1.gate_attn" in adapters and "gated_xattn.proj.weight" in adapters
    assert trainable_parameter_names(staged_model) == sorted(CONNECTORS + adapters)


def test_gated_xattn_in_the_model_section_is_for_presets_only(tiny_dir, data_dir, tmp_path):
    from helpers.train_fixtures import tiny_config

    with pytest.raises(TrainConfigError, match="gated_xattn apply to presets only"):
        config_from_dict(
            tiny_config(tiny_dir, data_dir["qa"], tmp_path / "run", "stage1_align", model={"gated_xattn": {"layers": [0]}})
        )


def test_stage2_instruct_trains_connectors_and_the_whole_llm(tiny_dir, data_dir, tmp_path):
    model, all_names = staged(tiny_dir, data_dir, tmp_path, "stage2_instruct")
    expected = sorted(CONNECTORS + [n for n in all_names if n.startswith("language_model.")])
    assert trainable_parameter_names(model) == expected
    assert not any(n.startswith("encoder.") for n in trainable_parameter_names(model))


def test_stage2_lora_trains_connectors_and_lora_on_llm_linears_only(tiny_dir, data_dir, tmp_path):
    model, _ = staged(
        tiny_dir,
        data_dir,
        tmp_path,
        "stage2_lora",
        lora={"r": 2, "alpha": 4, "target_modules": ["q_proj", "down_proj"]},
    )
    lora = sorted(
        f"language_model.model.layers.{i}.{module}.lora_{ab}.default.weight"
        for i in range(2)
        for module in ("self_attn.q_proj", "mlp.down_proj")
        for ab in "AB"
    )
    assert trainable_parameter_names(model) == sorted(CONNECTORS + lora)
    # the encoder has q_proj layers too: they get no adapter
    assert not any("encoder" in n and "lora" in n for n, _ in model.named_parameters())


def test_stage2_frozen_trains_the_connectors_and_what_extra_trainable_names(tiny_dir, data_dir, tmp_path):
    model, all_names = staged(tiny_dir, data_dir, tmp_path, "stage2_frozen")
    assert trainable_parameter_names(model) == CONNECTORS
    assert not any("lora" in n for n, _ in model.named_parameters())  # no adapters: the LLM is the base one
    model, all_names = staged(tiny_dir, data_dir, tmp_path, {"name": "stage2_frozen", "extra_trainable": ["encoder.*"]})
    assert trainable_parameter_names(model) == sorted(CONNECTORS + [n for n in all_names if n.startswith("encoder.")])


def test_new_modality_trains_one_connector(tiny_dir, data_dir, tmp_path):
    model, _ = staged(tiny_dir, data_dir, tmp_path, {"name": "new_modality", "modalities": ["depth"]})
    assert trainable_parameter_names(model) == [n for n in CONNECTORS if n.startswith("connectors.depth.")]
    model, _ = staged(
        tiny_dir,
        data_dir,
        tmp_path,
        {"name": "new_modality", "modalities": ["depth"], "extra_trainable": ["encoder.patch_embeddings.depth.*"]},
    )
    assert trainable_parameter_names(model) == sorted(
        [n for n in CONNECTORS if n.startswith("connectors.depth.")]
        + ["encoder.patch_embeddings.depth.bias", "encoder.patch_embeddings.depth.weight"]
    )


def test_patterns_that_match_nothing_raise(tiny_dir, data_dir, tmp_path):
    with pytest.raises(TrainConfigError, match=r"match no parameter"):
        staged(tiny_dir, data_dir, tmp_path, {"name": "stage1_align", "extra_trainable": ["encoder.nothing.*"]})


def test_lora_regex_keeps_to_the_llm():
    import re

    regex = lora_target_regex(["v_proj", "q_proj"])
    assert re.fullmatch(regex, "language_model.model.layers.3.self_attn.q_proj")
    assert not re.fullmatch(regex, "encoder.layers.0.self_attn.q_proj")
