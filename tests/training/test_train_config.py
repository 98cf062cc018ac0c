import json
from pathlib import Path

import pytest

from mico_chat.training import TrainConfigError, TrainRecipe, config_from_dict, load_config
from mico_chat.training.config import parse_override

REPO = Path(__file__).resolve().parents[2]
# Training-stage configs: configs/pretrain/ holds encoder pretraining, pipeline.yaml chains the steps
# (each has its own tests: pretraining/test_pretraining_recipe.py, training/test_default_pipeline.py).
CONFIGS = sorted(
    p for p in (REPO / "configs").glob("*/*.yaml") if p.parent.name != "pretrain" and p.name != "pipeline.yaml"
)
STAGES = (
    "stage1_align", "stage1_lexical", "stage2_instruct", "stage2_lora", "stage2_frozen", "stage2_qlora", "new_modality"
)  # fmt: skip


def minimal(**sections):
    base = {"stage": "stage1_align", "data": {"train": ["a.jsonl"]}, "train": {"output_dir": "runs/x"}}
    base.update(sections)
    return base


def test_yaml_values_and_dotted_overrides_reach_the_dataclasses():
    cfg = config_from_dict(
        minimal(),
        [
            "train.learning_rate=1e-4",
            "data.train=[a.jsonl,b.jsonl]",
            "data.packing=true",
            "stage.modalities=[video]",
            "model.encoder={preset: large}",
            "train.resume=false",
        ],
    )
    assert cfg.train.learning_rate == pytest.approx(1e-4) and isinstance(cfg.train.learning_rate, float)
    assert cfg.data.train == ["a.jsonl", "b.jsonl"] and cfg.data.packing is True
    assert cfg.stage.name == "stage1_align" and cfg.stage.modalities == ["video"]
    assert cfg.model.encoder == {"preset": "large"} and cfg.train.resume is False
    assert config_from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()  # round trip


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.learning_rat=1"], r"unknown config key\(s\) train.learning_rat"),
        (["train.max_steps=ten"], "train.max_steps must be an integer"),
        (["data.packing=3"], "data.packing must be true or false"),
        (["stage.name=stage3"], "stage.name 'stage3' is not a registered stage"),
        (["train.learning_rate"], "must look like key=value"),
        (["stage=new_modality"], r"stage new_modality trains the connectors of named modalities"),
        (["train.bf16=sometimes"], "train.bf16 must be true, false, auto or native"),
        (["data.pack_length=512"], "data.pack_length needs data.packing=true"),
        (["stage=stage2_qlora", "train.deepspeed=z.json"], "does not run under DeepSpeed"),
        (["model.init_from=runs/s1/model", "model.llm=/x"], "model.init_from is a saved MiCo-Chat folder"),
    ],
)
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(TrainConfigError, match=message):
        config_from_dict(minimal(), overrides)


@pytest.mark.parametrize(("ratio", "total", "warmup"), [(0.25, 40, 10), (0.5, 7, 4), (0.0, 50, 0)])
def test_warmup_ratio_is_a_fraction_of_the_total_steps(tmp_path, ratio, total, warmup):
    """train.warmup_ratio reaches the Trainer as a fraction (transformers 5's float warmup_steps), never as steps."""
    cfg = config_from_dict(minimal(train={"output_dir": str(tmp_path), "warmup_ratio": ratio, "max_steps": total}))
    assert TrainRecipe(cfg, progress=False).training_arguments().get_warmup_steps(total) == warmup


def test_required_values_must_be_set(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("stage: stage1_align\ndata: {train: ['???']}\ntrain: {output_dir: '???'}\n")
    with pytest.raises(TrainConfigError, match=r"required value\(s\) not set: data.train, train.output_dir"):
        load_config(path)
    cfg = load_config(path, ["data.train=x.jsonl", "train.output_dir=runs/y"])
    assert cfg.data.train == ["x.jsonl"]
    with pytest.raises(TrainConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")


def test_parse_override_reads_yaml_values():
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    assert parse_override("a=null") == ("a", None)
    with pytest.raises(TrainConfigError, match="not a dotted config key"):
        parse_override("a..b=1")


def required_overrides(path: Path) -> list[str]:
    text = path.read_text()
    out = ["data.train=records.jsonl"]
    if 'llm: "???"' in text:
        out.append("model.llm=/models/vicuna-7b-v1.5")
    if 'encoder_weights: "???"' in text:
        out.append("model.encoder_weights=/models/mico.safetensors")
    return out


def test_every_llm_ships_every_stage_with_a_launch_command():
    assert {p.parent.name for p in CONFIGS} == {"default", "vicuna7b"}
    for llm in ("default", "vicuna7b"):
        assert sorted(p.stem for p in CONFIGS if p.parent.name == llm) == sorted(STAGES)
    for path in CONFIGS:
        header = path.read_text().split("\nstage")[0]
        assert "# Launch" in header and "mico_chat.cli train" in header or "mico-chat train" in header, path
        cfg = load_config(path, required_overrides(path))
        assert cfg.stage.name == path.stem, path
        assert cfg.train.output_dir == f"runs/{path.parent.name}/{path.stem}"
        if cfg.train.deepspeed:
            assert (REPO / cfg.train.deepspeed).is_file(), path


def test_vicuna_configs_follow_the_paper_setting():
    s1 = load_config(
        REPO / "configs/vicuna7b/stage1_align.yaml", required_overrides(REPO / "configs/vicuna7b/stage1_align.yaml")
    )
    assert (s1.train.learning_rate, s1.train.per_device_train_batch_size, s1.model.chat_template) == (1e-3, 32, "plain")
    s2 = load_config(REPO / "configs/vicuna7b/stage2_instruct.yaml", ["data.train=x.jsonl"])
    assert (s2.train.learning_rate, s2.model.chat_template, s2.data.max_length) == (2e-5, "vicuna_v1", 2048)
    assert s2.train.deepspeed.endswith("zero3.json")


def test_deepspeed_configs_are_valid_json_with_their_stage():
    expected = {"zero2": (2, False), "zero3": (3, False), "zero3_offload": (3, True)}
    for name, (stage, offload) in expected.items():
        ds = json.loads((REPO / "configs/deepspeed" / f"{name}.json").read_text())
        zero = ds["zero_optimization"]
        assert zero["stage"] == stage
        assert ("offload_optimizer" in zero) == offload
        if stage == 3:
            assert zero["stage3_gather_16bit_weights_on_model_save"] is True  # exports need whole weights
        assert ds["train_micro_batch_size_per_gpu"] == "auto"  # the YAML's batch size rules


@pytest.mark.parametrize(
    "bf16, native, cuda, want_autocast, want_weights",
    [
        ("native", True, False, True, "float32"),  # AVX512_BF16/AMX CPU: autocast, float32 weights
        ("native", False, False, False, "float32"),  # AVX2 CPU: plain float32
        ("native", False, True, True, "bfloat16"),  # GPU with bf16: bf16 weights
        ("auto", True, False, False, "float32"),  # auto never autocasts on a CPU
        ("auto", False, True, True, "bfloat16"),  # GPU with bf16: bf16 weights, as before
        (True, False, False, True, "bfloat16"),  # set outright: honoured on any CPU
        (False, True, False, False, "float32"),
    ],
)
def test_bf16_native_follows_the_hardware(monkeypatch, bf16, native, cuda, want_autocast, want_weights):
    import types

    import torch

    from mico_chat.training import recipe as recipe_module

    monkeypatch.setattr(recipe_module, "cpu_native_bf16", lambda: native)
    monkeypatch.setattr(recipe_module, "_cuda_bf16", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    cfg = config_from_dict(minimal(stage="stage2_lora", model={"dtype": "auto"}), [f"train.bf16={str(bf16).lower()}"])
    # The two methods read only the config, the stage and the device choice: no model is built.
    stub = types.SimpleNamespace(config=cfg, stage=types.SimpleNamespace(quantize=False))
    stub._use_cpu = types.MethodType(TrainRecipe._use_cpu, stub)
    stub._bf16 = types.MethodType(TrainRecipe._bf16, stub)
    assert stub._bf16() is want_autocast
    assert TrainRecipe.model_dtype(stub) == getattr(torch, want_weights)


def test_cpu_native_bf16_reads_torch_and_survives_its_absence(monkeypatch):
    import torch

    from mico_chat.training.recipe import cpu_native_bf16

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert cpu_native_bf16() is True
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert cpu_native_bf16() is False
