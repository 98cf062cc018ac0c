import pytest
import torch

from mico_chat.encoders import ENCODER_PRESETS, MiCoEncoder, MiCoEncoderConfig
from mico_chat.modality import MediaLayout, Modality
from helpers.tiny import TINY_ENCODER


@pytest.fixture
def encoder():
    torch.manual_seed(0)
    return MiCoEncoder(MiCoEncoderConfig(**TINY_ENCODER)).eval()


def test_output_shapes_follow_layout(encoder):
    inputs = {
        "video": torch.randn(2, 3, 3, 32, 32),
        "audio": torch.randn(2, 2, 64, 32),
        "image": torch.randn(1, 3, 32, 32),
        "depth": torch.randn(1, 32, 32),
        "normal": torch.randn(1, 3, 32, 32),
    }
    out = encoder(inputs)
    assert out[Modality.VIDEO].shape == (2, 3 * 17, 32)  # 3 frames x (CLS + 4x4 patches)
    assert out[Modality.AUDIO].shape == (2, 2 * 9, 32)  # 2 clips x (CLS + 4x2 patches)
    assert out[Modality.DEPTH].shape == (1, 17, 32)
    layout = encoder.layout("audio", 2)
    assert layout == MediaLayout(num_segments=2, grid_h=4, grid_w=2) and layout.num_tokens == 18


def test_untrained_context_embeddings_make_frames_independent_in_segment_mode():
    torch.manual_seed(0)
    enc = MiCoEncoder(MiCoEncoderConfig(**{**TINY_ENCODER, "segment_attention": "segment"})).eval()
    frames = torch.randn(1, 2, 3, 32, 32)
    video = enc({"video": frames})[Modality.VIDEO]  # (1, 34, D)
    # Modality/context embeddings start at zero, so each frame encodes exactly like an image.
    images = enc({"image": frames[0]})[Modality.IMAGE]  # (2, 17, D)
    torch.testing.assert_close(video.view(2, 17, -1), images, rtol=0, atol=1e-6)


def test_joint_mode_attends_across_frames_and_segment_mode_does_not():
    torch.manual_seed(0)
    joint = MiCoEncoder(MiCoEncoderConfig(**TINY_ENCODER)).eval()
    seg = MiCoEncoder(MiCoEncoderConfig(**{**TINY_ENCODER, "segment_attention": "segment"})).eval()
    seg.load_state_dict(joint.state_dict())
    a = torch.randn(1, 2, 3, 32, 32)
    b = a.clone()
    b[:, 1] += 1.0  # change only the second frame
    for enc, first_frame_changes in ((joint, True), (seg, False)):
        fa = enc({"video": a})[Modality.VIDEO][:, :17]
        fb = enc({"video": b})[Modality.VIDEO][:, :17]
        assert (not torch.allclose(fa, fb, atol=1e-6)) == first_frame_changes


def test_context_and_modality_embeddings_are_added_per_segment(encoder):
    with torch.no_grad():
        encoder.context_embedding.weight[1] = 1.0
        encoder.modality_embedding.weight[encoder.config.modalities.index("video")] = 0.5
    frames = torch.zeros(1, 2, 3, 32, 32)
    tokens = encoder.embed("video", frames).view(1, 2, 17, -1)
    diff = tokens[0, 1] - tokens[0, 0]
    torch.testing.assert_close(diff, torch.ones_like(diff))
    base = encoder.embed("image", frames[0, :1]).view(17, -1)
    torch.testing.assert_close(tokens[0, 0] - base, torch.full_like(base, 0.5))


def test_joint_multimodal_context_splits_back(encoder):
    video, audio = torch.randn(2, 2, 3, 32, 32), torch.randn(2, 1, 64, 32)
    out = encoder({"video": video, "audio": audio}, joint=True)
    assert out[Modality.VIDEO].shape == (2, 34, 32) and out[Modality.AUDIO].shape == (2, 9, 32)
    separate = encoder({"video": video})[Modality.VIDEO]
    assert not torch.allclose(out[Modality.VIDEO], separate)  # audio tokens took part in attention
    with pytest.raises(ValueError, match="same number of items"):
        encoder({"video": video, "audio": audio[:1]}, joint=True)


def test_bad_shapes_raise_clear_errors(encoder):
    with pytest.raises(ValueError, match="expects"):
        encoder({"image": torch.randn(1, 3, 64, 64)})
    with pytest.raises(ValueError, match="3, H, W"):
        encoder({"video": torch.randn(1, 2, 1, 32, 32)})
    with pytest.raises(ValueError, match="allows 1..16"):
        encoder({"video": torch.randn(1, 17, 3, 32, 32)})
    with pytest.raises(ValueError, match="unknown modality"):
        encoder({"smell": torch.randn(1, 3, 32, 32)})


def test_pool_averages_segment_cls_tokens(encoder):
    feats = torch.arange(2 * 3 * 17 * 2, dtype=torch.float32).view(2, 51, 2)
    layout = MediaLayout(3, 4, 4)
    pooled = MiCoEncoder.pool(feats, layout)
    expected = feats.view(2, 3, 17, 2)[:, :, 0].mean(1)
    torch.testing.assert_close(pooled, expected)


def test_gradient_checkpointing_matches_plain_backward(encoder):
    x = torch.randn(1, 2, 3, 32, 32)
    encoder.train()
    loss = encoder({"video": x})[Modality.VIDEO].pow(2).mean()
    loss.backward()
    plain = [p.grad.clone() for p in encoder.parameters() if p.grad is not None]
    encoder.zero_grad()
    encoder.activation_checkpointing_enable()
    encoder({"video": x})[Modality.VIDEO].pow(2).mean().backward()
    ckpt = [p.grad.clone() for p in encoder.parameters() if p.grad is not None]
    for a, b in zip(plain, ckpt):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("preset", list(ENCODER_PRESETS))
def test_presets_build_configs_with_paper_shapes(preset):
    config = MiCoEncoderConfig.from_preset(preset)
    assert config.hidden_size == ENCODER_PRESETS[preset]["hidden_size"]
    assert config.hidden_size % config.num_attention_heads == 0


def test_config_round_trip_and_validation(tmp_path):
    config = MiCoEncoderConfig(**TINY_ENCODER)
    config.save_pretrained(tmp_path)
    again = MiCoEncoderConfig.from_pretrained(tmp_path)
    assert again.to_dict() == config.to_dict()
    with pytest.raises(ValueError, match="divisible"):
        MiCoEncoderConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        MiCoEncoderConfig(image_size=30, patch_size=8)


def test_conv_stem_keeps_the_token_grid_and_reloads(tmp_path):
    torch.manual_seed(0)
    config = MiCoEncoderConfig(**{**TINY_ENCODER, "patch_embedding": "conv"})
    enc = MiCoEncoder(config).eval()
    stem = enc.patch_embeddings["rgb"]
    # patch 8 = three stride-2 convolutions (widths 8, 16, 32 up to hidden_size 32), then 1x1
    assert [m.out_channels for m in stem.stem if isinstance(m, torch.nn.Conv2d)] == [8, 16, 32]
    assert len([m for m in enc.patch_embeddings["audio"].stem if isinstance(m, torch.nn.Conv2d)]) == 4  # patch 16
    video = torch.randn(2, 3, 3, 32, 32)
    out = enc({"video": video})[Modality.VIDEO]
    assert out.shape == (2, 3 * 17, 32)  # same layout as the linear patch embedding
    out.sum().backward()
    assert stem.stem[0].weight.grad.abs().sum() > 0
    enc.save_pretrained(tmp_path)
    again = MiCoEncoder.from_pretrained(tmp_path).eval()
    assert again.config.patch_embedding == "conv"
    with torch.no_grad():
        torch.testing.assert_close(again({"video": video})[Modality.VIDEO], enc({"video": video})[Modality.VIDEO])


def _three_segments_of_17_tokens():
    """``(features (2, 51, 4), layout, tokens (2, 3, 17, 4))``: 2 items of 3 segments of a 4x4 grid + CLS."""
    feats = torch.randn(2, 3 * 17, 4)
    return feats, MediaLayout(3, 4, 4), feats.view(2, 3, 17, 4)


def test_pool_cls_max_appends_the_patch_maximum():
    feats, layout, tokens = _three_segments_of_17_tokens()
    pooled = MiCoEncoder.pool(feats, layout, "cls_max")
    assert pooled.shape == (2, 8)
    torch.testing.assert_close(pooled[:, :4], tokens[:, :, 0].mean(1))
    torch.testing.assert_close(pooled[:, 4:], tokens[:, :, 1:].flatten(1, 2).max(1).values)  # CLS tokens excluded
    assert MiCoEncoderConfig(**{**TINY_ENCODER, "pooling": "cls_max"}).pooled_size == 64


def test_pool_cls_max_delta_is_the_only_part_that_sees_the_order():
    feats, layout, tokens = _three_segments_of_17_tokens()
    pooled = MiCoEncoder.pool(feats, layout, "cls_max_delta")
    assert pooled.shape == (2, 12)
    torch.testing.assert_close(pooled[:, :8], MiCoEncoder.pool(feats, layout, "cls_max"))
    torch.testing.assert_close(pooled[:, 8:], tokens[:, 2, 0] - tokens[:, 0, 0])
    backwards = MiCoEncoder.pool(tokens.flip(1).reshape(2, 3 * 17, 4), layout, "cls_max_delta")
    torch.testing.assert_close(backwards[:, :8], pooled[:, :8])  # order-free parts unchanged
    torch.testing.assert_close(backwards[:, 8:], -pooled[:, 8:])  # the clip played backwards
    assert MiCoEncoderConfig(**{**TINY_ENCODER, "pooling": "cls_max_delta"}).pooled_size == 96


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"patch_embedding": "conv", "patch_size": 4, "image_size": 36}, None),  # 4 is a power of two: fine
        ({"patch_embedding": "conv", "patch_size": 6, "image_size": 36}, "power-of-two"),
        ({"patch_embedding": "deep"}, "patch_embedding must be"),
        ({"pooling": "mean"}, "pooling must be"),
    ],
)
def test_front_end_options_are_checked(fields, message):
    if message is None:
        MiCoEncoderConfig(**{**TINY_ENCODER, **fields})
    else:
        with pytest.raises(ValueError, match=message):
            MiCoEncoderConfig(**{**TINY_ENCODER, **fields})
