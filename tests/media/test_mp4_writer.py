"""The one mp4 writer: frames and audio round-trip through the project's own readers; a failed
write leaves no file behind."""

import numpy as np
import pytest

from mico_chat.media.mp4 import write_mp4
from mico_chat.media.probe import probe


def frames(n=10, size=(64, 48)):
    for i in range(n):
        img = np.zeros((size[1], size[0], 3), np.uint8)
        img[:, : 6 * (i + 1)] = (200, 40, 40)
        yield img


def test_video_with_audio_and_video_only(tmp_path):
    wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)
    both = write_mp4(tmp_path / "a" / "both.mp4", frames(), fps=10, size=(64, 48), audio=wave)
    silent = write_mp4(tmp_path / "silent.mp4", frames(), fps=10, size=(64, 48))
    info, info_silent = probe(both), probe(silent)
    assert info.has_video and info.has_audio and (info.width, info.height) == (64, 48)
    assert info.duration_s == pytest.approx(1.0, abs=0.15)
    assert info_silent.has_video and not info_silent.has_audio
    assert not list(tmp_path.rglob("*.tmp"))


def test_bad_audio_names_the_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "clip.mp4"
    with pytest.raises(ValueError, match=r"clip.mp4: audio must be mono"):
        write_mp4(target, frames(), fps=10, size=(64, 48), audio=np.zeros((2, 100), np.float32))
    assert list(tmp_path.iterdir()) == []
