"""kaldi_fbank against kaldi-native-fbank (a C++ port of Kaldi's compute-fbank-feats), the reference.

Both compute in float32. A float32 FFT carries about 1e-7 of a frame's amplitude as rounding
noise, so mel energies far below the frame's strongest band (a pure tone's empty bands, the
lowest bands after pre-emphasis) are rounding noise in both implementations and cannot agree to
1e-3 (they differ by up to ~1 there, and so does either from a float64 computation). White noise,
which fills every band, is compared on every entry; tones, chirps and a speech-like signal, clean
or with a noise floor, on every entry within 16 nats (70 dB) of its frame's strongest band: from
5 % of the entries (a pure tone, rectangular window) to 96 % (speech-like). The deep entries, and
the 128-bin/25 ms setting the reference refuses, are checked in float64 against a plain loop
transcription of Kaldi's algorithm.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch

from mico_chat.media import kaldi_fbank

knf = pytest.importorskip("kaldi_native_fbank")

SAMPLE_RATE = 16000
TOLERANCE = 1e-3
FLOAT32_DEPTH_NATS = 16.0

# Options kaldi-native-fbank accepts (it refuses 128 bins with 25 ms frames: some filters catch no FFT bin).
CONFIGS = {
    "64 bins": dict(num_mel_bins=64),
    "80 bins, no snip": dict(num_mel_bins=80, snip_edges=False),
    "128 bins, 50 ms": dict(num_mel_bins=128, frame_length_ms=50.0),
    "128 bins, 50 ms, no snip": dict(num_mel_bins=128, frame_length_ms=50.0, snip_edges=False),
    "23 bins, hanning, band": dict(
        num_mel_bins=23, window_type="hanning", snip_edges=False, low_freq=0.0, high_freq=-400.0
    ),
    "40 bins, hamming, energy": dict(num_mel_bins=40, window_type="hamming", use_energy=True, energy_floor=1.0),
    "40 bins, blackman": dict(num_mel_bins=40, window_type="blackman"),
    "40 bins, rectangular, raw": dict(
        num_mel_bins=40, window_type="rectangular", preemphasis=0.0, remove_dc_offset=False, round_to_power_of_two=False
    ),
    "40 bins, sine, energies": dict(num_mel_bins=40, window_type="sine", use_log_fbank=False),
}  # fmt: skip


def reference(samples: np.ndarray, *, num_mel_bins=128, frame_length_ms=25.0, frame_shift_ms=10.0, preemphasis=0.97,
              remove_dc_offset=True, window_type="povey", round_to_power_of_two=True, low_freq=20.0, high_freq=0.0,
              snip_edges=True, use_log_fbank=True, use_energy=False, energy_floor=0.0) -> np.ndarray:  # fmt: skip
    opts = knf.FbankOptions()
    frame = opts.frame_opts
    frame.samp_freq, frame.dither, frame.frame_length_ms, frame.frame_shift_ms = (
        SAMPLE_RATE,
        0.0,
        frame_length_ms,
        frame_shift_ms,
    )
    frame.preemph_coeff, frame.remove_dc_offset, frame.window_type = preemphasis, remove_dc_offset, window_type
    frame.round_to_power_of_two, frame.snip_edges = round_to_power_of_two, snip_edges
    opts.mel_opts.num_bins, opts.mel_opts.low_freq, opts.mel_opts.high_freq = num_mel_bins, low_freq, high_freq
    opts.use_log_fbank, opts.use_energy, opts.energy_floor = use_log_fbank, use_energy, energy_floor
    fbank = knf.OnlineFbank(opts)
    fbank.accept_waveform(SAMPLE_RATE, samples.tolist())
    fbank.input_finished()
    rows = [fbank.get_frame(i) for i in range(fbank.num_frames_ready)]
    return np.array(rows, dtype=np.float32).reshape(len(rows), num_mel_bins + int(use_energy))


def signal(kind: str, seconds: float, noise_floor_db: float | None) -> np.ndarray:
    """A test signal in 16-bit integer scale (as BEATs/AST feed it: waveform * 2**15), quantised."""
    rng = np.random.default_rng(zlib.crc32(f"{kind} {seconds}".encode()))
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    if kind == "tone":
        x = 0.5 * np.sin(2 * np.pi * 440 * t)
    elif kind == "two tones":
        x = 0.8 * np.sin(2 * np.pi * 3000 * t) + 0.05 * np.sin(2 * np.pi * 150 * t)
    elif kind == "chirp":
        x = 0.3 * np.sin(2 * np.pi * (100 * t + 700 * t**2 / seconds))
    elif kind == "speech-like":  # a voice: harmonics of a rising pitch under two formants, syllable rhythm
        f0 = 110 + 110 * t / seconds
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        x = sum(
            (np.exp(-(((k * f0 - 700) / 400) ** 2) / 2) + 0.5 * np.exp(-(((k * f0 - 1800) / 500) ** 2) / 2))
            * np.sin(k * phase)
            for k in range(1, 30)
        )
        x = 0.3 * x / np.abs(x).max() * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    else:  # white noise
        x = 0.1 * rng.standard_normal(len(t))
    if noise_floor_db is not None:
        x = x + 0.3 * 10 ** (noise_floor_db / 20) * rng.standard_normal(len(t))
    return np.round(np.clip(x, -1, 1) * 32767).astype(np.float32)


def _compare(samples: np.ndarray, config: dict, everywhere: bool) -> float:
    want = reference(samples, **config)
    got = kaldi_fbank(torch.from_numpy(samples), sample_rate=SAMPLE_RATE, **config)
    assert got.dtype == torch.float32 and tuple(got.shape) == want.shape
    got = got.numpy()
    if not config.get("use_log_fbank", True):  # plain energies: compare their logs
        got, want = np.log(np.maximum(got, 1e-30)), np.log(np.maximum(want, 1e-30))
    compared = np.ones_like(want, dtype=bool)
    if not everywhere:
        compared = want >= want.max(axis=1, keepdims=True) - FLOAT32_DEPTH_NATS
        assert compared.mean() >= 0.04, "the comparison must not become vacuous"
    return float(np.abs(got - want)[compared].max()) if want.size else 0.0


@pytest.mark.parametrize("config", list(CONFIGS), ids=list(CONFIGS))
@pytest.mark.parametrize("seconds", [0.3, 1.37, 4.01])
def test_matches_reference_everywhere_on_noise(config, seconds):
    assert _compare(signal("noise", seconds, None), CONFIGS[config], everywhere=True) <= TOLERANCE


@pytest.mark.parametrize("config", list(CONFIGS), ids=list(CONFIGS))
@pytest.mark.parametrize("noise_floor_db", [None, -30.0], ids=["clean", "-30dB"])
@pytest.mark.parametrize("seconds", [1.37])
@pytest.mark.parametrize("kind", ["tone", "two tones", "speech-like", "chirp"])
def test_matches_reference_within_float32_range(config, noise_floor_db, seconds, kind):
    assert _compare(signal(kind, seconds, noise_floor_db), CONFIGS[config], everywhere=False) <= TOLERANCE


@pytest.mark.parametrize("num_samples", [0, 100, 399, 400, 401, 560, 1000])
@pytest.mark.parametrize("snip_edges", [True, False])
def test_frame_count_and_edges_for_short_signals(num_samples, snip_edges):
    samples = signal("noise", 1.0, None)[:num_samples]
    config = dict(num_mel_bins=64, snip_edges=snip_edges)
    want = reference(samples, **config)
    got = kaldi_fbank(torch.from_numpy(samples), **config).numpy()
    assert (
        got.shape
        == want.shape
        == (
            (1 + (num_samples - 400) // 160 if num_samples >= 400 else 0) if snip_edges else (num_samples + 80) // 160,
            64,
        )
    )
    if want.size:
        assert np.abs(got - want).max() <= TOLERANCE


def test_128_bins_with_25ms_frames_as_beats_uses_them():
    """Kaldi refuses this setting (its narrowest filters catch no FFT bin); BEATs/AST use it
    through torchaudio, where such a filter yields log(FLT_EPSILON). Same here."""
    samples = torch.from_numpy(signal("speech-like", 1.0, -20.0))
    features = kaldi_fbank(samples, num_mel_bins=128)  # (98, 128)
    assert features.shape == (98, 128) and torch.isfinite(features).all()
    empty = (features == math.log(torch.finfo(torch.float32).eps)).all(dim=0)
    assert 0 < int(empty.sum()) < 10 and bool(empty[:10].any())  # only among the lowest filters
    assert (features[:, ~empty] > -10).all()


def test_input_shapes_dtypes_and_options():
    samples = torch.from_numpy(signal("noise", 0.5, None))
    flat = kaldi_fbank(samples, num_mel_bins=64)
    torch.testing.assert_close(kaldi_fbank(samples[None, :], num_mel_bins=64), flat)
    torch.testing.assert_close(kaldi_fbank(samples.double(), num_mel_bins=64), flat, atol=1e-3, rtol=0)
    assert kaldi_fbank(samples, num_mel_bins=64, use_energy=True).shape == (flat.shape[0], 65)
    dithered = kaldi_fbank(samples, num_mel_bins=64, dither=1.0)
    assert not torch.equal(dithered, flat) and (dithered - flat).abs().max() < 0.1
    for bad in (
        dict(num_mel_bins=2),
        dict(window_type="kaiser"),
        dict(low_freq=9000.0),
        dict(preemphasis=1.5),
        dict(frame_length_ms=0.05),
    ):
        with pytest.raises(ValueError):
            kaldi_fbank(samples, **bad)
    with pytest.raises(ValueError):
        kaldi_fbank(samples.reshape(2, -1))


def loop_reference(x: np.ndarray, num_bins: int, frame_ms: float, snip_edges: bool) -> np.ndarray:
    """Kaldi's fbank with default options (povey window, pre-emphasis 0.97, DC removal, power of
    two FFT, 20 Hz to Nyquist), one frame and one filter at a time, in float64; mel filter
    weights in float32 arithmetic as Kaldi computes them."""
    length, shift = int(SAMPLE_RATE * 0.001 * frame_ms), 160
    fft_size = 1 << (length - 1).bit_length()
    n = len(x)
    count = (1 + (n - length) // shift if n >= length else 0) if snip_edges else (n + shift // 2) // shift
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / (length - 1))) ** 0.85

    def mel(f):
        return np.float32(1127.0) * np.log(np.float32(1.0) + np.float32(f) / np.float32(700.0))

    low, high = mel(20.0), mel(SAMPLE_RATE / 2)
    delta = (high - low) / np.float32(num_bins + 1)
    weights = np.zeros((num_bins, fft_size // 2 + 1))
    for b in range(num_bins):
        left, centre, right = low + b * delta, low + (b + 1) * delta, low + (b + 2) * delta
        for k in range(fft_size // 2):
            m = mel(np.float32(SAMPLE_RATE / fft_size) * np.float32(k))
            if left < m < right:
                weights[b, k] = (m - left) / (centre - left) if m <= centre else (right - m) / (right - centre)
    out = np.zeros((count, num_bins))
    for f in range(count):
        start = f * shift if snip_edges else f * shift + shift // 2 - length // 2
        frame = np.empty(length)
        for i in range(length):
            j = start + i
            while j < 0 or j >= n:  # reflect at the edges, repeating the edge sample
                j = -j - 1 if j < 0 else 2 * n - 1 - j
            frame[i] = x[j]
        frame -= frame.mean()
        frame[1:] -= 0.97 * frame[:-1].copy()
        frame[0] -= 0.97 * frame[0]
        power = np.abs(np.fft.rfft(frame * window, fft_size)) ** 2
        out[f] = np.log(np.maximum(weights @ power, np.finfo(np.float32).eps))
    return out


@pytest.mark.parametrize("snip_edges", [True, False])
@pytest.mark.parametrize("num_bins,frame_ms", [(128, 25.0), (64, 25.0), (128, 50.0)])
def test_matches_a_float64_loop_transcription_everywhere(num_bins, frame_ms, snip_edges):
    samples = np.concatenate([signal("tone", 0.2, None), signal("speech-like", 0.2, None)]).astype(np.float64)
    want = loop_reference(samples, num_bins, frame_ms, snip_edges)
    got = kaldi_fbank(torch.from_numpy(samples), num_mel_bins=num_bins, frame_length_ms=frame_ms, snip_edges=snip_edges)
    assert got.shape == want.shape
    np.testing.assert_allclose(got.numpy(), want, atol=1e-4, rtol=0)
