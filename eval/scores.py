"""Scores as every scorer returns them, and the files a run writes: JSON, a markdown table, a plot."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ScoreReport:
    """The outcome of scoring one benchmark.

    Args:
        metrics: headline numbers, e.g. ``{"perception": 963.61, "cognition": 249.64}``.
        breakdown: per-part numbers, e.g. ``{"existence": {"score": 185.0, "acc": 95.0}}``.
        counts: how many items, groups, unparseable answers or verdicts went into the numbers.
        unavailable: metrics that could not be computed here, with the reason (e.g. SPICE).
        rules: name -> version of each scoring rule applied (official code and commit).
        notes: anything a reader must know to compare the numbers (partial data, deviations).
    """

    metrics: dict[str, float] = field(default_factory=dict)
    breakdown: dict[str, dict[str, float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    rules: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": {k: _finite(v) for k, v in self.metrics.items()},
            "breakdown": {k: {m: _finite(v) for m, v in d.items()} for k, d in self.breakdown.items()},
            "counts": dict(self.counts),
            "unavailable": dict(self.unavailable),
            "rules": dict(self.rules),
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScoreReport:
        return cls(
            metrics={k: float("nan") if v is None else float(v) for k, v in data.get("metrics", {}).items()},
            breakdown={
                k: {m: float("nan") if v is None else float(v) for m, v in d.items()}
                for k, d in data.get("breakdown", {}).items()
            },
            counts={k: int(v) for k, v in data.get("counts", {}).items()},
            unavailable=dict(data.get("unavailable", {})),
            rules=dict(data.get("rules", {})),
            notes=list(data.get("notes", [])),
        )

    def merge(self, other: ScoreReport, prefix: str = "") -> None:
        """Add ``other``'s numbers under ``prefix`` (used by benchmarks with several criteria)."""
        self.metrics.update({prefix + k: v for k, v in other.metrics.items()})
        self.breakdown.update({prefix + k: v for k, v in other.breakdown.items()})
        self.counts.update({prefix + k: v for k, v in other.counts.items()})
        self.unavailable.update({prefix + k: v for k, v in other.unavailable.items()})
        self.rules.update(other.rules)
        self.notes.extend(other.notes)

    def summary(self) -> str:
        """A few lines for the terminal: metrics, counts, unavailable metrics and notes."""
        lines = [f"{k}: {_fmt(v)}" for k, v in self.metrics.items()]
        if self.counts:
            lines.append("counts: " + ", ".join(f"{k}={v}" for k, v in self.counts.items()))
        lines += [f"{k}: unavailable ({why})" for k, why in self.unavailable.items()]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _finite(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:.2f}"


def markdown_table(name: str, report: ScoreReport, header: Mapping[str, Any] | None = None) -> str:
    """Markdown: a metrics table, a breakdown table (parts x measures), counts and notes."""
    out = [f"# {name}", ""]
    for key, value in (header or {}).items():
        out.append(f"- {key}: {value}")
    if header:
        out.append("")
    out += ["| metric | value |", "|---|---|"]
    out += [f"| {k} | {_fmt(v)} |" for k, v in report.metrics.items()]
    for k, why in report.unavailable.items():
        out.append(f"| {k} | unavailable: {why} |")
    if report.breakdown:
        measures: list[str] = []
        for d in report.breakdown.values():
            measures += [m for m in d if m not in measures]
        out += ["", "| part | " + " | ".join(measures) + " |", "|---|" + "---|" * len(measures)]
        for part, d in report.breakdown.items():
            out.append(f"| {part} | " + " | ".join(_fmt(d[m]) if m in d else "" for m in measures) + " |")
    if report.counts:
        out += ["", "Counts: " + ", ".join(f"{k} = {v}" for k, v in report.counts.items())]
    if report.rules:
        out += ["", "Scoring rules:"] + [f"- {k}: {v}" for k, v in report.rules.items()]
    if report.notes:
        out += ["", "Notes:"] + [f"- {n}" for n in report.notes]
    return "\n".join(out) + "\n"


def plot_report(name: str, report: ScoreReport, path: Path) -> Path:
    """Bar chart of the first measure of each breakdown part (or of the metrics when there is none)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never a display
    import matplotlib.pyplot as plt

    if report.breakdown:
        first = {part: next(iter(d.items())) for part, d in report.breakdown.items() if d}
        labels = list(first)
        values = [_finite(v) or 0.0 for _, v in first.values()]
        measure = next(iter(first.values()))[0] if first else ""
    else:
        labels = list(report.metrics)
        values = [_finite(v) or 0.0 for v in report.metrics.values()]
        measure = "value"
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(labels) + 2), 3.6))
    ax.bar(range(len(labels)), values, color="#4472c4")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(measure)
    ax.set_title(name)
    for x, v in enumerate(values):
        ax.annotate(_fmt(v), (x, v), ha="center", va="bottom", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_json(path: Path, payload: Any) -> Path:
    """Write JSON atomically (a crash never leaves half a results file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def write_jsonl(path: Path, rows: Any) -> Path:
    """Write one JSON object per line, atomically (a crash never leaves half a predictions file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def read_jsonl(path: Path, required: Sequence[str], *, what: str = "predictions") -> list[dict[str, Any]]:
    """The rows of a JSONL file, each an object with the ``required`` keys (``ItemError`` naming file and line).

    ``what`` names the file's role in the error for a missing file ("no such predictions file").
    """
    from .items import ItemError

    if not path.is_file():
        raise ItemError(f"{path}: no such {what} file")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ItemError(f"{path}: line {n} is not JSON ({err})") from None
        missing = [k for k in required if not isinstance(row, dict) or k not in row]
        if missing:
            raise ItemError(f"{path}: line {n} lacks {missing}")
        rows.append(row)
    return rows
