"""Per-modality preprocessing: a media source -> the tensor the encoder reads.

One entry per modality in :data:`PREPROCESSORS`; each takes a source (a path, in-memory file
bytes, or already-decoded arrays), the :class:`MediaSettings` and the encoder config, and returns
the item's segments (:func:`preprocess` returns them contiguous):

=========  ==========================  ======================================================
modality   output                      from
=========  ==========================  ======================================================
image      ``(1, 3, S, S)`` float32    RGB, short side resized to S, centre crop, CLIP norm
video      ``(T, 3, S, S)`` float32    T frames sampled uniformly by timestamp, same as image
audio      ``(K, F, M)`` float32       K windows -> Kaldi log-mel (F frames, M bins), normed
depth      ``(1, 1, S, S)`` float32    depth / max, mapped to [-1, 1], resized
normal     ``(1, 3, S, S)`` float32    unit normals in [-1, 1], resized
=========  ==========================  ======================================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mico_chat import media as media_io
from mico_chat.encoders import MiCoEncoderConfig
from mico_chat.modality import Modality

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Log-mel statistics BEATs uses to normalise Kaldi fbank features: (x - mean) / (2 * std).
FBANK_MEAN = 15.41663
FBANK_STD = 6.55582
AUDIO_SAMPLE_RATE = 16_000
FBANK_SHIFT_SAMPLES = 160  # 10 ms at 16 kHz
FBANK_WINDOW_SAMPLES = 400  # 25 ms at 16 kHz


@dataclass
class MediaSettings:
    """How media are sampled and normalised (saved in ``processor_config.json``).

    Args:
        num_frames: frames sampled uniformly over a video (VAST/MiCo use 8 for training).
        video_audio: also read a video's audio track, as an ``<audio>`` item after its ``<video>``.
        audio_clips: windows sampled uniformly over an audio (VAST: 3 for Clotho, 1 for AudioCaps).
        image_mean, image_std: RGB normalisation (CLIP's).
        fbank_mean, fbank_std: log-mel normalisation (BEATs').
        max_bytes, max_pixels, max_duration_s: limits passed to the media loaders.
    """

    num_frames: int = 8
    video_audio: bool = True
    audio_clips: int = 1
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD
    fbank_mean: float = FBANK_MEAN
    fbank_std: float = FBANK_STD
    max_bytes: int = media_io.MediaLimits.max_bytes
    max_pixels: int = media_io.MediaLimits.max_pixels
    max_duration_s: float = media_io.MediaLimits.max_duration_s
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.audio_clips < 1:
            raise ValueError(f"num_frames and audio_clips must be >= 1, got {self.num_frames}, {self.audio_clips}")
        self.image_mean = tuple(float(x) for x in self.image_mean)
        self.image_std = tuple(float(x) for x in self.image_std)

    @property
    def limits(self) -> media_io.MediaLimits:
        return media_io.MediaLimits(max_bytes=self.max_bytes, max_pixels=self.max_pixels, max_duration_s=self.max_duration_s)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MediaSettings:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown media settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)


Source = Any  # str | os.PathLike | bytes | np.ndarray | torch.Tensor


def _is_array(source: Source) -> bool:
    return isinstance(source, (np.ndarray, torch.Tensor))


# Frames resized per call of _rgb_frames_to_tensor: the float copies at the source resolution are
# the largest temporaries (a 1080p frame is 25 MB as float32), so a 512-frame video is converted
# in pieces and its peak memory is the uint8 frames, the small output and one piece.
RESIZE_CHUNK_FRAMES = 16


def _rgb_to_tensor(frames: np.ndarray | torch.Tensor, size: int, settings: MediaSettings) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 -> ``(T, 3, size, size)`` float32: short side to ``size``, centre crop,
    normalise; :data:`RESIZE_CHUNK_FRAMES` frames at a time (each frame is resized on its own, so
    the result does not depend on the chunking)."""
    if isinstance(frames, np.ndarray):
        # Decoded frames can be read-only views (e.g. a decoder's buffer); torch must not alias them.
        frames = np.ascontiguousarray(frames) if frames.flags.writeable else np.array(frames, order="C")
    x = torch.as_tensor(frames)
    if x.dim() != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected (T, H, W, 3) RGB frames, got {tuple(x.shape)}")
    pieces = [_rgb_frames_to_tensor(piece, size, settings) for piece in x.split(RESIZE_CHUNK_FRAMES)]
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def _rgb_frames_to_tensor(x: torch.Tensor, size: int, settings: MediaSettings) -> torch.Tensor:
    """One piece of :func:`_rgb_to_tensor`: ``(t, H, W, 3)`` -> ``(t, 3, size, size)``."""
    integer_pixels = not x.is_floating_point()  # uint8 frames; float frames are taken as [0, 1]
    x = x.permute(0, 3, 1, 2).float()  # (T, 3, H, W)
    if integer_pixels:
        x = x / 255.0
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    x = x[:, :, top : top + size, left : left + size]
    mean = torch.tensor(settings.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(settings.image_std).view(1, 3, 1, 1)
    return (x - mean) / std


def _resize_map(x: torch.Tensor, size: int) -> torch.Tensor:
    """``(C, H, W)`` -> ``(C, size, size)`` (bilinear; maps are resized whole, not cropped)."""
    return F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def grayscale(values: torch.Tensor) -> torch.Tensor:
    """Frames or images ``(..., 3, H, W)`` with each pixel's channel mean in every channel (the
    colour-free view of pretraining's grey datasets and of a model's ``grey_views``)."""
    return values.mean(dim=-3, keepdim=True).expand_as(values).contiguous()


def preprocess_image(source: Source, settings: MediaSettings, encoder: MiCoEncoderConfig) -> torch.Tensor:
    pixels = np.asarray(source) if _is_array(source) else media_io.load_image(source, limits=settings.limits)
    return _rgb_to_tensor(pixels[None], encoder.image_size, settings)  # (1, 3, S, S)


def preprocess_video(source: Source, settings: MediaSettings, encoder: MiCoEncoderConfig, **options) -> torch.Tensor:
    if _is_array(source):
        frames = np.asarray(source)
        index = np.linspace(0, len(frames) - 1, settings.num_frames).round().astype(int)
        frames = frames[index]
    else:
        clip = media_io.load_video(
            source,
            settings.num_frames,
            start_s=float(options.get("start", 0.0) or 0.0),
            end_s=options.get("end"),
            limits=settings.limits,
        )
        frames = clip.frames
    return _rgb_to_tensor(frames, encoder.image_size, settings)  # (T, 3, S, S)


def audio_clip_samples(encoder: MiCoEncoderConfig) -> int:
    """Samples in one audio window: exactly ``audio_target_length`` fbank frames (snip_edges)."""
    return (encoder.audio_target_length - 1) * FBANK_SHIFT_SAMPLES + FBANK_WINDOW_SAMPLES


def audio_window_starts(num_samples: int, num_clips: int, encoder: MiCoEncoderConfig) -> np.ndarray:
    """First sample of each of the ``num_clips`` windows :func:`waveform_to_fbank` cuts from a
    waveform of ``num_samples``: placed uniformly, overlapping when the audio is short. ``(K,)`` int.

    The time-aligned connectors (``connectors/combiner.py``) use it to time each audio patch."""
    return np.linspace(0, max(0, num_samples - audio_clip_samples(encoder)), num_clips).round().astype(int)


def waveform_to_fbank(samples: np.ndarray, settings: MediaSettings, encoder: MiCoEncoderConfig) -> torch.Tensor:
    """16 kHz mono samples ``(N,)`` -> ``(K, F, M)`` normalised log-mel clips.

    ``K = settings.audio_clips`` windows of :func:`audio_clip_samples` are placed uniformly over the
    waveform (overlapping when it is short); a window past the end is zero-padded in the feature
    domain, i.e. padded frames hold the normalised mean.
    """
    wave = torch.as_tensor(np.asarray(samples, dtype=np.float32)).flatten()
    clip = audio_clip_samples(encoder)
    starts = audio_window_starts(wave.numel(), settings.audio_clips, encoder)
    clips = []
    for start in starts:
        window = wave[start : start + clip]
        if window.numel() < FBANK_WINDOW_SAMPLES:  # too short for one frame: pad to one window
            window = F.pad(window, (0, FBANK_WINDOW_SAMPLES - window.numel()))
        fbank = media_io.kaldi_fbank(
            window * 32768.0, sample_rate=AUDIO_SAMPLE_RATE, num_mel_bins=encoder.audio_num_mel_bins
        )  # (frames, M), Kaldi expects int16-scaled samples
        fbank = (fbank - settings.fbank_mean) / (2 * settings.fbank_std)
        fbank = F.pad(fbank, (0, 0, 0, encoder.audio_target_length - fbank.shape[0]))  # (F, M)
        clips.append(fbank)
    return torch.stack(clips)  # (K, F, M)


def preprocess_audio(source: Source, settings: MediaSettings, encoder: MiCoEncoderConfig, **options) -> torch.Tensor:
    if _is_array(source):
        samples = np.asarray(source, dtype=np.float32)
    else:
        start = float(options.get("start", 0.0) or 0.0)
        end = options.get("end")
        duration = None if end is None else float(end) - start
        samples = media_io.load_audio(
            source, sample_rate=AUDIO_SAMPLE_RATE, start_s=start, duration_s=duration, limits=settings.limits
        ).samples
    return waveform_to_fbank(samples, settings, encoder)


def preprocess_depth(source: Source, settings: MediaSettings, encoder: MiCoEncoderConfig) -> torch.Tensor:
    depth = np.asarray(source, dtype=np.float32) if _is_array(source) else media_io.load_depth(source, limits=settings.limits)
    x = torch.as_tensor(depth, dtype=torch.float32).squeeze()
    if x.dim() != 2:
        raise ValueError(f"depth map must be (H, W), got {tuple(depth.shape)}")
    peak = x.max()
    x = x / peak if peak > 0 else x  # relative depth in [0, 1]: sensors and estimators use different units
    return (_resize_map(x[None], encoder.image_size) * 2 - 1)[None]  # (1, 1, S, S)


def preprocess_normal(source: Source, settings: MediaSettings, encoder: MiCoEncoderConfig) -> torch.Tensor:
    normal = np.asarray(source, dtype=np.float32) if _is_array(source) else media_io.load_normal(source, limits=settings.limits)
    x = torch.as_tensor(normal, dtype=torch.float32)
    if x.dim() != 3 or x.shape[-1] != 3:
        raise ValueError(f"normal map must be (H, W, 3), got {tuple(normal.shape)}")
    return _resize_map(x.permute(2, 0, 1), encoder.image_size)[None]  # (1, 3, S, S)


def num_segments(modality: Modality, settings: MediaSettings) -> int:
    """How many segments the preprocessor of ``modality`` returns for any item under ``settings``
    (video: ``num_frames``; audio: ``audio_clips``; others 1), known before anything is decoded."""
    if modality is Modality.VIDEO:
        return settings.num_frames
    if modality is Modality.AUDIO:
        return settings.audio_clips
    return 1


Preprocessor = Callable[..., torch.Tensor]
PREPROCESSORS: Mapping[Modality, Preprocessor] = MappingProxyType(
    {
        Modality.IMAGE: preprocess_image,
        Modality.VIDEO: preprocess_video,
        Modality.AUDIO: preprocess_audio,
        Modality.DEPTH: preprocess_depth,
        Modality.NORMAL: preprocess_normal,
    }
)

# Modalities whose items may carry time-window options (``start``/``end`` seconds).
TIMED = frozenset({Modality.VIDEO, Modality.AUDIO})


@dataclass(frozen=True)
class VideoTrack:
    """A video item's frames with its own audio track, for a connector that fuses the two by time
    (``connectors/combiner.py``). Both windows start at the item's ``start``.

    Attributes:
        frames: ``(T, 3, S, S)``, as :func:`preprocess_video` gives them.
        audio: ``(K, F, M)``, as :func:`preprocess_audio` gives the track.
        video_s: seconds of video in the window (the loader samples the frames at the centres of
            its ``T`` equal segments).
        audio_s: seconds of audio in the window (the audio windows are placed over them).
    """

    frames: torch.Tensor
    audio: torch.Tensor
    video_s: float
    audio_s: float


def preprocess_video_track(
    source: Source, settings: MediaSettings, encoder: MiCoEncoderConfig, **options
) -> VideoTrack:
    """A video file's frames and audio track over the same window (``start``/``end`` seconds), with
    the length of each: what a time-aligned connector needs to place every frame and audio patch."""
    if _is_array(source):
        raise ValueError("decoded frames carry no audio track and no duration; give the video file")
    start = float(options.get("start", 0.0) or 0.0)
    end = options.get("end")
    clip = media_io.load_video(source, settings.num_frames, start_s=start, end_s=end, limits=settings.limits)
    video_end = clip.duration_s if end is None else min(float(end), clip.duration_s)  # the loader cuts end_s so
    wave = media_io.load_audio(
        source, sample_rate=AUDIO_SAMPLE_RATE, start_s=start, duration_s=None if end is None else float(end) - start,
        limits=settings.limits,
    ).samples  # fmt: skip
    frames = _rgb_to_tensor(clip.frames, encoder.image_size, settings).contiguous()  # (T, 3, S, S)
    audio = waveform_to_fbank(wave, settings, encoder).contiguous()  # (K, F, M)
    return VideoTrack(frames, audio, video_s=video_end - start, audio_s=len(wave) / AUDIO_SAMPLE_RATE)


def preprocess(modality: Modality, source: Source, settings: MediaSettings, encoder: MiCoEncoderConfig, **options) -> torch.Tensor:
    """Run the registered preprocessor of ``modality`` (see module docstring for shapes)."""
    fn = PREPROCESSORS[modality]
    if modality not in TIMED and options:
        raise ValueError(f"{modality} items take no options, got {sorted(options)}")
    out = fn(source, settings, encoder, **options)
    # Always contiguous: RGB frames arrive as (H, W, 3), and the permuted (channels-last) view
    # would send the patch convolution down another kernel, so the same pixels would train to
    # different weights depending on whether they came from a decoder or from a cached table.
    return out.contiguous()
