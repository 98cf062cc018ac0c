"""Long video end to end (issue 23, item 5): up to 512 frames through the processor, the chunked
encoder and a resampler, with the LLM's media tokens fixed, and clear errors past the limits."""

import numpy as np
import pytest
import torch

from mico_chat.api import ChatModel, GenerationSettings
from mico_chat.media.samples import make_demo_clip
from mico_chat.modality import Modality
from mico_chat.preprocess import MediaSettings, _rgb_to_tensor
from mico_chat.processing import ProcessorError
from helpers.tiny import LONG_VIDEO_CONNECTORS, LONG_VIDEO_ENCODER, TINY_ENCODER, tiny_model

QUESTION = "What happens in this clip?"
NUM_QUERIES = LONG_VIDEO_CONNECTORS["video"]["num_queries"]


def video_turn(source) -> list[dict]:
    return [{"role": "user", "content": [{"type": "video", "video": source}, {"type": "text", "text": QUESTION}]}]


def decoded_frames(count: int = 160, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, size=(count, 24, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def long_model():
    return tiny_model(encoder=LONG_VIDEO_ENCODER, connectors=LONG_VIDEO_CONNECTORS, video_audio=False)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_demo_clip(tmp_path_factory.mktemp("long_video") / "clip.mp4", seconds=2.0, size=(64, 48))


def test_llm_media_tokens_stay_constant_as_frames_grow(long_model):
    model, processor = long_model
    video_id = model.config.media_token_ids["video"]
    lengths = []
    for frames in (8, 32, 128):
        processor.settings = MediaSettings(num_frames=frames, video_audio=False)
        batch = processor(video_turn(decoded_frames()))
        assert batch["media"]["video"].shape == (1, frames, 3, 32, 32)
        assert int((batch["input_ids"] == video_id).sum()) == NUM_QUERIES
        with torch.no_grad():
            projected = model.encode_media(batch["media"])[Modality.VIDEO]
        assert projected.shape == (1, NUM_QUERIES, model.config.text_config.hidden_size)
        lengths.append(batch["input_ids"].shape[1])
    assert len(set(lengths)) == 1


def test_chat_turn_on_a_512_frame_video(long_model, clip):
    model, processor = long_model
    processor.settings = MediaSettings(num_frames=8, video_audio=False)
    chat = ChatModel(model, processor, name="tiny-long", defaults=GenerationSettings(max_new_tokens=4))
    seen: list[tuple[int, ...]] = []
    hook = model.encoder.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0]["video"].shape)))
    try:
        short = chat.prepare(video_turn(str(clip)))  # decoded and tokenized, not encoded
        processor.settings = MediaSettings(num_frames=512, video_audio=False)  # what `mico-chat chat --frames 512` sets
        result = chat.complete(video_turn(str(clip)))
    finally:
        hook.remove()
    assert seen == [(1, 512, 3, 32, 32)]
    assert result.prompt_tokens == short.prompt_tokens and result.completion_tokens > 0


def test_items_past_the_limits_fail_before_any_decoding(long_model, monkeypatch):
    model, processor = long_model

    def no_decoding(items):
        raise AssertionError("media were decoded for an item the model cannot take")

    monkeypatch.setattr(processor, "load_media", no_decoding)
    processor.settings = MediaSettings(num_frames=513, video_audio=False)
    with pytest.raises(ProcessorError, match="media item 0 \\(video, 513 segments .*allows 1..512 \\(max_long_segments\\)"):
        processor(video_turn(decoded_frames()))

    # An encoder with absolute context indices stops at its table; a resampler reading absolute
    # time rows stops at its own.
    short_model, short_processor = tiny_model(encoder=TINY_ENCODER, connectors=LONG_VIDEO_CONNECTORS, num_frames=17)
    with pytest.raises(ProcessorError, match="allows 1..16 \\(max_segments.*context_index='chunk' or 'interpolate'"):
        short_processor(video_turn(decoded_frames()))
    absolute_time = {**LONG_VIDEO_CONNECTORS, "video": {**LONG_VIDEO_CONNECTORS["video"], "time_index": "absolute"}}
    _, time_processor = tiny_model(encoder=LONG_VIDEO_ENCODER, connectors=absolute_time, num_frames=32)
    with pytest.raises(ProcessorError, match="cover 16 frames, the item has 32; .*time_index to 'interpolate'"):
        time_processor(video_turn(decoded_frames()))


def test_frames_are_resized_in_pieces_exactly_as_one_by_one():
    frames = decoded_frames(40)
    settings = MediaSettings()
    whole = _rgb_to_tensor(frames, 32, settings)  # 40 frames: pieces of 16, 16, 8
    one_by_one = torch.cat([_rgb_to_tensor(frames[i : i + 1], 32, settings) for i in range(40)])
    assert whole.shape == (40, 3, 32, 32) and torch.equal(whole, one_by_one)


def test_a_saved_model_takes_the_long_video_keys_in_its_config_json(tmp_path):
    """The documented way to turn long video on for a trained model: the keys change no weights."""
    import json

    from mico_chat.loading import load_folder

    absolute_time = {**LONG_VIDEO_CONNECTORS, "video": {**LONG_VIDEO_CONNECTORS["video"], "time_index": "absolute"}}
    model, processor = tiny_model(encoder=TINY_ENCODER, connectors=absolute_time, video_audio=False)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["encoder_config"].update(frame_chunk_size=8, context_index="chunk")
    config["connectors"]["video"]["time_index"] = "interpolate"
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded, loaded_processor = load_folder(tmp_path, dtype=torch.float32)
    assert torch.equal(loaded.encoder.context_embedding.weight, model.encoder.context_embedding.weight)
    loaded_processor.settings = MediaSettings(num_frames=64, video_audio=False)
    batch = loaded_processor(video_turn(decoded_frames()))
    assert int((batch["input_ids"] == loaded.config.media_token_ids["video"]).sum()) == NUM_QUERIES
    with torch.no_grad():
        assert loaded.encode_media(batch["media"])[Modality.VIDEO].shape[1] == NUM_QUERIES
