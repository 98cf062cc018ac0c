"""Mini suites: small local copies of every benchmark in its exact official layout.

Each benchmark owns its part: ``mini_items(media)`` (questions about generated media) and
``build_mini(items, out)`` (its official layout). This module runs them for every registered
benchmark. Any other source of :class:`~mico_chat.eval.minimedia.MiniItem` s can be passed
instead, e.g. items about the synthetic audio-visual world (``mico_chat.instruct_data.synth``).

    paths = build_all(Path("data/mini"))       # {"mme": Path("data/mini/mme"), ...}
    mico-chat eval mini data/mini              # the same from the command line
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from .benchmark import Benchmark
from .minimedia import MiniItem, MiniMedia
from .registry import benchmark_names, get_task


def _benchmark(name: str) -> type[Benchmark]:
    task = get_task(name)
    if not issubclass(task, Benchmark):
        raise ValueError(f"{name} is not a generative benchmark and has no mini suite; those: {', '.join(benchmark_names())}")
    return task


def generated_items(media_dir: Path, names: Sequence[str] | None = None) -> dict[str, list[MiniItem]]:
    """Each benchmark's items about images, clips and tones made under ``media_dir`` (seconds)."""
    media = MiniMedia(media_dir)
    return {name: _benchmark(name).mini_items(media) for name in names or benchmark_names()}


def build_all(
    out: Path, *, only: Sequence[str] | None = None, items: Mapping[str, Sequence[MiniItem]] | None = None
) -> dict[str, Path]:
    """Build mini suites under ``out/<benchmark>/``; returns the ``--data`` path of each.

    ``items`` defaults to :func:`generated_items` (media written to ``out/_media``).
    """
    names = list(only or benchmark_names())
    tasks = {name: _benchmark(name) for name in names}
    items = items or generated_items(out / "_media", names)
    paths = {}
    for name, task in tasks.items():
        target = task.build_mini(items.get(name, ()), out / name)
        paths[name] = out / name if target.is_file() else target
    return paths
