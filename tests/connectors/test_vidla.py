"""VidLA's hierarchical temporal attention connector: the masks of section 4 on Figure 3's toy
configuration, entry by entry; that attention obeys them; shapes and token counts; the processor's
placeholder count; gradients; save/load; use from a stage config."""

import json

import numpy as np
import pytest
import torch

from mico_chat.connectors import CONNECTORS, ConnectorConfig, VidLAConfig, VidLAConnector, build_connector
from mico_chat.connectors.vidla import HierarchicalTemporalBlock, global_mask, temporal_mask
from mico_chat.modality import MediaLayout

# Figure 3's toy example: N = 4 patches, T = 4 frames, U = 2 levels, V = 1 [MST] per level, r = 2.
N, T, U, V, R = 4, 4, 2, 1, 2
VIDLA = {
    "type": "vidla", "tokens": "patches", "levels": 2, "mst_per_level": 2, "temporal_scale": 2, "depth": 2, "heads": 4,
}  # fmt: skip


def layout(frames: int) -> MediaLayout:
    return MediaLayout(num_segments=frames, grid_h=4, grid_w=4)


def vidla(seed=0, **changes) -> VidLAConnector:
    torch.manual_seed(seed)
    return build_connector({**VIDLA, **changes}, in_dim=8, out_dim=12).eval()


def paper_global_mask(n, t, u, v, r):
    """``M`` written out from section 4's case definitions, 0 -> True, -inf -> False, following
    the text where it and M^PATCH's formula disagree on the [CLS] column (see connectors/vidla.py)."""
    length = 1 + u * v + t * n
    rows = []
    for i in range(length):
        row = []
        for j in range(length):
            if i == 0:  # M^CLS: all zeros
                row.append(True)
            elif i <= u * v:  # M^MST = [-inf 1, M~^{MST,self}, M~^{MST,patch}], 0-based i, j within blocks
                mi = i - 1
                if j == 0:
                    row.append(False)
                elif j <= u * v:
                    row.append((mi // v) >= ((j - 1) // v))
                else:
                    row.append(((j - 1 - u * v) // n) % (r ** (mi // v)) == 0)
            else:  # M^PATCH: every [MST], patches of the same frame, never [CLS]
                pi = i - 1 - u * v
                if j == 0:
                    row.append(False)
                elif j <= u * v:
                    row.append(True)
                else:
                    row.append(pi // n == (j - 1 - u * v) // n)
        rows.append(row)
    return torch.tensor(rows)


# ------------------------------------------------------------------ masks on the toy configuration
def test_temporal_mask_on_the_toy_configuration():
    allowed = temporal_mask(T, N)
    assert allowed.shape == (T * N, T * N)
    for i in range(T * N):
        for j in range(T * N):
            assert bool(allowed[i, j]) == (abs(j - i) % N == 0), (i, j)
    # Figure 3: the first patch of the first frame attends only to the first patch of every frame.
    assert allowed[0].nonzero().flatten().tolist() == [0, 4, 8, 12]
    assert allowed[6].nonzero().flatten().tolist() == [2, 6, 10, 14]


def test_global_mask_on_the_toy_configuration():
    allowed = global_mask(T, N, U, V, R)
    assert allowed.shape == (19, 19)  # 1 + UV + TN
    expected = paper_global_mask(N, T, U, V, R)
    for i in range(19):
        for j in range(19):
            assert bool(allowed[i, j]) == bool(expected[i, j]), (i, j)
    # The same rows spelled out: columns [CLS | MST-0 MST-1 | frame 0 | frame 1 | frame 2 | frame 3].
    ones, zeros = [1] * 4, [0] * 4
    assert allowed[0].int().tolist() == [1, 1, 1] + ones * 4  # [CLS]: the aggregator sees everything
    assert allowed[1].int().tolist() == [0, 1, 0] + ones * 4  # [MST]-0: itself, every frame
    assert allowed[2].int().tolist() == [0, 1, 1] + ones + zeros + ones + zeros  # [MST]-1: levels <= 1, frames 0, 2
    for frame in range(T):
        for patch in range(N):
            row = allowed[3 + frame * N + patch].int().tolist()
            assert row == [0, 1, 1] + [int(f == frame) for f in range(T) for _ in range(N)]


@pytest.mark.parametrize("n,t,u,v,r", [(3, 8, 3, 2, 2), (2, 9, 2, 3, 3), (4, 5, 1, 4, 1)])
def test_global_mask_follows_the_papers_definitions_for_other_configurations(n, t, u, v, r):
    assert torch.equal(global_mask(t, n, u, v, r), paper_global_mask(n, t, u, v, r))
    allowed = global_mask(t, n, u, v, r)
    for level in range(u):  # level u reads the patches of frames 0, r^u, 2 r^u, ...
        row = allowed[1 + level * v, 1 + u * v :].view(t, n)
        assert row.all(dim=1).nonzero().flatten().tolist() == list(range(0, t, r**level))


# ------------------------------------------------------------------ attention obeys the masks
def test_tube_attention_equals_attention_under_the_temporal_mask():
    torch.manual_seed(0)
    block = HierarchicalTemporalBlock(8, heads=4, mlp_ratio=2).eval()
    patches = torch.randn(2, T * N, 8)
    with torch.no_grad():
        x = block.norm_temporal(patches)
        masked = patches + block.temporal(x, x, x, attn_mask=~temporal_mask(T, N), need_weights=False)[0]
        torch.testing.assert_close(block.temporal_step(patches, T), masked, rtol=1e-5, atol=1e-6)


def frame_outputs(conn, features):
    """The connector's outputs on ``features (1, T, 17, 8)`` split into [CLS], [MST] and frame tokens."""
    with torch.no_grad():
        out = conn(features.flatten(1, 2), layout(features.shape[1]))
    summary = 1 + conn.config.num_mst
    return out[:, :1], out[:, 1:summary], out[:, summary:]


def test_mst_levels_read_only_their_frames_and_patches_only_their_frame():
    """With the tube attention switched off (its output projection zeroed), one layer: changing
    frame 1 moves [CLS], level 0 and frame 1's token, and nothing else (level 1 reads frames 0, 2)."""
    conn = vidla(levels=2, mst_per_level=1, depth=1, frame_tokens=4)
    with torch.no_grad():
        conn.layers[0].temporal.out_proj.weight.zero_()
        conn.layers[0].temporal.out_proj.bias.zero_()
    features = torch.randn(1, 4, 17, 8)
    changed = features.clone()
    changed[:, 1, 1:] += 3.0 * torch.randn(16, 8)  # frame 1's patches
    (cls_a, mst_a, frames_a), (cls_b, mst_b, frames_b) = frame_outputs(conn, features), frame_outputs(conn, changed)
    assert (cls_b - cls_a).abs().max() > 1e-3
    assert (mst_b[:, 0] - mst_a[:, 0]).abs().max() > 1e-3  # level 0: every frame
    torch.testing.assert_close(mst_b[:, 1], mst_a[:, 1])  # level 1: frames 0 and 2 only
    assert (frames_b[:, 1] - frames_a[:, 1]).abs().max() > 1e-3
    for other in (0, 2, 3):
        torch.testing.assert_close(frames_b[:, other], frames_a[:, other])
    with torch.no_grad():  # the tube attention on again: patches see their position in other frames
        conn.layers[0].temporal.out_proj.weight.normal_()
    (_, _, frames_a), (_, _, frames_b) = frame_outputs(conn, features), frame_outputs(conn, changed)
    assert (frames_b[:, 0] - frames_a[:, 0]).abs().max() > 1e-3


def test_nothing_but_itself_reads_the_cls_token():
    conn = vidla(frame_tokens=4)
    features = torch.randn(1, 4, 17, 8)
    cls_a, mst_a, frames_a = frame_outputs(conn, features)
    with torch.no_grad():
        conn.cls.add_(3.0 * torch.randn_like(conn.cls))  # not a constant: LayerNorm would remove it
    cls_b, mst_b, frames_b = frame_outputs(conn, features)
    assert (cls_b - cls_a).abs().max() > 1e-3
    torch.testing.assert_close(mst_b, mst_a)
    torch.testing.assert_close(frames_b, frames_a)


# ------------------------------------------------------------------ module
@pytest.mark.parametrize("frames", [1, 3, 8])
@pytest.mark.parametrize("tokens,pool", [("patches", None), ("all", 2), ("cls", None)])
@pytest.mark.parametrize("frame_tokens", [0, 4])
def test_emits_cls_mst_and_pooled_frame_tokens(frames, tokens, pool, frame_tokens):
    config = ConnectorConfig.from_dict({**VIDLA, "tokens": tokens, "pool": pool, "frame_tokens": frame_tokens})
    assert isinstance(config, VidLAConfig)
    expected = 1 + 2 * 2 + min(frames, frame_tokens)
    assert VidLAConnector.num_tokens(config, layout(frames)) == expected
    out = build_connector(config, in_dim=8, out_dim=12)(torch.randn(2, layout(frames).num_tokens, 8), layout(frames))
    assert out.shape == (2, expected, 12) and torch.isfinite(out).all()


def test_token_count_is_bounded_by_the_config_whatever_the_frames():
    config = VidLAConfig(levels=3, mst_per_level=4, frame_tokens=6)
    counts = [VidLAConnector.num_tokens(config, layout(frames)) for frames in range(1, 65)]
    assert counts[:6] == [14, 15, 16, 17, 18, 19] and set(counts[5:]) == {19}  # 1 + 12 + min(T, 6)
    assert {VidLAConnector.num_tokens(VidLAConfig(), layout(f)) for f in (1, 8, 64)} == {13}  # 1 + U*V


def test_pooled_frame_tokens_average_contiguous_frames():
    conn = vidla(frame_tokens=2, depth=1)
    with torch.no_grad():
        conn.proj.weight.copy_(torch.eye(12, 8))
        conn.proj.bias.zero_()
    captured = {}
    conn.layers[-1].register_forward_hook(lambda module, args, output: captured.update(hidden=output))
    with torch.no_grad():
        out = conn(torch.randn(1, layout(4).num_tokens, 8), layout(4))
    per_frame = captured["hidden"][:, 5:].view(1, 4, 16, 8).mean(dim=2)  # after [CLS] + 4 [MST]
    pooled = torch.stack([per_frame[:, :2].mean(dim=1), per_frame[:, 2:].mean(dim=1)], dim=1)
    torch.testing.assert_close(out[:, 5:, :8], conn.norm(pooled))


def test_plain_connector_config_of_type_vidla_gets_the_papers_defaults():
    assert CONNECTORS["vidla"] is VidLAConnector
    conn = build_connector(ConnectorConfig(type="vidla"), in_dim=8, out_dim=12)
    assert isinstance(conn, VidLAConnector) and conn.config == VidLAConfig()
    assert (conn.config.levels, conn.config.mst_per_level, conn.config.temporal_scale) == (3, 4, 2)
    assert conn(torch.randn(1, layout(2).num_tokens, 8), layout(2)).shape == (1, 13, 12)


def test_time_embeddings_make_frame_order_matter_to_level_zero():
    features = torch.randn(1, 4, 17, 8)
    swapped = features[:, [1, 0, 2, 3]]  # level 0 reads every frame: a set, without time embeddings
    for time_embed, order_matters in ((False, False), (True, True)):
        conn = vidla(time_embed=time_embed, levels=1, mst_per_level=2)  # tube attention: order-equivariant
        with torch.no_grad():
            a, b = conn(features.flatten(1, 2), layout(4)), conn(swapped.flatten(1, 2), layout(4))
        assert not torch.allclose(a, b, atol=1e-6) if order_matters else torch.allclose(a, b, atol=1e-5)


def test_gradients_reach_every_parameter():
    conn = vidla(time_embed=True, out_norm=True, frame_tokens=2).train()
    conn(torch.randn(2, layout(3).num_tokens, 8), layout(3)).pow(2).mean().backward()
    missing = [name for name, p in conn.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing
    assert conn.time_embedding.grad[3:].abs().sum() == 0  # rows of frames the item does not have


def test_bad_configs_name_the_problem():
    with pytest.raises(ValueError, match="unknown connector config keys \\['num_queries'\\] for type 'vidla'"):
        ConnectorConfig.from_dict({"type": "vidla", "num_queries": 4})
    with pytest.raises(ValueError, match="vidla temporal_scale must be >= 1, got 0"):
        VidLAConfig(temporal_scale=0)
    with pytest.raises(ValueError, match="vidla frame_tokens must be >= 0, got -1"):
        VidLAConfig(frame_tokens=-1)
    with pytest.raises(ValueError, match="vidla heads \\(3\\) must divide the encoder hidden size \\(8\\)"):
        build_connector({**VIDLA, "heads": 3}, in_dim=8, out_dim=12)
    with pytest.raises(ValueError, match="cover 4 frames, the item has 6; raise the connector's max_frames"):
        VidLAConnector.num_tokens(VidLAConfig(time_embed=True, max_frames=4), layout(6))


# ------------------------------------------------------------------ as the model's video connector
TINY_VIDLA = {**VIDLA, "time_embed": True, "frame_tokens": 2}  # 1 + 4 + min(T, 2) tokens


@pytest.fixture
def vidla_model(monkeypatch):
    from helpers import tiny

    monkeypatch.setattr(tiny, "TINY_CONNECTORS", {**tiny.TINY_CONNECTORS, "video": TINY_VIDLA})
    return tiny.tiny_model()


def video_conversation(frames: int):
    pixels = np.random.default_rng(0).integers(0, 255, size=(frames, 24, 24, 3), dtype=np.uint8)
    return [
        {"role": "user", "content": [{"type": "video", "video": pixels}, {"type": "text", "text": "What happens?"}]},
        {"role": "assistant", "content": "A red square moves."},
    ]


@pytest.mark.parametrize("num_frames,expected", [(1, 6), (4, 7), (8, 7)])
def test_processor_expands_placeholders_to_what_it_emits_and_the_model_trains(vidla_model, num_frames, expected):
    model, processor = vidla_model
    processor.settings.num_frames = num_frames
    batch = processor(video_conversation(12), add_generation_prompt=False, with_labels=True, padding_side="right")
    assert batch["media"]["video"].shape[:2] == (1, num_frames)
    assert int((batch["input_ids"] == model.config.media_token_ids["video"]).sum()) == expected
    assert model.config.num_media_tokens("video", num_frames) == expected
    model.train()
    out = model(**batch)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    conn = model.connectors["video"]
    assert conn.cls.grad.abs().sum() > 0 and conn.mst.grad.abs().sum() > 0
    assert conn.layers[0].attn.in_proj_weight.grad.abs().sum() > 0
    if num_frames > 1:  # one frame: its tube is itself, the tube attention is then the value map alone
        assert conn.layers[0].temporal.in_proj_weight.grad.abs().sum() > 0


def test_save_and_load_round_trip(vidla_model, tmp_path):
    from helpers.tiny import assert_reloads_identically

    model, processor = vidla_model
    with torch.no_grad():
        model.connectors["video"].mst.add_(1.0)  # "trained": loading must keep it
    assert_reloads_identically(model, processor, video_conversation(6), tmp_path, VidLAConnector)
    saved = json.loads((tmp_path / "config.json").read_text())["connectors"]["video"]
    assert saved["type"] == "vidla" and saved["levels"] == 2 and saved["frame_tokens"] == 2


def test_built_from_a_stage_config_override(tmp_path):
    from helpers.tiny import preset_recipe

    override = "model.connectors={video: {type: vidla, levels: 2, mst_per_level: 3, temporal_scale: 3, depth: 1}}"
    recipe = preset_recipe(tmp_path, override)
    model, processor = recipe.build_model(quantize=False)
    conn = model.connectors["video"]
    assert isinstance(conn, VidLAConnector) and len(conn.layers) == 1 and conn.mst.shape == (6, 32)
    assert conn.config.temporal_scale == 3
    assert conn.config.pool == 2  # the preset's keys for video (tokens, pool) stay under the override
    assert processor.config.num_media_tokens("video", 4) == 7  # 1 + 2 * 3
    trained = recipe.apply_stage(model)
    assert all(p.requires_grad for p in trained.connectors["video"].parameters())
