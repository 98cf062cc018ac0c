"""Run a benchmark through :class:`mico_chat.ChatModel`: batched greedy generation with a
prediction cache, official output files, scores, and the results JSON / markdown / plot.

    chat = ChatModel.load("default")
    result = evaluate(MME(), chat, data=Path("MME_Benchmark_release_version"), out=Path("runs/mme"))
    print(result.report.summary())

Data-parallel (``accelerate launch`` / ``torchrun``, or ``--num-processes N``): pass
``parallel=DataParallel.from_environment()``; every process answers its share of the items and
rank 0 gathers, writes and scores (:mod:`mico_chat.eval.distributed`).

Output folder of a run::

    predictions.jsonl   the prediction cache (resume point); with several processes all
                        predictions in item order, written by rank 0 after gathering
    predictions.rankR-of-N.jsonl   with N processes: process R's cache shard (its resume point)
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
from .cache import PredictionCache, read_matching, write_cache
from .distributed import DataParallel
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
    processes: int = 1


def cache_file(shard_suffix: str | None) -> str:
    """The cache file name of a process: ``predictions.jsonl`` alone, ``predictions.rank0-of-2.jsonl`` in a group."""
    if shard_suffix is None:
        return PREDICTIONS_FILE
    stem, _, ext = PREDICTIONS_FILE.rpartition(".")
    return f"{stem}.{shard_suffix}.{ext}"


def open_cache(
    out: Path, identity: dict[str, Any], parallel: DataParallel, wanted: Sequence[str], *, overwrite: bool
) -> PredictionCache:
    """This process's prediction cache, with what any earlier run in ``out`` answered of ``wanted`` (its shard's ids).

    Its own file resumes as before; predictions made the same way in the folder's other cache
    files (the gathered ``predictions.jsonl``, or shards of a run with another number of
    processes) are copied in, so changing the number of processes never redoes finished items.
    """
    own = out / cache_file(parallel.shard.suffix() if parallel.world_size > 1 else None)
    cache = PredictionCache(own, identity, overwrite=overwrite)
    if not overwrite:
        others = sorted(p for p in out.glob(cache_file("*")) if p != own)
        if own.name != PREDICTIONS_FILE and (out / PREDICTIONS_FILE).is_file():
            others.insert(0, out / PREDICTIONS_FILE)
        earlier = read_matching(others, identity)
        cache.add(earlier[item_id] for item_id in wanted if item_id in earlier and item_id not in cache)
    return cache


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
    parallel: DataParallel | None = None,
) -> RunResult | None:
    """Load ``data``, generate (resuming from ``out``), write official outputs, score, write results.

    With ``parallel`` spanning several processes, each answers its shard of the items and only
    rank 0 writes outputs, scores (the judge is asked there, once per item) and returns the
    result; the other ranks return ``None``. A single process always returns the result.

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
        parallel: the process group (default: this process alone).
    """
    started = time.perf_counter()
    parallel = parallel or DataParallel.single()
    data, out = Path(data), Path(out)
    items = bench.select(bench.load(data), limit)
    check_unique_ids(items, str(data))
    mine = parallel.shard.take(items)
    settings = resolve_settings(bench, settings)
    model_info = chat.describe()
    identity = {
        "benchmark": bench.describe(),
        "model": model_info,
        "generation": settings.to_dict(),
    }
    cache = open_cache(out, identity, parallel, [item.id for item in mine], overwrite=overwrite)
    resumed = sum(1 for item in mine if item.id in cache)
    gen_started = time.perf_counter()
    label = bench.name if parallel.world_size == 1 else f"{bench.name} [{parallel.shard.suffix()}]"
    generated = generate_predictions(
        chat,
        mine,
        cache,
        settings=settings,
        batch_size=batch_size,
        system_prompt=bench.config.system_prompt,
        progress=label if progress else None,
    )
    shards = parallel.gather(({item.id: cache.predictions[item.id] for item in mine}, generated, resumed))
    gen_seconds = time.perf_counter() - gen_started  # on rank 0: until the slowest shard is in
    if shards is None:
        return None
    gathered: dict[str, Prediction] = {}
    for shard_predictions, _, _ in shards:
        gathered.update(shard_predictions)
    predictions = {item.id: gathered[item.id] for item in items}
    generated, resumed = sum(s[1] for s in shards), sum(s[2] for s in shards)
    if parallel.world_size > 1:
        write_cache(out / PREDICTIONS_FILE, identity, predictions.values())
    outputs = bench.write_outputs(items, predictions, out, judge=judge)
    report = bench.score(outputs, judge=judge)
    header = {
        "model": model_info.get("name") or model_info.get("llm"),
        "items": len(items),
        "decoding": ("greedy" if settings.greedy else f"temperature={settings.temperature}")
        + (f", media contrast {settings.media_contrast:g}" if settings.media_contrast > 0 else ""),
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
            "processes": parallel.world_size,
        },
        "environment": _environment(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    results = write_results(out, bench.config.title, report, payload, header)
    return RunResult(report, outputs, results, predictions, generated, resumed, parallel.world_size)


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
