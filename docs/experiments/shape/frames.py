"""Frames and factor labels of a synthetic world, decoded once and cached (shared by the scripts here).

    frames(world_dir, n, num_frames=4, image_size=64) -> (video (N, T, 3, H, W) float32, labels: list[dict])

Frames go through the project's own preprocessing (mico_chat.preprocess, CLIP normalisation), as
the encoder sees them; labels are eval.probes.factor_labels of each clip's scene.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mico_chat.encoders import MiCoEncoderConfig
from mico_chat.eval.probes import factor_labels, read_world
from mico_chat.modality import Modality
from mico_chat.preprocess import MediaSettings, preprocess

CACHE = Path(__file__).resolve().parents[3] / "runs" / "cache" / "shape-experiments"


def frames(world_dir: str | Path, n: int, num_frames: int = 4, image_size: int = 64):
    world = Path(world_dir)
    cache = CACHE / f"{world.resolve().as_posix().replace('/', '_')}-{n}-{num_frames}-{image_size}.pt"
    if cache.exists():
        return torch.load(cache, weights_only=True)  # tensors, lists and dicts of strings only
    config = MiCoEncoderConfig(image_size=image_size, patch_size=8, modalities=["video"])
    settings = MediaSettings(num_frames=num_frames)
    entries = read_world(world)[:n]
    video = torch.stack([preprocess(Modality.VIDEO, world / e["media"]["video"], settings, config) for e in entries])
    labels = [factor_labels(e["scene"]) for e in entries]
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save((video.float(), labels), cache)
    return video.float(), labels


def gray(v: torch.Tensor) -> torch.Tensor:
    """Colour removed: the channel mean in every channel (of the normalised pixels)."""
    return v.mean(dim=-3, keepdim=True).expand_as(v)
