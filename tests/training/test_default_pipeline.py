"""``mico-chat pipeline`` end to end on tiny parts (a few clips, two steps per stage): every step's
output, skipping of complete steps, the exported preset loading back as the trained model, and
the low-rank delta format of preset weights."""

import json
from pathlib import Path

import pytest
import torch
from mico_chat.builder import load_extra_weights
from mico_chat.commands.pipeline import STEPS_ORDER, Pipeline, load_pipeline_config
from mico_chat.training.errors import TrainConfigError

REPO = Path(__file__).resolve().parents[2]
PIPELINE = "configs/default/pipeline.yaml"  # with the step configs it names, relative to the repository root


def tiny_overrides(root, llm, bert):
    encoder = ("{hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 64, image_size: 16, "
               "patch_size: 8, audio_num_mel_bins: 16, audio_target_length: 32, audio_patch_size: 8, max_segments: 8, "
               "modalities: [video, audio, image, depth]}")  # fmt: skip
    return [
        f"output_dir={root}",
        f"llm={llm}",
        "worlds.train.n=4",
        "worlds.heldout.n=1",
        f"pretrain.model.encoder={encoder}",
        f"pretrain.model.text={bert}",
        "pretrain.model.text_overrides={cross_attention_layers: [1]}",
        "pretrain.model.contrastive_dim=16",
        "pretrain.model.max_text_length=24",
        "pretrain.model.freeze=[]",
        "pretrain.train.lr_multipliers={}",
        "pretrain.data.media={num_frames: 2, audio_clips: 1}",
        "stage1.data.media_settings={num_frames: 2}",
        "stage2.lora.r=4",
        "stage2.lora.alpha=8",
        "eval.general_qa_limit=2",
        "export.dtype=float32",  # exact storage: the parity check below tests the delta reconstruction alone
    ]


@pytest.fixture(autouse=True)
def at_repo_root(monkeypatch):
    monkeypatch.chdir(REPO)


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    from helpers.pretrain_fixtures import tiny_bert_folder
    from helpers.tiny import tiny_llm, tiny_tokenizer

    root = tmp_path_factory.mktemp("parts")
    tokenizer = tiny_tokenizer()
    tiny_llm(len(tokenizer)).save_pretrained(root / "llm")
    tokenizer.save_pretrained(root / "llm")
    return root / "llm", tiny_bert_folder(root / "bert")


def test_overrides_route_to_steps_and_bad_keys_fail():
    config = load_pipeline_config(PIPELINE, ["stage2.lora.r=8", "worlds.train.n=10"], tiny=True)
    assert config.worlds.train.n == 10 and config.worlds.heldout.n == 2
    assert config.stage2.overrides[-1] == "lora.r=8" and "train.max_steps=2" in config.stage1.overrides
    with pytest.raises(TrainConfigError, match="worlds.train.size"):
        load_pipeline_config(PIPELINE, ["worlds.train.size=1"])
    with pytest.raises(TrainConfigError, match="worlds.train.n"):
        load_pipeline_config(PIPELINE, ["worlds.train.n=many"])  # typed: an int


@pytest.mark.slow  # the whole pipeline
def test_tiny_pipeline_end_to_end_then_skips(parts, tmp_path):
    from mico_chat.api import ChatModel

    llm, bert = parts
    root = tmp_path / "run"
    config = load_pipeline_config(PIPELINE, tiny_overrides(root, llm, bert), tiny=True)
    logs = []
    record = Pipeline(config, progress=False, log=logs.append).run()
    assert all(record["steps"][s]["last"] == "ran" for s in STEPS_ORDER)
    assert (root / "pretrain" / "encoder" / "config.json").is_file()
    stage1 = json.loads((root / "stage1" / "summary.json").read_text())
    # Lexical alignment on each clip's four views, each with its own caption.
    assert stage1["stage"] == "stage1_lexical" and stage1["steps"] == 2 and stage1["data"]["samples"] == 4 * 4
    stage2 = json.loads((root / "stage2" / "summary.json").read_text())
    assert stage2["steps"] == 2 and stage2["data"]["skipped"] == 0  # every view, depth included, is readable
    synth = json.loads((root / "eval" / "synth" / "results.json").read_text())
    assert set(synth["scores"]["metrics"]) >= {"appearance", "counting", "motion", "sound", "audio-visual", "overall"}
    assert json.loads((root / "eval" / "general_qa_base" / "results.json").read_text())["data"]["items"] == 2
    # The export: encoder and connectors whole, the LoRA-tuned LLM matrices as rank-4 pairs.
    spec = json.loads((root / "preset" / "default.json").read_text())
    assert spec["trained"] is True and spec["llm"] == str(llm) and spec["weights"] == "default.safetensors"
    assert "synthetic world" in spec["note"]  # shown by the web UI and `mico-chat demo`
    assert spec["eval"]["synth"]["items"] == synth["data"]["items"] and spec["card"] == "default.md"
    exported = record["export"]
    assert exported["deltas"] == 2 * 7 and exported["max_rank"] <= 4 and exported["max_abs_error"] < 1e-4
    card = (root / "preset" / "default.md").read_text()
    assert "| counting |" in card and "knows the synthetic world, not the real one" in card
    # The preset loads back as the trained model.
    trained = ChatModel.load(root / "stage2" / "model")
    shipped = ChatModel.load(str(root / "preset" / "default.json"))
    clip = root / "data" / "heldout" / "media" / "000"
    image = next(clip.glob("*.png"))
    messages = [[{"role": "user", "content": [{"type": "image", "image": str(image)}, {"type": "text", "text": "What colour?"}]}]]
    with torch.no_grad():
        a = trained.model(**trained._inputs(messages)).logits
        b = shipped.model(**shipped._inputs(messages)).logits
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
    # A second run finds every step complete.
    logs.clear()
    Pipeline(config, progress=False, log=logs.append).run()
    assert logs == [f"[{s}] complete, skipped" for s in STEPS_ORDER]


def test_delta_weights_must_pair_and_fit(tiny, tmp_path):
    from safetensors.torch import save_file

    model, _ = tiny
    name = next(n for n, p in model.named_parameters() if n.startswith("language_model") and p.ndim == 2 and "proj" in n)
    weight = dict(model.named_parameters())[name]
    out, inp = weight.shape
    save_file({name + ".delta_a": torch.zeros(2, inp)}, tmp_path / "half.safetensors")
    with pytest.raises(ValueError, match="lacks its .delta_a or .delta_b half"):
        load_extra_weights(model, tmp_path / "half.safetensors")
    save_file({name + ".delta_a": torch.zeros(2, inp + 1), name + ".delta_b": torch.zeros(out, 2)}, tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match=f"{name} has shape"):
        load_extra_weights(model, tmp_path / "bad.safetensors")
