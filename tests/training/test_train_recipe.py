"""Whole runs on tiny components (CPU, seconds): what each stage learns, what it leaves alone,
how a run stops on a NaN, and what it exports."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from mico_chat.api import ChatModel
from mico_chat.training import NonFiniteLossError, TrainRecipe, config_from_dict

pytestmark = pytest.mark.slow  # every test trains a tiny model


def run(tiny_dir, records, out, stage, callbacks=(), **sections):
    from helpers.train_fixtures import tiny_config

    recipe = TrainRecipe(
        config_from_dict(tiny_config(tiny_dir, records, out, stage, **sections)), progress=False, callbacks=callbacks
    )
    return recipe, recipe.run()


def losses(summary_dir):
    state = json.loads(sorted(summary_dir.glob("checkpoint-*/trainer_state.json"))[-1].read_text())
    return [e["loss"] for e in state["log_history"] if "loss" in e]


def ask_colours(chat, folder, n=16):
    from helpers.train_fixtures import colour_images

    answers = []
    for name, colour in colour_images(folder, n, seed=11):
        content = [
            {"type": "image", "image": str(folder / name)},
            {"type": "text", "text": "What colour is this picture?"},
        ]
        answers.append((chat.chat([{"role": "user", "content": content}], max_new_tokens=6), colour))
    return answers


def test_stage1_loss_falls_on_caption_pairs(tiny_dir, data_dir, tmp_path):
    recipe, summary = run(
        tiny_dir,
        data_dir["captions"],
        tmp_path / "s1",
        "stage1_align",
        train={"max_steps": 20, "learning_rate": 1e-2},
        data={"packing": True},
    )
    assert recipe.processor.config.chat_template == "plain"  # the stage's template
    history = losses(tmp_path / "s1")
    assert len(history) == 20
    # a frozen random LLM must be steered by the connector alone: ~10 -> ~7 nats in 20 steps
    assert sum(history[-5:]) / 5 < 0.8 * sum(history[:3]) / 3, history
    assert summary["status"] == "completed" and summary["steps"] == 20
    assert summary["tokens_seen"] == summary["tokens_this_session"] > 0 and summary["tokens_per_second"] > 0
    assert summary["peak_memory"]["cpu_max_rss_bytes"] > 0
    assert summary["data"] == {
        "records": 16,
        "samples": 16,
        "skipped": 0,
        "skipped_by_reason": {},
        "scan_seconds": summary["data"]["scan_seconds"],
    }
    for png in ("loss.png", "lr.png"):
        assert (tmp_path / "s1" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "s1" / "summary.json").read_text())["steps"] == 20


def test_stage2_learns_a_task_that_needs_the_media(tiny_dir, data_dir, tmp_path):
    """The answer is the picture's colour and every prompt's text is the same: only the image tells."""
    _, summary = run(
        tiny_dir,
        data_dir["qa"],
        tmp_path / "s2",
        "stage2_instruct",
        train={"max_steps": 50, "learning_rate": 5e-3, "export": True},
        data={"packing": True},
    )
    chat = ChatModel.load(summary["export"])
    answers = ask_colours(chat, tmp_path / "eval")
    accuracy = sum(a == c for a, c in answers) / len(answers)
    assert accuracy >= 0.9, answers
    assert {a for a, _ in answers} == {"red", "green", "blue", "yellow"}


def test_new_modality_leaves_every_other_parameter_bit_identical(tiny_dir, data_dir, tmp_path):
    _, summary = run(
        tiny_dir,
        data_dir["depth"],
        tmp_path / "nm",
        {"name": "new_modality", "modalities": ["depth"]},
        train={"max_steps": 6, "export": True},
    )
    before = load_file(tiny_dir / "model.safetensors")
    after = load_file(f"{summary['export']}/model.safetensors")
    assert sorted(before) == sorted(after)
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed == [
        "connectors.depth.fc1.bias",
        "connectors.depth.fc1.weight",
        "connectors.depth.fc2.bias",
        "connectors.depth.fc2.weight",
    ]


class PoisonAt(TrainerCallback):
    """Sets a connector weight to NaN at the end of optimizer step ``step``."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            with torch.no_grad():
                next(p for n, p in model.named_parameters() if n.startswith("connectors.image")).fill_(float("nan"))


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_dir, data_dir, tmp_path):
    from helpers.train_fixtures import tiny_config

    out = tmp_path / "nan"
    config = config_from_dict(
        tiny_config(tiny_dir, data_dir["qa"], out, "stage1_align", train={"max_steps": 8, "save_steps": 2})
    )
    recipe = TrainRecipe(config, progress=False, callbacks=[PoisonAt(3)])
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 4 .*the last good checkpoint is .*checkpoint-2"):
        recipe.run()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    kept = load_file(out / "checkpoint-2" / "trainable.safetensors")
    assert all(torch.isfinite(t).all() for t in kept.values())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "stopped: non-finite loss" and summary["steps"] == 3


def test_lora_export_merges_into_a_plain_model_with_the_same_outputs(tiny_dir, data_dir, tmp_path):
    from helpers.train_fixtures import tiny_config

    config = config_from_dict(
        tiny_config(
            tiny_dir,
            data_dir["qa"],
            tmp_path / "lora",
            "stage2_lora",
            train={"max_steps": 5, "export": True, "learning_rate": 1e-2},
            lora={"r": 4, "alpha": 8, "dropout": 0.0},
        )
    )
    recipe = TrainRecipe(config, progress=False)
    recipe.setup()
    recipe.train()
    batch = recipe.trainer.data_collator([recipe.trainer.train_dataset[i] for i in range(3)])
    batch = {k: v for k, v in batch.items() if k != "meta"}
    recipe.model.eval()
    with torch.no_grad():
        adapted = recipe.model(**batch).logits
    folder = recipe.save()
    exported = ChatModel.load(folder).model
    assert not any("lora" in n for n, _ in exported.named_parameters())
    with torch.no_grad():
        merged = exported(**batch).logits
    torch.testing.assert_close(merged, adapted, rtol=1e-4, atol=1e-4)
    base = load_file(tiny_dir / "model.safetensors")
    q = "language_model.model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(exported.state_dict()[q], base[q])  # the adapter is in the weights now


def test_qlora_trains_on_a_4bit_llm_and_exports_full_precision(tiny_dir, data_dir, tmp_path):
    import bitsandbytes as bnb
    from helpers.train_fixtures import tiny_config

    config = config_from_dict(
        tiny_config(
            tiny_dir,
            data_dir["qa"],
            tmp_path / "qlora",
            "stage2_qlora",
            train={"max_steps": 4, "export": True},
            lora={"r": 4, "alpha": 8, "dropout": 0.0},
        )
    )
    recipe = TrainRecipe(config, progress=False)
    recipe.setup()
    q_proj = recipe.model.get_base_model().language_model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj.base_layer, bnb.nn.Linear4bit)
    assert not isinstance(recipe.model.get_base_model().encoder.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)
    recipe.train()
    folder = recipe.save()
    summary = recipe.cleanup()
    assert summary["status"] == "completed" and summary["last_loss"] == summary["last_loss"]  # finite
    exported = ChatModel.load(folder).model
    weight = exported.language_model.model.layers[0].self_attn.q_proj.weight
    assert weight.dtype == torch.float32 and weight.shape == (48, 48)


def test_cli_trains_and_reports_user_errors(tiny_dir, data_dir, tmp_path, capsys):
    import yaml
    from helpers.train_fixtures import tiny_config

    from mico_chat.cli import main

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tiny_dir, data_dir["qa"], tmp_path / "cli", "stage1_align")))
    assert main(["train", str(path), "train.max_steps=2", "--no-progress"]) == 0
    assert '"status": "completed"' in capsys.readouterr().out
    assert json.loads((tmp_path / "cli" / "summary.json").read_text())["steps"] == 2
    assert main(["train", str(path), "train.max_step=2"]) == 2
    assert "unknown config key(s) train.max_step" in capsys.readouterr().err
    # a second run into the same folder must say whether to resume
    assert main(["train", str(path), "train.max_steps=2", "--no-progress"]) == 2
    assert "holds checkpoints of an earlier run" in capsys.readouterr().err


def test_gradient_accumulation_and_checkpointing_train_like_one_big_batch(tiny_dir, data_dir, tmp_path):
    """batch 4 = 2 micro-batches of 2 (the loss is normalised by the tokens of the whole step), and
    gradient checkpointing recomputes activations without changing the result."""
    results = {}
    for name, train in {
        "big": {"per_device_train_batch_size": 4},
        "accumulated": {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 2},
        "checkpointed": {"per_device_train_batch_size": 4, "gradient_checkpointing": True},
    }.items():
        recipe, _ = run(
            tiny_dir, data_dir["qa"], tmp_path / name, "stage2_instruct",
            train={"max_steps": 2, "learning_rate": 1e-3, **train}, data={"packing": True, "limit": 8},
        )
        results[name] = {n: p.detach().clone() for n, p in recipe.model.named_parameters() if p.requires_grad}
    for name in ("accumulated", "checkpointed"):
        for key, value in results["big"].items():
            torch.testing.assert_close(results[name][key], value, rtol=1e-4, atol=1e-5, msg=f"{name}: {key}")


def test_stage2_with_encoder_tuning_groups_learning_rates_and_keeps_the_system_prompt(tiny_dir, data_dir, tmp_path):
    """The default recipe's stage 2: encoder, connectors and LoRA at their own rates; the system
    prompt set in the config is the one the exported model (and so inference) uses."""
    import torch
    from safetensors.torch import load_file

    recipe, summary = run(
        tiny_dir,
        data_dir["qa"],
        tmp_path / "s2",
        {"name": "stage2_lora", "extra_trainable": ["encoder.*"]},
        model={"system_prompt": "Be brief."},
        data={"packing": True, "merge_turns": 4},
        lora={"r": 2, "alpha": 4},
        train={"max_steps": 2, "learning_rate": 1e-3, "connector_lr": 2e-3, "encoder_lr": 1e-4, "export": True},
    )
    rates = sorted({g["lr"] for g in recipe.trainer.optimizer.param_groups})
    assert rates == [1e-4, 1e-3, 2e-3]  # constant schedule in the fixture: the configured rates
    by_rate: dict[float, int] = {}
    for group in recipe.trainer.optimizer.param_groups:  # decayed and undecayed groups share a rate
        by_rate[group["lr"]] = by_rate.get(group["lr"], 0) + sum(p.numel() for p in group["params"])
    model = recipe._unwrapped()
    encoder_params = sum(p.numel() for p in model.encoder.parameters() if p.requires_grad)
    assert by_rate[1e-4] == encoder_params > 0
    chat = ChatModel.load(summary["export"])
    assert chat.model.config.system_prompt == "Be brief."
    prepared = chat.processor.prepare([{"role": "user", "content": "hi"}])
    assert prepared.messages[0] == {"role": "system", "content": "Be brief."}
    before = load_file(str(tiny_dir / "model.safetensors"))
    after = chat.model.state_dict()
    changed = [k for k in before if k.startswith("encoder.") and not torch.equal(before[k], after[k])]
    assert changed  # the encoder trained
