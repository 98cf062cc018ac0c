"""The pretraining recipe: config loading, cached data, seeded mixture, checkpoints and exact resume."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mico_chat.encoders import MiCoEncoder
from mico_chat.modality import Modality
from mico_chat.preprocess import MediaSettings
from mico_chat.pretraining.data import WordSwapper
from mico_chat.pretraining import (
    PretrainConfigError,
    PretrainingMixture,
    PretrainRecipe,
    build_media_table,
    config_from_dict,
    load_config,
)
from helpers.pretrain_fixtures import TINY_RUN_ENCODER, make_av_world, tiny_bert_folder, tiny_run_config
from helpers.tiny_pretraining import tiny_bert_tokenizer


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    records = make_av_world(root / "world", 12, seed=0)
    bert = tiny_bert_folder(root / "bert")
    return root, records, bert


# ------------------------------------------------------------------ config
def test_config_yaml_overrides_and_errors(world, tmp_path):
    root, records, bert = world
    import yaml

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tiny_run_config(records, bert, tmp_path / "out")))
    config = load_config(path, ["train.max_steps=7", "data.datasets.1.ratio=3", "train.learning_rate=2e-4"])
    assert config.train.max_steps == 7 and config.data.datasets[1].ratio == 3.0 and config.train.learning_rate == 2e-4
    assert config.data.datasets[3].cross_sample and config.data.datasets[2].objectives == ["contrastive"]
    with pytest.raises(PretrainConfigError, match="unknown config key.*train.max_step\\b"):
        load_config(path, ["train.max_step=3"])
    with pytest.raises(PretrainConfigError, match="train.max_steps must be an integer"):
        load_config(path, ["train.max_steps=many"])
    with pytest.raises(PretrainConfigError, match="no item 9"):
        load_config(path, ["data.datasets.9.ratio=1"])
    bad = tiny_run_config(records, bert, tmp_path / "out")
    bad["data"]["datasets"][0]["objectives"] = ["matching"]
    with pytest.raises(PretrainConfigError, match="add contrastive"):
        config_from_dict(bad)
    bad = tiny_run_config(records, bert, tmp_path / "out")
    bad["model"]["fusion_groups"] = []
    with pytest.raises(PretrainConfigError, match="fusion_groups"):
        config_from_dict(bad)
    bad = tiny_run_config(records, bert, tmp_path / "out")
    del bad["train"]["output_dir"]
    with pytest.raises(PretrainConfigError, match="required value.*train.output_dir"):
        config_from_dict(bad)


def test_shipped_pretrain_configs_load_once_the_output_dir_is_set():
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parents[2] / "configs/pretrain").glob("*.yaml"))
    assert configs
    for path in configs:
        assert f"mico-chat pretrain configs/pretrain/{path.name}" in path.read_text(), path  # launch command
        with pytest.raises(PretrainConfigError, match=rf"{path.name}: required value\(s\) not set: train.output_dir"):
            load_config(path)
        config = load_config(path, ["train.output_dir=runs/x", "data.datasets.0.ratio=5"])
        assert config.train.output_dir == "runs/x" and config.data.datasets[0].ratio == 5.0


# ------------------------------------------------------------------ data
def test_media_table_caches_and_skips_bad_records(world, tmp_path):
    root, records, _ = world
    from mico_chat.encoders import MiCoEncoderConfig

    lines = records.read_text().splitlines()
    broken = json.loads(lines[0])
    broken["id"], broken["media"][0]["path"] = "missing", "media/nope.mp4"
    bad_file = records.parent / "with_bad.jsonl"
    bad_file.write_text("\n".join(lines[:5] + [json.dumps(broken), "{not json"]) + "\n")
    enc = MiCoEncoderConfig(**TINY_RUN_ENCODER)
    settings = MediaSettings(num_frames=2)
    table = build_media_table(bad_file, ["video", "audio"], settings, enc, cache_dir=tmp_path, progress=False)
    assert len(table) == 5 and table.tensors["video"].shape == (5, 2, 3, 16, 16)
    assert table.tensors["audio"].shape == (5, 1, 32, 16) and table.tensors["video"].dtype == torch.float16
    assert {why.split(":")[0] for _, why in table.skipped} >= {
        "not valid JSON (Expecting property name enclosed in double quotes"
    }
    assert any("missing" in where for where, _ in table.skipped)
    cached = list(tmp_path.glob("with_bad-audio+video-*.safetensors"))
    assert len(cached) == 1
    assert not list(tmp_path.glob("*.tmp")), "the temporary file is renamed into place, not left behind"
    again = build_media_table(bad_file, ["audio", "video"], settings, enc, cache_dir=tmp_path, progress=False)
    assert again.keys == table.keys and torch.equal(again.tensors["video"], table.tensors["video"])
    # A freshly built table and its cached copy must match in layout too: a channels-last video
    # column sends the patch convolution down another kernel, and a resumed run (which reads the
    # cache) then trains to weights ~1e-6 away from an uninterrupted one (which built it).
    assert all(t.is_contiguous() for t in (*table.tensors.values(), *again.tensors.values()))
    with pytest.raises(PretrainConfigError, match="missing"):
        build_media_table(bad_file, ["video"], settings, enc, strict=True, progress=False)


def test_mixture_batches_are_seeded_and_cross_sampled(world, tmp_path):
    root, records, bert = world
    config = config_from_dict(tiny_run_config(records, bert, tmp_path / "out"))
    from mico_chat.encoders import MiCoEncoderConfig

    table = build_media_table(
        records, ["video", "audio"], MediaSettings(num_frames=2), MiCoEncoderConfig(**TINY_RUN_ENCODER), progress=False
    )
    tok = tiny_bert_tokenizer()
    mixture = PretrainingMixture(
        [(s, table) for s in config.data.datasets],
        tok,
        batch_size=4,
        max_text_length=24,
        seed=3,
        sampling_contexts=True,
    )
    first = [mixture.batch(step) for step in range(40)]
    again = [mixture.batch(step) for step in range(40)]
    for (i, a), (j, b) in zip(first, again):
        assert (
            i == j
            and torch.equal(a.input_ids, b.input_ids)
            and all(torch.equal(a.media[m], b.media[m]) for m in a.media)
        )
    assert {i for i, _ in first} == {0, 1, 2, 3}  # every dataset is drawn
    index, cross = next((i, b) for i, b in first if i == 3)
    texts = tok.batch_decode(cross.input_ids, skip_special_tokens=True)
    assert all("beep" in t and "square" in t for t in texts)  # audio caption + vision caption
    assert cross.group == (Modality.AUDIO, Modality.VIDEO) and cross.sampling_context.tolist() == [3] * 4
    _, vision = next((i, b) for i, b in first if i == 1)
    assert set(vision.media) == {"video"} and vision.objectives == ("contrastive", "matching", "generation")


def test_word_swapper_changes_exactly_one_factor():
    swapper = WordSwapper([["circle", "square", "cross"], ["to the left", "to the right", "upward"], ["one", "two"]])
    rng = np.random.default_rng(0)
    text = "A red circle moves to the left while one beep sounds."
    seen = set()
    for _ in range(200):
        out = swapper.swap(text, rng)
        seen.add(out)
        before, after = text.split(), out.split()
        changed = {w for w in before if w not in after} | {w for w in after if w not in before}
        assert out != text and len(changed) <= 4  # one word or one phrase replaced
    assert "A red square moves to the left while one beep sounds." in seen
    assert "A red circle moves upward while one beep sounds." in seen
    assert "A red circle moves to the left while two beep sounds." in seen
    assert swapper.swap("One circle.", np.random.default_rng(1)) in {"Two circle.", "One square.", "One cross."}
    assert swapper.swap("someone squared the cycle", rng) is None  # whole words only


def test_mixture_adds_one_swapped_negative_per_caption(world, tmp_path):
    root, records, bert = world
    config = config_from_dict(tiny_run_config(records, bert, tmp_path / "out"))
    from mico_chat.encoders import MiCoEncoderConfig

    table = build_media_table(
        records, ["video", "audio"], MediaSettings(num_frames=2), MiCoEncoderConfig(**TINY_RUN_ENCODER), progress=False
    )
    tok = tiny_bert_tokenizer()
    args = dict(batch_size=4, max_text_length=24, seed=3, sampling_contexts=True)
    plain = PretrainingMixture([(s, table) for s in config.data.datasets], tok, **args)
    swapped = PretrainingMixture(
        [(s, table) for s in config.data.datasets], tok, word_swaps=[["left", "right"], ["low", "high"]], **args
    )
    for step in range(12):
        (i, a), (j, b) = plain.batch(step), swapped.batch(step)
        assert i == j and torch.equal(a.input_ids, b.input_ids)  # same batches with or without negatives
        assert a.negative_input_ids is None and b.negative_valid.all()
        texts = tok.batch_decode(b.input_ids, skip_special_tokens=True)
        negs = tok.batch_decode(b.negative_input_ids, skip_special_tokens=True)
        for t, n in zip(texts, negs):
            diff = [(x, y) for x, y in zip(t.split(), n.split()) if x != y]
            assert len(t.split()) == len(n.split()) and len(diff) == 1  # exactly one word swapped
            assert set(diff[0]) in ({"left", "right"}, {"low", "high"})


def test_word_swaps_are_validated(world, tmp_path):
    root, records, bert = world
    raw = tiny_run_config(records, bert, tmp_path / "out")
    raw["data"]["word_swaps"] = [["circle"]]
    with pytest.raises(PretrainConfigError, match="word_swaps.0"):
        config_from_dict(raw)


# ------------------------------------------------------------------ recipe
def _run(records, bert, out, until=None, **train):
    recipe = PretrainRecipe(config_from_dict(tiny_run_config(records, bert, out, **train)), progress=False)
    recipe.setup()
    recipe.train(until=until)
    return recipe


@pytest.mark.slow  # pretrains
def test_recipe_trains_checkpoints_and_exports(world, tmp_path):
    root, records, bert = world
    before = torch.get_num_threads()
    recipe = _run(records, bert, tmp_path / "run", torch_threads=1 if before > 1 else 2)
    assert torch.get_num_threads() == before  # train.torch_threads holds for the run only
    rows = [json.loads(line) for line in (tmp_path / "run" / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(r["loss"] > 0 and r["dataset"] in {"omni", "vision", "audio", "cross"} for r in rows)
    assert [p.name for p in recipe.checkpoints()] == ["checkpoint-2", "checkpoint-4"]
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000
    model_dir, encoder_dir = recipe.export()
    encoder = MiCoEncoder.from_pretrained(encoder_dir)
    assert encoder.config.num_sampling_contexts == 0 and (encoder_dir / "media_settings.json").is_file()
    assert json.loads((model_dir / "media_settings.json").read_text())["num_frames"] == 2
    # The chat model takes the exported encoder as it is.
    from mico_chat.builder import build_model
    from helpers.tiny import tiny_llm, tiny_tokenizer

    tok = tiny_tokenizer()
    chat, _ = build_model(
        tiny_llm(len(tok)),
        tokenizer=tok,
        encoder=encoder_dir,
        connectors={"video": {"type": "linear", "tokens": "cls"}},
    )
    assert all(torch.equal(v, encoder.state_dict()[k]) for k, v in chat.encoder.state_dict().items())
    with torch.no_grad():
        assert chat.encode_media({"video": torch.randn(1, 2, 3, 16, 16)})[Modality.VIDEO].shape == (1, 2, 48)
    with pytest.raises(PretrainConfigError, match="already has checkpoint-4"):
        PretrainRecipe(
            config_from_dict(tiny_run_config(records, bert, tmp_path / "run", resume=False)), progress=False
        ).setup()


@pytest.mark.slow  # pretrains
def test_resume_continues_exactly(world, tmp_path):
    root, records, bert = world
    _run(records, bert, tmp_path / "a")  # uninterrupted
    _run(records, bert, tmp_path / "b", until=3, save_steps=3)  # "interrupted" after step 3
    resumed = _run(records, bert, tmp_path / "b", save_steps=3)
    assert resumed.step == 4
    a = load_file(str(tmp_path / "a" / "checkpoint-4" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "checkpoint-4" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log_a = [json.loads(x)["loss"] for x in (tmp_path / "a" / "loss.jsonl").read_text().splitlines()]
    log_b = [json.loads(x)["loss"] for x in (tmp_path / "b" / "loss.jsonl").read_text().splitlines()]
    assert log_a == log_b
    with pytest.raises(PretrainConfigError, match="learning-rate schedule"):
        _run(records, bert, tmp_path / "b", max_steps=8)


@pytest.mark.slow  # pretrains
def test_fresh_runs_of_one_config_log_identical_losses(world, tmp_path, monkeypatch):
    # Dropout reads the global RNG, and loading weights can leave that RNG in a state that varies
    # from process to process; step 1 must not depend on it.
    root, records, bert = world
    build = PretrainRecipe._build_model
    draws = iter([1, 5])

    def build_then_draw(self):
        built = build(self)
        torch.rand(next(draws))  # as an uneven loader would
        return built

    monkeypatch.setattr(PretrainRecipe, "_build_model", build_then_draw)
    for run in ("a", "b"):
        config = tiny_run_config(records, bert, tmp_path / run)
        config["model"]["text_overrides"] = {**config["model"].get("text_overrides", {}), "hidden_dropout_prob": 0.3}
        recipe = PretrainRecipe(config_from_dict(config), progress=False)
        recipe.setup()
        recipe.train(until=2)
    logs = [(tmp_path / run / "loss.jsonl").read_text().splitlines() for run in ("a", "b")]
    rows = [[{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in log] for log in logs]
    assert len(rows[0]) == 2 and rows[0] == rows[1]


def test_matching_settings_reach_the_model(world, tmp_path):
    root, records, bert = world
    config = tiny_run_config(records, bert, tmp_path / "m")
    config["model"].update(matching_pooling="mean", matching_negatives="random")
    recipe = PretrainRecipe(config_from_dict(config), progress=False)
    recipe.setup()
    assert (recipe.model.config.matching_pooling, recipe.model.config.matching_negatives) == ("mean", "random")
    config["model"]["matching_negatives"] = "hardest"
    with pytest.raises(ValueError, match="matching_negatives"):
        PretrainRecipe(config_from_dict(config), progress=False).setup()


def test_learning_rate_multipliers_and_freezing(world, tmp_path):
    root, records, bert = world
    config = tiny_run_config(records, bert, tmp_path / "lr")
    config["model"]["freeze"] = ["text.embeddings", "text.encoder.layer.0."]
    config["train"]["lr_multipliers"] = {"matching_head": 4, "matching_head.linear2": 10}
    recipe = PretrainRecipe(config_from_dict(config), progress=False)
    recipe.setup()
    lr_of = {id(p): g["lr"] for g in recipe.optimizer.param_groups for p in g["params"]}
    model = recipe.model
    assert lr_of[id(model.matching_head.linear1.weight)] == pytest.approx(4e-3)
    assert lr_of[id(model.matching_head.linear2.weight)] == pytest.approx(1e-2)  # the longest prefix wins
    assert lr_of[id(model.text_head.weight)] == pytest.approx(1e-3)
    assert id(model.text.embeddings.word_embeddings.weight) not in lr_of  # frozen: not optimised
    decay = {id(p): g["weight_decay"] for g in recipe.optimizer.param_groups for p in g["params"]}
    assert decay[id(model.matching_head.linear1.bias)] == 0.0 and decay[id(model.logit_scale)] == 0.0
    config["train"]["lr_multipliers"] = {"no_such_module": 2}
    with pytest.raises(PretrainConfigError, match="no_such_module"):
        PretrainRecipe(config_from_dict(config), progress=False).setup()


def test_retrieval_plot_compares_runs_over_steps(tmp_path):
    from mico_chat.pretraining.plots import plot_retrieval

    def row(step, r5):
        metrics = {"text_to_item": {"R@1": r5 / 4, "R@5": r5, "R@10": r5 * 2}}
        return json.dumps({"step": step, "video": metrics, "audio": metrics})

    (tmp_path / "a.jsonl").write_text("\n".join(row(s, s / 10) for s in (100, 200)) + "\n")
    (tmp_path / "b.jsonl").write_text(row(100, 3.0) + "\n")
    out = plot_retrieval({"full": tmp_path / "a.jsonl", "contrastive": tmp_path / "b.jsonl"}, tmp_path / "r.png")
    assert out.stat().st_size > 1000
    assert plot_retrieval({"none": tmp_path / "missing.jsonl"}, tmp_path / "n.png") is None


def test_colour_free_dataset_shows_grey_frames_and_drops_colour_words(world, tmp_path):
    root, records, bert = world
    raw = tiny_run_config(records, bert, tmp_path / "out")
    vision = next(d for d in raw["data"]["datasets"] if d["name"] == "vision")
    raw["data"]["datasets"] = [vision, {**vision, "name": "grey", "grayscale": True, "drop_words": ["red", "green", "blue", "yellow"]}]
    config = config_from_dict(raw)
    from mico_chat.encoders import MiCoEncoderConfig

    table = build_media_table(
        records, ["video", "audio"], MediaSettings(num_frames=2), MiCoEncoderConfig(**TINY_RUN_ENCODER), progress=False
    )
    tok = tiny_bert_tokenizer()
    mixture = PretrainingMixture([(s, table) for s in config.data.datasets], tok, batch_size=4, max_text_length=24, seed=0, sampling_contexts=True)
    seen = set()
    for step in range(16):
        index, batch = mixture.batch(step)
        seen.add(index)
        video = batch.media["video"]  # (N, T, 3, H, W)
        texts = tok.batch_decode(batch.input_ids, skip_special_tokens=True)
        if index == 1:
            assert torch.equal(video[:, :, 0], video[:, :, 1]) and torch.equal(video[:, :, 0], video[:, :, 2])
            assert all(t.startswith("a square moves") for t in texts), texts  # "a red square moves left" -> "a square moves left"
        else:
            assert not torch.equal(video[:, :, 0], video[:, :, 1])
            assert all(t.split()[1] in {"red", "green", "blue", "yellow"} for t in texts), texts
    assert seen == {0, 1}
    audio_only = next(d for d in tiny_run_config(records, bert, tmp_path / "out")["data"]["datasets"] if d["name"] == "audio")
    raw["data"]["datasets"] = [{**audio_only, "grayscale": True}]
    with pytest.raises(PretrainConfigError, match="grayscale"):
        config_from_dict(raw)


def test_shuffle_channels_moves_each_pixel_value_with_its_channel():
    from mico_chat.preprocess import CLIP_MEAN, CLIP_STD
    from mico_chat.pretraining.data import CHANNEL_ORDERS, shuffle_channels

    assert len(set(CHANNEL_ORDERS)) == 5 and (0, 1, 2) not in CHANNEL_ORDERS
    pixels = torch.zeros(2, 3, 3, 2, 2)  # (N, T, 3, H, W) in [0, 1]
    pixels[:, :, 0] = 0.9  # red
    pixels[:, :, 1] = 0.2
    pixels[:, :, 2] = 0.1
    pixels[1, :, :, 0, 0] = 0.5  # a grey pixel stays grey in any order
    m, s = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
    out = shuffle_channels((pixels - m) / s, [(2, 1, 0), (1, 2, 0)], CLIP_MEAN, CLIP_STD) * s + m
    assert torch.allclose(out[0, :, :, 0, 0], torch.tensor([0.1, 0.2, 0.9]).expand(3, 3), atol=1e-6)  # red -> blue
    assert torch.allclose(out[1, :, :, 0, 1], torch.tensor([0.2, 0.1, 0.9]).expand(3, 3), atol=1e-6)
    assert torch.allclose(out[1, :, :, 0, 0], torch.full((3, 3), 0.5), atol=1e-6)
    with pytest.raises(ValueError, match="2 channel orders for 1 samples"):
        shuffle_channels(pixels[:1], [(2, 1, 0), (1, 2, 0)], CLIP_MEAN, CLIP_STD)


def test_recoloured_dataset_permutes_channels_and_drops_colour_words(world, tmp_path):
    root, records, bert = world
    raw = tiny_run_config(records, bert, tmp_path / "out")
    vision = next(d for d in raw["data"]["datasets"] if d["name"] == "vision")
    colours = ["red", "green", "blue", "yellow"]
    raw["data"]["datasets"] = [{**vision, "name": "recolour", "channel_shuffle": True, "drop_words": colours}]
    config = config_from_dict(raw)
    from mico_chat.encoders import MiCoEncoderConfig

    table = build_media_table(
        records, ["video", "audio"], MediaSettings(num_frames=2), MiCoEncoderConfig(**TINY_RUN_ENCODER), progress=False
    )
    tok = tiny_bert_tokenizer()
    args = dict(batch_size=4, max_text_length=24, seed=0, sampling_contexts=True)
    plain_spec = config_from_dict({**raw, "data": {**raw["data"], "datasets": [vision]}}).data.datasets[0]
    plain = PretrainingMixture([(plain_spec, table)], tok, **args)
    shuffled = PretrainingMixture([(s, table) for s in config.data.datasets], tok, **args)
    _, a = plain.batch(3)
    _, b = shuffled.batch(3)
    va, vb = a.media["video"], b.media["video"]  # same rows: the order draw comes after the row draw
    assert va.shape == vb.shape and not torch.equal(va, vb)
    m = torch.tensor(MediaSettings().image_mean).view(3, 1, 1)
    s = torch.tensor(MediaSettings().image_std).view(3, 1, 1)
    pa, pb = (va * s + m), (vb * s + m)
    from mico_chat.pretraining.data import CHANNEL_ORDERS

    for i in range(va.shape[0]):  # each sample shows its own frames in one of the five other channel orders
        assert any(torch.allclose(pb[i], pa[i][:, list(order)], atol=1e-3) for order in CHANNEL_ORDERS)
    texts = tok.batch_decode(b.input_ids, skip_special_tokens=True)
    assert not any(w in t.split() for t in texts for w in colours), texts
    audio_only = next(d for d in raw["data"]["datasets"] if d["name"] == "recolour") | {"group": ["audio"], "captions": ["audio"]}
    with pytest.raises(PretrainConfigError, match="channel_shuffle"):
        config_from_dict({**raw, "data": {**raw["data"], "datasets": [audio_only]}})
    with pytest.raises(PretrainConfigError, match="choose one"):
        config_from_dict({**raw, "data": {**raw["data"], "datasets": [{**vision, "channel_shuffle": True, "grayscale": True}]}})


def test_word_exchanger_swaps_both_ways_in_one_pass():
    from mico_chat.pretraining.data import WordExchanger

    swap = WordExchanger([["to the left", "to the right"], ["upward", "downward"], ["appearing", "disappearing"]])
    assert swap("A cross moves to the left, disappearing partway through.") == (
        "A cross moves to the right, appearing partway through."
    )
    assert swap("Upward it goes, then downward.") == "Downward it goes, then upward."
    assert swap("Two squares stay still.") == "Two squares stay still."


def test_reversed_dataset_plays_video_backwards_and_rewrites_directions(world, tmp_path):
    root, records, bert = world
    raw = tiny_run_config(records, bert, tmp_path / "out")
    vision = next(d for d in raw["data"]["datasets"] if d["name"] == "vision")
    spec = {**vision, "name": "reversed", "reverse_time": 1.0, "reverse_words": [["left", "right"]]}
    config = config_from_dict({**raw, "data": {**raw["data"], "datasets": [spec]}})
    plain_spec = config_from_dict({**raw, "data": {**raw["data"], "datasets": [vision]}}).data.datasets[0]
    from mico_chat.encoders import MiCoEncoderConfig

    table = build_media_table(
        records, ["video", "audio"], MediaSettings(num_frames=2), MiCoEncoderConfig(**TINY_RUN_ENCODER), progress=False
    )
    tok = tiny_bert_tokenizer()
    args = dict(batch_size=4, max_text_length=24, seed=0, sampling_contexts=True)
    _, a = PretrainingMixture([(plain_spec, table)], tok, **args).batch(5)
    _, b = PretrainingMixture([(config.data.datasets[0], table)], tok, **args).batch(5)
    assert torch.equal(b.media["video"], a.media["video"].flip(1))  # every sample, frames in reverse order
    before = tok.batch_decode(a.input_ids, skip_special_tokens=True)
    after = tok.batch_decode(b.input_ids, skip_special_tokens=True)
    for x, y in zip(before, after):  # the tiny world's captions: "a red square moves left" and the like
        assert y == x.replace("left", "@").replace("right", "left").replace("@", "right"), (x, y)
    assert any("left" in x for x in before) or any("right" in x for x in before), before
    for bad, match in [
        ({"reverse_time": 1.5}, "share of samples"),
        ({"reverse_time": 0.5, "group": ["audio"], "captions": ["audio"]}, r"must be \[video\] alone"),
        ({"reverse_words": [["left"]], "reverse_time": 0.5}, r"\[word, word\] pairs"),
        ({"reverse_words": [["left", "right"]]}, "never apply"),
    ]:
        with pytest.raises(PretrainConfigError, match=match):
            config_from_dict({**raw, "data": {**raw["data"], "datasets": [{**vision, **bad}]}})
