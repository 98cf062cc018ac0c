"""Every shipped default config runs: stage 1 on the real embedded LLM (SmolLM2-135M-Instruct),
the later stages on the tiny model standing in for stage 1's output (their configs only name it)."""

from pathlib import Path

import pytest

from mico_chat.training import TrainRecipe, load_config

REPO = Path(__file__).resolve().parents[2]


def one_step(path, out, records, *extra):
    overrides = [
        f"data.train={records}",
        f"train.output_dir={out}",
        "train.max_steps=1",
        "train.per_device_train_batch_size=2",
        "data.limit=4",
        "train.export=false",
        *extra,
    ]
    recipe = TrainRecipe(load_config(path, overrides), progress=False)
    return recipe, recipe.run()


@pytest.mark.slow
def test_default_stage1_config_trains_the_embedded_llm(data_dir, tmp_path):
    recipe, summary = one_step(REPO / "configs/default/stage1_align.yaml", tmp_path / "s1", data_dir["captions"])
    assert summary["status"] == "completed" and summary["steps"] == 1
    assert recipe.model.config.text_config.hidden_size == 576  # SmolLM2-135M
    assert recipe.trainer.train_dataset.features is not None  # the config caches the frozen encoder's outputs
    assert summary["parameters"]["trainable"] == sum(
        p.numel() for n, p in recipe.model.named_parameters() if n.startswith("connectors.")
    )


@pytest.mark.slow
def test_default_lexical_stage1_config_aligns_connectors_with_out_norm(data_dir, tmp_path):
    recipe, summary = one_step(REPO / "configs/default/stage1_lexical.yaml", tmp_path / "s1", data_dir["captions"])
    assert summary["status"] == "completed" and summary["steps"] == 1
    assert recipe.trainer.content_tokens is not None and recipe.trainer.content_tokens.any()
    model = recipe.model
    assert all(model.connectors[m].out_norm is not None for m in ("video", "audio", "image", "depth"))
    rms = model.get_input_embeddings().weight.float().pow(2).mean().sqrt().item()
    assert model.connectors["video"].out_norm.weight.mean().item() == pytest.approx(rms, rel=1e-5)  # untouched: no video


@pytest.mark.slow  # trains
@pytest.mark.parametrize("stage", ["stage2_instruct", "stage2_lora", "stage2_qlora", "new_modality"])
def test_default_later_stage_configs_run(stage, tiny_dir, data_dir, tmp_path):
    records = data_dir["depth"] if stage == "new_modality" else data_dir["qa"]
    recipe, summary = one_step(
        REPO / f"configs/default/{stage}.yaml", tmp_path / stage, records, f"model.init_from={tiny_dir}"
    )
    assert summary["status"] == "completed" and summary["steps"] == 1 and summary["packing"] is True
    assert recipe.processor.config.chat_template == "llm"
