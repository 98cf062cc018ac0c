"""Generate a synthetic audio-visual world: clips, stills, depth maps, ground truth, captions, questions.

Layout of ``OUT`` (every path in the records is relative to ``OUT``, the media root)::

    OUT/media/000/synth-train-s0-000000.mp4        H.264 + AAC mono 16 kHz, 3-5 s, 25 fps
    OUT/media/000/synth-train-s0-000000.png        the still: one frame of the clip, lossless
    OUT/media/000/synth-train-s0-000000.depth.png  its depth map, 16-bit millimetres
    OUT/world.jsonl      one line per clip: media paths, the full scene (ground truth), captions
    OUT/captions.jsonl   caption-pair records: video + audio with vision / audio / omni captions
                         (and a subtitle when someone speaks)
    OUT/view_captions.jsonl   one caption-pair record per view of a clip, captioned with what that
                         view alone shows: the video (vision caption), its audio track (audio
                         caption), the still (no motion, no sound) and the depth map (no colour
                         either): for aligning each modality's connector without cross-modal hints
    OUT/records.jsonl    instruction records: per clip one question per family (temporal: only
                         clips with timing to ask about), a multi-turn conversation and a
                         detailed description; ``meta`` carries the clip id, family, form,
                         answer and facts (see :func:`.judge.judge`)
    OUT/summary.json     what was generated (split, seed, counts, speech status)

Clip ``i`` of ``(seed, split)`` depends only on those three numbers, so worker count and chunking
never change the output, and the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..records import parse_record
from . import factors as F
from . import language as L
from .render import depth_map, rgb_frame, waveform, write_clip, write_png
from .scene import Scene, SceneConfig, sample_scene
from .speech import EspeakVoice, SpeechStatus, probe_espeak

GENERATOR_VERSION = 2  # 2: the temporal family and staggered motion starts
# The files of a generated world (in its folder, beside media/ and summary.json).
WORLD_FILE = "world.jsonl"  # one entry per clip: scene ground truth, media paths, captions
CAPTIONS_FILE = "captions.jsonl"  # caption-pair records (pretraining, stage 1)
RECORDS_FILE = "records.jsonl"  # instruction records (stage 2, eval synth)
MIN_CLIPS_PER_WORKER = 32
VIEW_WEIGHTS = {
    "appearance": {"video": 0.7, "image": 0.2, "depth": 0.1},
    "counting": {"video": 0.5, "image": 0.3, "depth": 0.2},
    "motion": {"video": 1.0},
    "sound": {"video": 0.6, "audio": 0.4},
    "audio-visual": {"video": 1.0},
    "temporal": {"video": 1.0},
}
DESCRIBE = (
    "Describe what you see and hear in this clip.",
    "Give a detailed description of this clip, both the picture and the sound.",
    "What happens in this clip? Describe the shapes, their motion and the sound.",
)


@dataclass(frozen=True)
class WorldConfig:
    """What to generate besides the scenes themselves.

    Args:
        scene: frame size, fps, durations (see :class:`SceneConfig`; its ``speech`` is set from ``speech``).
        speech: ``"auto"`` (speak when espeak-ng is installed), ``"on"`` (required) or ``"off"``.
        qa_per_family: single-turn questions per family per clip.
        multi_turn: add one multi-turn conversation per clip (3 turns, 3 families).
        description: add one detailed-description record per clip.
    """

    scene: SceneConfig = SceneConfig()
    speech: str = "auto"
    qa_per_family: int = 1
    multi_turn: bool = True
    description: bool = True

    def __post_init__(self) -> None:
        if self.speech not in ("auto", "on", "off"):
            raise ValueError(f"speech must be auto, on or off, got {self.speech!r}")
        if self.qa_per_family < 0:
            raise ValueError(f"qa_per_family must be >= 0, got {self.qa_per_family}")


@dataclass(frozen=True)
class WorldSummary:
    """What :func:`generate_world` wrote. ``seconds`` and ``clips_per_second`` are not saved to summary.json."""

    out_dir: Path
    split: str
    seed: int
    n: int
    num_records: int
    num_captions: int
    speech: SpeechStatus
    families: dict[str, int]
    size: int
    fps: int
    workers: int
    qa_per_family: int = 1
    seconds: float = field(default=0.0, compare=False)

    @property
    def clips_per_second(self) -> float:
        return self.n / self.seconds if self.seconds else float("nan")

    def to_json(self) -> dict[str, Any]:
        """The deterministic part (no timings, no absolute paths), as saved in summary.json."""
        return {
            "generator_version": GENERATOR_VERSION,
            "split": self.split,
            "seed": self.seed,
            "n": self.n,
            "records": self.num_records,
            "captions": self.num_captions,
            "families": self.families,
            "size": self.size,
            "fps": self.fps,
            "qa_per_family": self.qa_per_family,
            "speech": self.speech.to_json(),
            "files": {"world": WORLD_FILE, "captions": CAPTIONS_FILE, "records": RECORDS_FILE},
        }


@dataclass(frozen=True)
class _Job:
    out_dir: str
    split: str
    seed: int
    index: int
    config: WorldConfig
    speech: SpeechStatus


def media_paths(clip_id: str, index: int) -> dict[str, str]:
    """Paths of a clip's files relative to the world folder (1,000 clips per sub-folder)."""
    folder = f"media/{index // 1000:03d}"
    return {
        "video": f"{folder}/{clip_id}.mp4",
        "image": f"{folder}/{clip_id}.png",
        "depth": f"{folder}/{clip_id}.depth.png",
    }


def _view_media(view: str, paths: dict[str, str]) -> tuple[list[dict[str, str]], str]:
    """Media refs and the placeholder prefix of a record asking about ``view``."""
    if view == "video":  # the clip and its own audio track, as the processor reads a video with sound
        return [
            {"modality": "video", "path": paths["video"]},
            {"modality": "audio", "path": paths["video"]},
        ], "<video>\n<audio>\n"
    if view == "audio":
        return [{"modality": "audio", "path": paths["video"]}], "<audio>\n"
    return [{"modality": view, "path": paths[view]}], f"<{view}>\n"


def _choose(rng: np.random.Generator, weights: dict[str, float]) -> str:
    keys = list(weights)
    p = np.array([weights[k] for k in keys])
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _asks(scene: Scene, family: str, view: str, sounds: tuple[str, ...]) -> list[L.Ask]:
    if family == "appearance":
        return L.appearance_asks(scene, view)
    if family == "counting":
        return L.counting_asks(scene, view)
    if family == "motion":
        return L.motion_asks(scene)
    if family == "sound":
        return L.sound_asks(scene, sounds)
    if family == "audio-visual":
        return L.audio_visual_asks(scene)
    if family == "temporal":
        return L.temporal_asks(scene, sounds)
    raise ValueError(f"unknown family {family!r}")


def clip_records(scene: Scene, paths: dict[str, str], config: WorldConfig, omni: str) -> list[dict[str, Any]]:
    """The instruction records of one clip (JSON dicts in the record format).

    Families in :data:`L.EVERY_CLIP_FAMILIES` draw from one random stream, the temporal family from
    its own (and asks only clips that have timing to ask about), so adding it left the other records
    as they were.
    """
    rng = np.random.default_rng([scene.seed, F.SPLITS[scene.split], scene.index, 1])
    temporal_rng = np.random.default_rng([scene.seed, F.SPLITS[scene.split], scene.index, 3])
    sounds = tuple(s for s in F.SOUNDS if config.scene.speech or s != "speech")
    base = {"clip": scene.id, "split": scene.split}
    out = []
    for family in L.FAMILIES:
        family_rng = rng if family in L.EVERY_CLIP_FAMILIES else temporal_rng
        for k in range(config.qa_per_family):
            view = _choose(family_rng, VIEW_WEIGHTS[family])
            asks = _asks(scene, family, view, sounds)
            if not asks:
                break
            ask = _question(family_rng, asks)
            media, prefix = _view_media(view, paths)
            out.append({
                "id": f"{scene.id}-{family}-{k}",
                "media": media,
                "messages": [{"role": "user", "content": prefix + ask["question"]}, {"role": "assistant", "content": ask["answer"]}],
                "meta": {**base, **ask["meta"], "view": view},
            })  # fmt: skip
    if config.multi_turn:
        families = [L.EVERY_CLIP_FAMILIES[i] for i in rng.permutation(len(L.EVERY_CLIP_FAMILIES))[:3]]
        media, prefix = _view_media("video", paths)
        messages, turns = [], []
        for i, family in enumerate(families):
            ask = _question(rng, _asks(scene, family, "video", sounds))
            messages += [{"role": "user", "content": (prefix if i == 0 else "") + ask["question"]},
                         {"role": "assistant", "content": ask["answer"]}]  # fmt: skip
            turns.append(ask["meta"])
        out.append({"id": f"{scene.id}-multi", "media": media, "messages": messages,
                    "meta": {**base, "family": "multi-turn", "view": "video", "turns": turns}})  # fmt: skip
    if config.description:
        media, prefix = _view_media("video", paths)
        facts = {"shape": scene.shape, "colour": scene.colour, "direction": scene.motion, "sound": scene.sound.sound}
        out.append({
            "id": f"{scene.id}-describe",
            "media": media,
            "messages": [{"role": "user", "content": prefix + DESCRIBE[int(rng.integers(len(DESCRIBE)))]}, {"role": "assistant", "content": omni}],
            "meta": {**base, "family": "description", "topic": "description", "form": "open", "answer": omni,
                     "facts": facts, "view": "video"},
        })  # fmt: skip
    return out


def _question(rng: np.random.Generator, asks: list[L.Ask]) -> dict[str, Any]:
    """One of ``asks`` in one of its forms: ``{"question", "answer", "meta"}``."""
    ask = asks[int(rng.integers(len(asks)))]
    return L.render_question(ask, L.choose_form(ask, rng), rng)


def draw_scene(
    index: int,
    *,
    seed: int,
    split: str,
    config: WorldConfig = WorldConfig(),
    speech: SpeechStatus = SpeechStatus(False),
    voice: EspeakVoice | None = None,
) -> Scene:
    """Scene ``index`` of ``(seed, split)``: exactly the one :func:`generate_world` renders (nothing is written)."""
    if speech.enabled and voice is None:
        voice = EspeakVoice()
    rng = np.random.default_rng([seed, F.SPLITS[split], index])
    scene_config = replace(config.scene, speech=speech.enabled)
    return sample_scene(rng, split=split, seed=seed, index=index, config=scene_config,
                        speech_seconds=voice.seconds if speech.enabled else None)  # fmt: skip


def make_clip(
    out_dir: str | os.PathLike,
    index: int,
    *,
    seed: int,
    split: str,
    config: WorldConfig = WorldConfig(),
    speech: SpeechStatus = SpeechStatus(False),
    voice: EspeakVoice | None = None,
) -> dict[str, Any]:
    """Draw, render and write clip ``index`` of ``(seed, split)`` into ``out_dir``.

    Returns ``{"world": entry, "caption": caption record, "records": [instruction records]}`` (JSON dicts).
    """
    if speech.enabled and voice is None:
        voice = EspeakVoice()
    config = replace(config, scene=replace(config.scene, speech=speech.enabled))
    scene = draw_scene(index, seed=seed, split=split, config=config, speech=speech, voice=voice)
    job = _Job(str(out_dir), split, seed, index, config, speech)
    paths = media_paths(scene.id, scene.index)
    root = Path(job.out_dir)
    (root / paths["video"]).parent.mkdir(parents=True, exist_ok=True)
    speech = voice.samples(scene.sound.phrase) if scene.sound.sound == "speech" else None
    write_clip(root / paths["video"], scene, waveform(scene, speech))
    write_png(root / paths["image"], rgb_frame(scene, scene.still_time_s))
    write_png(root / paths["depth"], depth_map(scene, scene.still_time_s))
    text_rng = np.random.default_rng([job.seed, F.SPLITS[job.split], job.index, 2])
    captions = {"vision": L.vision_caption(scene, text_rng), "audio": L.audio_caption(scene, text_rng)}
    captions["omni"] = L.omni_caption(scene, text_rng)
    if L.subtitle(scene):
        captions["subtitle"] = L.subtitle(scene)
    world = {"id": scene.id, "split": scene.split, "seed": scene.seed, "index": scene.index, "media": paths,
             "scene": scene.to_json(), "captions": captions, "speech": job.speech.to_json()}  # fmt: skip
    caption_record = {
        "id": scene.id,
        "media": [{"modality": "video", "path": paths["video"]}, {"modality": "audio", "path": paths["video"]}],
        "captions": captions,
        "meta": {"clip": scene.id, "split": scene.split, "image": paths["image"], "depth": paths["depth"],
                 "speech": job.speech.enabled},
    }  # fmt: skip
    records = clip_records(scene, paths, config, captions["omni"])
    for raw in [caption_record, *records]:
        parse_record(raw)  # a generator bug must never write an invalid record
    return {"world": world, "caption": caption_record, "records": records}


def _run_job(job: _Job) -> dict[str, Any]:
    return make_clip(job.out_dir, job.index, seed=job.seed, split=job.split, config=job.config, speech=job.speech)


def resolve_speech(mode: str) -> SpeechStatus:
    """Speech status for ``mode`` (auto/on/off); ``on`` without espeak-ng raises ``ValueError``."""
    if mode == "off":
        return SpeechStatus(False, None, "turned off")
    status = probe_espeak()
    if mode == "on" and not status.enabled:
        raise ValueError(f"speech was required but {status.reason}; install espeak-ng or use speech='auto'")
    return status


def _results(jobs: list[_Job], workers: int) -> Iterator[dict[str, Any]]:
    if workers <= 1:
        voice = EspeakVoice() if jobs and jobs[0].speech.enabled else None
        for job in jobs:
            yield make_clip(
                job.out_dir,
                job.index,
                seed=job.seed,
                split=job.split,
                config=job.config,
                speech=job.speech,
                voice=voice,
            )
        return
    # spawn, not fork: the caller may hold torch/OpenMP threads that a forked child would inherit
    # in an undefined state; workers import only numpy, PyAV and PIL.
    context = multiprocessing.get_context("spawn")
    chunk = max(1, min(16, len(jobs) // (workers * 8)))
    with context.Pool(workers) as pool:
        yield from pool.imap(_run_job, jobs, chunksize=chunk)


def generate_world(
    out_dir: str | os.PathLike,
    n: int,
    *,
    seed: int = 0,
    split: str = "train",
    workers: int = 2,
    config: WorldConfig = WorldConfig(),
    progress: bool = True,
) -> WorldSummary:
    """Generate ``n`` clips of ``split`` into ``out_dir`` (see the module docstring for the layout).

    Args:
        seed: any integer; clip ``i`` depends only on ``(seed, split, i)``.
        split: ``train`` or ``heldout`` (held-out clips show only combinations training never shows).
        workers: worker processes (small worlds run in this process: starting workers costs more).
        progress: show a progress bar.

    Returns:
        A :class:`WorldSummary`; ``summary.seconds`` is the wall time.

    The three JSONL files and summary.json are replaced atomically; media files of an earlier,
    larger world in the same folder are left in place (no record refers to them).
    """
    if split not in F.SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(F.SPLITS)}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    speech = resolve_speech(config.speech)
    jobs = [_Job(str(out), split, seed, i, config, speech) for i in range(n)]
    # A worker process costs about a second to start (imports), so each must have enough clips to pay for it.
    workers = max(1, min(workers, math.ceil(n / MIN_CLIPS_PER_WORKER)))
    families: dict[str, int] = {}
    counts = {"records": 0, "captions": 0}
    names = (WORLD_FILE, CAPTIONS_FILE, RECORDS_FILE)
    handles = {name: (out / (name + ".tmp")).open("w", encoding="utf-8") for name in names}
    try:
        with tqdm(total=n, desc=f"synth {split}", unit="clip", disable=not progress) as bar:
            for result in _results(jobs, workers):
                handles[WORLD_FILE].write(json.dumps(result["world"], ensure_ascii=False) + "\n")
                handles[CAPTIONS_FILE].write(json.dumps(result["caption"], ensure_ascii=False) + "\n")
                for record in result["records"]:
                    handles[RECORDS_FILE].write(json.dumps(record, ensure_ascii=False) + "\n")
                    families[record["meta"]["family"]] = families.get(record["meta"]["family"], 0) + 1
                counts["records"] += len(result["records"])
                counts["captions"] += 1
                bar.update(1)
    finally:
        for handle in handles.values():
            handle.close()
    for name in names:
        (out / (name + ".tmp")).replace(out / name)
    summary = WorldSummary(
        out_dir=out, split=split, seed=seed, n=n, num_records=counts["records"], num_captions=counts["captions"],
        speech=speech, families=dict(sorted(families.items())), size=config.scene.size, fps=config.scene.fps,
        workers=workers, qa_per_family=config.qa_per_family, seconds=time.perf_counter() - started,
    )  # fmt: skip
    write_view_captions(out)
    (out / "summary.json").write_text(json.dumps(summary.to_json(), indent=2) + "\n", encoding="utf-8")
    return summary


VIEW_CAPTIONS = "view_captions.jsonl"


def view_caption_records(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The four single-view caption-pair records of one world entry (its ``scene`` a :class:`Scene`)."""
    scene, paths, captions = entry["scene"], entry["media"], entry["captions"]
    meta = {"clip": scene.id, "split": scene.split}
    views = (
        ("video", paths["video"], {"vision": captions["vision"]}),
        ("audio", paths["video"], {"audio": captions["audio"]}),
        ("image", paths["image"], {"vision": L.still_caption(scene)}),
        ("depth", paths["depth"], {"vision": L.depth_caption(scene)}),
    )
    return [
        {"id": f"{scene.id}-{view}", "media": [{"modality": view, "path": path}], "captions": caption,
         "meta": {**meta, "view": view}}
        for view, path, caption in views
    ]  # fmt: skip


def write_view_captions(out_dir: str | os.PathLike) -> Path:
    """Write ``view_captions.jsonl`` from a world's ``world.jsonl`` (also for worlds generated before it existed)."""
    out = Path(out_dir)
    tmp = out / (VIEW_CAPTIONS + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for entry in read_world(out):
            for raw in view_caption_records(entry):
                parse_record(raw)
                handle.write(json.dumps(raw, ensure_ascii=False) + "\n")
    tmp.replace(out / VIEW_CAPTIONS)
    return out / VIEW_CAPTIONS


def read_world(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The world entries of a generated world (``scene`` parsed back into a :class:`Scene`)."""
    entries = []
    with (Path(out_dir) / WORLD_FILE).open(encoding="utf-8") as handle:
        for line in handle:
            entry = json.loads(line)
            entry["scene"] = Scene.from_json(entry["scene"])
            entries.append(entry)
    return entries
