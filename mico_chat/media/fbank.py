"""Kaldi-compatible log-mel filterbank features in plain, vectorised torch.

BEATs, AST and VAST compute their audio input with Kaldi's ``compute-fbank-feats`` recipe (through
torchaudio's Kaldi compliance module, which cannot be imported here); this module reproduces that
recipe step by step, so encoders trained on it see the same features. Each frame goes through, in
Kaldi's order: extraction (with Kaldi's edge reflection when ``snip_edges=False``), dither, DC
removal, raw log-energy, pre-emphasis, window, zero-padding, power spectrum, triangular mel
filters, log.
"""

from __future__ import annotations

import math

import torch

WINDOW_TYPES = ("povey", "hanning", "hamming", "sine", "rectangular", "blackman")

# Kaldi floors energies at FLT_EPSILON before taking logs, whatever the computation dtype.
_FLOAT_EPSILON = torch.finfo(torch.float32).eps
_BLACKMAN_COEFF = 0.42


def kaldi_fbank(
    waveform: torch.Tensor,
    *,
    sample_rate: int = 16000,
    num_mel_bins: int = 128,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    dither: float = 0.0,
    preemphasis: float = 0.97,
    remove_dc_offset: bool = True,
    window_type: str = "povey",
    round_to_power_of_two: bool = True,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    snip_edges: bool = True,
    use_log_fbank: bool = True,
    use_energy: bool = False,
    energy_floor: float = 0.0,
) -> torch.Tensor:
    """Kaldi's log-mel filterbank of a mono waveform.

    Args:
        waveform: ``(N,)`` or ``(1, N)`` samples, in whatever scale the model was trained with
            (BEATs/AST/VAST pass ``waveform * 2**15``, i.e. 16-bit integer scale).
        sample_rate: of the waveform, in Hz.
        num_mel_bins: number of triangular mel filters. Unlike Kaldi, filters too narrow to catch
            an FFT bin (128 bins with 25 ms frames) are allowed; they give ``log(FLT_EPSILON)``,
            as torchaudio's implementation, which those models were trained with, does.
        frame_length_ms, frame_shift_ms: window length and hop.
        dither: standard deviation of Gaussian noise added to each frame (0 = deterministic).
        preemphasis: coefficient of ``x[i] - c * x[i-1]`` (``x[0] - c * x[0]`` for the first sample).
        remove_dc_offset: subtract each frame's mean.
        window_type: one of ``WINDOW_TYPES`` (Kaldi's definitions).
        round_to_power_of_two: zero-pad each frame to the next power of two before the FFT.
        low_freq, high_freq: mel filter range in Hz; ``high_freq <= 0`` counts back from Nyquist.
        snip_edges: True keeps only frames that fit in the signal; False centres frames on
            multiples of the shift and reflects the signal at its ends (Kaldi's convention).
        use_log_fbank: log of the filter energies (floored at FLT_EPSILON) instead of energies.
        use_energy: prepend the frame's raw log-energy (before pre-emphasis and window) as column 0.
        energy_floor: floor for that energy (0 = none).

    Returns:
        ``(num_frames, num_mel_bins)`` float32 (``num_mel_bins + 1`` columns with ``use_energy``),
        on the waveform's device. ``num_frames`` is ``1 + (N - L) // S`` with ``snip_edges``
        (0 if N < L), else ``(N + S // 2) // S``, for frame length L and shift S in samples.
        Computed in float32 (float64 if the waveform is float64).
    """
    wave = _as_mono(waveform)
    # Same arithmetic and truncation as Kaldi's FrameExtractionOptions (samp_freq * 0.001 * ms).
    frame_length = int(sample_rate * 0.001 * frame_length_ms)
    frame_shift = int(sample_rate * 0.001 * frame_shift_ms)
    padded_length = _next_power_of_two(frame_length) if round_to_power_of_two else frame_length
    _check_options(sample_rate, num_mel_bins, frame_length, frame_shift, preemphasis, window_type, low_freq, high_freq)

    frames = _extract_frames(wave, frame_length, frame_shift, snip_edges)  # (F, L)
    if frames.shape[0] == 0:  # shorter than one frame (with snip_edges) or empty
        return torch.zeros((0, num_mel_bins + int(use_energy)), dtype=torch.float32, device=wave.device)
    if dither != 0.0:
        frames = frames + dither * torch.randn_like(frames)
    if remove_dc_offset:
        frames = frames - frames.mean(dim=1, keepdim=True)
    if use_energy:
        log_energy = frames.pow(2).sum(dim=1).clamp_min(_FLOAT_EPSILON).log()  # (F,)
        if energy_floor > 0.0:
            log_energy = log_energy.clamp_min(math.log(energy_floor))
    if preemphasis != 0.0:
        previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
        frames = frames - preemphasis * previous
    frames = frames * _window(window_type, frame_length, frames.dtype, frames.device)
    frames = torch.nn.functional.pad(frames, (0, padded_length - frame_length))  # (F, P)

    spectrum = torch.fft.rfft(frames, dim=1)  # (F, P/2 + 1)
    power = spectrum.real.pow(2) + spectrum.imag.pow(2)
    filters = _mel_filters(num_mel_bins, padded_length, sample_rate, low_freq, high_freq, power.dtype, power.device)
    features = power @ filters.T  # (F, num_mel_bins)
    if use_log_fbank:
        features = features.clamp_min(_FLOAT_EPSILON).log()
    if use_energy:
        features = torch.cat([log_energy[:, None], features], dim=1)
    return features.to(torch.float32)


def _as_mono(waveform: torch.Tensor) -> torch.Tensor:
    if not isinstance(waveform, torch.Tensor):
        raise TypeError(f"waveform must be a torch.Tensor, got {type(waveform).__name__}")
    if waveform.dim() == 2 and waveform.shape[0] == 1:
        waveform = waveform[0]
    if waveform.dim() != 1:
        raise ValueError(f"waveform must have shape (N,) or (1, N), got {tuple(waveform.shape)}")
    return waveform.to(torch.float64 if waveform.dtype == torch.float64 else torch.float32)


def _check_options(
    sample_rate: int, num_mel_bins: int, frame_length: int, frame_shift: int, preemphasis: float,
    window_type: str, low_freq: float, high_freq: float,
) -> None:  # fmt: skip
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if num_mel_bins < 3:
        raise ValueError(f"num_mel_bins must be at least 3 (Kaldi's minimum), got {num_mel_bins}")
    if frame_length < 2 or frame_shift < 1:
        raise ValueError(f"frames of {frame_length} samples every {frame_shift} are too short at {sample_rate} Hz")
    if not 0.0 <= preemphasis <= 1.0:
        raise ValueError(f"preemphasis must be in [0, 1], got {preemphasis}")
    if window_type not in WINDOW_TYPES:
        raise ValueError(f"unknown window_type {window_type!r}; choose one of {WINDOW_TYPES}")
    nyquist = 0.5 * sample_rate
    high = high_freq if high_freq > 0 else nyquist + high_freq
    if not (0.0 <= low_freq < nyquist and 0.0 < high <= nyquist and low_freq < high):
        raise ValueError(
            f"need 0 <= low_freq < high_freq <= Nyquist ({nyquist} Hz); got low_freq={low_freq}, high_freq={high_freq}"
        )


def _next_power_of_two(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _extract_frames(wave: torch.Tensor, frame_length: int, frame_shift: int, snip_edges: bool) -> torch.Tensor:
    """``(N,)`` -> ``(F, frame_length)`` frames, as Kaldi's ExtractWindow cuts them."""
    num_samples = wave.shape[0]
    if snip_edges:
        if num_samples < frame_length:
            return wave.new_zeros((0, frame_length))
        num_frames = 1 + (num_samples - frame_length) // frame_shift
        return wave.unfold(0, frame_length, frame_shift)[:num_frames]

    num_frames = (num_samples + frame_shift // 2) // frame_shift
    if num_frames == 0:
        return wave.new_zeros((0, frame_length))
    # Frame m is centred on m * shift + shift / 2; samples outside [0, N) are mirrored back in,
    # the edge sample repeated (x[-1] = x[0], x[N] = x[N-1]). Mapping indices modulo 2N applies
    # that rule any number of times, for signals shorter than a frame too.
    first = frame_shift // 2 - frame_length // 2
    last = (num_frames - 1) * frame_shift + first + frame_length  # one past the last sample used
    positions = torch.arange(first, last, device=wave.device).remainder(2 * num_samples)
    positions = torch.where(positions >= num_samples, 2 * num_samples - 1 - positions, positions)
    return wave[positions].unfold(0, frame_length, frame_shift)[:num_frames]


def _window(window_type: str, length: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Kaldi's window functions, with ``a = 2 pi / (length - 1)``."""
    i = torch.arange(length, dtype=torch.float64)
    a = 2 * math.pi / (length - 1)
    if window_type == "hanning":
        window = 0.5 - 0.5 * torch.cos(a * i)
    elif window_type == "sine":
        window = torch.sin(0.5 * a * i)
    elif window_type == "hamming":
        window = 0.54 - 0.46 * torch.cos(a * i)
    elif window_type == "povey":  # a Hann window raised to 0.85: like Hamming, but zero at the ends
        window = (0.5 - 0.5 * torch.cos(a * i)).pow(0.85)
    elif window_type == "rectangular":
        window = torch.ones(length, dtype=torch.float64)
    else:  # blackman
        window = _BLACKMAN_COEFF - 0.5 * torch.cos(a * i) + (0.5 - _BLACKMAN_COEFF) * torch.cos(2 * a * i)
    return window.to(dtype=dtype, device=device)


def _mel(freq: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log(1.0 + freq / 700.0)


def _mel_filters(
    num_bins: int, padded_length: int, sample_rate: int, low_freq: float, high_freq: float,
    dtype: torch.dtype, device: torch.device,
) -> torch.Tensor:  # fmt: skip
    """Kaldi's triangular filters on the mel scale: ``(num_bins, padded_length // 2 + 1)``.

    Filter b rises from mel ``low + b * delta`` to ``low + (b + 1) * delta`` and falls to
    ``low + (b + 2) * delta``, with ``delta = (mel(high) - mel(low)) / (num_bins + 1)``; the weight of
    FFT bin i is that triangle evaluated at mel(i * sample_rate / padded_length), strictly inside
    its edges. The Nyquist bin gets no weight, as in Kaldi.

    Computed in float32 as Kaldi does: the narrowest filters (many bins, short frames) catch one
    FFT bin near an edge with a tiny weight, whose value depends on that rounding.
    """
    num_fft_bins = padded_length // 2
    nyquist = 0.5 * sample_rate
    high = high_freq if high_freq > 0 else nyquist + high_freq
    f32 = torch.float32
    mel_low, mel_high = _mel(torch.tensor(float(low_freq), dtype=f32)), _mel(torch.tensor(high, dtype=f32))
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins, dtype=f32)[:, None]
    left, center, right = mel_low + b * delta, mel_low + (b + 1) * delta, mel_low + (b + 2) * delta  # (B, 1)
    fft_bin_width = torch.tensor(sample_rate / padded_length, dtype=f32)
    fft_mel = _mel(fft_bin_width * torch.arange(num_fft_bins, dtype=f32))[None, :]  # (1, K)
    rising = (fft_mel - left) / (center - left)
    falling = (right - fft_mel) / (right - center)
    weights = torch.where(fft_mel <= center, rising, falling)
    weights = torch.where((fft_mel > left) & (fft_mel < right), weights, torch.zeros_like(weights))  # (B, K)
    nyquist_column = torch.zeros(num_bins, 1, dtype=f32)
    return torch.cat([weights, nyquist_column], dim=1).to(dtype=dtype, device=device)
