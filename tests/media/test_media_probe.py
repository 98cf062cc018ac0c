"""probe and media_kind_of: header facts, and the modality guessed for inputs of unknown kind."""

from __future__ import annotations

import io

import numpy as np
import pytest
from helpers.media_samples import png_bytes, write_tone
from PIL import Image

from mico_chat.media import MediaError, MediaInfo, media_kind_of, probe


@pytest.mark.parametrize("suffix,num_frames", [("mp4", 30), ("mov", 30), ("avi", 30), ("mkv", None), ("webm", None)])
def test_probe_video(clips, suffix, num_frames):
    info = probe(clips[suffix])
    assert info == MediaInfo(
        path=str(clips[suffix]), kind="video", duration_s=pytest.approx(3.0), fps=pytest.approx(10.0), width=64,
        height=48, has_video=True, has_audio=False, audio_sample_rate=None, num_frames=num_frames,
    )  # fmt: skip


def test_probe_video_with_audio(tones):
    info = probe(tones["mp4"])
    assert (info.kind, info.has_video, info.has_audio, info.audio_sample_rate) == ("video", True, True, 44100)
    assert info.duration_s == pytest.approx(2.0, abs=0.05)


@pytest.mark.parametrize("fmt,rate", [("wav", 44100), ("flac", 44100), ("mp3", 44100), ("ogg", 48000), ("m4a", 44100)])
def test_probe_audio(tones, fmt, rate):
    info = probe(tones[fmt])
    assert (info.kind, info.has_video, info.has_audio, info.audio_sample_rate) == ("audio", False, True, rate)
    assert info.duration_s == pytest.approx(2.0, abs=0.03)
    assert info.width is info.height is info.fps is info.num_frames is None


def test_probe_image_and_array(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30)).save(buffer, format="WEBP")
    info = probe(buffer.getvalue(), name="upload.webp")
    assert (info.path, info.kind, info.width, info.height, info.duration_s) == ("upload.webp", "image", 40, 30, None)
    np.save(tmp_path / "depth.npy", np.zeros((12, 20), np.float32))
    assert (probe(tmp_path / "depth.npy").width, probe(tmp_path / "depth.npy").height) == (20, 12)


def test_media_kind_of(tmp_path, clips, tones):
    assert media_kind_of(clips["mkv"]) == "video"
    assert media_kind_of(tones["mp4"]) == "video"
    assert media_kind_of(tones["mp3"]) == "audio"
    # A browser's voice message: a .webm holding only audio is audio, whatever the extension says.
    assert media_kind_of(write_tone(tmp_path / "voice.webm", "libopus", sample_rate=48000)) == "audio"
    assert media_kind_of(png_bytes(np.zeros((4, 4, 3), np.uint8), 8)) == "image"
    assert media_kind_of(png_bytes(np.zeros((4, 4), np.uint16), 16)) == "depth"
    np.save(tmp_path / "d.npy", np.zeros((4, 4)))
    np.save(tmp_path / "d1.npy", np.zeros((4, 4, 1)))
    np.save(tmp_path / "n.npy", np.zeros((4, 4, 3)))
    np.save(tmp_path / "x.npy", np.zeros((4, 4, 5)))
    assert [media_kind_of(tmp_path / f"{n}.npy") for n in ("d", "d1", "n")] == ["depth", "depth", "normal"]
    with pytest.raises(MediaError, match=r"neither a depth \(H, W\) nor a normal \(H, W, 3\) map"):
        media_kind_of(tmp_path / "x.npy")
