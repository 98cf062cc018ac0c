"""Long items in the encoder: chunked encoding (``frame_chunk_size``) and the context embeddings of
frames past the table (``context_index``): what equals unchunked encoding, what differs, the limits."""

import pytest
import torch

from mico_chat.encoders import MiCoEncoder, MiCoEncoderConfig
from mico_chat.modality import Modality
from helpers.tiny import TINY_ENCODER

TOKENS_PER_FRAME = 17  # CLS + 4x4 patches of the tiny encoder


def encoder(**overrides) -> MiCoEncoder:
    """The tiny encoder with trained-looking (non-zero) context embeddings, so their rows matter."""
    torch.manual_seed(0)
    enc = MiCoEncoder(MiCoEncoderConfig(**{**TINY_ENCODER, **overrides})).eval()
    with torch.no_grad():
        enc.context_embedding.weight.normal_()
    return enc


def encode(enc: MiCoEncoder, frames: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return enc({"video": frames})[Modality.VIDEO]


def test_segment_attention_chunked_equals_unchunked():
    enc = encoder(segment_attention="segment")
    frames = torch.randn(2, 13, 3, 32, 32)
    whole = encode(enc, frames)
    enc.config.frame_chunk_size = 4  # chunks of 4, 4, 4, 1 frames
    torch.testing.assert_close(encode(enc, frames), whole, rtol=0, atol=1e-6)


def test_items_no_longer_than_a_chunk_encode_exactly_as_before():
    enc = encoder()
    frames = torch.randn(1, 6, 3, 32, 32)
    whole = encode(enc, frames)
    enc.config.frame_chunk_size = 6
    assert torch.equal(encode(enc, frames), whole)


def test_joint_chunks_attend_within_themselves_only():
    """Joint attention differs from unchunked past a chunk: chunk k of the output is exactly chunk
    k's frames encoded as an item of their own, with the context rows the chunked item gave them."""
    enc = encoder(frame_chunk_size=4)
    frames = torch.randn(1, 10, 3, 32, 32)
    chunked = encode(enc, frames).view(1, 10, TOKENS_PER_FRAME, -1)
    rows = enc.context_rows(10)  # absolute: rows 0..9
    for start, stop in ((0, 4), (4, 8), (8, 10)):
        with torch.no_grad():
            tokens = enc.embed("video", frames[:, start:stop])  # rows 0..stop-start-1
            offset = (rows[start:stop] - rows[: stop - start]).repeat_interleave(TOKENS_PER_FRAME, dim=0)
            alone = enc.backbone(tokens + offset)  # the same chunk with the rows it had in the item
        torch.testing.assert_close(chunked[:, start:stop].flatten(1, 2), alone, rtol=0, atol=1e-5)
    enc.config.frame_chunk_size = None
    unchunked = encode(enc, frames).view(1, 10, TOKENS_PER_FRAME, -1)
    assert not torch.allclose(unchunked, chunked, atol=1e-3)  # frames of other chunks are not seen


def test_chunk_local_context_makes_each_chunk_a_clip_of_its_own():
    enc = encoder(frame_chunk_size=8, context_index="chunk")
    frames = torch.randn(1, 40, 3, 32, 32)  # 40 frames, more than the 16-row table
    chunked = encode(enc, frames).view(1, 40, TOKENS_PER_FRAME, -1)
    assert torch.equal(enc.context_rows(40)[[0, 8, 15, 39]], enc.context_embedding.weight[[0, 0, 7, 7]])
    for start in (0, 16, 32):
        torch.testing.assert_close(chunked[:, start : start + 8], encode(enc, frames[:, start : start + 8]).view(1, 8, 17, -1))


def test_backbone_never_sees_more_than_a_chunk():
    """The memory bound: every backbone call is at most ``frame_chunk_size`` frames long, so the
    attention cost grows linearly with the frames (unchunked: one call over all of them)."""
    seen: list[int] = []
    enc = encoder(frame_chunk_size=8, context_index="chunk")
    enc.layers[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1]))
    encode(enc, torch.randn(1, 64, 3, 32, 32))
    assert seen == [8 * TOKENS_PER_FRAME] * 8


def test_interpolated_context_rows():
    enc = encoder(context_index="interpolate")
    table = enc.context_embedding.weight  # (16, D)
    assert torch.equal(enc.context_rows(12), table[:12])  # within the table: the rows themselves
    rows = enc.context_rows(31)  # 31 = 2 * 16 - 1 rows: every other row is a table row
    torch.testing.assert_close(rows[::2], table)
    torch.testing.assert_close(rows[1::2], (table[:-1] + table[1:]) / 2)
    assert encode(enc, torch.randn(1, 48, 3, 32, 32)).shape == (1, 48 * TOKENS_PER_FRAME, 32)


def test_interpolated_rows_carry_gradients_to_the_table():
    enc = encoder(context_index="interpolate", frame_chunk_size=16)
    enc.train()
    enc({"video": torch.randn(1, 40, 3, 32, 32)})[Modality.VIDEO].pow(2).mean().backward()
    assert (enc.context_embedding.weight.grad.abs().sum(-1) > 0).all()


@pytest.mark.parametrize(
    ("overrides", "frames", "message"),
    [
        ({}, 17, "video item has 17 segments; this encoder allows 1..16 \\(max_segments: its context-embedding table\\); "
                 "longer items need context_index='chunk' or 'interpolate'"),
        ({"context_index": "interpolate", "max_long_segments": 64}, 65, "allows 1..64 \\(max_long_segments\\)"),
    ],
)
def test_items_past_the_limits_name_them(overrides, frames, message):
    enc = encoder(**overrides)
    with pytest.raises(ValueError, match=message):
        enc.layout("video", frames)
    with pytest.raises(ValueError, match=message):
        encode(enc, torch.randn(1, frames, 3, 32, 32))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"context_index": "chunk"}, "context_index='chunk' needs frame_chunk_size in 1..max_segments \\(16\\), got None"),
        ({"context_index": "chunk", "frame_chunk_size": 32}, "got 32"),
        ({"frame_chunk_size": 0}, "frame_chunk_size must be >= 1 or None"),
        ({"context_index": "relative"}, "context_index must be 'absolute', 'chunk' or 'interpolate'"),
        ({"max_long_segments": 8}, "max_long_segments \\(8\\) must be >= max_segments \\(16\\)"),
    ],
)
def test_long_item_options_are_checked(overrides, message):
    with pytest.raises(ValueError, match=message):
        MiCoEncoderConfig(**{**TINY_ENCODER, **overrides})


def test_joint_multimodal_context_refuses_items_longer_than_a_chunk():
    enc = encoder(frame_chunk_size=4, context_index="chunk")
    inputs = {"video": torch.randn(1, 6, 3, 32, 32), "audio": torch.randn(1, 1, 64, 32)}
    with pytest.raises(ValueError, match="more than frame_chunk_size=4; encode the modalities separately"):
        enc(inputs, joint=True)
    short = {"video": torch.randn(1, 4, 3, 32, 32), "audio": torch.randn(1, 1, 64, 32)}
    assert enc(short, joint=True)[Modality.VIDEO].shape == (1, 4 * TOKENS_PER_FRAME, 32)


def test_long_item_options_round_trip(tmp_path):
    enc = encoder(frame_chunk_size=8, context_index="interpolate", max_long_segments=128)
    enc.save_pretrained(tmp_path)
    loaded = MiCoEncoderConfig.from_pretrained(tmp_path)
    assert (loaded.frame_chunk_size, loaded.context_index, loaded.max_long_segments, loaded.segment_limit) == (8, "interpolate", 128, 128)


def test_pretraining_condition_adapter_refuses_items_past_its_table():
    from mico_chat.encoders.modeling_pretraining import ConditionAdapter

    adapter = ConditionAdapter(encoder_dim=8, text_dim=12, max_segments=4)
    assert adapter(torch.randn(1, 4, 3, 8)).shape == (1, 12, 12)
    with pytest.raises(ValueError, match="covers 4 segments \\(max_segments\\), the items have 5"):
        adapter(torch.randn(1, 5, 3, 8))
