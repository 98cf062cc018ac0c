"""The low-rank split the preset exporter stores LoRA-merged LLM matrices with."""

import pytest
import torch
from mico_chat.presets.export import low_rank


def merged_delta(scale, *, rank=4, out_features=64, in_features=48, seed=0):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_features, in_features, generator=generator) * 0.05
    update = (torch.randn(out_features, rank, generator=generator) * scale) @ torch.randn(rank, in_features, generator=generator)
    merged = weight + update  # float32, as a merged checkpoint holds it
    return merged - weight, merged, update


@pytest.mark.parametrize("scale", [1e-2, 1e-4, 1e-6])
def test_recovers_the_lora_rank_even_when_the_update_is_tiny_next_to_the_weights(scale):
    delta, merged, update = merged_delta(scale)
    b, a = low_rank(delta, weight=merged)
    assert b.shape == (64, 4) and a.shape == (4, 48)
    # Within the float32 rounding of the merged matrix (eps * |W| per entry), not better.
    assert float((b @ a - delta).abs().max()) <= 4 * torch.finfo(torch.float32).eps * float(merged.abs().max())


def test_without_the_weight_rounding_noise_inflates_the_rank_of_a_tiny_update():
    # What failed on a CI machine: a two-step LoRA run's delta read as rank 6 for r=4.
    delta, _, _ = merged_delta(1e-6)
    pair = low_rank(delta)
    assert pair is None or pair[0].shape[1] > 4


def test_full_rank_and_zero_deltas_are_not_split():
    generator = torch.Generator().manual_seed(1)
    full = torch.randn(32, 32, generator=generator)
    assert low_rank(full) is None  # rank 32 > 32 // 4: the pair would not be smaller
    assert low_rank(torch.zeros(8, 8)) is None
    assert low_rank(full, max_rank=32)[0].shape == (32, 32)


def test_preset_note_warns_for_untrained_presets_and_carries_a_trained_ones_scope(tmp_path):
    import json

    from mico_chat.presets import UNTRAINED_NOTE, preset_note

    assert preset_note("untrained") == UNTRAINED_NOTE
    trained = tmp_path / "mine.json"
    base = {"llm": "smollm2-135m-instruct", "encoder": {"preset": "tiny"}}
    trained.write_text(json.dumps({**base, "trained": True, "note": "knows the synthetic world only"}))
    assert preset_note(str(trained)) == "knows the synthetic world only"
    trained.write_text(json.dumps({**base, "trained": True}))
    assert preset_note(str(trained)) == ""


def test_preset_spec_rejects_misspelt_keys_and_wrong_types(tmp_path):
    import json

    from mico_chat.errors import ConfigError
    from mico_chat.presets import PRESETS, PresetSpec, read_preset

    for name in PRESETS:  # every shipped preset reads cleanly
        spec = read_preset(name)
        assert spec.llm and spec.encoder and spec.path == PRESETS[name]
    raw = json.loads(PRESETS["untrained"].read_text())
    bad = tmp_path / "typo.json"
    bad.write_text(json.dumps({**raw, "sytem_prompt": "Be brief."}))
    with pytest.raises(ConfigError, match=r"typo.json: unknown preset key\(s\) 'sytem_prompt'; known: llm, encoder"):
        read_preset(str(bad))
    bad.write_text(json.dumps({**raw, "seed": "0"}))
    with pytest.raises(ConfigError, match="'seed' has a str"):
        read_preset(str(bad))
    bad.write_text(json.dumps({"encoder": {}}))
    with pytest.raises(ConfigError, match="missing preset key\\(s\\) llm"):
        read_preset(str(bad))
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="a JSON object"):
        read_preset(str(bad))
    # A preset outside the package finds its weights beside its own JSON.
    spec = PresetSpec.from_dict({**raw, "weights": "w.safetensors"}, source=tmp_path / "p.json")
    assert spec.weights_file() == tmp_path / "w.safetensors" and spec.to_dict()["weights"] == "w.safetensors"
