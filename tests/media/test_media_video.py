"""load_video: which frames come back, at which timestamps, from every container, and at what cost."""

from __future__ import annotations

import importlib.util

import av
import numpy as np
import pytest
from helpers.media_samples import CLIP_FPS, CLIP_FRAMES, VIDEO_FORMATS, frame_index, write_indexed_video

from mico_chat.media import MediaError, load_video, probe, sample_frame_times
from mico_chat.media._pyav import open_container
from mico_chat.media.errors import MediaLimits
from mico_chat.media.source import resolve_source
from mico_chat.media.video import _FrameSeeker, _read_video_header

HAS_DECORD = importlib.util.find_spec("decord") is not None


def expected_frames(targets: np.ndarray, frame_times: np.ndarray) -> np.ndarray:
    """The rule, brute force: the last frame shown at or before each target (the first frame for
    targets before it). Returns frame numbers."""
    return np.array([max(0, int(np.sum(frame_times <= t + 1e-9)) - 1) for t in targets])


def indices_of(frames: np.ndarray) -> list[int]:
    return [frame_index(frame) for frame in frames]


def test_sample_frame_times_are_segment_centres():
    np.testing.assert_allclose(sample_frame_times(10.0, 4), [1.25, 3.75, 6.25, 8.75])
    np.testing.assert_allclose(sample_frame_times(2.0, 2, start_s=5.0), [5.5, 6.5])
    with pytest.raises(ValueError):
        sample_frame_times(10.0, 0)
    with pytest.raises(ValueError):
        sample_frame_times(0.0, 4)


@pytest.mark.parametrize("suffix", [suffix for suffix, _ in VIDEO_FORMATS])
@pytest.mark.parametrize("num_frames", [1, 4, 7, 30, 45])
def test_frames_are_the_last_shown_at_or_before_each_target(clips, suffix, num_frames):
    clip = load_video(clips[suffix], num_frames)
    frame_times = np.arange(CLIP_FRAMES) / CLIP_FPS
    want = expected_frames(sample_frame_times(3.0, num_frames), frame_times)
    assert clip.frames.shape == (num_frames, 48, 64, 3) and clip.frames.dtype == np.uint8
    assert indices_of(clip.frames) == want.tolist()
    np.testing.assert_allclose(clip.timestamps, frame_times[want], atol=1e-9)
    assert clip.duration_s == pytest.approx(3.0) and clip.fps == pytest.approx(10.0)


def test_more_targets_than_frames_repeat_frames_in_order(clips):
    clip = load_video(clips["mp4"], 45)  # 45 targets over 30 frames
    got = indices_of(clip.frames)
    assert got == sorted(got) and set(got) == set(range(30)) and len(got) == 45


@pytest.mark.parametrize("suffix", [suffix for suffix, _ in VIDEO_FORMATS])
def test_window(clips, suffix):
    clip = load_video(clips[suffix], 5, start_s=1.05, end_s=2.35)
    # Targets 1.18, 1.44, 1.70, 1.96, 2.22 s; frames every 0.1 s.
    assert indices_of(clip.frames) == [11, 14, 17, 19, 22]
    np.testing.assert_allclose(clip.timestamps, [1.1, 1.4, 1.7, 1.9, 2.2], atol=1e-9)


def test_window_end_past_the_video_is_cut_to_its_end(clips):
    cut = load_video(clips["mp4"], 4, start_s=2.0, end_s=99.0)
    assert indices_of(cut.frames) == indices_of(load_video(clips["mp4"], 4, start_s=2.0).frames) == [21, 23, 26, 28]


def test_window_starting_after_the_end_is_refused(clips):
    with pytest.raises(MediaError, match="starts at 5.000 s but the video ends at 3.000 s"):
        load_video(clips["mp4"], 4, start_s=5.0)


def test_bad_arguments_raise_value_error(clips):
    bad = [{"num_frames": 0}, {"num_frames": 4, "start_s": -1.0}, {"num_frames": 4, "start_s": 2.0, "end_s": 1.0}]
    for kwargs in [*bad, {"num_frames": 4, "backend": "opencv"}]:
        with pytest.raises(ValueError):
            load_video(clips["mp4"], **kwargs)


@pytest.mark.parametrize("suffix,codec", [("mkv", "libx264"), ("mp4", "libx264")])
def test_irregular_timestamps_pick_at_or_before_not_nearest(media_dir, suffix, codec):
    # Frames at 0.0, 0.1, 0.5, 0.6, 1.7, 2.0, 2.1, 2.9 s (variable frame rate).
    pts = [0, 1, 5, 6, 17, 20, 21, 29]
    path = write_indexed_video(media_dir / f"vfr.{suffix}", codec, len(pts), fps=10, gop=3, pts=pts)
    clip = load_video(path, 10)
    frame_times = np.array(pts) / 10
    targets = sample_frame_times(clip.duration_s, 10)
    want = expected_frames(targets, frame_times)
    assert indices_of(clip.frames) == want.tolist()
    np.testing.assert_allclose(clip.timestamps, frame_times[want], atol=1e-9)
    # A target at 0.45 s gets the frame of 0.1 s, although the one of 0.5 s is nearer.
    one = load_video(path, 1, start_s=0.4, end_s=0.5)
    assert indices_of(one.frames) == [1] and one.timestamps[0] == pytest.approx(0.1)


@pytest.mark.parametrize("skip_nonref", [True, False], ids=["skip-nonref", "decode-all-frames"])
@pytest.mark.parametrize("use_index", [True, False], ids=["demuxer-index", "observed-keyframes"])
@pytest.mark.parametrize(
    "num_frames,start_s,end_s",
    [(3, 0.0, None), (8, 0.0, None), (16, 1.3, 6.9), (50, 0.0, None), (250, 0.0, None), (5, 7.9, None)],
)
def test_seeking_gives_the_frames_of_sequential_decoding(long_clip, use_index, skip_nonref, num_frames, start_s, end_s):
    """H.264 with B-frames: decode order differs from display order, mp4 indexes keyframes by
    decode time, and non-reference frames far from a target are skipped; every target must still
    get the right frame."""
    frame_times = np.arange(200) / 25
    window_end = 8.0 if end_s is None else end_s
    targets = sample_frame_times(window_end - start_s, num_frames, start_s)
    src = resolve_source(long_clip, None, MediaLimits())
    with open_container(src) as container:
        header = _read_video_header(container, src.name, MediaLimits())
        seeker = _FrameSeeker(container, header, src.name, use_index=use_index, skip_nonref=skip_nonref)
        frames, times = seeker.frames_at(targets)
    want = expected_frames(targets, frame_times)
    assert indices_of(frames) == want.tolist()
    np.testing.assert_allclose(times, frame_times[want], atol=1e-9)


@pytest.mark.parametrize("suffix", ["mp4", "mkv"])
def test_skipped_non_reference_frame_that_is_the_answer_is_decoded_after_all(media_dir, suffix):
    """Frames in bursts of three, 2 s apart: a burst's last frame can be a non-reference B-frame
    shown long before the next target, which skipping would miss; the seeker must notice and
    decode that stretch in full."""
    pts = [burst * 20 + k for burst in range(8) for k in range(3)]
    path = write_indexed_video(media_dir / f"bursts.{suffix}", "libx264", len(pts), fps=10, gop=100, pts=pts)
    with av.open(str(path)) as container:
        container.streams.video[0].codec_context.skip_frame = "NONREF"
        reference_times = {round(frame.time, 3) for frame in container.decode(video=0)}
    times = np.array(pts) / 10
    last_of_burst = [i for i in range(len(pts) - 1) if times[i + 1] - times[i] > 1.0]
    non_reference = [i for i in last_of_burst if round(times[i], 3) not in reference_times]
    assert non_reference, "the clip must hold the case under test"
    for i in last_of_burst:
        target = times[i] + 0.9  # in the gap, long after the burst
        clip = load_video(path, 1, start_s=target - 0.05, end_s=target + 0.05)
        assert indices_of(clip.frames) == [i] and clip.timestamps[0] == pytest.approx(times[i])


def _decode_cost(path, num_frames: int, use_index: bool) -> tuple[int, int]:
    src = resolve_source(path, None, MediaLimits())
    with open_container(src) as container:
        header = _read_video_header(container, src.name, MediaLimits())
        seeker = _FrameSeeker(container, header, src.name, use_index=use_index)
        seeker.frames_at(sample_frame_times(header.end_s, num_frames))
        return seeker.num_decoded, seeker.num_seeks


@pytest.mark.parametrize("use_index", [True, False], ids=["demuxer-index", "observed-keyframes"])
def test_decoding_cost_for_fixed_t_does_not_grow_with_length(media_dir, long_clip, use_index):
    longer = write_indexed_video(media_dir / "longer.mp4", "libx264", 800, fps=25, gop=25, size=(32, 32))
    short_cost, _ = _decode_cost(long_clip, 4, use_index)  # 200 frames
    long_cost, seeks = _decode_cost(longer, 4, use_index)  # 800 frames
    # Each target costs at most one keyframe interval (25 frames) plus the B-frame look-ahead.
    assert short_cost <= 4 * 30 and long_cost <= 4 * 30, (short_cost, long_cost)
    assert seeks >= 4


def test_dense_targets_decode_forward_instead_of_seeking(long_clip):
    decoded, seeks = _decode_cost(long_clip, 100, use_index=True)
    # 100 targets over 200 frames: one pass, at most a seek per keyframe interval (8 of them).
    assert decoded <= 200 + 10 and seeks <= 9


def test_display_rotation_is_applied(media_dir):
    plain = write_indexed_video(media_dir / "plain.mp4", "libx264", 6, gop=3)
    rotated = write_indexed_video(media_dir / "rotated.mp4", "libx264", 6, gop=3, rotation=90)
    upright, turned = load_video(plain, 3), load_video(rotated, 3)
    assert turned.frames.shape == (3, 64, 48, 3)
    # Rotation 90 means "turn the coded picture 90 degrees counter-clockwise to display it".
    np.testing.assert_array_equal(turned.frames, np.rot90(upright.frames, k=1, axes=(1, 2)))


def test_bytes_and_paths_give_the_same_clip(clips):
    from_path = load_video(clips["webm"], 6)
    from_bytes = load_video(clips["webm"].read_bytes(), 6, name="upload.webm")
    np.testing.assert_array_equal(from_path.frames, from_bytes.frames)
    np.testing.assert_array_equal(from_path.timestamps, from_bytes.timestamps)


def test_webm_without_duration_in_its_header(media_dir):
    # Browsers' MediaRecorder writes WebM "live": no duration, no cues.
    path = write_indexed_video(media_dir / "live.webm", "libvpx-vp9", 20, container_options={"live": "1"})
    with av.open(str(path)) as container:
        assert container.duration is None and container.streams.video[0].metadata.get("DURATION") is None
    clip = load_video(path, 4)
    assert clip.duration_s == pytest.approx(2.0)
    assert indices_of(clip.frames) == [2, 7, 12, 17]
    assert probe(path).duration_s == pytest.approx(2.0)


def test_video_with_an_audio_track(tones):
    clip = load_video(tones["mp4"], 4)
    assert indices_of(clip.frames) == [2, 7, 12, 17]


@pytest.mark.skipif(not HAS_DECORD, reason="decord is not installed")
@pytest.mark.parametrize("suffix", [suffix for suffix, _ in VIDEO_FORMATS])
def test_decord_backend_gives_the_same_frames(clips, suffix):
    for num_frames, start_s, end_s in [(4, 0.0, None), (45, 0.0, None), (5, 1.05, 2.35)]:
        with_pyav = load_video(clips[suffix], num_frames, start_s=start_s, end_s=end_s)
        with_decord = load_video(clips[suffix], num_frames, start_s=start_s, end_s=end_s, backend="decord")
        assert indices_of(with_decord.frames) == indices_of(with_pyav.frames)
        # decord reports times as float32.
        np.testing.assert_allclose(with_decord.timestamps, with_pyav.timestamps, atol=1e-6)
        assert with_decord.frames.shape == with_pyav.frames.shape and with_decord.frames.dtype == np.uint8
