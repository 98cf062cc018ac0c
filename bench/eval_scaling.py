"""Data-parallel evaluation scaling: items/s with 1 and N processes, and the scaling efficiency.

Runs the real command, ``mico-chat eval BENCH ... [--num-processes N]``, once per process count
on the same items, each into a fresh run folder (nothing resumed), and reads the generation
throughput that the run records in ``results.json`` (``timing.items_per_s``: items over the time
from the first ``generate`` call to the moment rank 0 holds every shard, so a slow straggler
counts). The command's wall time (interpreter starts, model loads, scoring) is shown beside it.

    speed-up   = items/s with N processes / items/s with 1
    efficiency = speed-up / N          (1.0: perfect; items are split evenly, so the rest is overhead)

With GPUs each process takes one (``cuda:LOCAL_RANK``); on a CPU the cores are split between
the processes (``OMP_NUM_THREADS`` = cores / N; the 1-process run uses all of them), so the CPU
figure measures how well N small matrix workloads share the cores against one larger one.

    .venv/bin/python bench/eval_scaling.py                                  # synth, 32 clips, default model
    .venv/bin/python bench/eval_scaling.py --benchmark mme --data MME_Benchmark_release_version \\
        --limit 400 --processes 1,2,4,8 --model vicuna7b --llm /models/vicuna-7b-v1.5
    .venv/bin/python bench/eval_scaling.py --model runs/tiny/model --n 4 --processes 1,2  # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def prepare_data(args: argparse.Namespace, work: Path) -> Path:
    """``--data``, else the synth benchmark's held-out world of ``--n`` clips (made once), else a mini suite."""
    if args.data is not None:
        return args.data
    if args.benchmark == "synth":
        from mico_chat.eval.benchmarks.synth import heldout_world

        return heldout_world(work / "data", n=args.n, seed=0, size=args.size, progress=False)
    from mico_chat.eval.minisuite import build_all

    return build_all(work / "data", only=[args.benchmark])[args.benchmark]


def run_once(args: argparse.Namespace, data: Path, out: Path, processes: int) -> dict:
    """One evaluation with ``processes`` processes; its ``results.json`` timing plus the wall time."""
    cmd = [sys.executable, "-m", "mico_chat.cli", "eval", args.benchmark, "--model", args.model, "--data", str(data),
           "--out", str(out), "--batch-size", str(args.batch_size)]  # fmt: skip
    for flag, value in (("--llm", args.llm), ("--limit", args.limit), ("--max-new-tokens", args.max_new_tokens),
                        ("--device", args.device)):  # fmt: skip
        if value is not None:
            cmd += [flag, str(value)]
    if processes > 1:
        cmd += ["--num-processes", str(processes)]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    payload = json.loads((out / "results.json").read_text(encoding="utf-8"))
    timing = payload["timing"]
    if timing["processes"] != processes or timing["resumed"]:
        raise SystemExit(f"{out}: expected a fresh run with {processes} processes, got {timing}")
    return {"processes": processes, "items": payload["data"]["items"], "wall_s": wall, **timing}


def describe_machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return f"CPU, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--benchmark", default="synth", help="a registered generative benchmark (default: synth)")
    parser.add_argument("--data", type=Path, help="its data (default: synth's held-out world, or the mini suite)")
    parser.add_argument("--n", type=int, default=32, help="synth: clips in the generated world")
    parser.add_argument("--size", type=int, default=128, help="synth: frame side in pixels")
    parser.add_argument("--model", default="default")
    parser.add_argument("--llm")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int)
    parser.add_argument("--device", help="default: auto (one GPU per process when there are GPUs)")
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts; the first is the baseline")
    parser.add_argument("--work", type=Path, help="folder for data and run folders (default: a temporary one)")
    args = parser.parse_args()
    counts = [int(p) for p in args.processes.split(",")]
    work = args.work or Path(tempfile.mkdtemp(prefix="eval_scaling_"))
    data = prepare_data(args, work)
    machine = describe_machine()
    rows = [run_once(args, data, work / f"run-{n}-{time.time_ns()}", n) for n in counts]
    base = rows[0]["items_per_s"] / rows[0]["processes"]
    print(f"benchmark={args.benchmark} data={data} model={args.model} batch_size={args.batch_size} machine: {machine}")
    print("| processes | items | generation s | items/s | speed-up | efficiency | command wall s |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        rate = row["items_per_s"]
        speedup = rate / rows[0]["items_per_s"]
        efficiency = rate / (base * row["processes"])
        print(
            f"| {row['processes']} | {row['items']} | {row['generation_s']:.2f} | {rate:.3f} | {speedup:.2f}x | "
            f"{efficiency:.2f} | {row['wall_s']:.1f} |"
        )


if __name__ == "__main__":
    main()
