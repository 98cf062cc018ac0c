"""DeepSpeed ZeRO-2 and ZeRO-3 steps on the CPU (gloo, one process), in one subprocess so the
shared-memory op DeepSpeed compiles on first use (~50 s, cached under $MICO_CHAT_HOME) is built once."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mico_chat.training import TrainRecipe, config_from_dict

pytestmark = pytest.mark.slow  # DeepSpeed training in a subprocess

REPO = Path(__file__).resolve().parents[2]
RUNNER = REPO / "tests" / "helpers" / "train_runner.py"


def test_zero2_and_zero3_train_like_the_plain_trainer_and_export(tiny_dir, data_dir, tmp_path):
    from helpers.train_fixtures import tiny_config

    def cfg(name, deepspeed=None):
        return tiny_config(
            tiny_dir,
            data_dir["qa"],
            tmp_path / name,
            "stage2_instruct",
            train={"max_steps": 3, "export": True, "deepspeed": deepspeed},
            data={"limit": 12},
        )

    spec = tmp_path / "ds.json"
    spec.write_text(json.dumps([cfg(z, str(REPO / f"configs/deepspeed/{z}.json")) for z in ("zero2", "zero3")]))
    proc = subprocess.run(
        [sys.executable, str(RUNNER), str(spec)], capture_output=True, text=True, timeout=600, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    summaries = [
        json.loads(line[len("SUMMARY ") :]) for line in proc.stdout.splitlines() if line.startswith("SUMMARY ")
    ]
    assert [s["status"] for s in summaries] == ["completed", "completed"]

    plain = TrainRecipe(config_from_dict(cfg("plain")), progress=False)
    plain.run()
    reference = [e["loss"] for e in plain.trainer.state.log_history if "loss" in e]
    for name in ("zero2", "zero3"):
        state = json.loads((tmp_path / name / "checkpoint-3" / "trainer_state.json").read_text())
        history = [e["loss"] for e in state["log_history"] if "loss" in e]
        assert history == __import__("pytest").approx(reference, rel=1e-4), name
        assert (tmp_path / name / "checkpoint-3" / "latest").is_file()  # the engine's own checkpoint, for resume
        trained = load_file(tmp_path / name / "checkpoint-3" / "trainable.safetensors")
        exported = load_file(tmp_path / name / "model" / "model.safetensors")
        for key in ("connectors.image.fc1.weight", "language_model.model.layers.1.mlp.up_proj.weight"):
            torch.testing.assert_close(exported[key], trained[key])
