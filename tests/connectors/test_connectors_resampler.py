"""The resampler connector: K tokens per item whatever its frames, placeholders expanded to K,
gradients, save/load, and use from a stage config."""

import json

import numpy as np
import pytest
import torch

from mico_chat.connectors import ConnectorConfig, ResamplerConfig, ResamplerConnector, build_connector
from mico_chat.modality import MediaLayout

RESAMPLER = {"type": "resampler", "num_queries": 5, "depth": 2, "heads": 4}


def layout(frames: int) -> MediaLayout:
    return MediaLayout(num_segments=frames, grid_h=4, grid_w=4)


@pytest.mark.parametrize("frames", [1, 3, 8])
@pytest.mark.parametrize("tokens,pool", [("all", None), ("cls", None), ("patches", 2)])
def test_emits_num_queries_tokens_whatever_the_frames(frames, tokens, pool):
    config = ConnectorConfig.from_dict({**RESAMPLER, "tokens": tokens, "pool": pool})
    assert isinstance(config, ResamplerConfig)
    conn = build_connector(config, in_dim=8, out_dim=12)
    assert type(conn).num_tokens(config, layout(frames)) == 5
    out = conn(torch.randn(2, layout(frames).num_tokens, 8), layout(frames))
    assert out.shape == (2, 5, 12) and torch.isfinite(out).all()


def test_plain_connector_config_of_type_resampler_gets_its_defaults():
    conn = build_connector(ConnectorConfig(type="resampler"), in_dim=8, out_dim=12)
    assert isinstance(conn, ResamplerConnector) and conn.config == ResamplerConfig()
    assert conn(torch.randn(1, layout(2).num_tokens, 8), layout(2)).shape == (1, 32, 12)


def test_time_embeddings_make_frame_order_matter():
    torch.manual_seed(0)
    feats = torch.randn(1, 3, 17, 8)  # (N, S, 1+P, D)
    reversed_frames = feats.flip(1)
    for time_embed, order_matters in ((False, False), (True, True)):
        conn = build_connector({**RESAMPLER, "time_embed": time_embed}, in_dim=8, out_dim=12).eval()
        a = conn(feats.flatten(1, 2), layout(3))
        b = conn(reversed_frames.flatten(1, 2), layout(3))
        assert not torch.allclose(a, b, atol=1e-6) if order_matters else torch.allclose(a, b, atol=1e-5)


def test_gradients_reach_every_parameter():
    conn = build_connector({**RESAMPLER, "time_embed": True, "out_norm": True}, in_dim=8, out_dim=12)
    conn(torch.randn(2, layout(3).num_tokens, 8), layout(3)).pow(2).mean().backward()
    missing = [name for name, p in conn.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing
    assert conn.time_embedding.grad[3:].abs().sum() == 0  # rows of frames the item does not have


def test_bad_configs_name_the_problem():
    with pytest.raises(ValueError, match="unknown connector config keys \\['queries'\\] for type 'resampler'"):
        ConnectorConfig.from_dict({"type": "resampler", "queries": 4})
    with pytest.raises(ValueError, match="unknown connector config keys \\['num_queries'\\] for type 'linear'"):
        ConnectorConfig.from_dict({"type": "linear", "num_queries": 4})
    with pytest.raises(ValueError, match="resampler num_queries must be >= 1"):
        ResamplerConfig(num_queries=0)
    with pytest.raises(ValueError, match="heads \\(3\\) must divide the encoder hidden size \\(8\\)"):
        build_connector({**RESAMPLER, "heads": 3}, in_dim=8, out_dim=12)
    config = ResamplerConfig(time_embed=True, max_frames=4)
    with pytest.raises(ValueError, match="cover 4 frames, the item has 6; raise the connector's max_frames or set its time_index"):
        ResamplerConnector.num_tokens(config, layout(6))
    with pytest.raises(ValueError, match="time_index must be 'absolute' or 'interpolate'"):
        ResamplerConfig(time_index="relative")


def test_interpolated_time_embeddings_take_any_number_of_frames():
    """``time_index="interpolate"``: the 4-row table read in order by 7 frames (rows 0, 0.5, .. 3),
    K tokens out, and frames within the table keep their own rows."""
    conn = build_connector({**RESAMPLER, "time_embed": True, "max_frames": 4, "time_index": "interpolate"}, 8, 12)
    table = conn.time_embedding
    assert torch.equal(conn.time_rows(3), table[:3])
    rows = conn.time_rows(7)
    torch.testing.assert_close(rows[::2], table)
    torch.testing.assert_close(rows[1::2], (table[:-1] + table[1:]) / 2)
    assert type(conn).num_tokens(conn.config, layout(512)) == 5
    out = conn(torch.randn(1, layout(512).num_tokens, 8), layout(512))
    assert out.shape == (1, 5, 12)
    out.pow(2).mean().backward()
    assert (table.grad.abs().sum(-1) > 0).all()


def test_out_norm_gives_tokens_the_scale_of_the_embeddings():
    conn = build_connector({**RESAMPLER, "out_norm": True}, in_dim=8, out_dim=12)
    embeddings = 0.05 * torch.randn(1000, 12)
    conn.match_scale(embeddings)
    out = conn(100.0 * torch.randn(2, layout(3).num_tokens, 8), layout(3))
    rms = out.pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.full_like(rms, embeddings.pow(2).mean().sqrt().item()), rtol=1e-3, atol=0)


@pytest.fixture
def resampler_model(monkeypatch):
    from helpers import tiny

    monkeypatch.setattr(tiny, "TINY_CONNECTORS", {**tiny.TINY_CONNECTORS, "video": {**RESAMPLER, "time_embed": True}})
    return tiny.tiny_model()


def video_conversation(frames: int):
    pixels = np.random.default_rng(0).integers(0, 255, size=(frames, 24, 24, 3), dtype=np.uint8)
    return [
        {"role": "user", "content": [{"type": "video", "video": pixels}, {"type": "text", "text": "What happens?"}]},
        {"role": "assistant", "content": "A red square moves."},
    ]


@pytest.mark.parametrize("num_frames", [2, 4, 8])
def test_processor_expands_placeholders_to_num_queries_and_the_model_trains(resampler_model, num_frames):
    model, processor = resampler_model
    processor.settings.num_frames = num_frames
    batch = processor(video_conversation(12), add_generation_prompt=False, with_labels=True, padding_side="right")
    assert batch["media"]["video"].shape[:2] == (1, num_frames)
    assert int((batch["input_ids"] == model.config.media_token_ids["video"]).sum()) == 5
    assert model.config.num_media_tokens("video", num_frames) == 5
    model.train()
    out = model(**batch)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    conn = model.connectors["video"]
    assert conn.queries.grad.abs().sum() > 0 and conn.time_embedding.grad.abs().sum() > 0
    assert conn.layers[0].attn.in_proj_weight.grad.abs().sum() > 0


def test_save_and_load_round_trip(resampler_model, tmp_path):
    from helpers.tiny import assert_reloads_identically

    model, processor = resampler_model
    with torch.no_grad():
        model.connectors["video"].queries.add_(1.0)  # "trained": loading must keep it
    assert_reloads_identically(model, processor, video_conversation(6), tmp_path, ResamplerConnector)
    saved = json.loads((tmp_path / "config.json").read_text())["connectors"]["video"]
    assert saved["type"] == "resampler" and saved["num_queries"] == 5 and saved["time_embed"] is True


def test_built_from_a_stage_config_override(tmp_path):
    from helpers.tiny import preset_recipe

    override = "model.connectors={video: {type: resampler, num_queries: 6, depth: 1, time_embed: true}}"
    recipe = preset_recipe(tmp_path, override)
    model, processor = recipe.build_model(quantize=False)
    conn = model.connectors["video"]
    assert isinstance(conn, ResamplerConnector) and len(conn.layers) == 1
    assert conn.config.pool == 2  # the preset's keys for video (tokens, pool) stay under the override
    assert processor.config.num_media_tokens("video", 4) == 6
    trained = recipe.apply_stage(model)
    assert all(p.requires_grad for p in trained.connectors["video"].parameters())
