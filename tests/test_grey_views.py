"""Colour-free views (``MiCoChatConfig.grey_views``): a video is read as it is and in grey."""

import pytest
import torch
from helpers.tiny import tiny_model

from mico_chat.modality import Modality
from mico_chat.modeling import MiCoChatForConditionalGeneration
from mico_chat.preprocess import grayscale
from mico_chat.training.data import SampleDataset, cache_encoder_features
from test_model import media_batch, prompt_ids


@pytest.fixture(scope="module")
def grey():
    model, processor = tiny_model()
    model.config.set_grey_views(["video"])
    return model.eval(), processor


def test_grey_view_doubles_the_tokens_and_appends_the_grey_frames_tokens(grey):
    model, _ = grey
    cfg = model.config
    plain = tiny_model()[0].config.num_media_tokens("video", 4)
    assert cfg.num_media_tokens("video", 4) == 2 * plain
    assert cfg.num_media_tokens("audio", 1) == tiny_model()[0].config.num_media_tokens("audio", 1)
    media = media_batch(2, 1)
    with torch.no_grad():
        projected = model.encode_media(media)[Modality.VIDEO]  # (2, 2 * plain, d)
        layout = model.encoder.layout("video", 4)
        colour = model.connectors["video"](model.encoder({"video": media["video"]})[Modality.VIDEO], layout)
        grey_only = model.connectors["video"](model.encoder({"video": grayscale(media["video"])})[Modality.VIDEO], layout)
    assert projected.shape[1] == 2 * plain
    torch.testing.assert_close(projected[:, :plain], colour)
    torch.testing.assert_close(projected[:, plain:], grey_only)
    ids = prompt_ids(model, n_video=1, n_audio=1)  # the placeholders count both views
    assert (ids == cfg.media_token_ids["video"]).sum() == 2 * plain
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids, media=media_batch(1, 1)).logits).all()


def test_cached_features_hold_both_views_and_give_the_same_logits(grey):
    model, processor = grey
    ids = prompt_ids(model, n_video=1, n_audio=1)
    media = media_batch(1, 1)
    with torch.no_grad():
        from_media = model(input_ids=ids, media=media).logits
        features = model.encode_items(media)
        assert features[Modality.VIDEO].shape[1] == 2 * model.encoder.layout("video", 4).num_tokens
        from_cache = model(input_ids=ids, encoder_features=features).logits
    torch.testing.assert_close(from_cache, from_media)
    with pytest.raises(ValueError, match=r"2\*S"):  # one view's features for a grey-view model
        model(input_ids=ids, encoder_features={"video": features[Modality.VIDEO][:, :-1], "audio": features[Modality.AUDIO]})


def test_the_training_cache_stores_both_views(grey, tmp_path):
    model, processor = grey
    from mico_chat.processing import MediaItem
    from mico_chat.training.data import SampleSpec
    from helpers.media_samples import write_indexed_video

    path = write_indexed_video(tmp_path / "clip.mp4", "libx264", 8)
    spec = SampleSpec("r1", "test", ({"role": "user", "content": "<video>\nWhat?"}, {"role": "assistant", "content": "A."}),
                      (MediaItem(Modality.VIDEO, str(path), {}),), 0, 1)  # fmt: skip
    dataset = SampleDataset([spec], processor)
    model.encoder.requires_grad_(False)  # a frozen encoder, as a stage caching features has
    cached = cache_encoder_features(dataset, model.encoder, progress=False, grey_views=model.config.grey_views)
    model.encoder.requires_grad_(True)
    (modality, feats), = cached[0]
    video = processor.load_media(spec.media)[0][None]
    with torch.no_grad():
        expected = model.encode_items({"video": video})[Modality.VIDEO][0]
    assert modality == "video"
    torch.testing.assert_close(feats, expected)
    segments = video.shape[1]
    assert SampleDataset([spec], processor)._count(Modality.VIDEO, feats) == model.config.num_media_tokens("video", segments)


def test_grey_views_survive_save_and_load_and_are_checked(grey, tmp_path):
    model, _ = grey
    model.save_pretrained(tmp_path)
    again = MiCoChatForConditionalGeneration.from_pretrained(tmp_path)
    assert again.config.grey_views == ["video"]
    with pytest.raises(ValueError, match="not a colour input"):
        again.config.set_grey_views(["audio"])


def test_presets_and_the_builder_carry_grey_views():
    from helpers.tiny import TINY_CONNECTORS, TINY_ENCODER, tiny_llm, tiny_tokenizer

    from mico_chat.builder import build_model
    from mico_chat.presets import PresetSpec

    spec = PresetSpec.from_dict({"llm": "smollm2-135m-instruct", "encoder": {"preset": "tiny"}, "grey_views": ["video"]})
    assert spec.grey_views == ["video"] and spec.to_dict()["grey_views"] == ["video"]
    assert PresetSpec.from_dict({"llm": "x", "encoder": {}}).grey_views == []
    tokenizer = tiny_tokenizer()
    model, processor = build_model(
        tiny_llm(len(tokenizer)), tokenizer=tokenizer, encoder=TINY_ENCODER, connectors=TINY_CONNECTORS,
        grey_views=spec.grey_views,
    )  # fmt: skip
    assert model.config.grey_views == ["video"] and processor.config.grey_views == ["video"]


def test_a_stage_config_sets_grey_views_and_names_a_wrong_one(tmp_path):
    from helpers.tiny import preset_recipe

    from mico_chat.training.errors import TrainConfigError

    model, processor = preset_recipe(tmp_path / "a", "model.grey_views=[video]").build_model(quantize=False)
    assert model.config.grey_views == ["video"] and processor.config is model.config
    plain = tiny_model()[0].config.num_media_tokens("video", 4)
    assert processor.config.num_media_tokens("video", 4) == 2 * plain
    with pytest.raises(TrainConfigError, match="model.grey_views: audio is not a colour input"):
        preset_recipe(tmp_path / "b", "model.grey_views=[audio]").build_model(quantize=False)
