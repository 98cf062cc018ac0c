"""Loss curves of a pretraining run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

OBJECTIVE_KEYS = ("loss", "contrastive", "matching", "generation")


def read_loss_log(path: str | os.PathLike) -> list[dict]:
    """The rows of a ``loss.jsonl`` (empty when it does not exist yet)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _ema(values: list[float], alpha: float) -> list[float]:
    out, acc = [], None
    for v in values:
        acc = v if acc is None else alpha * acc + (1 - alpha) * v
        out.append(acc)
    return out


def plot_losses(
    log: str | os.PathLike, out: str | os.PathLike, *, runs: dict[str, str | os.PathLike] | None = None
) -> Path | None:
    """Draw one panel per objective (raw values faint, exponential moving average bold).

    ``runs`` plots several runs' ``loss.jsonl`` together (``{label: path}``), e.g. the full
    objective against contrastive-only; ``log`` is then ignored. Returns the PNG path, or None
    when there is nothing to plot.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {label: read_loss_log(p) for label, p in (runs or {"": log}).items()}
    keys = [k for k in OBJECTIVE_KEYS if any(k in row for rows in series.values() for row in rows)]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for label, rows in series.items():
            points = [(r["step"], r[key]) for r in rows if key in r]
            if not points:
                continue
            steps, values = zip(*points)
            (line,) = ax.plot(steps, _ema(list(values), 0.9), label=label or None, linewidth=1.8)
            ax.plot(steps, values, color=line.get_color(), alpha=0.2, linewidth=0.8)
        ax.set_title("total" if key == "loss" else key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if runs:
            ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_retrieval(runs: dict[str, str | os.PathLike], out: str | os.PathLike, *, metric: str = "R@5") -> Path | None:
    """Held-out text-to-item retrieval over training steps, one panel per query group.

    ``runs`` maps a label to a run's ``eval.jsonl`` (written every ``eval.every`` steps), e.g. the
    full MiCo objective against contrastive-only. Returns the PNG path, or None when no run has
    evaluations yet.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {label: read_loss_log(p) for label, p in runs.items()}  # same JSONL reader
    groups = sorted({g for rows in series.values() for row in rows for g in row if g != "step"})
    if not groups:
        return None
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.2), squeeze=False)
    for ax, group in zip(axes[0], groups):
        for label, rows in series.items():
            points = [(r["step"], r[group]["text_to_item"][metric]) for r in rows if group in r]
            if points:
                ax.plot(*zip(*points), marker="o", label=label)
        ax.set_title(f"text -> {group}, held-out {metric} (%)")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    # one legend under the panels: inside them it covers the curves' ends, where the runs differ
    entries = {}  # label -> line, from every panel (a run may lack a group)
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    rows = -(-len(entries) // 3)
    fig.legend(entries.values(), entries.keys(), loc="lower center", ncol=min(3, len(entries)), fontsize=8)
    fig.tight_layout(rect=(0, 0.07 * rows, 1, 1))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
