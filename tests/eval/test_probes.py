"""Linear probes on encoder features (mico_chat.eval.probes): labels, feature shapes, the probe
itself on constructed problems, and the command line end to end on a tiny world."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers.tiny import TINY_ENCODER

from mico_chat.encoders import MiCoEncoder, MiCoEncoderConfig
from mico_chat.eval.probes import (
    FACTOR_MODALITY,
    ProbeResult,
    encode_world,
    fit_probe,
    format_table,
    load_encoder,
    main,
    probe_factors,
    readout,
)
from mico_chat.instruct_data.synth import SceneConfig, WorldConfig, generate_world, read_world
from mico_chat.instruct_data.synth import factors as F
from mico_chat.modality import MediaLayout, Modality
from mico_chat.preprocess import MediaSettings, preprocess

# Smallest frames the generator draws, one short duration, few frames per second, no records:
# 36 clips render in well under a second.
WORLD = WorldConfig(
    scene=SceneConfig(size=128, fps=8, durations_s=(3.0,)), speech="off", qa_per_family=0, multi_turn=False,
    description=False,
)  # fmt: skip
SETTINGS = MediaSettings(num_frames=4, audio_clips=1)


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe-worlds")
    generate_world(root / "train", 24, seed=3, split="train", workers=1, config=WORLD, progress=False)
    generate_world(root / "heldout", 12, seed=3, split="heldout", workers=1, config=WORLD, progress=False)
    return root / "train", root / "heldout"


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return MiCoEncoder(MiCoEncoderConfig(**TINY_ENCODER)).eval()


@pytest.fixture(scope="module")
def encoded(worlds, encoder):
    return tuple(encode_world(encoder, SETTINGS, world, progress=False) for world in worlds)


def _scene_json(world) -> list[dict]:
    return [json.loads(line)["scene"] for line in (world / "world.jsonl").read_text().splitlines()]


def test_labels_match_the_scene_json(worlds, encoded):
    for world, (_, labels) in zip(worlds, encoded):
        scenes = _scene_json(world)
        assert set(labels) == set(FACTOR_MODALITY)
        for i, scene in enumerate(scenes):
            sound = scene["sound"]
            kind = sound["sound"]
            assert labels["shape"][i] == scene["shape"] and labels["colour"][i] == scene["colour"]
            assert labels["size"][i] == scene["size"] and labels["count"][i] == str(scene["count"])
            assert labels["background"][i] == scene["background"] and labels["motion"][i] == scene["motion"]
            assert labels["speed"][i] == scene["speed"]  # None exactly when still
            assert (labels["speed"][i] is None) == (scene["motion"] == "still")
            assert labels["visual_event"][i] == scene["visual_event"]
            assert labels["sound_class"][i] == F.sound_class(kind, sound["pitch"], sound["direction"])
            assert labels["pitch"][i] == (sound["pitch"] if kind in ("beeps", "noise") else None)
            assert labels["chirp_direction"][i] == (sound["direction"] if kind == "chirp" else None)
            assert labels["num_events"][i] == (str(sound["count"]) if kind in ("beeps", "chirp", "noise") else None)
            assert labels["onset"][i] == (None if kind == "silence" else sound["onset"])
        # the held-out world shows only reserved pairs, so its labels differ in combination, not value
        pairs = set(zip(labels["shape"], labels["colour"]))
        assert (pairs <= F.RESERVED_SHAPE_COLOUR) == (world.name == "heldout")


def test_feature_shapes(encoded, worlds, encoder):
    dim = TINY_ENCODER["hidden_size"]
    for (features, labels), n in zip(encoded, (24, 12)):
        assert features["video"].shape == (n, (3 + SETTINGS.num_frames) * dim)
        assert features["audio"].shape == (n, 3 * dim)
        assert all(len(v) == n for v in labels.values())
        assert all(torch.isfinite(f).all() and f.dtype == torch.float32 for f in features.values())
    head, _ = encode_world(encoder, SETTINGS, worlds[0], limit=5, progress=False, batch_size=3)
    assert head["video"].shape[0] == 5
    torch.testing.assert_close(head["video"], encoded[0][0]["video"][:5], rtol=1e-4, atol=1e-5)  # batching-invariant


def test_recoloured_encoding_changes_the_video_features_only(encoded, worlds, encoder):
    (plain, labels) = encoded[0]
    recoloured, same_labels = encode_world(encoder, SETTINGS, worlds[0], limit=6, progress=False, recolour_seed=0)
    again, _ = encode_world(encoder, SETTINGS, worlds[0], limit=6, progress=False, recolour_seed=0)
    assert {k: v[:6] for k, v in labels.items()} == same_labels
    torch.testing.assert_close(recoloured["audio"], plain["audio"][:6], rtol=1e-4, atol=1e-5)
    for i in range(6):  # every clip shows another channel order, so its video features move
        assert not torch.allclose(recoloured["video"][i], plain["video"][i], atol=1e-3)
    torch.testing.assert_close(again["video"], recoloured["video"])  # seeded


def test_readout_order():
    layout = MediaLayout(num_segments=3, grid_h=1, grid_w=2)  # 3 tokens per segment
    # token value = 10 * segment + position in segment, in every one of 2 dims
    values = torch.tensor([10.0 * s + t for s in range(3) for t in range(3)])
    encoded = values[None, :, None].expand(1, 9, 2)  # (N=1, S*(1+P)=9, D=2)
    out = readout(encoded, layout, per_segment=True)
    # mean CLS, mean patch, max patch (segment 2's last), then the CLS of segments 0, 1, 2
    assert out.tolist() == [[10.0, 10.0, 11.5, 11.5, 22.0, 22.0, 0.0, 0.0, 10.0, 10.0, 20.0, 20.0]]
    assert readout(encoded, layout, per_segment=False).shape == (1, 6)


def test_probe_learns_a_separable_problem_exactly():
    gen = torch.Generator().manual_seed(0)
    classes = ["circle", "square", "triangle", "cross"]

    def sample(n):
        index = torch.randint(0, 4, (n,), generator=gen)
        x = torch.randn(n, 8, generator=gen)
        x[:, 5] = index.float()  # one dimension holds the label, the others are noise
        return {"video": x}, {"shape": [classes[i] for i in index.tolist()]}

    train, heldout = sample(200), sample(100)
    (result,) = probe_factors(train, heldout, factors=["shape"])
    assert result.train_accuracy == 1.0 and result.heldout_accuracy == 1.0
    assert result.classes == tuple(sorted(classes))
    first, again = fit_probe(train[0]["video"], train[1]["shape"]), fit_probe(train[0]["video"], train[1]["shape"])
    assert torch.equal(first.weight, again.weight) and torch.equal(first.bias, again.bias)  # deterministic


def test_probe_is_at_majority_on_random_features():
    gen = torch.Generator().manual_seed(1)
    classes = ["w", "x", "y", "z"]

    def sample(n):
        return {"audio": torch.randn(n, 32, generator=gen)}, {
            "pitch": [classes[i] for i in torch.randint(0, 4, (n,), generator=gen).tolist()]
        }

    train, heldout = sample(200), sample(200)
    (result,) = probe_factors(train, heldout, factors=["pitch"])
    counts = [heldout[1]["pitch"].count(c) for c in classes]
    assert result.majority == max(counts) / 200 and result.n_heldout == 200 and result.n_train == 200
    assert result.train_accuracy > 0.4  # 32 noise dimensions fit some of the training labels ...
    assert result.heldout_accuracy < result.majority + 0.12  # ... and none of that carries over


def test_single_class_and_undefined_factors():
    features = {"audio": torch.randn(6, 4), "video": torch.randn(6, 4)}
    train = (features, {"chirp_direction": [None] * 6, "size": ["small"] * 6})
    heldout = (features, {"chirp_direction": ["rising"] * 6, "size": ["small"] * 3 + ["large"] * 3})
    chirp, size = probe_factors(train, heldout, factors=["chirp_direction", "size"])
    assert math.isnan(chirp.heldout_accuracy) and chirp.n_train == 0 and chirp.majority == 1.0
    assert chirp.to_json()["heldout_accuracy"] is None
    assert size.classes == ("small",) and size.heldout_accuracy == 0.5 and size.train_accuracy == 1.0
    with pytest.raises(ValueError, match="unknown factor"):
        probe_factors(train, heldout, factors=["colour_of_sky"])


def test_probe_factors_on_a_world(encoded):
    results = probe_factors(*encoded)
    assert [r.factor for r in results] == list(FACTOR_MODALITY)
    heldout_labels = encoded[1][1]
    for r in results:
        defined = [label for label in heldout_labels[r.factor] if label is not None]
        assert r.n_heldout == len(defined)
        assert r.majority == pytest.approx(max(defined.count(v) for v in set(defined)) / len(defined))
        assert 0.0 <= r.heldout_accuracy <= 1.0 and 0.0 <= r.train_accuracy <= 1.0
    assert probe_factors(*encoded) == results  # deterministic
    table = format_table(results)
    assert table.count("\n") == len(results) + 1 and "| shape | video |" in table


def test_cli_with_an_encoder_folder(tmp_path, worlds, encoder, capsys):
    encoder.save_pretrained(tmp_path / "encoder")  # no media_settings.json: 8 frames, 1 audio clip
    out = tmp_path / "probes.json"
    argv = ["--encoder", str(tmp_path / "encoder"), "--train", str(worlds[0]), "--heldout", str(worlds[1]),
            "--train-limit", "16", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert "| factor |" in capsys.readouterr().out
    payload = json.loads(out.read_text())
    assert payload["n_train_clips"] == 16 and payload["n_heldout_clips"] == 12
    assert payload["media_settings"]["num_frames"] == 8 and payload["media_settings"]["audio_clips"] == 1
    assert [r["factor"] for r in payload["results"]] == list(FACTOR_MODALITY)
    assert set(payload["results"][0]) == set(ProbeResult.__dataclass_fields__)


def test_load_encoder_reads_the_saved_settings(tmp_path, encoder, tiny_chat):
    encoder.save_pretrained(tmp_path / "encoder")
    (tmp_path / "encoder" / "media_settings.json").write_text(json.dumps({"num_frames": 3, "audio_clips": 2}))
    loaded, settings = load_encoder(tmp_path / "encoder")
    assert isinstance(loaded, MiCoEncoder) and not loaded.training
    assert (settings.num_frames, settings.audio_clips) == (3, 2)
    tiny_chat.save_pretrained(tmp_path / "model")  # a MiCo-Chat model folder: its encoder and processor settings
    loaded, settings = load_encoder(tmp_path / "model")
    assert settings == tiny_chat.processor.settings
    for name, value in tiny_chat.model.encoder.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


def test_grey_encoding_equals_encoding_grey_frames(encoded, worlds, encoder):
    from mico_chat.preprocess import grayscale

    (plain, labels) = encoded[0]
    grey, same_labels = encode_world(encoder, SETTINGS, worlds[0], limit=4, progress=False, grey=True)
    assert {k: v[:4] for k, v in labels.items()} == same_labels
    torch.testing.assert_close(grey["audio"], plain["audio"][:4], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(grey["video"], plain["video"][:4], atol=1e-3)
    # The same as encoding the grey frames by hand: each pixel's channel mean in every channel.
    entry = read_world(worlds[0])[0]
    frames = preprocess(Modality.VIDEO, worlds[0] / entry["media"]["video"], SETTINGS, encoder.config)
    with torch.no_grad():
        out = encoder({"video": grayscale(frames)[None]})[Modality.VIDEO]
    layout = encoder.layout("video", frames.shape[0])
    torch.testing.assert_close(grey["video"][0], readout(out, layout, per_segment=True)[0], rtol=1e-4, atol=1e-5)


def test_readout_grid_appends_each_frames_pooled_map_in_order():
    layout = MediaLayout(num_segments=2, grid_h=2, grid_w=4)  # 8 patches per frame
    encoded = torch.randn(3, 2 * 9, 5)
    base = readout(encoded, layout, per_segment=True)
    out = readout(encoded, layout, per_segment=True, grid=2)
    assert out.shape == (3, base.shape[1] + 2 * 4 * 5)
    torch.testing.assert_close(out[:, : base.shape[1]], base)
    patches = encoded.view(3, 2, 9, 5)[:, :, 1:].reshape(3, 2, 2, 4, 5)  # (N, S, h, w, D)
    # frame 1's top-right cell: rows 0, columns 2-3, averaged
    top_right = patches[:, 1, 0:1, 2:4].mean(dim=(1, 2))  # (N, D)
    cells = out[:, base.shape[1] :].view(3, 2, 5, 2, 2)  # (N, S, D, grid, grid)
    torch.testing.assert_close(cells[:, 1, :, 0, 1], top_right)
