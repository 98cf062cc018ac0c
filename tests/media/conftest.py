"""Media files the tests share, generated once per session in a temporary directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.media_samples import CLIP_FPS, CLIP_FRAMES, VIDEO_FORMATS, write_indexed_video, write_tone


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def clips(media_dir) -> dict[str, Path]:
    """A 3 s clip of 30 indexed frames at 10 fps, keyframe every 5 frames, in every container."""
    return {
        suffix: write_indexed_video(media_dir / f"clip.{suffix}", codec, CLIP_FRAMES, fps=CLIP_FPS, gop=5)
        for suffix, codec in VIDEO_FORMATS
    }


@pytest.fixture(scope="session")
def long_clip(media_dir) -> Path:
    """8 s of indexed frames at 25 fps with B-frames and a keyframe every 25 frames (1 s)."""
    return write_indexed_video(media_dir / "long.mp4", "libx264", 200, fps=25, gop=25)


@pytest.fixture(scope="session")
def tones(media_dir) -> dict[str, Path]:
    """A 2 s, 440 Hz sine at 44.1 kHz (48 kHz for Opus) in each audio format, and in an mp4 (AAC)."""
    files = {
        "wav": write_tone(media_dir / "tone.wav", "pcm_s16le"),
        "flac": write_tone(media_dir / "tone.flac", "flac"),
        "mp3": write_tone(media_dir / "tone.mp3", "libmp3lame"),
        "ogg": write_tone(media_dir / "tone.ogg", "libopus", sample_rate=48000),
        "m4a": write_tone(media_dir / "tone.m4a", "aac", container_format="mp4"),
    }
    files["mp4"] = write_indexed_video(media_dir / "tone_video.mp4", "libx264", 20, audio_tone_hz=440.0)
    return files
