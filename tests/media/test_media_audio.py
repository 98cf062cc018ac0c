"""load_audio: rate, length, content, channel averaging and windows, for audio files and video tracks."""

from __future__ import annotations

import av
import numpy as np
import pytest
from helpers.media_samples import dominant_frequency_hz, write_indexed_video, write_tone

from mico_chat.media import MediaError, MediaLimits, load_audio, probe


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "ogg", "m4a", "mp4"])
def test_tone_is_resampled_to_16khz_mono(tones, fmt):
    wave = load_audio(tones[fmt])
    assert wave.sample_rate == 16000 and wave.samples.dtype == np.float32 and wave.samples.ndim == 1
    assert len(wave.samples) == 32000 and wave.duration_s == pytest.approx(2.0)
    assert dominant_frequency_hz(wave.samples, 16000) == pytest.approx(440.0, abs=1.0)
    middle = wave.samples[4000:-4000]
    assert np.abs(middle).max() == pytest.approx(0.5, abs=0.03)  # the sine's amplitude survives
    assert np.abs(wave.samples).max() <= 1.0


@pytest.mark.parametrize("rate", [8000, 22050, 48000])
def test_other_output_rates(tones, rate):
    wave = load_audio(tones["flac"], sample_rate=rate)
    assert wave.sample_rate == rate and len(wave.samples) == 2 * rate
    assert dominant_frequency_hz(wave.samples, rate) == pytest.approx(440.0, abs=1.0)


@pytest.mark.parametrize("right,amplitude", [("same", 0.5), ("silent", 0.25), ("inverted", 0.0)])
def test_stereo_channels_are_averaged(media_dir, right, amplitude):
    path = write_tone(media_dir / f"stereo_{right}.flac", "flac", right=right)
    wave = load_audio(path)
    assert np.abs(wave.samples).max() == pytest.approx(amplitude, abs=2e-4)


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "ogg", "m4a", "mp4"])
def test_window_matches_the_same_stretch_of_the_whole(tones, fmt):
    whole = load_audio(tones[fmt]).samples
    window = load_audio(tones[fmt], start_s=0.75, duration_s=0.5).samples
    assert len(window) == 8000
    # Seeking decodes from a different place, yet the window is that stretch of the whole, edges
    # included: decoders are warmed up before it and the resampler sees the audio around it.
    np.testing.assert_allclose(window, whole[12000:20000], atol=1e-4)


def test_window_past_the_end_is_cut_to_the_end(tones):
    wave = load_audio(tones["wav"], start_s=1.5, duration_s=10.0)
    assert len(wave.samples) == 8000


def test_window_starting_after_the_end_is_refused(tones):
    with pytest.raises(MediaError, match="window starts at 3.000 s but the audio ends at 2.000 s"):
        load_audio(tones["wav"], start_s=3.0)


def test_audio_decode_limit_refuses_long_requests_but_allows_windows(tones):
    limits = MediaLimits(max_audio_decode_s=1.0)
    with pytest.raises(MediaError, match=r"asks to decode 2.0 s of audio, over the limit of 1 s"):
        load_audio(tones["wav"], limits=limits)
    assert len(load_audio(tones["wav"], duration_s=0.5, start_s=1.0, limits=limits).samples) == 8000


def test_audio_without_duration_in_its_header_is_bounded_by_the_decode_limit(media_dir):
    # A browser's voice message: WebM written "live", no duration anywhere in the header.
    path = write_tone(media_dir / "live_voice.webm", "libopus", sample_rate=48000, container_options={"live": "1"})
    with av.open(str(path)) as container:
        assert container.duration is None and container.streams.audio[0].duration is None
    assert probe(path).duration_s == pytest.approx(2.0, abs=0.03)  # found by scanning packets
    assert len(load_audio(path, limits=MediaLimits(max_audio_decode_s=3.0)).samples) == 32000
    with pytest.raises(MediaError, match=r"states no duration and runs past 1 s of audio, the limit per call"):
        load_audio(path, limits=MediaLimits(max_audio_decode_s=1.0))


def test_video_without_audio_track_is_refused(clips):
    with pytest.raises(MediaError, match="has no audio track"):
        load_audio(clips["mp4"])


def test_audio_of_webm_video(media_dir):
    path = write_indexed_video(media_dir / "with_opus.webm", "libvpx-vp9", 20, audio_tone_hz=1000.0)
    wave = load_audio(path)
    assert len(wave.samples) == 32000
    assert dominant_frequency_hz(wave.samples, 16000) == pytest.approx(1000.0, abs=1.0)


def test_bytes_input(tones):
    np.testing.assert_array_equal(load_audio(tones["flac"].read_bytes()).samples, load_audio(tones["flac"]).samples)


def test_bad_arguments_raise_value_error(tones):
    for kwargs in ({"sample_rate": 0}, {"start_s": -1.0}, {"duration_s": 0.0}):
        with pytest.raises(ValueError):
            load_audio(tones["wav"], **kwargs)
