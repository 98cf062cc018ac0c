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
