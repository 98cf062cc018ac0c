"""Partition-and-Conquer's Combiner: timestamps from the media layout, time-aligned snippets, the
chunk-level causal mask (eq. 2 / eq. 8), shapes, gradients and save/load."""

import math

import numpy as np
import pytest
import torch

from mico_chat.connectors import CombinerConfig, TimeAlignedCombiner
from mico_chat.connectors.combiner import audio_row_times, chunk_causal_mask, snippet_index, video_frame_times
from mico_chat.connectors.ttm import TokenLearner, group_by_snippet
from mico_chat.encoders import MiCoEncoderConfig

ENCODER = MiCoEncoderConfig(
    hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, image_size=32, patch_size=8,
    audio_num_mel_bins=32, audio_target_length=64, audio_patch_size=16, max_segments=16,
)  # fmt: skip
# One tiny audio window: 64 fbank frames (10 ms hop, 25 ms window) = 10480 samples = 0.655 s, 4 patch rows.
CONFIG = CombinerConfig(num_snippets=4, snippet_tokens=3, depth=2, heads=4, pool=2)
# The causal Transformer with either readout, and the Token Turing Machine.
KINDS = pytest.mark.parametrize(
    "kind", [{"readout": "last"}, {"readout": "queries"}, {"variant": "ttm"}], ids=["last", "queries", "ttm"]
)


def inputs(frames=8, clips=3, video_s=4.0, audio_s=4.0, n=2, seed=0):
    """Random encoder features of ``n`` items and their timing."""
    torch.manual_seed(seed)
    video_layout, audio_layout = ENCODER.layout("video", frames), ENCODER.layout("audio", clips)
    return dict(
        video=torch.randn(n, video_layout.num_tokens, 32),
        video_layout=video_layout,
        audio=torch.randn(n, audio_layout.num_tokens, 32),
        audio_layout=audio_layout,
        video_times=video_frame_times(frames, video_s),
        audio_times=audio_row_times(clips, audio_s, ENCODER),
        span_s=max(video_s, audio_s),
    )


def combiner(config=CONFIG, seed=0, **changes):
    torch.manual_seed(seed)
    config = CombinerConfig.from_dict({**config.to_dict(), **changes})
    return TimeAlignedCombiner(config, in_dim=32, out_dim=48).eval()


# ------------------------------------------------------------------ timestamps
def test_video_frame_times_are_the_loaders_segment_centres():
    from mico_chat.media.video import sample_frame_times

    times = video_frame_times(8, 4.0)
    assert times.tolist() == pytest.approx([0.25 + 0.5 * i for i in range(8)])
    assert np.allclose(times.numpy(), sample_frame_times(4.0, 8))


def test_audio_row_times_locate_a_burst_in_the_fbank():
    """A 1 kHz burst at 1.6 s of a 2 s waveform: the loudest fbank patch row is the one timed there."""
    from mico_chat.preprocess import MediaSettings, waveform_to_fbank

    rate, burst_s = 16_000, 1.6
    wave = 1e-3 * np.random.default_rng(0).standard_normal(2 * rate).astype(np.float32)
    t = np.arange(int(burst_s * rate) - 320, int(burst_s * rate) + 320)
    wave[t] += 0.5 * np.sin(2 * np.pi * 1000 * t / rate).astype(np.float32)
    fbank = waveform_to_fbank(wave, MediaSettings(audio_clips=2), ENCODER)  # (2, 64, 32)
    energy = fbank.view(2, 4, 16, 32).mean(dim=(2, 3))  # (K, rows)
    times = audio_row_times(2, 2.0, ENCODER)
    k, r = divmod(int(energy.argmax()), 4)
    assert abs(times[k, r].item() - burst_s) < 0.08  # within half a row (16 frames = 160 ms)
    assert times[0].max() < 0.66 and times[1].min() > 1.3  # window 0 at 0 s, window 1 ends at 2 s


def test_rows_past_the_audio_end_are_padding():
    times = audio_row_times(1, 0.3, ENCODER)  # 4800 samples: 28 fbank frames, 2 rows hold audio
    assert times[0, :2].tolist() == pytest.approx([1400 / 16000, 3640 / 16000])
    assert math.isnan(times[0, 2]) and math.isnan(times[0, 3])
    assert snippet_index(times[None], torch.tensor([4.0]), 4)[0, 0].tolist() == [0, 0, -1, -1]


def test_unequal_lengths_are_aligned_by_time_not_index():
    # 8 frames over 4 s, one 0.655 s audio window: all audio belongs to the first of 4 snippets.
    video = snippet_index(video_frame_times(8, 4.0)[None], torch.tensor([4.0]), 4)
    audio = snippet_index(audio_row_times(1, 4.0, ENCODER)[None], torch.tensor([4.0]), 4)
    assert video[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert audio[0, 0].tolist() == [0, 0, 0, 0]  # by index the 4 rows would go to snippets 0, 1, 2, 3
    # Audio (4 s, 3 windows) longer than the video (2 s): the span is the longer one.
    video = snippet_index(video_frame_times(4, 2.0)[None], torch.tensor([4.0]), 4)
    audio = snippet_index(audio_row_times(3, 4.0, ENCODER)[None], torch.tensor([4.0]), 4)
    assert video[0].tolist() == [0, 0, 1, 1]
    assert audio[0].tolist() == [[0, 0, 0, 0], [1, 1, 2, 2], [3, 3, 3, 3]]


@pytest.mark.parametrize("frames,clips,video_s,audio_s,snippets", [(8, 3, 4.0, 4.0, 4), (5, 2, 3.0, 7.5, 3), (16, 1, 30.0, 0.4, 6)])
def test_every_feature_of_a_snippet_is_earlier_than_every_feature_of_the_next(frames, clips, video_s, audio_s, snippets):
    span = torch.tensor([max(video_s, audio_s)])
    times = torch.cat([video_frame_times(frames, video_s), audio_row_times(clips, audio_s, ENCODER).flatten()])
    index = snippet_index(times[None], span, snippets)[0]
    real = ~torch.isnan(times)
    for t in range(snippets - 1):
        now, after = times[real & (index == t)], times[real & (index > t)]
        if len(now) and len(after):
            assert now.max() < after.min()


# ------------------------------------------------------------------ mask
def test_mask_is_eq8_chunk_causal_mask():
    num, chunks = 12, 4  # features ordered by time, equal chunks
    snippets = (torch.arange(num) // (num // chunks))[None]
    allowed = chunk_causal_mask(snippets)[0]
    for i in range(1, num + 1):  # eq. 8, 1-based: i sees j iff j <= ceil(i*T/N) * N/T
        for j in range(1, num + 1):
            assert bool(allowed[i - 1, j - 1]) == (j <= math.ceil(i * chunks / num) * num / chunks)


def test_padding_is_seen_by_nobody_and_sees_everything_else():
    allowed = chunk_causal_mask(torch.tensor([[0, 1, -1, 2]]))[0]
    assert not allowed[:, 2].any()
    assert allowed[2].tolist() == [True, True, False, True]
    assert allowed[0].tolist() == [True, False, False, False] and allowed[3].tolist() == [True, True, False, True]


# ------------------------------------------------------------------ module
@KINDS
@pytest.mark.parametrize("frames,clips", [(4, 1), (8, 3), (16, 2)])
def test_emits_num_snippets_times_m_tokens_whatever_the_media(frames, clips, kind):
    out = combiner(**kind)(**inputs(frames, clips))
    assert out.shape == (2, 4 * 3, 48) == (2, TimeAlignedCombiner.num_tokens(CONFIG), 48)
    assert torch.isfinite(out).all()
    video_only = {**inputs(frames, clips), "audio": None, "audio_layout": None, "audio_times": None}
    assert combiner(**kind)(**video_only).shape == (2, 12, 48)


def test_last_readout_takes_each_snippets_latest_features_and_needs_m_of_them():
    conn = combiner(num_snippets=2, snippet_tokens=2)
    snippets = torch.tensor([[0, 1, 0, 1, -1, 0]])
    times = torch.tensor([[0.1, 0.6, 0.3, 0.5, math.nan, 0.2]], dtype=torch.float64)
    assert conn.last_per_snippet(snippets, times).tolist() == [[5, 2, 3, 1]]
    # 2 frames over 4 s and 0.655 s of audio: snippet 2 of 4 holds nothing.
    sparse = inputs(frames=2, clips=1)
    with pytest.raises(ValueError, match="snippet 2 of item 0 holds 0 features, fewer than snippet_tokens=3"):
        combiner()(**sparse)
    assert combiner(readout="queries")(**sparse).shape == (2, 12, 48)  # learned tokens need no features


@KINDS
def test_outputs_of_a_snippet_do_not_depend_on_later_snippets(kind):
    conn = combiner(**kind)
    base = inputs(frames=8, clips=3)
    with torch.no_grad():
        before = conn(**base)
        later = dict(base)
        video = base["video"].clone().view(2, 8, -1, 32)
        video[:, 6:] += 5.0 * torch.randn_like(video[:, 6:])  # frames 6, 7: snippet 3
        later["video"] = video.flatten(1, 2)
        audio = base["audio"].clone().view(2, 3, 9, 32)
        audio[:, 2] += 5.0 * torch.randn_like(audio[:, 2])  # window 2 (3.3 s to 4 s): snippet 3
        later["audio"] = audio.flatten(1, 2)
        after = conn(**later)
    m = CONFIG.snippet_tokens
    torch.testing.assert_close(after[:, : 3 * m], before[:, : 3 * m])  # x_0 .. x_2
    assert (after[:, 3 * m :] - before[:, 3 * m :]).abs().max() > 1e-2  # x_3 sees its own snippet
    with torch.no_grad():
        early = dict(base)
        video = base["video"].clone().view(2, 8, -1, 32)
        video[:, 0] += 5.0 * torch.randn_like(video[:, 0])  # frame 0: snippet 0, seen by every later snippet
        early["video"] = video.flatten(1, 2)
        changed = conn(**early)
    assert all((changed[:, t * m : (t + 1) * m] - before[:, t * m : (t + 1) * m]).abs().max() > 1e-2 for t in range(4))


@KINDS
def test_padding_rows_change_nothing(kind):
    conn = combiner(**kind)
    short = inputs(frames=8, clips=1, audio_s=0.3)  # rows 2, 3 of the window are padding
    with torch.no_grad():
        before = conn(**short)
        audio = short["audio"].clone().view(2, 1, 9, 32)
        audio[:, 0, 5:] += 5.0 * torch.randn_like(audio[:, 0, 5:])  # patches of rows 2, 3 (after CLS, 2 per row)
        after = conn(**{**short, "audio": audio.flatten(1, 2)})
    torch.testing.assert_close(after, before)


@KINDS
def test_items_with_different_spans_batch_like_single_items(kind):
    conn = combiner(**kind)
    a, b = inputs(video_s=4.0, audio_s=4.0, n=1, seed=1), inputs(video_s=2.0, audio_s=0.5, n=1, seed=2)
    batch = {
        "video": torch.cat([a["video"], b["video"]]),
        "video_layout": a["video_layout"],
        "audio": torch.cat([a["audio"], b["audio"]]),
        "audio_layout": a["audio_layout"],
        "video_times": torch.stack([a["video_times"], b["video_times"]]),
        "audio_times": torch.stack([a["audio_times"], b["audio_times"]]),
        "span_s": torch.tensor([a["span_s"], b["span_s"]]),
    }
    with torch.no_grad():
        together = conn(**batch)
        torch.testing.assert_close(together[:1], conn(**a), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(together[1:], conn(**b), rtol=1e-5, atol=1e-5)


@KINDS
def test_gradients_reach_every_parameter(kind):
    conn = combiner(out_norm=True, **kind).train()
    conn(**inputs()).pow(2).mean().backward()
    missing = [name for name, p in conn.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="combiner snippet_tokens must be >= 1"):
        CombinerConfig(snippet_tokens=0)
    with pytest.raises(ValueError, match="combiner readout must be 'last' or 'queries', got 'cls'"):
        CombinerConfig(readout="cls")
    with pytest.raises(ValueError, match="combiner variant must be 'transformer' or 'ttm', got 'rnn'"):
        CombinerConfig(variant="rnn")
    with pytest.raises(ValueError, match="combiner memory_tokens must be >= 1"):
        CombinerConfig(variant="ttm", memory_tokens=0)
    with pytest.raises(ValueError, match="heads \\(5\\) must divide the encoder hidden size \\(32\\)"):
        TimeAlignedCombiner(CombinerConfig(heads=5), 32, 48)
    with pytest.raises(ValueError, match="video_times has 4 times for 8 frames"):
        combiner()(**{**inputs(), "video_times": video_frame_times(4, 4.0)})
    with pytest.raises(ValueError, match="audio_times is \\(1, 4\\) per item; the audio layout has 3 windows"):
        combiner()(**{**inputs(), "audio_times": audio_row_times(1, 4.0, ENCODER)})


@KINDS
def test_save_and_load_round_trip(tmp_path, kind):
    conn = combiner(**kind)
    with torch.no_grad():
        conn.type_embedding.add_(1.0)  # "trained": loading must keep it
        before = conn(**inputs())
    conn.save_pretrained(tmp_path)
    loaded = TimeAlignedCombiner.from_pretrained(tmp_path).eval()
    assert loaded.config == conn.config and (loaded.in_dim, loaded.out_dim) == (32, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs()), before, rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="no combiner config"):
        TimeAlignedCombiner.from_pretrained(tmp_path / "missing")


# ------------------------------------------------------------------ as the model's video connector
COMBINER = {"type": "combiner", "num_snippets": 2, "snippet_tokens": 3, "depth": 1, "heads": 4, "pool": 2}
TTM = {**COMBINER, "variant": "ttm", "memory_tokens": 4, "read_tokens": 6}


@pytest.fixture(params=[COMBINER, TTM], ids=["transformer", "ttm"])
def combiner_model(monkeypatch, request):
    from helpers import tiny

    monkeypatch.setattr(tiny, "TINY_CONNECTORS", {**tiny.TINY_CONNECTORS, "video": request.param})
    return tiny.tiny_model()


def video_conversation(frames: int):
    pixels = np.random.default_rng(0).integers(0, 255, size=(frames, 24, 24, 3), dtype=np.uint8)
    return [
        {"role": "user", "content": [{"type": "video", "video": pixels}, {"type": "text", "text": "What happens?"}]},
        {"role": "assistant", "content": "A red square moves."},
    ]


def test_registered_as_a_connector_with_its_own_config():
    from mico_chat.connectors import CONNECTORS, ConnectorConfig, build_connector

    assert CONNECTORS["combiner"] is TimeAlignedCombiner
    config = ConnectorConfig.from_dict(COMBINER)
    assert isinstance(config, CombinerConfig) and config.readout == "last"
    layout = ENCODER.layout("video", 4)
    conn = build_connector(config, in_dim=32, out_dim=48)
    assert conn(torch.randn(2, layout.num_tokens, 32), layout).shape == (2, 6, 48)  # frames alone
    with pytest.raises(ValueError, match="give video_times and span_s together"):
        conn(torch.randn(2, layout.num_tokens, 32), layout, video_times=video_frame_times(4, 2.0))


@pytest.mark.parametrize("num_frames", [4, 8])
def test_processor_expands_placeholders_to_t_times_m_and_the_model_trains(combiner_model, num_frames):
    model, processor = combiner_model
    processor.settings.num_frames = num_frames
    batch = processor(video_conversation(12), add_generation_prompt=False, with_labels=True, padding_side="right")
    assert int((batch["input_ids"] == model.config.media_token_ids["video"]).sum()) == 6
    model.train()
    out = model(**batch)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    missing = [n for n, p in model.connectors["video"].named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_processor_reports_too_few_video_tokens_per_snippet(monkeypatch):
    from helpers import tiny

    monkeypatch.setattr(tiny, "TINY_CONNECTORS", {**tiny.TINY_CONNECTORS, "video": {**COMBINER, "snippet_tokens": 8}})
    model, processor = tiny.tiny_model(num_frames=2)  # 1 frame of 5 tokens per snippet
    with pytest.raises(ValueError, match="combiner: 2 frames of 5 tokens leave a snippet \\(of 2\\) 5 features"):
        processor(video_conversation(6))


def test_model_save_and_load_round_trip(combiner_model, tmp_path):
    from helpers.tiny import assert_reloads_identically

    model, processor = combiner_model
    with torch.no_grad():
        model.connectors["video"].type_embedding.add_(1.0)  # "trained": loading must keep it
    assert_reloads_identically(model, processor, video_conversation(6), tmp_path, TimeAlignedCombiner)


def test_built_from_a_stage_config_override(tmp_path):
    from helpers.tiny import preset_recipe

    override = "model.connectors={video: {type: combiner, num_snippets: 2, snippet_tokens: 4, readout: queries}}"
    recipe = preset_recipe(tmp_path, override)
    model, processor = recipe.build_model(quantize=False)
    conn = model.connectors["video"]
    assert isinstance(conn, TimeAlignedCombiner) and conn.config.readout == "queries"
    assert processor.config.num_media_tokens("video", 4) == 8
    trained = recipe.apply_stage(model)
    assert all(p.requires_grad for p in trained.connectors["video"].parameters())


@pytest.mark.parametrize("num_frames", [1, 2, 8])
def test_ttm_needs_no_feature_per_snippet_and_its_processor_reads_a_fixed_count(monkeypatch, num_frames):
    """The TTM's token count passes the processor for any frame count (1 frame: snippet 1 empty),
    and its processor reads ``read_tokens`` tokens per snippet, once per snippet, whatever the media."""
    from helpers import tiny

    monkeypatch.setattr(tiny, "TINY_CONNECTORS", {**tiny.TINY_CONNECTORS, "video": {**TTM, "snippet_tokens": 8}})
    model, processor = tiny.tiny_model(num_frames=num_frames)
    batch = processor(video_conversation(12))
    assert int((batch["input_ids"] == model.config.media_token_ids["video"]).sum()) == 16
    seen = []
    model.connectors["video"].ttm.process.register_forward_hook(lambda module, args, out: seen.append(args[0].shape))
    with torch.no_grad():
        assert torch.isfinite(model(**batch).logits).all()
    assert seen == [torch.Size([1, 6, 32])] * 2


def test_ttm_built_from_a_stage_config_override(tmp_path):
    from helpers.tiny import preset_recipe

    override = (
        "model.connectors={video: {type: combiner, variant: ttm, num_snippets: 2, snippet_tokens: 4, memory_tokens: 8}}"
    )
    recipe = preset_recipe(tmp_path, override)
    model, processor = recipe.build_model(quantize=False)
    conn = model.connectors["video"]
    assert isinstance(conn, TimeAlignedCombiner) and conn.config.variant == "ttm" and conn.ttm is not None
    assert conn.layers is None and conn.ttm.memory.shape == (8, 32)
    assert processor.config.num_media_tokens("video", 4) == 8
    trained = recipe.apply_stage(model)
    assert all(p.requires_grad for p in trained.connectors["video"].parameters())


# ------------------------------------------------------------------ Token Turing Machine parts
def test_token_learner_pools_convex_combinations_of_the_present_tokens():
    torch.manual_seed(0)
    learner = TokenLearner(8, num_outputs=3)
    tokens = torch.randn(2, 5, 8)
    present = torch.tensor([[True, False, False, False, False], [True, True, False, True, False]])
    out = learner(tokens, present)
    assert out.shape == (2, 3, 8)
    torch.testing.assert_close(out[0], tokens[0, :1].expand(3, -1))  # one present token: every output is it
    weights = (learner.score(tokens[1]).masked_fill(~present[1, :, None], float("-inf"))).softmax(dim=0)  # (5, 3)
    torch.testing.assert_close(out[1], weights.T @ tokens[1])
    changed = tokens.clone()
    changed[:, 4] += 10.0  # absent in both items
    torch.testing.assert_close(learner(changed, present), out)
    constant = torch.ones(1, 5, 8) * torch.arange(8.0)
    torch.testing.assert_close(learner(constant), constant[:, :3])  # weights sum to 1 over the tokens


def test_group_by_snippet_gives_each_snippet_its_own_padded_row():
    tokens = torch.arange(6.0).view(1, 6, 1).expand(2, -1, -1).clone()  # token i has value i
    snippets = torch.tensor([[1, 0, -1, 1, 0, 1], [0, 0, 0, 0, -1, -1]])
    grouped, present = group_by_snippet(tokens, snippets, num_snippets=3)
    assert grouped.shape == (2, 3, 4, 1) and present.shape == (2, 3, 4)
    assert present.sum(dim=2).tolist() == [[2, 3, 0], [4, 0, 0]]
    assert grouped[0, 0, :2, 0].tolist() == [1, 4] and grouped[0, 1, :3, 0].tolist() == [0, 3, 5]
    assert grouped[1, 0, :, 0].tolist() == [0, 1, 2, 3]
    assert grouped[~present].abs().sum() == 0
    empty, none = group_by_snippet(tokens[:1], torch.full((1, 6), -1), num_snippets=2)
    assert empty.shape == (1, 2, 1, 1) and not none.any()


def test_ttm_step_t_reads_its_own_snippet_and_earlier_ones_only_through_the_memory():
    """Changing snippet 0's frames changes x_1 although Read at step 1 pools the same snippet-1
    tokens as before: only the memory it pools with them differs."""
    conn = combiner(variant="ttm", num_snippets=2)
    base = {**inputs(frames=4), "audio": None, "audio_layout": None, "audio_times": None}
    pooled = []
    conn.ttm.read.register_forward_hook(lambda module, args, out: pooled.append(args[0]))
    with torch.no_grad():
        before = conn(**base)
        video = base["video"].clone().view(2, 4, -1, 32)
        video[:, :2] += 5.0 * torch.randn_like(video[:, :2])  # frames 0, 1: snippet 0
        after = conn(**{**base, "video": video.flatten(1, 2)})
    memory = CONFIG.memory_tokens
    assert [p.shape[1] for p in pooled] == [memory + 2 * 5] * 4  # [memory; 2 frames x 5 tokens] per step
    torch.testing.assert_close(pooled[3][:, memory:], pooled[1][:, memory:])  # step 1's own tokens: unchanged
    assert (pooled[3][:, :memory] - pooled[1][:, :memory]).abs().max() > 1e-3  # the memory carries snippet 0
    assert (after[:, 3:] - before[:, 3:]).abs().max() > 1e-2
