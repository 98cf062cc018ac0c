"""Media I/O: decode video frames, audio, images, depth and normal maps for the processor.

Every loader takes a path or the bytes of a whole file (``MediaSource``), checks it against
``MediaLimits`` from the header before decoding, and raises ``MediaError`` (and only that) for any
problem with the media itself.

    clip = load_video("talk.mp4", num_frames=8)          # clip.frames: (8, H, W, 3) uint8
    wave = load_audio("talk.mp4", start_s=10, duration_s=5)  # wave.samples: (80000,) float32, 16 kHz
    feats = kaldi_fbank(torch.from_numpy(wave.samples) * 2**15)  # (498, 128) log-mel, as BEATs/AST
"""

from mico_chat.media.audio import Waveform, load_audio
from mico_chat.media.errors import MediaError, MediaLimits, MediaTooLargeError
from mico_chat.media.fbank import kaldi_fbank
from mico_chat.media.image import load_depth, load_image, load_normal
from mico_chat.media.probe import MEDIA_KINDS, MediaInfo, media_kind_of, probe
from mico_chat.media.source import MediaSource
from mico_chat.media.video import VideoClip, load_video, sample_frame_times

__all__ = [
    "MEDIA_KINDS",
    "MediaError",
    "MediaInfo",
    "MediaLimits",
    "MediaTooLargeError",
    "MediaSource",
    "VideoClip",
    "Waveform",
    "kaldi_fbank",
    "load_audio",
    "load_depth",
    "load_image",
    "load_normal",
    "load_video",
    "media_kind_of",
    "probe",
    "sample_frame_times",
]
