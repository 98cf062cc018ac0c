"""Benchmark Ray Data batch inference: captioning items/s with 1 and 2 Ray workers, and the scaling efficiency.

    PYTHONPATH=tests .venv/bin/python bench/ray_captioning.py                       # default model, 64 clips
    PYTHONPATH=tests .venv/bin/python bench/ray_captioning.py --model tiny --n 8 --workers 1 2   # a quick check

Needs the scale extra (``pip install 'mico-chat[scale]'``). A synthetic world of ``--n`` clips is
generated once; then, for each worker count, ``mico-chat data omni-caption --ray`` (the default
task: an LLM writes omni captions from the vision/audio captions and subtitle; ``--task
pseudolabel`` captions the video frames instead) runs on a fresh local Ray cluster into a fresh
output, after a warm-up command over one shard per worker. Both commands pay the same start-up
(cluster, actors, model loading), so the difference gives the steady rate: items/s = (n - warm-up
items) / (wall - warm-up wall); start-up = warm-up wall - its items / rate. Reported per worker
count: wall time and items/s of the whole command, start-up, steady items/s, and the scaling
efficiency = steady items/s(N) / (N x steady items/s(1)). ``--model tiny``
uses a randomly initialised tiny model (tests/helpers/tiny.py: its outputs are rejected, but it
exercises the same path in seconds). Do not time on a machine busy with other work.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from mico_chat.cli import main as cli
from mico_chat.instruct_data.ray_runner import import_ray
from mico_chat.instruct_data.synth import generate_world


def tiny_model_folder(out: Path) -> Path:
    """Save the tests' tiny model (random weights) as a MiCo-Chat folder."""
    from helpers.tiny import tiny_model  # tests/ on PYTHONPATH

    from mico_chat.api import ChatModel

    model, processor = tiny_model()
    ChatModel(model, processor, name="tiny").save_pretrained(out)
    return out


def run_once(
    args: argparse.Namespace, model: str, world: Path, out: Path, workers: int, limit_shards: int = 0
) -> float:
    """Seconds one ``mico-chat data ...--ray`` command takes (from a fresh output)."""
    if out.exists():
        out.unlink()
    shutil.rmtree(out.with_name(out.name + ".shards"), ignore_errors=True)
    source = world / "captions.jsonl"
    if limit_shards:  # the warm-up: one shard per worker, to price the start-up
        source = out.with_name("warmup.jsonl")
        lines = (world / "captions.jsonl").read_text().splitlines()[: limit_shards * args.shard_size]
        source.write_text("\n".join(lines) + "\n")
    ray = f"--ray={args.address}" if args.address else "--ray"
    common = ["--model", model, "--device", args.device, "--batch-size", str(args.batch_size), "--max-retries", "0",
              "--max-new-tokens", str(args.max_new_tokens), "--no-progress", ray, "--ray-workers", str(workers),
              "--ray-cpus-per-worker", str(args.cpus_per_worker), "--ray-shard-size", str(args.shard_size)]  # fmt: skip
    if args.task == "omni":
        argv = ["data", "omni-caption", str(source), str(out), *common]
    else:
        argv = ["data", "pseudolabel", str(source), str(out), "--media-root", str(world), *common]
    start = time.perf_counter()
    code = cli(argv)
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"{' '.join(argv)} exited {code}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="preset / saved folder, or 'tiny' (random tiny model)")
    parser.add_argument("--task", default="omni", choices=("omni", "pseudolabel"))
    parser.add_argument("--n", type=int, default=64, help="clips in the synthetic world (items captioned)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to time")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--device", default="cpu", help="cpu, or auto (one GPU per worker when the cluster has them)")
    parser.add_argument("--address", help="a running Ray cluster (default: a local one per run)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--shard-size", type=int, default=8, help="a multiple of --batch-size")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()
    import_ray()
    with tempfile.TemporaryDirectory(prefix="mico-ray-bench-") as tmp:
        tmp = Path(tmp)
        world = tmp / "world"
        generate_world(world, args.n, seed=0, workers=1, progress=False)
        model = str(tiny_model_folder(tmp / "tiny")) if args.model == "tiny" else args.model
        results = {}
        for workers in args.workers:
            warm_items = min(workers * args.shard_size, args.n)
            warm = run_once(args, model, world, tmp / f"warm-{workers}.jsonl", workers, limit_shards=workers)
            wall = run_once(args, model, world, tmp / f"out-{workers}.jsonl", workers)
            # Both runs pay the same start-up (cluster, actors, model): it cancels in the difference.
            steady = (args.n - warm_items) / (wall - warm) if wall > warm and args.n > warm_items else float("nan")
            startup = warm - warm_items / steady if steady == steady else float("nan")
            results[workers] = (wall, startup, steady)
            print(f"workers={workers}: {args.n} items in {wall:.1f} s, {warm_items} in {warm:.1f} s", flush=True)
    print(f"\n{args.task} captioning, model {args.model}, {args.n} clips, batch {args.batch_size}, shard "
          f"{args.shard_size}, {args.cpus_per_worker} CPU(s)/worker, {os.cpu_count()} CPUs, device {args.device}")
    print("| workers | wall s | items/s (whole command) | start-up s | items/s (steady) | scaling efficiency |")
    print("|---:|---:|---:|---:|---:|---:|")
    base_workers = min(results)
    base_rate = results[base_workers][2] / base_workers
    for workers, (wall, startup, steady) in sorted(results.items()):
        print(f"| {workers} | {wall:.1f} | {args.n / wall:.2f} | {startup:.1f} | {steady:.2f} | "
              f"{steady / (workers * base_rate):.0%} |")


if __name__ == "__main__":
    main()
