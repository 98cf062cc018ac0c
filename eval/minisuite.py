"""Mini suites: small local copies of every benchmark in its exact official layout.

Builders take generic :class:`MiniItem` s (a media file, a question, its ground truth), so any
source of items can feed them: :func:`generated_items` makes simple images, clips and tones here;
the synthetic audio-visual world (``mico_chat.instruct_data.synth``) can be plugged in instead.

    paths = build_all(Path("data/mini"))       # {"mme": Path("data/mini/mme"), ...}
    mico-chat eval mini data/mini              # the same from the command line
"""

from __future__ import annotations

import base64
import csv
import json
import math
import shutil
import wave
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .benchmarks.mme import SUBTASKS as MME_SUBTASKS

MME_IMAGE_FOLDER_TASKS = ("artwork", "celebrity", "landmark", "posters", "scene")


@dataclass(frozen=True)
class MiniItem:
    """One generic benchmark item.

    Args:
        media: the image, video or audio file the question is about.
        question: the question (for captioning: unused, the benchmark's prompt is asked).
        answer: the ground truth (``Yes``/``No`` for MME; one of ``options`` for MMBench).
        options: multiple-choice options (MMBench).
        category: the subtask or category (MME subtask, MMBench category, ``temporal`` or
            ``generic`` for Video-ChatGPT).
        references: extra ground truths (Clotho: five captions; ClothoAQA: annotators' answers).
        question2: a paraphrase of ``question`` (Video-ChatGPT consistency pairs).
        meta: benchmark-specific extras (MMBench ``l2-category``, ``hint``).
    """

    media: Path
    question: str
    answer: str
    options: tuple[str, ...] = ()
    category: str = ""
    references: tuple[str, ...] = ()
    question2: str = ""
    meta: Mapping[str, str] = field(default_factory=dict)


def _copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        shutil.copyfile(src, dst)
    return dst


def _write_json(path: Path, payload: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------- builders
def build_mme(items: Sequence[MiniItem], out: Path) -> Path:
    """MME_Benchmark_release_version layout; items come in pairs (two questions per image)."""
    by_image: dict[tuple[str, Path], list[MiniItem]] = {}
    for item in items:
        if item.category not in MME_SUBTASKS:
            raise ValueError(f"MME item category must be a subtask ({', '.join(MME_SUBTASKS)}), got {item.category!r}")
        if item.answer not in ("Yes", "No"):
            raise ValueError(f"MME answers are Yes or No, got {item.answer!r}")
        by_image.setdefault((item.category, item.media), []).append(item)
    root = out / "MME_Benchmark_release_version"
    for (task, media), pair in by_image.items():
        if len(pair) != 2:
            raise ValueError(f"MME needs exactly two questions per image; {media} has {len(pair)} in {task}")
        if task in MME_IMAGE_FOLDER_TASKS:
            image, qa = root / task / "images" / media.name, root / task / "questions_answers_YN" / f"{media.stem}.txt"
        else:
            image, qa = root / task / media.name, root / task / f"{media.stem}.txt"
        _copy(media, image)
        qa.parent.mkdir(parents=True, exist_ok=True)
        qa.write_text("".join(f"{i.question}\t{i.answer}\n" for i in pair), encoding="utf-8")
    return root


def build_mmbench(items: Sequence[MiniItem], out: Path, *, circular_copies: bool = True) -> Path:
    """An MMBench TSV (base64 images); with ``circular_copies`` the rotated copies are included,
    sharing their image by index, as in VLMEvalKit's ``MMBench_DEV_EN.tsv``."""
    letters = "ABCD"
    header = [
        "index",
        "question",
        "hint",
        "A",
        "B",
        "C",
        "D",
        "answer",
        "category",
        "image",
        "source",
        "l2-category",
        "comment",
        "split",
    ]
    rows = []
    for g, item in enumerate(items):
        if not 2 <= len(item.options) <= 4 or item.answer not in item.options:
            raise ValueError(f"MMBench items need 2-4 options including the answer: {item.question!r}")
        image = base64.b64encode(item.media.read_bytes()).decode("ascii")
        n = len(item.options)
        for k in range(n if circular_copies else 1):
            rotated = item.options[k:] + item.options[:k]
            row = {
                "index": g + k * 1_000_000,
                "question": item.question,
                "hint": item.meta.get("hint", ""),
                **{letters[i]: (rotated[i] if i < n else "") for i in range(4)},
                "answer": letters[rotated.index(item.answer)],
                "category": item.category or "image_scene",
                "image": image if k == 0 else str(g),
                "source": "mini",
                "l2-category": item.meta.get("l2-category", "coarse_perception"),
                "comment": "",
                "split": "dev",
            }
            rows.append(row)
    path = out / "MMBench_DEV_EN.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def build_videochatgpt(items: Sequence[MiniItem], out: Path) -> Path:
    """``Test_Videos/`` + ``Benchmarking_QA/{generic,temporal,consistency}_qa.json``."""
    files: dict[str, list[dict]] = {"generic_qa.json": [], "temporal_qa.json": [], "consistency_qa.json": []}
    for item in items:
        video = _copy(item.media, out / "Test_Videos" / item.media.name)
        name = video.stem
        if item.question2:
            files["consistency_qa.json"].append({"video_name": name, "Q1": item.question, "Q2": item.question2, "A": item.answer})
        elif item.category == "temporal":
            files["temporal_qa.json"].append({"video_name": name, "Q": item.question, "A": item.answer})
        else:
            files["generic_qa.json"].append({"video_name": name, "Q": item.question, "A": item.answer})
    for filename, entries in files.items():
        if entries:
            _write_json(out / "Benchmarking_QA" / filename, entries)
    return out


def build_video_qa(items: Sequence[MiniItem], out: Path) -> Path:
    """``test_q.json`` + ``test_a.json`` + ``videos/`` (MSVD-QA, MSRVTT-QA, ActivityNet-QA)."""
    questions, answers = [], []
    for n, item in enumerate(items):
        video = _copy(item.media, out / "videos" / item.media.name)
        qid = f"{video.stem}_{n}"
        questions.append({"video_name": video.stem, "question_id": qid, "question": item.question})
        answers.append({"answer": item.answer, "type": item.meta.get("type", 0), "question_id": qid})
    _write_json(out / "test_q.json", questions)
    _write_json(out / "test_a.json", answers)
    return out


def build_clotho_caption(items: Sequence[MiniItem], out: Path) -> Path:
    """``clotho_captions_evaluation.csv`` (five captions per file) + ``evaluation/``."""
    path = out / "clotho_captions_evaluation.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name"] + [f"caption_{i}" for i in range(1, 6)])
        for item in items:
            if len(item.references) != 5:
                raise ValueError(f"Clotho items need five reference captions, {item.media.name} has {len(item.references)}")
            audio = _copy(item.media, out / "evaluation" / item.media.name)
            writer.writerow([audio.name, *item.references])
    return out


def build_clotho_aqa(items: Sequence[MiniItem], out: Path) -> Path:
    """``clotho_aqa_test.csv`` (one row per annotator answer) + ``audio_files/``."""
    path = out / "clotho_aqa_test.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "QuestionText", "answer", "confidence"])
        for item in items:
            audio = _copy(item.media, out / "audio_files" / item.media.name)
            for answer in item.references or (item.answer,) * 3:
                writer.writerow([audio.name, item.question, answer, "yes"])
    return out


def build_synth(items: Sequence[MiniItem], out: Path) -> Path:
    """A held-out synthetic world of one clip (its own generated media; ``items`` are not used)."""
    from .benchmarks.synth import heldout_world

    return heldout_world(out, n=1, seed=0, progress=False)


def build_general_qa(items: Sequence[MiniItem], out: Path, *, n: int = 6) -> Path:
    """The first ``n`` shipped general questions (text only; ``items`` are not used)."""
    from .benchmarks.general_qa import DEFAULT_DATA

    out.mkdir(parents=True, exist_ok=True)
    lines = DEFAULT_DATA.read_text(encoding="utf-8").splitlines()[:n]
    (out / "general_qa.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


BUILDERS: Mapping[str, Callable[[Sequence[MiniItem], Path], Path]] = {
    "mme": build_mme,
    "mmbench": build_mmbench,
    "videochatgpt": build_videochatgpt,
    "msvd_qa": build_video_qa,
    "msrvtt_qa": build_video_qa,
    "activitynet_qa": build_video_qa,
    "clotho_caption": build_clotho_caption,
    "clotho_aqa": build_clotho_aqa,
    "synth": build_synth,
    "general_qa": build_general_qa,
}


# ---------------------------------------------------------------------------- generated media
SHAPES = {"square": "red", "circle": "green", "triangle": "blue"}
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 70, 220),
    "yellow": (230, 210, 40),
    "white": (240, 240, 240),
}


def make_image(path: Path, shape: str, colour: str, background: str = "white", size: int = 64) -> Path:
    """A PNG (or JPEG by suffix) of one filled shape on a plain background."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), COLOURS[background])
    draw = ImageDraw.Draw(img)
    box = (size // 4, size // 4, 3 * size // 4, 3 * size // 4)
    if shape == "square":
        draw.rectangle(box, fill=COLOURS[colour])
    elif shape == "circle":
        draw.ellipse(box, fill=COLOURS[colour])
    else:
        draw.polygon([(size // 2, size // 4), (size // 4, 3 * size // 4), (3 * size // 4, 3 * size // 4)], fill=COLOURS[colour])
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def make_tone(path: Path, frequency: float, seconds: float = 1.0, beeps: int = 1, rate: int = 16000) -> Path:
    """A 16 kHz mono 16-bit WAV: ``beeps`` short tones of ``frequency`` Hz."""
    t = np.arange(int(seconds * rate)) / rate
    slot = seconds / beeps
    gate = ((t % slot) < slot * 0.6).astype(np.float32)
    wave_ = 0.3 * np.sin(2 * math.pi * frequency * t) * gate
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((wave_ * 32767).astype("<i2").tobytes())
    return path


def generated_items(media_dir: Path) -> dict[str, list[MiniItem]]:
    """Items for every benchmark, about images, clips and tones made here (seconds to create)."""
    from mico_chat.media.samples import make_demo_clip

    images = {
        (shape, colour): make_image(media_dir / f"{shape}_{colour}.png", shape, colour)
        for shape in SHAPES
        for colour in ("red", "green", "blue")
    }
    clips = [make_demo_clip(media_dir / f"clip{i}.mp4", seconds=1.0 + 0.5 * i, fps=8, size=(64, 48)) for i in range(3)]
    tones = {f: make_tone(media_dir / f"tone_{f}hz.wav", f, seconds=1.0, beeps=b) for f, b in ((440, 1), (880, 2), (220, 3))}

    mme = []
    for n, task in enumerate(MME_SUBTASKS):
        shape, colour = list(images)[n % len(images)]
        mme.append(
            MiniItem(
                images[shape, colour], f"Is there a {colour} {shape} in the image? Please answer yes or no.", "Yes", category=task
            )
        )
        other = "green" if colour != "green" else "red"
        mme.append(
            MiniItem(
                images[shape, colour], f"Is there a {other} {shape} in the image? Please answer yes or no.", "No", category=task
            )
        )

    mmbench = [
        MiniItem(
            images["square", "red"], "What shape is shown?", "square", ("circle", "square", "triangle", "star"), "image_scene"
        ),
        MiniItem(
            images["circle", "green"],
            "What colour is the shape?",
            "green",
            ("red", "green", "blue"),
            "attribute_recognition",
            meta={"l2-category": "finegrained_perception (instance-level)", "hint": "Look at the middle of the image."},
        ),
        MiniItem(images["triangle", "blue"], "Is the shape a triangle?", "yes", ("yes", "no"), "image_scene"),
    ]

    videos = [
        MiniItem(
            clips[0],
            "What happens in the video?",
            "A red square moves from left to right on a blue background while a tone beeps.",
        ),
        MiniItem(clips[1], "What colour is the background?", "The background is blue."),
        MiniItem(
            clips[2],
            "What does the square do first, and what after?",
            "It starts on the left and then moves to the right.",
            category="temporal",
        ),
        MiniItem(clips[0], "Which object moves?", "A red square.", question2="What is the object that travels across the frame?"),
    ]
    qa = [
        MiniItem(clips[0], "what moves across the screen?", "square"),
        MiniItem(clips[1], "what colour is the background?", "blue"),
        MiniItem(clips[2], "how many squares are there?", "one"),
    ]
    captions = [
        MiniItem(
            tones[440],
            "",
            "",
            references=(
                "A single tone beeps once.",
                "A short beep sounds.",
                "One electronic beep is heard.",
                "A high tone plays briefly.",
                "A beep sounds once.",
            ),
        ),
        MiniItem(
            tones[880],
            "",
            "",
            references=(
                "A tone beeps twice.",
                "Two short beeps sound.",
                "An electronic beep repeats two times.",
                "Two high tones play.",
                "A device beeps twice.",
            ),
        ),
        MiniItem(
            tones[220],
            "",
            "",
            references=(
                "A low tone beeps three times.",
                "Three low beeps sound.",
                "A deep beep repeats three times.",
                "Three short low tones play.",
                "A machine beeps three times.",
            ),
        ),
    ]
    aqa = [
        MiniItem(tones[440], "Is there a beep?", "yes"),
        MiniItem(tones[880], "How many beeps are there?", "two", references=("two", "two", "2")),
        MiniItem(tones[220], "Is someone speaking?", "no"),
    ]
    return {
        "mme": mme,
        "mmbench": mmbench,
        "videochatgpt": videos,
        "msvd_qa": qa,
        "msrvtt_qa": qa,
        "activitynet_qa": qa,
        "clotho_caption": captions,
        "clotho_aqa": aqa,
    }


def build_all(
    out: Path, *, only: Sequence[str] | None = None, items: Mapping[str, Sequence[MiniItem]] | None = None
) -> dict[str, Path]:
    """Build mini suites under ``out/<benchmark>/``; returns the ``--data`` path of each.

    ``items`` defaults to :func:`generated_items` (media written to ``out/_media``).
    """
    names = list(only or BUILDERS)
    unknown = [n for n in names if n not in BUILDERS]
    if unknown:
        raise ValueError(f"no mini-suite builder for {unknown}; known: {', '.join(BUILDERS)}")
    items = items or generated_items(out / "_media")
    paths = {}
    for name in names:
        target = BUILDERS[name](items.get(name, ()), out / name)
        paths[name] = out / name if target.is_file() else target
    return paths
