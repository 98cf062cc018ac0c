"""The temporal family: every answer checked against the decoded frames and samples of rendered clips,
the staggered starts' rules, the (motion, leader) held-out split, and the older families unchanged."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mico_chat.instruct_data.synth import WorldConfig, draw_scene, judge, make_clip
from mico_chat.instruct_data.synth import factors as F
from mico_chat.instruct_data.synth.language import Ask, render_question, temporal_asks
from mico_chat.instruct_data.synth.render import SAMPLE_RATE
from mico_chat.instruct_data.synth.scene import Scene
from mico_chat.instruct_data.synth.world import clip_records, media_paths
from mico_chat.media import load_audio
from helpers.cover import greedy_cover

SOUNDS = ("beeps", "chirp", "noise", "silence")
TOPICS = {"sound-vs-event", "count-before-event", "heard-while-visible", "first-to-move", "last-to-move",
          "first-of-two", "motion-vs-sound"}  # fmt: skip


# ----------------------------------------------------------------------------- measuring the media
def decoded_frames(path: Path) -> np.ndarray:
    """Every frame of an mp4 as ``(T, H, W, 3)`` uint8 RGB."""
    import av

    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def foreground(frames: np.ndarray, background: str) -> np.ndarray:
    """``(T, H, W)`` pixels clearly unlike the background colour."""
    return np.abs(frames.astype(int) - np.array(F.BACKGROUNDS[background])).sum(axis=-1) > 90


def loud(samples: np.ndarray, hop: int = 160, threshold: float = 0.02) -> np.ndarray:
    """Whether each 10 ms frame of the samples is sounding (RMS above a threshold)."""
    frames = samples[: len(samples) // hop * hop].reshape(-1, hop)
    return np.sqrt((frames**2).mean(axis=1)) > threshold


def event_starts(on: np.ndarray, hop_s: float = 0.01) -> list[float]:
    """Start times of the sounding stretches (gaps under 0.1 s belong to the event: a noise burst's
    RMS can dip; the shortest gap between events is 0.15 s)."""
    starts, last_on = [], -1.0
    for i in np.flatnonzero(on):
        if i * hop_s - last_on > 0.1:
            starts.append(i * hop_s)
        last_on = i * hop_s
    return starts


def motion_starts(fg: np.ndarray, scene: Scene) -> list[float]:
    """When each object (in :attr:`Scene.objects` order) is first seen away from where it began.

    Objects share shape and colour, but each keeps its own lane across the motion axis; the lane is
    taken from the scene, the timing only from the pixels.
    """
    moves_x = scene.motion in ("left", "right")
    out = []
    for obj in scene.objects:
        lo = int(round(obj.start[1 if moves_x else 0]))
        lane = fg[:, lo : lo + scene.side, :] if moves_x else fg[:, :, lo : lo + scene.side].transpose(0, 2, 1)
        along = [np.flatnonzero(frame.any(axis=0)).min() for frame in lane]  # leading edge per frame
        moved = np.flatnonzero(np.abs(np.array(along) - along[0]) >= 1)
        out.append(moved[0] / scene.fps)
    return out


def visual_event_time(fg: np.ndarray, scene: Scene) -> float:
    """When the objects appear (first frame with any) or disappear (first frame with none)."""
    shown = fg.reshape(len(fg), -1).any(axis=1)
    return float(np.flatnonzero(shown if scene.visual_event == "appear" else ~shown)[0]) / scene.fps


def measured(ask: Ask, scene: Scene, fg: np.ndarray, wave: np.ndarray) -> str:
    """The answer to ``ask`` read off the decoded media alone."""
    on = loud(wave)
    onset = event_starts(on)[0] if on.any() else None
    if ask.topic in ("sound-vs-event", "count-before-event", "heard-while-visible"):
        t_event = visual_event_time(fg, scene)
        if ask.topic == "sound-vs-event":
            return "before" if onset < t_event else "after"
        if ask.topic == "count-before-event":
            return str(sum(t < t_event for t in event_starts(on)))
        k = int(round(t_event * 100))
        window = on[k + 5 :] if scene.visual_event == "appear" else on[: k - 5]  # 50 ms clear of the event
        return scene.sound.sound if window.any() else "silence"
    starts = motion_starts(fg, scene)
    if ask.topic == "motion-vs-sound":
        i = 0 if scene.count == 1 else next(k for k, p in enumerate(scene.places()) if f"the {p} " in ask.question)
        return "before" if starts[i] < onset else "after"
    places = scene.places()
    candidates = [i for i, p in enumerate(places) if p in ask.choices]
    pick = max if ask.topic == "last-to-move" else min
    return places[pick(candidates, key=lambda i: starts[i])]


def covering_scenes(limit: int = 400) -> list[int]:
    """Few train clip indices (seed 0) whose temporal questions cover every topic, both answers of the
    before/after ones, and staggered rows of one, two and three objects."""
    want = {("topic", t) for t in TOPICS} | {("order", t, v) for t in ("sound-vs-event", "motion-vs-sound") for v in ("before", "after")}
    want |= {("staggered", c) for c in F.COUNTS} | {("heard", "silence"), ("heard", "sound")}
    def has(i: int) -> set:
        scene = draw_scene(i, seed=0, split="train")
        asks = temporal_asks(scene, SOUNDS)
        have = {("topic", a.topic) for a in asks} | {("order", a.topic, a.value) for a in asks if a.kind == "order"}
        have |= {("staggered", scene.count)} if scene.staggered else set()
        return have | {("heard", "silence" if a.value == "silence" else "sound") for a in asks if a.topic == "heard-while-visible"}

    return greedy_cover(want, has, limit)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """Rendered clips covering every temporal question, with their scenes and records."""
    out = tmp_path_factory.mktemp("temporal")
    clips = []
    for i in covering_scenes():
        made = make_clip(out, i, seed=0, split="train", config=WorldConfig(speech="off"))
        clips.append((Scene.from_json(made["world"]["scene"]), out / made["world"]["media"]["video"], made["records"]))
    return clips


# ------------------------------------------------------------------------------ answers vs media
def test_every_temporal_answer_is_what_the_decoded_clip_shows(rendered):
    topics = Counter()
    for scene, video, _ in rendered:
        fg = foreground(decoded_frames(video), scene.background)
        wave = load_audio(video).samples
        for ask in temporal_asks(scene, SOUNDS):
            assert measured(ask, scene, fg, wave) == ask.value, (scene.id, ask.question, ask.value)
            topics[ask.topic] += 1
    assert set(topics) == TOPICS


def test_objects_start_moving_when_the_scene_says(rendered):
    for scene, video, _ in [c for c in rendered if c[0].staggered]:
        seen = motion_starts(foreground(decoded_frames(video), scene.background), scene)
        for obj, t in zip(scene.objects, seen):
            # Sub-pixel motion shows once the rounded position changes: at most ~0.2 s late at the slowest speed.
            assert obj.start_s < t <= obj.start_s + 0.25, (scene.id, obj.start_s, t)
        assert np.argsort(seen).tolist() == np.argsort([o.start_s for o in scene.objects]).tolist(), scene.id


def test_temporal_records_are_well_formed_and_judged_right(rendered):
    timed = [r for _, _, records in rendered for r in records if r["meta"]["family"] == "temporal"]
    assert len(timed) == len(rendered)  # every covering clip has timing to ask about: one question each
    for record in timed:
        meta = record["meta"]
        assert record["id"].endswith("-temporal-0") and meta["view"] == "video" and meta["topic"] in TOPICS
        assert [m["modality"] for m in record["media"]] == ["video", "audio"]
        assert record["messages"][0]["content"].startswith("<video>\n<audio>\n")
        assert judge(record["messages"][1]["content"], meta)


@pytest.mark.parametrize("form", ["open", "mc", "yesno"])
def test_every_form_of_every_temporal_question_judges_its_own_answer(form):
    rng = np.random.default_rng(0)
    seen = 0
    for i in range(60):
        for ask in temporal_asks(draw_scene(i, seed=0, split="train"), SOUNDS):
            if form == "mc" and len(ask.choices) < 3:
                continue
            qa = render_question(ask, form, rng)
            assert judge(qa["answer"], qa["meta"]), qa
            if form == "open":
                wrong = next(c for c in ask.choices if c != ask.value)
                assert not judge(f"the {wrong}", qa["meta"]), qa
            seen += 1
    assert seen > 20


@pytest.mark.parametrize(
    "reply,facts,expected",
    [
        ("Before.", {"order": "before"}, True),
        ("The sound starts later.", {"order": "after"}, True),
        ("before or after", {"order": "before"}, False),
        ("the top square", {"place": "top"}, True),
        ("The lower one.", {"place": "bottom"}, True),
        ("the left or the right one", {"place": "left"}, False),
        ("Nothing.", {"sound": "silence"}, True),
    ],
)
def test_judge_temporal_open_answers(reply, facts, expected):
    assert judge(reply, {"form": "open", "answer": "", "facts": facts}) is expected


def test_cli_synth_writes_temporal_questions_per_qa_per_family(tmp_path, capsys):
    from mico_chat.cli import main

    args = ["data", "synth", "--out", str(tmp_path), "--n", "2", "--seed", "7", "--split", "heldout",
            "--qa-per-family", "2", "--speech", "off", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert all(temporal_asks(draw_scene(i, seed=7, split="heldout"), SOUNDS) for i in range(2))  # both clips timed
    families = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert families["temporal"] == families["appearance"] == 4
    assert json.loads((tmp_path / "summary.json").read_text())["generator_version"] == 2


# ------------------------------------------------------------------------------ staggered starts
def test_staggered_starts_keep_gaps_speed_and_frame_times():
    scenes = [draw_scene(i, seed=4, split="train") for i in range(600)]
    eligible = [s for s in scenes if s.motion != "still" and s.visual_event == "none"]
    staggered = [s for s in scenes if s.staggered]
    assert {s.id for s in staggered} <= {s.id for s in eligible} and 0.35 < len(staggered) / len(eligible) < 0.65
    assert {s.count for s in staggered} == set(F.COUNTS)
    for s in staggered:
        starts = sorted(o.start_s for o in s.objects)
        assert all(abs(t * s.fps - round(t * s.fps)) < 1e-9 for t in starts)
        assert np.all(np.diff(starts) >= F.START_GAP_S - 1e-9) and starts[-1] <= s.duration_s - F.MIN_MOVING_S + 0.5 / s.fps
        if s.count == 1:
            assert starts[0] >= F.START_GAP_S - 0.5 / s.fps  # a lone object visibly waits
        room = s.width - 4 - s.side
        for o in s.objects:  # every object keeps the formation's velocity: the speed label holds
            travel = np.hypot(o.end[0] - o.start[0], o.end[1] - o.start[1]) / (s.duration_s - o.start_s)
            assert travel * s.duration_s / room == pytest.approx(F.SPEEDS[s.speed])
            assert o.at(o.start_s, s.duration_s) == o.start and o.at(s.duration_s, s.duration_s) == o.end
        assert Scene.from_json(json.loads(json.dumps(s.to_json()))) == s


@pytest.mark.parametrize("seed", [0, 12345])
def test_heldout_leaders_are_reserved_pairs_and_training_never_shows_them(seed):
    def leaders(split):
        scenes = [draw_scene(i, seed=seed, split=split) for i in range(1000)]
        return {(s.motion, s.leader) for s in scenes if s.leader is not None}

    train, heldout = leaders("train"), leaders("heldout")
    assert heldout == set(F.RESERVED_MOTION_LEADER) and not train & F.RESERVED_MOTION_LEADER
    assert {p for _, p in train} == {p for _, p in heldout} == {"top", "middle", "bottom", "left", "right"}


def test_allowed_leaders_split_every_row_between_the_splits():
    for motion in ("left", "right", "up", "down"):
        for count in (2, 3):
            train, heldout = F.allowed_leaders("train", motion, count), F.allowed_leaders("heldout", motion, count)
            assert train and heldout and sorted(train + heldout) == sorted(F.row_positions(motion, count))
    with pytest.raises(ValueError, match="unknown split"):
        F.allowed_leaders("test", "left", 2)


# ------------------------------------------------------------------------ older families unchanged
def older_families_digest(split: str, seed: int, n: int) -> str:
    """A digest of every factor draw and every non-temporal record of ``n`` clips (tracks' ends left
    out: a staggered object ends its track earlier)."""
    h = hashlib.sha256()
    for i in range(n):
        scene = draw_scene(i, seed=seed, split=split)
        data = scene.to_json()
        for obj in data["objects"]:
            obj.pop("end"), obj.pop("start_s", None)
        records = [r for r in clip_records(scene, media_paths(scene.id, i), WorldConfig(speech="off"), "omni")
                   if r["meta"]["family"] != "temporal"]  # fmt: skip
        h.update(json.dumps([data, records], sort_keys=True).encode())
    return h.hexdigest()


def test_adding_the_temporal_family_left_the_older_draws_and_records_as_they_were():
    # Digests from the generator before the temporal family (commit f484163), same function.
    assert older_families_digest("train", 0, 100) == "2295d9144afcb378bda9bbdc659325ea829707384583b0b341f3663541f29ca0"
    assert older_families_digest("heldout", 5, 100) == "3f3470bffac75d2c29e8a5c9641908912f1ed6fe6d86d11d90b132603e2a70e4"
