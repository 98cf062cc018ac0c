"""A run killed with SIGKILL mid-save resumes to the same parameters as an uninterrupted run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mico_chat.training import TrainRecipe, config_from_dict

pytestmark = pytest.mark.slow  # trains, and kills a training subprocess

RUNNER = Path(__file__).resolve().parents[1] / "helpers" / "train_runner.py"


def config(tiny_dir, records, out):
    from helpers.train_fixtures import tiny_config

    # LoRA dropout draws random numbers every step (RNG state), checkpoints fall mid-epoch
    # (16 samples, batch 4, checkpoint every 3 steps: data position), 8 steps span two epochs.
    return tiny_config(
        tiny_dir,
        records,
        out,
        "stage2_lora",
        train={
            "max_steps": 8,
            "save_steps": 3,
            "save_total_limit": 5,
            "resume": "auto",
            "lr_scheduler_type": "cosine",
            "warmup_ratio": 0.2,
        },
        lora={"r": 4, "alpha": 8, "dropout": 0.1},
        data={"packing": True, "limit": 16},
    )


def test_resume_after_sigkill_mid_save_matches_an_uninterrupted_run(tiny_dir, data_dir, tmp_path):
    whole = TrainRecipe(config_from_dict(config(tiny_dir, data_dir["qa"], tmp_path / "whole")), progress=False)
    whole.run()

    spec = tmp_path / "killed.json"
    spec.write_text(json.dumps(config(tiny_dir, data_dir["qa"], tmp_path / "killed")))
    proc = subprocess.run(
        [sys.executable, str(RUNNER), str(spec), "--kill-mid-save", "6"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == -9, proc.stderr[-3000:]  # SIGKILL, while checkpoint-6 was being written
    left = sorted(p.name for p in (tmp_path / "killed").iterdir() if "checkpoint" in p.name)
    assert left == [".checkpoint-6.partial", "checkpoint-3"]  # the earlier checkpoint is untouched

    resumed = TrainRecipe(config_from_dict(json.loads(spec.read_text())), progress=False)
    summary = resumed.run()
    assert resumed.resumed_from.endswith("checkpoint-3") and summary["steps"] == 8
    assert not (tmp_path / "killed" / ".checkpoint-6.partial").exists()
    a = load_file(tmp_path / "whole" / "checkpoint-8" / "trainable.safetensors")
    b = load_file(tmp_path / "killed" / "checkpoint-8" / "trainable.safetensors")
    assert sorted(a) == sorted(b) and len(a) == 46
    assert all(torch.equal(a[k], b[k]) for k in a), max(float((a[k] - b[k]).abs().max()) for k in a)
    states = [
        json.loads((tmp_path / run / "checkpoint-8" / "trainer_state.json").read_text()) for run in ("whole", "killed")
    ]
    assert [e.get("loss") for e in states[0]["log_history"]] == [e.get("loss") for e in states[1]["log_history"]]
    assert states[0]["num_input_tokens_seen"] == states[1]["num_input_tokens_seen"] > 0


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_one(tiny_dir, data_dir, tmp_path, caplog):
    from mico_chat.training import TrainConfigError

    first = config(tiny_dir, data_dir["qa"], tmp_path / "run")
    first["train"].update(max_steps=6, save_steps=3)
    TrainRecipe(config_from_dict(first), progress=False).run()
    weights = tmp_path / "run" / "checkpoint-6" / "trainable.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a disk that filled up mid-copy
    more = json.loads(json.dumps(first))
    more["train"]["max_steps"] = 8
    with caplog.at_level("WARNING"):
        resumed = TrainRecipe(config_from_dict(more), progress=False)
        summary = resumed.run()
    assert resumed.resumed_from.endswith("checkpoint-3") and summary["steps"] == 8
    assert any("checkpoint-6" in r.getMessage() and "unreadable" in r.getMessage() for r in caplog.records)
    # With every checkpoint unreadable the run refuses to silently start again from scratch.
    for folder in (tmp_path / "run").glob("checkpoint-*"):
        (folder / "trainer_state.json").write_text("{cut")
    with pytest.raises(TrainConfigError, match="no checkpoint .* can be resumed"):
        TrainRecipe(config_from_dict(more), progress=False).resume_checkpoint()
