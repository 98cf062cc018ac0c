"""Run reports: loss and learning-rate curves as PNG, peak memory, the run summary JSON.

Plots use matplotlib's object API with the Agg canvas (no pyplot, no global backend switch), so
they work on headless machines and inside other programs.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch


def _series(log_history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    steps, values = [], []
    for entry in log_history:
        if key in entry and "step" in entry and isinstance(entry[key], (int, float)):
            steps.append(int(entry["step"]))
            values.append(float(entry[key]))
    return steps, values


def plot_curve(
    log_history: Sequence[Mapping[str, Any]],
    key: str,
    path: str | os.PathLike,
    *,
    title: str,
    ylabel: str,
    log_y: bool = False,
) -> Path | None:
    """Plot ``key`` against the optimizer step from ``Trainer.state.log_history``; ``None`` if never logged."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps, values = _series(log_history, key)
    if not steps:
        return None
    figure = Figure(figsize=(6.4, 3.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, linewidth=1.2)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    if log_y and all(v > 0 for v in values):
        axes.set_yscale("log")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path)
    return path


def plot_run(
    log_history: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike, run_name: str = ""
) -> dict[str, str]:
    """``loss.png`` and ``lr.png`` (and ``grad_norm.png`` when logged) in ``out_dir``; returns what was written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = f"{run_name}: " if run_name else ""
    written = {}
    for key, file, title, ylabel, log_y in (
        ("loss", "loss.png", "training loss", "loss", False),
        ("learning_rate", "lr.png", "learning rate", "learning rate", False),
        ("grad_norm", "grad_norm.png", "gradient norm (before clipping)", "norm", True),
    ):
        path = plot_curve(log_history, key, out_dir / file, title=prefix + title, ylabel=ylabel, log_y=log_y)
        if path is not None:
            written[key] = str(path)
    return written


def peak_memory() -> dict[str, int | None]:
    """Peak resident memory of this process, and peak CUDA memory allocated by torch (bytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_bytes = rss if sys.platform == "darwin" else rss * 1024  # Linux reports KiB
    cuda = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    return {"cpu_max_rss_bytes": int(rss_bytes), "cuda_max_allocated_bytes": cuda}


def write_json(path: str | os.PathLike, data: Mapping[str, Any]) -> Path:
    """Write ``data`` as indented JSON, atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
