"""The synthetic audio-visual world: a deterministic generator of short clips with exact ground truth.

    from mico_chat.instruct_data.synth import generate_world, judge
    summary = generate_world("world/", n=50, seed=0, split="train")   # ~1-2 s on 2 cores
    # world/records.jsonl, world/captions.jsonl, world/world.jsonl, world/media/...

Modules: :mod:`.factors` (vocabulary and the train/held-out split rule), :mod:`.scene` (ground
truth and sampling), :mod:`.render` (pixels, samples, files), :mod:`.language` (captions and
questions), :mod:`.judge` (exact answer checking), :mod:`.speech` (optional espeak-ng),
:mod:`.world` (the generator).
"""

from .judge import judge
from .scene import Scene, SceneConfig, SoundSpec, sample_scene
from .speech import SpeechStatus, probe_espeak
from .world import (
    CAPTIONS_FILE,
    RECORDS_FILE,
    WORLD_FILE,
    WorldConfig,
    WorldSummary,
    draw_scene,
    generate_world,
    make_clip,
    media_paths,
    read_world,
)

__all__ = [
    "CAPTIONS_FILE",
    "RECORDS_FILE",
    "WORLD_FILE",
    "Scene",
    "SceneConfig",
    "SoundSpec",
    "SpeechStatus",
    "WorldConfig",
    "WorldSummary",
    "draw_scene",
    "generate_world",
    "judge",
    "make_clip",
    "media_paths",
    "probe_espeak",
    "read_world",
    "sample_scene",
]
