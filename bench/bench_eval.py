"""Batched evaluation throughput of the embedded default on this machine, vs batch size 1.

Runs the evaluator's generation loop (:func:`mico_chat.eval.runner.generate_predictions`, i.e.
``ChatModel.generate`` on batches of conversations) over the same mini-suite items at each batch
size, in one process, and reports items/s and the ratio to batch size 1 (goal: >= 4x at batch 8
on CPU). A second pass times the stages of each batch (media decoding + tokenising, encoder +
connectors, LLM generate) so the table shows where the time goes.

    .venv/bin/python bench/bench_eval.py [--benchmark mme] [--items 16] [--batch-sizes 1,8] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from mico_chat.eval.cache import PredictionCache
from mico_chat.eval.minisuite import build_all
from mico_chat.eval.registry import get_task
from mico_chat.eval.runner import generate_predictions

from mico_chat.api import ChatModel, GenerationSettings


def stage_times(chat: ChatModel, items, batch_size: int, settings: GenerationSettings) -> dict[str, float]:
    """Seconds per stage over all items: media decoding + tokenising, encoder + connectors, LLM
    prefill (one forward pass over the prompts, timed on its own) and decoding (the rest of
    ``generate``); plus decode steps and prompt tokens (padding included)."""
    totals = {"prepare_s": 0.0, "encode_s": 0.0, "prefill_s": 0.0, "decode_s": 0.0, "steps": 0.0, "prompt_tokens": 0.0}
    llm = chat.model.language_model
    for start in range(0, len(items), batch_size):
        batch = [item.messages() for item in items[start : start + batch_size]]
        t0 = time.perf_counter()
        inputs = chat._inputs(batch)  # media decoding, preprocessing, tokenising
        t1 = time.perf_counter()
        with torch.no_grad():
            embeds = chat.model.embed_inputs(inputs["input_ids"], inputs["media"])  # encoder + connectors
            t2 = time.perf_counter()
            llm(inputs_embeds=embeds, attention_mask=inputs["attention_mask"], use_cache=True, logits_to_keep=1)  # prefill alone
            t3 = time.perf_counter()
        new = llm.generate(inputs_embeds=embeds, attention_mask=inputs["attention_mask"], **chat._generate_kwargs(settings))
        t4 = time.perf_counter()
        totals["prepare_s"] += t1 - t0
        totals["encode_s"] += t2 - t1
        totals["prefill_s"] += t3 - t2
        totals["decode_s"] += max(0.0, (t4 - t3) - (t3 - t2))
        totals["steps"] += new.shape[1]
        totals["prompt_tokens"] += inputs["input_ids"].numel()
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--benchmark", default="mme", help="mini suite to read items from (mme, mmbench, msvd_qa, clotho_aqa, ...)"
    )
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--max-new-tokens", type=int, help="default: the benchmark's")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per batch size (median)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.batch_sizes.split(",")]

    work = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    data = build_all(work / "data", only=[args.benchmark])[args.benchmark]
    bench = get_task(args.benchmark)()
    items = bench.load(data)
    items = (items * (args.items // len(items) + 1))[: args.items]
    items = [type(i)(f"{n}:{i.id}", i.prompt, i.media, i.reference, i.meta) for n, i in enumerate(items)]
    chat = ChatModel.load("default")
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens or bench.config.max_new_tokens)
    for size in sorted(set(sizes)):  # warm-up: first calls pay for lazy initialisation
        chat.generate([i.messages() for i in items[:size]], settings)

    # Interleave batch sizes within each repeat, so load from other processes hits all alike.
    runs: dict[int, list[float]] = {size: [] for size in sizes}
    load_before = os.getloadavg()[0]
    for r in range(args.repeats):
        for size in sizes:
            cache = PredictionCache(work / f"p{size}_{r}.jsonl", {"batch": size, "repeat": r})
            start = time.perf_counter()
            generate_predictions(chat, items, cache, settings=settings, batch_size=size, progress=None)
            runs[size].append(time.perf_counter() - start)
    rows = {size: {"seconds": statistics.median(runs[size]), **stage_times(chat, items, size, settings)} for size in sizes}
    load_after = os.getloadavg()[0]
    base = len(items) / rows[sizes[0]]["seconds"]
    print(
        f"benchmark={args.benchmark} items={len(items)} max_new_tokens={settings.max_new_tokens} "
        f"threads={args.threads} repeats={args.repeats} (median) "
        f"load average {load_before:.2f} -> {load_after:.2f}"
    )
    print(
        "| batch | items/s | vs batch 1 | prepare s | encoder s | LLM prefill s | LLM decode s | decode steps | prompt tokens |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for size, r in rows.items():
        rate = len(items) / r["seconds"]
        print(
            f"| {size} | {rate:.2f} | {rate / base:.2f}x | {r['prepare_s']:.2f} | {r['encode_s']:.2f} | {r['prefill_s']:.2f} | "
            f"{r['decode_s']:.2f} | {r['steps']:.0f} | {r['prompt_tokens']:.0f} |"
        )


if __name__ == "__main__":
    main()
