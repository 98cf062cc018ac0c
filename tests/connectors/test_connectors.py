import pytest
import torch

from mico_chat.connectors import (
    CONNECTORS,
    Connector,
    ConnectorConfig,
    build_connector,
    register_connector,
)
from mico_chat.modality import MediaLayout

LAYOUT = MediaLayout(num_segments=3, grid_h=4, grid_w=4)


@pytest.mark.parametrize(
    "tokens,pool,expected",
    [("all", None, 3 * 17), ("cls", None, 3), ("patches", None, 3 * 16), ("all", 2, 3 * 5), ("patches", 8, 3 * 16)],
)
@pytest.mark.parametrize("kind", ["linear", "mlp2x_gelu"])
def test_num_tokens_matches_forward(kind, tokens, pool, expected):
    config = ConnectorConfig(type=kind, tokens=tokens, pool=pool)
    conn = build_connector(config, in_dim=8, out_dim=12)
    assert type(conn).num_tokens(config, LAYOUT) == expected
    out = conn(torch.randn(2, LAYOUT.num_tokens, 8), LAYOUT)
    assert out.shape == (2, expected, 12)


def test_pooling_averages_patch_blocks():
    conn = build_connector(ConnectorConfig(type="linear", tokens="patches", pool=2), 1, 1)
    grid = torch.arange(16, dtype=torch.float32).view(4, 4)
    feats = torch.cat([torch.zeros(1), grid.flatten()]).view(1, 17, 1)  # one segment: CLS + 4x4
    picked = conn.select(feats, MediaLayout(1, 4, 4)).flatten()
    expected = torch.tensor([grid[:2, :2].mean(), grid[:2, 2:].mean(), grid[2:, :2].mean(), grid[2:, 2:].mean()])
    torch.testing.assert_close(picked, expected)


def test_max_pooling_keeps_each_blocks_strongest_patch_per_channel():
    conn = build_connector(ConnectorConfig(type="linear", tokens="patches", pool=2, pool_mode="max"), 2, 1)
    grid = torch.randn(4, 4, 2)
    feats = torch.cat([torch.zeros(1, 2), grid.reshape(16, 2)]).view(1, 17, 2)  # one segment: CLS + 4x4
    picked = conn.select(feats, MediaLayout(1, 4, 4))[0]
    blocks = [grid[:2, :2], grid[:2, 2:], grid[2:, :2], grid[2:, 2:]]
    expected = torch.stack([b.reshape(4, 2).max(dim=0).values for b in blocks])
    torch.testing.assert_close(picked, expected)
    with pytest.raises(ValueError, match="pool_mode"):
        ConnectorConfig(pool=2, pool_mode="median")


def test_cls_selection_picks_each_segment_cls():
    conn = build_connector(ConnectorConfig(type="linear", tokens="cls"), 1, 1)
    feats = torch.arange(LAYOUT.num_tokens, dtype=torch.float32).view(1, -1, 1)
    assert conn.select(feats, LAYOUT).flatten().tolist() == [0.0, 17.0, 34.0]


def test_wrong_token_count_raises():
    conn = build_connector({"type": "linear"}, 4, 4)
    with pytest.raises(ValueError, match="layout"):
        conn(torch.randn(1, 10, 4), LAYOUT)


def test_registry_errors_and_extension():
    with pytest.raises(ValueError, match="unknown connector type"):
        build_connector({"type": "nope"}, 4, 4)
    with pytest.raises(ValueError, match="unknown connector config keys"):
        ConnectorConfig.from_dict({"type": "linear", "depth": 3})
    with pytest.raises(ValueError, match="already registered"):
        register_connector("linear")(Connector)
    assert {"linear", "mlp2x_gelu"} <= set(CONNECTORS)
    with pytest.raises(TypeError):
        CONNECTORS["x"] = Connector  # read-only view


@pytest.mark.parametrize("kind", ["linear", "mlp2x_gelu"])
def test_out_norm_gives_tokens_the_scale_of_the_embeddings(kind):
    conn = build_connector(ConnectorConfig(type=kind, out_norm=True), in_dim=8, out_dim=12)
    embeddings = 0.05 * torch.randn(1000, 12)
    conn.match_scale(embeddings)
    out = conn(100.0 * torch.randn(2, LAYOUT.num_tokens, 8), LAYOUT)
    rms = out.pow(2).mean(-1).sqrt()  # every token: RMS equal to the embeddings' RMS
    torch.testing.assert_close(rms, torch.full_like(rms, embeddings.pow(2).mean().sqrt().item()), rtol=1e-3, atol=0)
    plain = build_connector(ConnectorConfig(type=kind), in_dim=8, out_dim=12)
    plain.match_scale(embeddings)  # no norm: nothing to set
    assert plain.out_norm is None


def test_out_norm_scale_is_set_by_the_builder_and_survives_save_load(tmp_path, monkeypatch):
    from helpers import tiny

    from mico_chat.loading import load_folder

    monkeypatch.setattr(tiny, "TINY_CONNECTORS", {m: {**c, "out_norm": True} for m, c in tiny.TINY_CONNECTORS.items()})
    model, processor = tiny.tiny_model()
    rms = model.get_input_embeddings().weight.float().pow(2).mean().sqrt().item()
    normed = [model.connectors[m] for m in tiny.TINY_CONNECTORS]  # the others keep the default: no norm
    for conn in normed:
        torch.testing.assert_close(conn.out_norm.weight, torch.full_like(conn.out_norm.weight, rms))
        conn.out_norm.weight.data.mul_(2.0)  # "trained": loading must keep this, not match the scale again
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded, _ = load_folder(tmp_path, dtype=torch.float32)
    for name in tiny.TINY_CONNECTORS:
        conn = loaded.connectors[name]
        torch.testing.assert_close(conn.out_norm.weight, model.connectors[name].out_norm.weight)
