"""Every bad input raises MediaError naming the file and the problem, from every loader, and fast."""

from __future__ import annotations

import os
import pickle
import re
import time
from fractions import Fraction

import av
import numpy as np
import pytest
from helpers.media_samples import write_indexed_video, write_tone

from mico_chat.media import (
    MediaError,
    MediaLimits,
    load_audio,
    load_depth,
    load_image,
    load_normal,
    load_video,
    media_kind_of,
    probe,
)

LOADERS = {
    "probe": probe,
    "kind": media_kind_of,
    "video": lambda source, **kwargs: load_video(source, 4, **kwargs),
    "audio": load_audio,
    "image": load_image,
    "depth": load_depth,
    "normal": load_normal,
}
AV_LOADERS = ("probe", "kind", "video", "audio")


def _call(loader: str, source, **kwargs):
    return LOADERS[loader](source, **kwargs)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, tuple[str, str]]:
    """name -> (path, regex its error reason must match, whatever the loader)."""
    root = tmp_path_factory.mktemp("bad")
    (root / "empty.mp4").write_bytes(b"")
    (root / "notes.mp4").write_text("these are my meeting notes, not a video\n" * 20)
    (root / "notes.xyz").write_text("an unknown extension holding text\n" * 20)
    (root / "noise.bin").write_bytes(np.random.default_rng(0).bytes(4096))
    mp4_head = write_indexed_video(root / "good.mp4", "libx264", 10).read_bytes()[:32]
    (root / "corrupt.mp4").write_bytes(mp4_head + np.random.default_rng(1).bytes(8192))
    (root / "a_directory.mp4").mkdir()
    huge = root / "huge.mp4"
    with open(huge, "wb") as f:
        f.write(mp4_head)
    os.truncate(huge, 2 << 30)  # a sparse 2 GiB file: nothing is written, nothing may be read
    unreadable = "not a recognisable|not a supported|cannot decode|cannot open|holds neither"
    return {
        "missing": (str(root / "missing.mp4"), "no such file"),
        "directory": (str(root / "a_directory.mp4"), "is a directory"),
        "empty": (str(root / "empty.mp4"), r"empty file \(0 bytes\)"),
        "text renamed .mp4": (str(root / "notes.mp4"), unreadable),
        "unknown extension": (str(root / "notes.xyz"), unreadable),
        "random bytes": (str(root / "noise.bin"), unreadable),
        "corrupt mp4": (str(root / "corrupt.mp4"), unreadable),
        "over max_bytes": (str(huge), r"file is 2.0 GiB \(2147483648 bytes\), over the limit of 1.0 GiB"),
    }


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "directory",
        "empty",
        "text renamed .mp4",
        "unknown extension",
        "random bytes",
        "corrupt mp4",
        "over max_bytes",
    ],
)
def test_bad_file_raises_media_error_naming_it(bad_files, loader, case):
    path, reason = bad_files[case]
    started = time.perf_counter()
    with pytest.raises(MediaError) as caught:
        _call(loader, path)
    assert caught.value.path == path
    assert str(caught.value) == f"{path}: {caught.value.reason}"
    assert caught.value.reason and re.search(reason, caught.value.reason), caught.value.reason
    assert time.perf_counter() - started < 2.0


def test_decoder_errors_are_chained_not_leaked(bad_files):
    with pytest.raises(MediaError) as caught:
        load_video(bad_files["text renamed .mp4"][0], 4)
    assert isinstance(caught.value.__cause__, av.FFmpegError)


@pytest.mark.parametrize("loader", list(LOADERS))
def test_bytes_are_named_by_name_or_as_bytes(loader):
    with pytest.raises(MediaError, match=r"^<bytes>: empty file \(0 bytes\)$"):
        _call(loader, b"")
    with pytest.raises(MediaError) as caught:
        _call(loader, b"plain text, not media" * 10, name="upload.mp4")
    assert caught.value.path == "upload.mp4"


def test_media_error_pickles_and_formats():
    err = pickle.loads(pickle.dumps(MediaError("clip.mp4", "empty file (0 bytes)")))
    assert (err.path, err.reason, str(err)) == ("clip.mp4", "empty file (0 bytes)", "clip.mp4: empty file (0 bytes)")


def test_asking_an_audio_file_for_frames(tones):
    with pytest.raises(MediaError, match=r"has no video stream \(only audio\)"):
        load_video(tones["wav"], 8)


def test_images_are_not_videos(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "still.png")
    with pytest.raises(MediaError, match="not a supported audio/video container"):
        load_video(tmp_path / "still.png", 4)


def _ten_hour_video(path):
    """Three tiny frames at 0 s, 1 s and 10 h: a valid file whose header says it lasts 10 hours."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=1)
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, 1)
        for pts in (0, 1, 36000):
            frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


@pytest.mark.parametrize("suffix", ["mp4", "mkv"])
def test_ten_hour_video_is_refused_from_the_header(tmp_path, suffix):
    path = _ten_hour_video(tmp_path / f"ten_hours.{suffix}")
    assert path.stat().st_size < 10_000
    for load in (lambda: load_video(path, 8), lambda: probe(path)):
        started = time.perf_counter()
        with pytest.raises(MediaError, match=r"lasts 36001 s \(10.0 h\), over the limit of 14400 s"):
            load()
        assert time.perf_counter() - started < 0.5
    # Allowed when the caller raises the limit; a window at the end costs one seek, not 10 hours.
    clip = load_video(path, 2, start_s=35999.0, limits=MediaLimits(max_duration_s=50_000))
    np.testing.assert_allclose(clip.timestamps, [1.0, 36000.0])


def test_ten_hour_wav_header_is_refused(tmp_path):
    path = write_tone(tmp_path / "short.wav", "pcm_s16le", seconds=1.0)
    data = bytearray(path.read_bytes())
    data_chunk = data.index(b"data")
    data[data_chunk + 4 : data_chunk + 8] = (36000 * 44100 * 2).to_bytes(4, "little")  # claims 10 h
    with pytest.raises(MediaError, match=r"lasts 36000 s \(10.0 h\), over the limit"):
        load_audio(bytes(data), name="ten_hours.wav")


def test_frame_size_limit(clips):
    with pytest.raises(MediaError, match=r"frame size 64x48 exceeds 32 pixels per side"):
        load_video(clips["mp4"], 4, limits=MediaLimits(max_video_side=32))


# --- truncated files: decodable content ends well before the header's duration --------------------


@pytest.fixture(scope="module")
def truncated(tmp_path_factory) -> dict[str, bytes]:
    """Files cut in half. Video frames are noise so that frame data, not the index, fills the file."""
    root = tmp_path_factory.mktemp("truncated")
    rng = np.random.default_rng(0)

    def noisy_video(path, codec, options=None):
        with av.open(str(path), "w", options=options or {}) as container:
            stream = container.add_stream(codec, rate=10)
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            stream.codec_context.gop_size = 10
            for i in range(100):
                frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (48, 64, 3), np.uint8), format="rgb24")
                frame.pts = i
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
        data = path.read_bytes()
        return data[: len(data) // 2]

    return {
        "mp4": noisy_video(root / "moov_at_end.mp4", "libx264"),
        "faststart.mp4": noisy_video(root / "moov_first.mp4", "libx264", {"movflags": "faststart"}),
        "mkv": noisy_video(root / "cut.mkv", "libx264"),
        "webm": noisy_video(root / "cut.webm", "libvpx-vp9"),
        "wav": write_tone(root / "cut.wav", "pcm_s16le", seconds=10.0).read_bytes()[:441_000],
        "flac": (lambda d: d[: len(d) // 2])(write_tone(root / "cut.flac", "flac", seconds=10.0).read_bytes()),
        "mp3": (lambda d: d[: len(d) // 2])(write_tone(root / "cut.mp3", "libmp3lame", seconds=10.0).read_bytes()),
    }


def test_truncated_mp4_without_its_index_is_refused(truncated):
    with pytest.raises(MediaError, match="not a recognisable audio/video file"):
        load_video(truncated["mp4"], 8, name="half.mp4")


@pytest.mark.parametrize("suffix", ["faststart.mp4", "mkv", "webm"])
def test_truncated_video_names_both_durations(truncated, suffix):
    with pytest.raises(MediaError) as caught:
        load_video(truncated[suffix], 8, name=f"half.{suffix}")
    reason = caught.value.reason
    assert "header says it lasts 10.00 s" in reason and "(truncated or corrupt file)" in reason, reason
    decoded_until = float(re.search(r"(?:ends at|past) (\d+\.\d+) s", reason).group(1))
    assert 1.0 < decoded_until < 8.0, reason
    # What was decodable can still be asked for.
    assert load_video(truncated[suffix], 2, end_s=1.0).frames.shape[0] == 2


@pytest.mark.parametrize("suffix", ["wav", "flac", "mp3"])
def test_truncated_audio_names_both_durations(truncated, suffix):
    with pytest.raises(MediaError) as caught:
        load_audio(truncated[suffix], name=f"half.{suffix}")
    reason = caught.value.reason
    assert "header says it lasts 10.00 s" in reason and "(truncated or corrupt file)" in reason, reason
    decoded_until = float(re.search(r"(?:ends at|past) (\d+\.\d+) s", reason).group(1))
    assert 4.0 < decoded_until < 5.5, reason
    assert len(load_audio(truncated[suffix], duration_s=1.0).samples) == 16000
