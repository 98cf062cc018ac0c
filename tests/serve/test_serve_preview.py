"""The UI's preview (sampled frames, waveform) and its example clips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mico_chat.media import MediaError, MediaLimits, load_video, probe
from mico_chat.serve.examples import example_clips
from mico_chat.serve.preview import preview_media, waveform_envelope


def test_video_preview_shows_the_frames_the_model_samples(serve_media):
    shown = preview_media(str(serve_media["clip"]), "video", num_frames=5, with_audio=True, limits=MediaLimits())
    clip = load_video(serve_media["clip"], 5)
    assert len(shown.frames) == 5
    for (frame, caption), expected, t in zip(shown.frames, clip.frames, clip.timestamps):
        assert np.array_equal(frame, expected) and caption == f"{t:.2f} s"
    assert shown.waveform is not None and "with its audio track" in shown.summary
    muted = preview_media(str(serve_media["clip"]), "video", num_frames=2, with_audio=False, limits=MediaLimits())
    assert muted.waveform is None and "ignored" in muted.summary and len(muted.frames) == 2


def test_audio_preview_and_its_envelope(serve_media):
    shown = preview_media(str(serve_media["wav"]), "audio", num_frames=1, with_audio=True, limits=MediaLimits())
    assert shown.frames == [] and shown.waveform is not None and "1.0 s" in shown.summary
    rate = 16_000
    t = np.arange(rate) / rate
    samples = (0.5 * np.sin(2 * np.pi * 440 * t) * ((t >= 0.25) & (t < 0.5))).astype(np.float32)
    starts, lows, highs = waveform_envelope(samples, 100)
    assert len(starts) == 100 and starts[0] == 0 and starts[-1] == 99 * 160
    loud = (starts >= 0.26 * rate) & (starts < 0.49 * rate)
    assert np.allclose(highs[loud], 0.5, atol=0.01) and np.allclose(lows[loud], -0.5, atol=0.01)
    assert np.all(highs[~loud & ((starts < 0.24 * rate) | (starts >= 0.5 * rate))] == 0)


def test_unusable_uploads_are_refused_with_the_reason(serve_media):
    with pytest.raises(MediaError, match="corrupt.mp4"):
        preview_media(str(serve_media["corrupt"]), "video", num_frames=4, with_audio=True, limits=MediaLimits())
    with pytest.raises(MediaError, match="no video stream"):
        preview_media(str(serve_media["wav"]), "video", num_frames=4, with_audio=True, limits=MediaLimits())
    with pytest.raises(MediaError, match="max_duration_s"):
        limits = MediaLimits(max_duration_s=2.0)
        preview_media(str(serve_media["long_clip"]), "video", num_frames=4, with_audio=True, limits=limits)


def test_example_clips_are_generated_once_and_usable(tmp_path):
    examples = example_clips(tmp_path)
    assert [e.kind for e in examples] == ["video", "video", "video", "audio"]
    assert all(e.question and "<" not in e.question and e.answer for e in examples)
    # The video examples are held-out synthetic-world clips; each answer is that clip's ground truth.
    world = {w["id"]: w for w in map(json.loads, (tmp_path / "world" / "world.jsonl").read_text().splitlines())}
    motion = examples[0]
    assert motion.question.startswith("Which way does") and motion.answer == world[motion.path.stem]["scene"]["motion"]
    video, audio = probe(examples[0].path), probe(examples[3].path)
    assert video.has_video and video.has_audio and 2.0 <= video.duration_s <= 6.0
    assert audio.kind == "audio" and abs(audio.duration_s - 4.0) < 0.01
    stamp = examples[0].path.stat().st_mtime_ns
    example_clips(tmp_path)
    assert examples[0].path.stat().st_mtime_ns == stamp  # not rewritten
