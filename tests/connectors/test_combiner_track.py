"""The Combiner fusing a video's own audio track inside the model: the processor pairs the track
with its video (no ``<audio>`` placeholder), the batch carries it with both windows' lengths, and
the model times every frame and audio patch row from them before calling the Combiner."""

import numpy as np
import pytest
import torch

from mico_chat.connectors.combiner import audio_row_times, video_frame_times
from mico_chat.modality import Modality

COMBINER = {"type": "combiner", "num_snippets": 2, "snippet_tokens": 3, "depth": 1, "heads": 4, "pool": 2}
VARIANTS = pytest.mark.parametrize(
    "connector", [{**COMBINER, "readout": "queries"}, {**COMBINER, "variant": "ttm", "memory_tokens": 4}],
    ids=["transformer", "ttm"],
)  # fmt: skip


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """3 s of 30 frames at 10 fps with a 440 Hz tone over all of it (AAC)."""
    from helpers.media_samples import write_indexed_video

    return write_indexed_video(tmp_path_factory.mktemp("track") / "tone.mp4", "libx264", 30, audio_tone_hz=440.0)


def fused_model(monkeypatch, connector, **settings):
    from helpers import tiny

    monkeypatch.setattr(tiny, "TINY_CONNECTORS", {**tiny.TINY_CONNECTORS, "video": connector})
    return tiny.tiny_model(**{"audio_clips": 2, **settings})


def conversation(video, **options):
    return [
        {"role": "user", "content": [{"type": "video", "video": video, **options}, {"type": "text", "text": "What happens?"}]},
        {"role": "assistant", "content": "A red square moves."},
    ]


@VARIANTS
def test_the_track_is_the_videos_partner_not_an_audio_item(monkeypatch, clip, connector):
    model, processor = fused_model(monkeypatch, connector)
    prepared = processor.prepare(conversation(str(clip)))
    assert [(item.modality, item.track) for item in prepared.media] == [(Modality.VIDEO, True)]
    assert "<audio>" not in prepared.messages[0]["content"] + prepared.messages[-2]["content"]
    batch = processor(conversation(str(clip)))
    ids = model.config.media_token_ids
    assert int((batch["input_ids"] == ids["video"]).sum()) == 6 and not (batch["input_ids"] == ids["audio"]).any()
    assert set(batch["media"]) == {"video"}
    assert batch["video_audio"].shape == (1, 2, 64, 32)  # K=2 windows of 64 fbank frames, 32 bins
    video_s, audio_s = batch["video_spans"][0].tolist()
    assert video_s == pytest.approx(3.0, abs=0.01) and audio_s == pytest.approx(3.0, abs=0.05)
    # The window's options reach both: 1 s to 2.5 s of the clip.
    window = processor(conversation(str(clip), start=1.0, end=2.5))["video_spans"][0].tolist()
    assert window == pytest.approx([1.5, 1.5], abs=0.05)
    # Without the setting, or with a connector that fuses nothing, the old behaviour.
    processor.settings.video_audio = False
    assert "video_audio" not in processor(conversation(str(clip)))
    model, processor = fused_model(monkeypatch, {"type": "mlp2x_gelu", "pool": 2})
    assert [item.modality for item in processor.prepare(conversation(str(clip))).media] == [Modality.VIDEO, Modality.AUDIO]


@VARIANTS
def test_the_model_fuses_the_track_timed_from_the_spans_and_trains(monkeypatch, clip, connector):
    model, processor = fused_model(monkeypatch, connector)
    batch = processor(conversation(str(clip)), add_generation_prompt=False, with_labels=True, padding_side="right")
    model.eval()
    with torch.no_grad():
        fused = model.encode_media(batch["media"], video_audio=batch["video_audio"], video_spans=batch["video_spans"])
        # The same call by hand: frames and audio rows timed over the item's own window lengths.
        video_s, audio_s = batch["video_spans"][0].tolist()
        features = model.encoder({Modality.VIDEO: batch["media"]["video"], Modality.AUDIO: batch["video_audio"]})
        encoder = model.config.encoder_config
        by_hand = model.connectors["video"](
            features[Modality.VIDEO], encoder.layout("video", 4), features[Modality.AUDIO], encoder.layout("audio", 2),
            video_frame_times(4, video_s), audio_row_times(2, audio_s, encoder), max(video_s, audio_s),
        )  # fmt: skip
        torch.testing.assert_close(fused[Modality.VIDEO], by_hand)
        silent = model.encode_media(batch["media"])[Modality.VIDEO]  # the frames alone
        assert (fused[Modality.VIDEO] - silent).abs().max() > 1e-3
        changed = model.encode_media(
            batch["media"], video_audio=batch["video_audio"] + 1.0, video_spans=batch["video_spans"]
        )[Modality.VIDEO]
        assert (changed - fused[Modality.VIDEO]).abs().max() > 1e-3  # the track reaches the tokens
    model.train()
    out = model(**batch)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    frozen = [n for n, p in model.connectors["video"].named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not frozen
    audio_stem = model.encoder.patch_embeddings["audio"].weight.grad  # reached only through the track
    assert audio_stem is not None and audio_stem.abs().sum() > 0


@VARIANTS
def test_a_video_without_a_track_batches_with_one_that_has_it(monkeypatch, clip, connector):
    """Decoded frames carry no track: in a batch with a tracked video they get silence over no
    time, and their tokens are what they are alone."""
    model, processor = fused_model(monkeypatch, connector)
    frames = np.random.default_rng(0).integers(0, 255, size=(6, 24, 24, 3), dtype=np.uint8)
    batch = processor([conversation(str(clip)), conversation(frames)])
    assert batch["video_spans"][1].tolist() == [1.0, 0.0] and not batch["video_audio"][1].any()
    alone = processor(conversation(frames))
    assert "video_audio" not in alone
    with torch.no_grad():
        together = model.encode_media(
            batch["media"], video_audio=batch["video_audio"], video_spans=batch["video_spans"]
        )[Modality.VIDEO]
        single = model.encode_media(alone["media"])[Modality.VIDEO]
    torch.testing.assert_close(together[1:], single, rtol=1e-4, atol=1e-5)


def test_chat_model_generates_from_a_fused_video_and_bad_tracks_raise(monkeypatch, clip):
    from mico_chat.api import ChatModel, GenerationSettings

    model, processor = fused_model(monkeypatch, COMBINER | {"readout": "queries"})
    chat = ChatModel(model, processor, name="tiny-fused", defaults=GenerationSettings(max_new_tokens=4))
    prompt = [{"role": "user", "content": [{"type": "video", "video": str(clip)}, {"type": "text", "text": "Hi?"}]}]
    fused = []
    fuse = model._fuse_track
    monkeypatch.setattr(model, "_fuse_track", lambda *args: fused.append(args[2].shape) or fuse(*args))
    result = chat.complete(prompt)
    assert result.prompt_tokens == len(processor(prompt)["input_ids"][0])
    assert "".join(chat.stream(prompt)) == result.text  # the streaming path (prepare + collate) fuses too
    assert fused == [(1, 2, 64, 32)] * 2
    batch = processor(prompt)
    with pytest.raises(ValueError, match="must cover the 1 video items"):
        model.encode_media(batch["media"], video_audio=batch["video_audio"], video_spans=batch["video_spans"][:, :1])
    with pytest.raises(ValueError, match="video_audio given without video media"):
        model.encode_media({}, video_audio=batch["video_audio"], video_spans=batch["video_spans"])
    plain, plain_processor = fused_model(monkeypatch, {"type": "mlp2x_gelu", "pool": 2})
    with pytest.raises(ValueError, match="the video connector \\(mlp2x_gelu\\) fuses no audio track"):
        plain.encode_media(batch["media"], video_audio=batch["video_audio"], video_spans=batch["video_spans"])


# ------------------------------------------------------------------ training from records
def track_records(folder, clip, n=3):
    """Record-style samples (what ``mico-chat train`` reads): ``<video>`` in the text, the file listed."""
    from helpers.train_fixtures import write_jsonl

    rows = [
        {
            "id": f"tone-{i}",
            "media": [{"modality": "video", "path": str(clip)}],
            "conversations": [
                {"from": "human", "value": "<video>\nWhat do you hear?"},
                {"from": "gpt", "value": "a tone"},
            ],
        }
        for i in range(n)
    ]
    return write_jsonl(folder / "tone.jsonl", rows)


@pytest.mark.parametrize("collate", ["padding", "packing"])
def test_record_style_samples_train_the_fused_track(monkeypatch, clip, tmp_path, collate):
    from mico_chat.training.collator import PackingCollator, PaddingCollator
    from mico_chat.training.data import SampleDataset, cache_encoder_features, scan_records
    from mico_chat.training.errors import DataError
    from mico_chat.training.lexical import lexical_alignment_loss

    model, processor = fused_model(monkeypatch, {**COMBINER, "variant": "ttm", "memory_tokens": 4})
    report = scan_records([track_records(tmp_path, clip)], processor, progress=False)
    assert [[(item.modality, item.track) for item in s.media] for s in report.samples] == [[(Modality.VIDEO, True)]] * 3
    dataset = SampleDataset(report.samples, processor)
    pad = processor.tokenizer.pad_token_id
    collator = PaddingCollator(pad) if collate == "padding" else PackingCollator(pad, pack_length=None)
    batch = collator([dataset[0], dataset[1]])
    batch.pop("meta")
    assert batch["video_audio"].shape == (2, 2, 64, 32) and batch["video_spans"].shape == (2, 2)
    assert batch["video_spans"][:, 0].tolist() == pytest.approx([3.0, 3.0], abs=0.01)
    model.train()
    loss = model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    assert model.encoder.patch_embeddings["audio"].weight.grad.abs().sum() > 0  # through the track only
    content = torch.ones(model.config.text_config.vocab_size, dtype=torch.bool)
    lexical, _ = lexical_alignment_loss(model, batch, content)
    assert torch.isfinite(lexical)
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    with pytest.raises(DataError, match="the feature cache does not hold fused video audio tracks"):
        cache_encoder_features(dataset, model.encoder, progress=False)
