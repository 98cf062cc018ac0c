"""Run a benchmark through :class:`mico_chat.ChatModel`: batched greedy generation with a
prediction cache, official output files, scores, and the results JSON / markdown / plot.

    chat = ChatModel.load("default")
    result = evaluate(MME(), chat, data=Path("MME_Benchmark_release_version"), out=Path("runs/mme"))
    print(result.report.summary())

Output folder of a run::

    predictions.jsonl   the prediction cache (resume point)
    <official files>    e.g. MME's per-subtask txt files, an MMBench TSV, judge-result JSON
    results.json        scores, settings, model, data checksum, scoring-rule versions, timing
    results.md          the same as markdown tables
    results.png         a bar chart of the breakdown
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from .benchmark import Benchmark
from .cache import PredictionCache
from .items import EvalItem, Prediction, check_unique_ids
from .scores import ScoreReport, markdown_table, plot_report, write_json

if TYPE_CHECKING:
    from mico_chat.api import ChatModel, GenerationSettings

    from .judges import Judge

PREDICTIONS_FILE = "predictions.jsonl"
RESULTS_FILE = "results.json"


@dataclass
class RunResult:
    """What :func:`evaluate` produced: the report, the official outputs and the results files."""

    report: ScoreReport
    outputs: Path
    results: Path
    predictions: dict[str, Prediction] = field(default_factory=dict)
    generated: int = 0
    resumed: int = 0


def data_checksum(bench: Benchmark, data: Path, items: Sequence[EvalItem]) -> str:
    """SHA-256 over the benchmark's annotation files (bytes) and its media listing (path, size).

    Media bytes are not read (video sets are large); a changed, added or removed media file still
    changes the checksum through its size or name.
    """
    digest = hashlib.sha256()
    for path in sorted(bench.annotation_files(data)):
        digest.update(str(path.relative_to(data) if path.is_relative_to(data) else path.name).encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    seen: set[str] = set()
    for item in items:
        for media in item.media:
            if isinstance(media.source, bytes):
                continue  # in-memory media come from an annotation file, hashed above
            path = Path(media.source)
            key = str(path.relative_to(data) if path.is_relative_to(data) else path)
            if key not in seen:
                seen.add(key)
                digest.update(f"{key}:{path.stat().st_size if path.exists() else -1}".encode())
    return digest.hexdigest()


def resolve_settings(bench: Benchmark, settings: GenerationSettings | None) -> GenerationSettings:
    """The benchmark's decoding settings: greedy, its ``max_new_tokens``, unless ``settings`` is given."""
    from mico_chat.api import GenerationSettings

    return settings or GenerationSettings(max_new_tokens=bench.config.max_new_tokens, temperature=0.0)


def generate_predictions(
    chat: ChatModel,
    items: Sequence[EvalItem],
    cache: PredictionCache,
    *,
    settings: GenerationSettings,
    batch_size: int = 8,
    system_prompt: str | None = None,
    progress: str | None = "generating",
) -> int:
    """Answer every item the cache lacks, ``batch_size`` conversations per ``ChatModel.generate`` call.

    Each batch is written to the cache as soon as it is done. Returns the number generated.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    todo = [item for item in items if item.id not in cache]
    bar = tqdm(total=len(items), initial=len(items) - len(todo), desc=progress, unit="item", disable=progress is None)
    try:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            results = chat.generate([item.messages(system_prompt) for item in batch], settings)
            cache.add(
                Prediction(item.id, r.text, r.prompt_tokens, r.completion_tokens, r.finish_reason)
                for item, r in zip(batch, results)
            )
            bar.update(len(batch))
    finally:
        bar.close()
    return len(todo)


def evaluate(
    bench: Benchmark,
    chat: ChatModel,
    *,
    data: Path,
    out: Path,
    limit: int | None = None,
    batch_size: int = 8,
    settings: GenerationSettings | None = None,
    judge: Judge | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> RunResult:
    """Load ``data``, generate (resuming from ``out``), write official outputs, score, write results.

    Args:
        bench: the benchmark.
        chat: the model (any :class:`ChatModel`).
        data: the benchmark's data folder, in its official layout.
        out: the run's output folder (created; holds the prediction cache).
        limit: evaluate only the first ``limit`` items (whole groups where scoring needs them).
        batch_size: conversations per ``generate`` call.
        settings: decoding settings (default: greedy with the benchmark's ``max_new_tokens``).
        judge: the LLM judge for benchmarks that need one (without it, their scores are unavailable).
        overwrite: discard a prediction cache made with different settings instead of refusing.
    """
    started = time.perf_counter()
    data, out = Path(data), Path(out)
    items = bench.select(bench.load(data), limit)
    check_unique_ids(items, str(data))
    settings = resolve_settings(bench, settings)
    model_info = chat.describe()
    identity = {
        "benchmark": bench.describe(),
        "model": model_info,
        "generation": settings.to_dict(),
    }
    cache = PredictionCache(out / PREDICTIONS_FILE, identity, overwrite=overwrite)
    resumed = sum(1 for item in items if item.id in cache)
    gen_started = time.perf_counter()
    generated = generate_predictions(
        chat,
        items,
        cache,
        settings=settings,
        batch_size=batch_size,
        system_prompt=bench.config.system_prompt,
        progress=f"{bench.name}" if progress else None,
    )
    gen_seconds = time.perf_counter() - gen_started
    predictions = {item.id: cache.predictions[item.id] for item in items}
    outputs = bench.write_outputs(items, predictions, out, judge=judge)
    report = bench.score(outputs, judge=judge)
    header = {
        "model": model_info.get("name") or model_info.get("llm"),
        "items": len(items),
        "decoding": "greedy" if settings.greedy else f"temperature={settings.temperature}",
        "max_new_tokens": settings.max_new_tokens,
        "batch_size": batch_size,
    }
    payload: dict[str, Any] = {
        "benchmark": bench.name,
        "title": bench.config.title,
        "scores": report.to_dict(),
        "generation": settings.to_dict(),
        "batch_size": batch_size,
        "benchmark_config": bench.describe(),
        "model": model_info,
        "judge": judge.describe() if judge is not None else None,
        "data": {
            "path": str(data.resolve()),
            "checksum_sha256": data_checksum(bench, data, items),
            "items": len(items),
            "limit": limit,
        },
        "outputs": str(outputs.relative_to(out) if outputs.is_relative_to(out) else outputs),
        "timing": {
            "total_s": round(time.perf_counter() - started, 3),
            "generation_s": round(gen_seconds, 3),
            "generated": generated,
            "resumed": resumed,
            "items_per_s": round(generated / gen_seconds, 4) if generated and gen_seconds > 0 else None,
        },
        "environment": _environment(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    results = write_results(out, bench.config.title, report, payload, header)
    return RunResult(report, outputs, results, predictions, generated, resumed)


def write_results(out: Path, title: str, report: ScoreReport, payload: dict[str, Any], header: dict[str, Any]) -> Path:
    """``results.json`` (``payload``), ``results.md`` and ``results.png`` in ``out``."""
    path = write_json(out / RESULTS_FILE, payload)
    (out / "results.md").write_text(markdown_table(title, report, header), encoding="utf-8")
    plot_report(title, report, out / "results.png")
    return path


def _environment() -> dict[str, Any]:
    import torch

    from mico_chat import __version__

    return {
        "mico_chat": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }


def with_max_new_tokens(settings: GenerationSettings, max_new_tokens: int | None) -> GenerationSettings:
    return settings if max_new_tokens is None else replace(settings, max_new_tokens=max_new_tokens)
