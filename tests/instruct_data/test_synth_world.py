"""The synthetic world: its labels checked against the decoded pixels and samples, its split rule,
its determinism, its records and the exact judge."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mico_chat.instruct_data import read_records
from mico_chat.instruct_data.records import parse_record
from mico_chat.instruct_data.synth import Scene, WorldConfig, draw_scene, generate_world, judge, make_clip, read_world
from mico_chat.instruct_data.synth import factors as F
from mico_chat.instruct_data.synth.language import EVERY_CLIP_FAMILIES, FAMILIES, temporal_asks
from mico_chat.instruct_data.synth.render import SAMPLE_RATE, rgb_frame
from mico_chat.instruct_data.synth.world import write_view_captions
from mico_chat.instruct_data.validate import validate_records
from mico_chat.media import load_audio, load_depth, load_image, load_video, probe
from helpers.cover import greedy_cover

# ----------------------------------------------------------------------------- measuring the media


def components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a bool mask, each as an (N, 2) array of (y, x)."""
    seen = np.zeros_like(mask, bool)
    out = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        stack, pixels = [(y0, x0)], []
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            pixels.append((y, x))
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        out.append(np.array(pixels))
    return out


def foreground(frame: np.ndarray, background: str) -> np.ndarray:
    """Pixels clearly unlike the background colour."""
    return np.abs(frame.astype(int) - np.array(F.BACKGROUNDS[background])).sum(axis=2) > 90


def nearest_colour(rgb: np.ndarray) -> str:
    return min(F.COLOURS, key=lambda c: np.abs(np.array(F.COLOURS[c]) - rgb).sum())


def shape_of(pixels: np.ndarray) -> str:
    """Classify one blob by the filled share of its box's rows near the top, middle and bottom."""
    ys, xs = pixels[:, 0], pixels[:, 1]
    h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    box = np.zeros((h, w), bool)
    box[ys - ys.min(), xs - xs.min()] = True
    profile = np.array([box[int(f * (h - 1))].mean() for f in (0.1, 0.5, 0.9)])
    prototypes = {"square": (1, 1, 1), "circle": (0.6, 1, 0.6), "triangle": (0.1, 0.5, 0.9), "cross": (0.33, 1, 0.33)}
    return min(prototypes, key=lambda s: np.abs(profile - prototypes[s]).sum())


def onsets(samples: np.ndarray, hop: int = 320, threshold: float = 0.02, merge_s: float = 0.1) -> list[float]:
    """Start times of sound events: RMS over 20 ms frames rising above a threshold (short gaps merged)."""
    frames = samples[: len(samples) // hop * hop].reshape(-1, hop)
    loud = np.sqrt((frames**2).mean(axis=1)) > threshold
    starts = [i * hop / SAMPLE_RATE for i in np.flatnonzero(loud[1:] & ~loud[:-1]) + 1]
    if loud[0]:
        starts.insert(0, 0.0)
    ends = [i * hop / SAMPLE_RATE for i in np.flatnonzero(~loud[1:] & loud[:-1]) + 1]
    merged = []
    for start in starts:
        if merged and any(merged[-1] < e <= start and start - e < merge_s for e in ends):
            continue
        merged.append(start)
    return merged


def peak_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE)[spectrum.argmax()])


def centroid_hz(samples: np.ndarray) -> float:
    power = np.abs(np.fft.rfft(samples)) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE)
    return float((power * freqs).sum() / power.sum())


# -------------------------------------------------------------------------------------- fixtures
def covering_indices(split: str, seed: int, limit: int = 600) -> list[int]:
    """Few clip indices that together show every sound class, motion, shape, count and visual event."""
    want = {("sound", s) for s in F.SOUND_CLASSES if s != "speech"} | {("motion", m) for m in F.MOTIONS}
    want |= (
        {("shape", s) for s in F.SHAPES} | {("count", c) for c in F.COUNTS} | {("event", e) for e in F.VISUAL_EVENTS}
    )

    def has(i: int) -> set:
        s = draw_scene(i, seed=seed, split=split)
        return {
            ("sound", s.sound.sound_class),
            ("motion", s.motion),
            ("shape", s.shape),
            ("count", s.count),
            ("event", s.visual_event),
        }

    return greedy_cover(want, has, limit)


@pytest.fixture(scope="module")
def covered(tmp_path_factory):
    """Rendered clips covering every factor value (train split), with their world entries."""
    out = tmp_path_factory.mktemp("covered")
    entries = [make_clip(out, i, seed=0, split="train")["world"] for i in covering_indices("train", 0)]
    return out, [{**e, "scene": Scene.from_json(e["scene"])} for e in entries]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    summary = generate_world(
        out, 24, seed=7, split="heldout", workers=1, config=WorldConfig(speech="off"), progress=False
    )
    return out, summary


# ------------------------------------------------------------------------------ labels vs pixels
def test_video_frames_show_the_labelled_colour_shape_count_and_background(covered):
    root, entries = covered
    for entry in entries:
        scene = entry["scene"]
        clip = load_video(root / entry["media"]["video"], num_frames=8)
        for frame, t in zip(clip.frames, clip.timestamps):
            fg = foreground(frame, scene.background)
            blobs = [b for b in components(fg) if len(b) > 20]
            if not scene.visible(float(t)):
                assert not blobs, f"{scene.id} at {t:.2f} s: objects on screen before/after the visual event"
                continue
            assert len(blobs) == scene.count, f"{scene.id} at {t:.2f} s: {len(blobs)} blobs, label says {scene.count}"
            inside = frame[fg]
            assert nearest_colour(np.median(inside, axis=0)) == scene.colour, scene.id
            bg = np.median(frame[~fg], axis=0)
            assert np.abs(bg - np.array(F.BACKGROUNDS[scene.background])).max() <= 6, scene.id


def test_the_still_and_depth_map_match_the_scene_exactly(covered):
    root, entries = covered
    for entry in entries:
        scene = entry["scene"]
        still = load_image(root / entry["media"]["image"])
        np.testing.assert_array_equal(still, rgb_frame(scene, scene.still_time_s))
        blobs = components(foreground(still, scene.background))
        assert len(blobs) == scene.count
        assert {shape_of(b) for b in blobs} == {scene.shape}, (
            f"{scene.id}: pixels look like {[shape_of(b) for b in blobs]}"
        )
        sides = [b[:, 1].max() - b[:, 1].min() + 1 for b in blobs]
        assert all(abs(s - F.SIZES[scene.size] * scene.width) <= 2 for s in sides)
        depth = load_depth(root / entry["media"]["depth"])
        assert set(np.unique(depth)) == {F.WALL_DEPTH_MM, F.OBJECT_DEPTH_MM[scene.size]}
        np.testing.assert_array_equal(depth < F.WALL_DEPTH_MM, foreground(still, scene.background))


def test_motion_direction_and_speed_follow_the_centroid_track(covered):
    root, entries = covered
    for entry in entries:
        scene = entry["scene"]
        clip = load_video(root / entry["media"]["video"], num_frames=12)
        track = [(t, np.argwhere(foreground(f, scene.background)).mean(axis=0)) for f, t in zip(clip.frames, clip.timestamps)
                 if scene.visible(float(t))]  # fmt: skip
        (t0, (y0, x0)), (t1, (y1, x1)) = track[0], track[-1]
        dx, dy = x1 - x0, y1 - y0
        if scene.motion == "still":
            assert abs(dx) < 1 and abs(dy) < 1, scene.id
            continue
        direction = ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("down" if dy > 0 else "up")
        assert direction == scene.motion, f"{scene.id}: centroid moved {dx:.1f}, {dy:.1f}; label {scene.motion}"
        room = scene.width - 4 - scene.side
        # Objects that start late (staggered starts) keep the formation's velocity for less time.
        moving = np.mean([max(0.0, t1 - o.start_s) - max(0.0, t0 - o.start_s) for o in scene.objects])
        speed = np.hypot(dx, dy) / room / (moving / scene.duration_s)
        assert abs(speed - F.SPEEDS[scene.speed]) < 0.05, (
            f"{scene.id}: travels {speed:.2f} of the room, label {scene.speed}"
        )


def test_audio_events_onsets_pitch_and_chirp_direction_match_the_samples(covered):
    root, entries = covered
    kinds = set()
    for entry in entries:
        scene, spec = entry["scene"], entry["scene"].sound
        kinds.add(spec.sound_class)
        wave = load_audio(root / entry["media"]["video"]).samples
        assert abs(len(wave) / SAMPLE_RATE - scene.duration_s) < 0.05
        if spec.sound == "silence":
            assert np.abs(wave).max() < 1e-3, scene.id
            continue
        found = onsets(wave)
        assert len(found) == spec.count == len(spec.events), f"{scene.id}: onsets {found}, label {spec.events}"
        assert np.allclose(found, [e[0] for e in spec.events], atol=0.03), f"{scene.id}: {found} vs {spec.events}"
        assert (found[0] < 0.55) == (spec.onset == "early"), scene.id
        start, end = (int(x * SAMPLE_RATE) for x in spec.events[0])
        event = wave[start:end]
        if spec.sound == "beeps":
            assert abs(peak_hz(event) - F.BEEP_HZ[spec.pitch]) < 15, scene.id
        elif spec.sound == "chirp":
            third = len(event) // 3
            rising = peak_hz(event[-third:]) > peak_hz(event[:third])
            assert rising == (spec.direction == "rising"), scene.id
        elif spec.sound == "noise":
            assert (centroid_hz(event) < 1000) == (spec.pitch == "low"), (
                f"{scene.id}: centroid {centroid_hz(event):.0f} Hz"
            )
    assert kinds == {c for c in F.SOUND_CLASSES if c != "speech"}


def test_clips_are_h264_aac_25fps_within_the_size_and_length_bounds(covered):
    root, entries = covered
    info = probe(root / entries[0]["media"]["video"])
    assert info.has_video and info.has_audio and info.fps == 25 and info.width == info.height == 128
    assert info.audio_sample_rate == SAMPLE_RATE and 2.0 <= info.duration_s <= 6.0
    import av

    with av.open(str(root / entries[0]["media"]["video"])) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio[0].codec_context.name == "aac"


# -------------------------------------------------------------------------------------- the split
@pytest.mark.parametrize("seed", [0, 12345])
def test_heldout_combinations_never_occur_in_training_and_every_value_occurs_in_both(seed):
    def facts(split):
        scenes = [draw_scene(i, seed=seed, split=split) for i in range(1500)]
        return {
            "pairs_sc": {(s.shape, s.colour) for s in scenes},
            "pairs_sm": {(s.sound.sound_class, s.motion) for s in scenes},
            "values": {(k, getattr(s, k)) for s in scenes for k in ("shape", "colour", "size", "count", "background", "motion", "speed", "visual_event")}
            | {("sound", s.sound.sound_class) for s in scenes} | {("onset", s.sound.onset) for s in scenes},
        }  # fmt: skip

    train, heldout = facts("train"), facts("heldout")
    assert not train["pairs_sc"] & heldout["pairs_sc"] and not train["pairs_sm"] & heldout["pairs_sm"]
    assert heldout["pairs_sc"] == set(F.RESERVED_SHAPE_COLOUR)
    assert heldout["pairs_sm"] == {p for p in F.RESERVED_SOUND_MOTION if p[0] != "speech"}
    assert train["values"] == heldout["values"]
    assert {v for k, v in train["values"] if k == "colour"} == set(F.COLOURS)


def test_heldout_captions_tell_most_of_1000_clips_apart():
    scenes = [draw_scene(i, seed=3, split="heldout") for i in range(1000)]
    from mico_chat.instruct_data.synth.language import _sound_phrase

    vision = Counter(
        (s.shape, s.colour, s.size, s.count, s.background, s.motion, s.speed, s.visual_event) for s in scenes
    )
    audio = Counter(_sound_phrase(s) for s in scenes)
    assert len(vision) > 700
    # A text-to-audio retriever that ranks clips by their audio alone can still reach R@5 > 20x random.
    assert np.mean([min(1.0, 5 / audio[_sound_phrase(s)]) for s in scenes]) > 20 * 5 / 1000


# --------------------------------------------------------------------------- files and records
@pytest.mark.slow  # worker processes
def test_same_seed_gives_byte_identical_files_whatever_the_worker_count(tmp_path):
    a = generate_world(tmp_path / "a", 34, seed=5, workers=1, progress=False)
    b = generate_world(tmp_path / "b", 34, seed=5, workers=2, progress=False)
    assert b.workers == 2

    def digests(root: Path) -> dict[str, str]:
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    assert digests(a.out_dir) == digests(b.out_dir)
    assert len(digests(a.out_dir)) == 34 * 3 + 5  # media + world, captions, view captions, records, summary
    c = generate_world(tmp_path / "c", 3, seed=6, workers=1, progress=False)
    assert (a.out_dir / "records.jsonl").read_text() != (c.out_dir / "records.jsonl").read_text()


def test_view_captions_say_what_each_view_alone_shows(world, tmp_path):
    root, summary = world
    records = [json.loads(line) for line in (root / "view_captions.jsonl").read_text().splitlines()]
    entries = {e["id"]: e for e in read_world(root)}
    assert len(records) == 4 * summary.n
    assert [r["meta"]["view"] for r in records[:4]] == ["video", "audio", "image", "depth"]
    for record in records:
        parse_record(record)
        entry = entries[record["meta"]["clip"]]
        scene, view = entry["scene"], record["meta"]["view"]
        assert [m["modality"] for m in record["media"]] == [view]
        assert record["media"][0]["path"] == entry["media"]["video" if view == "audio" else view]
        if view == "video":
            assert record["captions"] == {"vision": entry["captions"]["vision"]}
            continue
        if view == "audio":
            assert record["captions"] == {"audio": entry["captions"]["audio"]}
            continue
        text = record["captions"]["vision"].lower()
        if not scene.visible(scene.still_time_s):
            assert scene.shape not in text and ("empty" in text or "nothing" in text)
            continue
        assert scene.shape in text or F.PLURALS[scene.shape] in text
        assert scene.size in text
        assert text.startswith("a ") if scene.count == 1 else text.startswith(F.NUMBER_WORDS[scene.count])
        if view == "image":
            assert scene.colour in text and scene.background in text
        else:  # a depth map has no colours
            assert not any(c in text for c in F.COLOURS) and "wall" in text
    # A world made before view captions existed gets them from its world.jsonl, identically.
    copy = tmp_path / "old"
    copy.mkdir()
    (copy / "world.jsonl").write_text((root / "world.jsonl").read_text())
    assert write_view_captions(copy).read_text() == (root / "view_captions.jsonl").read_text()


def temporal_clips(root: Path) -> int:
    """How many clips of a world have a temporal question to ask (the others get none)."""
    return sum(bool(temporal_asks(e["scene"], ("beeps",))) for e in read_world(root))


def test_world_records_are_valid_and_cover_every_family_and_form(world):
    root, summary = world
    timed = temporal_clips(root)
    assert summary.n == 24 and summary.split == "heldout" and not summary.speech.enabled and 0 < timed < 24
    assert json.loads((root / "summary.json").read_text())["records"] == summary.num_records == 24 * 7 + timed
    report = validate_records(
        [root / "records.jsonl", root / "captions.jsonl"], root, check="decode", workers=1, progress=False
    )
    assert report.ok and report.valid == 24 * 8 + timed, report.format()
    records = list(read_records(root / "records.jsonl"))
    families = Counter(r.meta["family"] for r in records)
    assert set(families) == {*FAMILIES, "multi-turn", "description"}
    assert families == {**{f: 24 for f in (*EVERY_CLIP_FAMILIES, "multi-turn", "description")}, "temporal": timed}
    forms = Counter(r.meta["form"] for r in records if "form" in r.meta)
    assert set(forms) == {"open", "mc", "yesno"}
    views = Counter(r.meta["view"] for r in records)
    assert set(views) == {"video", "image", "depth", "audio"}
    multi = [r for r in records if r.meta["family"] == "multi-turn"]
    assert all(len(r.messages) == 6 and len(r.meta["turns"]) == 3 for r in multi)
    captions = list(read_records(root / "captions.jsonl"))
    assert all(set(c.captions) >= {"vision", "audio", "omni"} for c in captions)
    entries = read_world(root)
    assert [e["id"] for e in entries] == [c.id for c in captions]


def test_every_stored_answer_passes_the_judge_and_wrong_ones_fail(world):
    root, _ = world
    checked = 0
    for record in read_records(root / "records.jsonl"):
        turns = record.meta["turns"] if record.meta["family"] == "multi-turn" else [record.meta]
        answers = [m["content"] for m in record.messages if m["role"] == "assistant"]
        for answer, qa in zip(answers, turns):
            assert judge(answer, qa), (record.id, answer, qa)
            checked += 1
            if qa["form"] == "mc":
                wrong = next(letter for letter in "ABCD"[: len(qa["options"])] if letter != qa["answer"])
                assert not judge(wrong, qa) and judge(
                    f"({qa['answer']}) {qa['options']['ABCD'.index(qa['answer'])]}", qa
                )
            elif qa["form"] == "yesno":
                assert not judge({"yes": "No.", "no": "Yes."}[qa["answer"]], qa)
    assert checked == 24 * 9 + temporal_clips(root)


@pytest.mark.parametrize(
    "reply,facts,expected",
    [
        ("Red.", {"colour": "red"}, True),
        ("red or blue", {"colour": "red"}, False),
        ("There are three.", {"count": "3"}, True),
        ("3", {"count": "2"}, False),
        ("It moves to the left.", {"direction": "left"}, True),
        ("It does not move.", {"direction": "still"}, True),
        ("grey", {"background": "gray"}, True),
        ("red, 3", {"colour": "red", "count": "3"}, True),
        ("red, 4", {"colour": "red", "count": "3"}, False),
        ("The beeps start right away.", {"onset": "early"}, True),
        ("low-pitched", {"pitch": "low"}, True),
        ("the sound", {"first": "sound"}, True),
        ("the square, then the sound", {"first": "shape"}, False),
    ],
)
def test_judge_open_answers(reply, facts, expected):
    assert judge(reply, {"form": "open", "answer": "", "facts": facts}) is expected


def test_small_worlds_generate_quickly(tmp_path):
    summary = generate_world(tmp_path, 20, seed=1, progress=False)
    assert summary.seconds < 5.0, f"20 clips took {summary.seconds:.1f} s"


def test_cli_synth(tmp_path, capsys):
    from mico_chat.cli import main

    assert (
        main(
            ["data", "synth", "--out", str(tmp_path), "--n", "3", "--seed", "2", "--split", "heldout", "--no-progress"]
        )
        == 0
    )
    assert "3 heldout clips, 21 instruction records, 3 caption records" in capsys.readouterr().out
    assert json.loads((tmp_path / "summary.json").read_text())["split"] == "heldout"
    assert main(["data", "synth", "--out", str(tmp_path), "--n", "1", "--size", "100", "--no-progress"]) == 2


def test_qa_per_family_and_options(tmp_path):
    config = WorldConfig(qa_per_family=2, multi_turn=False, description=False)
    summary = generate_world(tmp_path, 2, seed=0, config=config, progress=False)
    assert summary.num_records == 2 * (2 * len(EVERY_CLIP_FAMILIES) + temporal_clips(tmp_path))
    with pytest.raises(ValueError, match="unknown split"):
        generate_world(tmp_path, 1, split="test")


def test_speech_status_is_recorded_and_required_speech_needs_espeak(world, tmp_path):
    import shutil

    root, summary = world
    entry = json.loads((root / "world.jsonl").read_text().splitlines()[0])
    assert entry["speech"] == {"enabled": False, "engine": None, "reason": "turned off"} and not summary.speech.enabled
    auto = generate_world(tmp_path, 1, progress=False)
    first = json.loads((tmp_path / "world.jsonl").read_text().splitlines()[0])
    if shutil.which("espeak-ng"):
        assert auto.speech.enabled and first["speech"]["engine"].startswith("eSpeak")
    else:
        assert first["speech"] == {"enabled": False, "engine": None, "reason": "espeak-ng is not installed"}
        with pytest.raises(ValueError, match="speech was required"):
            generate_world(tmp_path / "speech", 1, config=WorldConfig(speech="on"), progress=False)


@pytest.mark.skipif(__import__("shutil").which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_speech_clips_say_their_phrase(tmp_path):
    from mico_chat.instruct_data.synth.world import resolve_speech

    speech = resolve_speech("on")
    index = next(i for i in range(400) if draw_scene(i, seed=0, split="train", speech=speech).sound.sound == "speech")
    result = make_clip(tmp_path, index, seed=0, split="train", speech=speech)
    scene = result["world"]["scene"]
    wave = load_audio(tmp_path / result["world"]["media"]["video"]).samples
    start = int(scene["sound"]["events"][0][0] * SAMPLE_RATE)
    assert np.abs(wave[:start]).max() < 1e-3 and np.abs(wave[start:]).max() > 0.1
    assert result["caption"]["captions"]["subtitle"] == scene["sound"]["phrase"]
