"""Benchmark the data tools: synthetic-world generation (clips/s) and record validation (records/s).

    .venv/bin/python bench/bench_data.py                                  # 10,000 clips, 10,000 records
    .venv/bin/python bench/bench_data.py --n 2000 --markdown docs/benchmarks.md

Generation: ``generate_world`` with 2 worker processes over ``--n`` clips, and, in the same run, a
1-process baseline over ``--baseline-n`` clips (the ratio is the parallel speed-up). Validation: the
first ``--records`` instruction records of that world, at every media check level, 2 workers.
The world is written under $MICO_CHAT_HOME/bench/ (default ~/.cache/mico-chat/bench) and kept.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

from mico_chat.instruct_data.synth import RECORDS_FILE, generate_world
from mico_chat.instruct_data.validate import validate_records


def bench_dir() -> Path:
    home = Path(os.environ.get("MICO_CHAT_HOME", Path.home() / ".cache" / "mico-chat"))
    return home / "bench"


def load() -> float:
    return os.getloadavg()[0]


def du_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def write_markdown(path: Path, section: str) -> None:
    """Replace (or append) the ``## Data`` section of ``path``."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    lines, out, skipping = text.splitlines(), [], False
    for line in lines:
        if line.startswith("## "):
            skipping = line.strip() == "## Data"
            if skipping:
                continue
        if not skipping:
            out.append(line)
    path.write_text("\n".join(out).rstrip() + "\n\n" + section.rstrip() + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="clips generated with 2 workers")
    parser.add_argument("--baseline-n", type=int, default=500, help="clips generated with 1 process (the baseline)")
    parser.add_argument("--records", type=int, default=10_000, help="records validated")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--markdown", type=Path, help="write the results as the '## Data' section of this file")
    args = parser.parse_args()

    root = bench_dir()
    root.mkdir(parents=True, exist_ok=True)
    before = load()
    print(f"1-min load average before: {before:.2f} on {os.cpu_count()} cores")

    base_dir = root / "synth-baseline"
    shutil.rmtree(base_dir, ignore_errors=True)
    baseline = generate_world(base_dir, args.baseline_n, seed=1, workers=1)
    print(f"1 process : {baseline.n} clips in {baseline.seconds:.1f} s = {baseline.clips_per_second:.1f} clips/s")

    world_dir = root / f"synth-{args.n}"
    shutil.rmtree(world_dir, ignore_errors=True)
    world = generate_world(world_dir, args.n, seed=0, workers=args.workers)
    print(f"{world.workers} workers: {world.n} clips in {world.seconds:.1f} s = {world.clips_per_second:.1f} clips/s "
          f"({world.clips_per_second / baseline.clips_per_second:.2f}x the 1-process rate); {du_mib(world_dir):.0f} MiB")  # fmt: skip

    subset = root / f"records-{args.records}.jsonl"
    with (world_dir / RECORDS_FILE).open() as src, subset.open("w") as dst:
        for i, line in enumerate(src):
            if i == args.records:
                break
            dst.write(line)
    rows = []
    for check in ("none", "exists", "probe", "decode"):
        started = time.perf_counter()
        report = validate_records(subset, world_dir, check=check, workers=args.workers)
        seconds = time.perf_counter() - started
        assert report.ok, report.format(5)
        rows.append((check, report.total, report.media_files, seconds))
        print(f"validate --check {check:6}: {report.total} records ({report.media_files} media files) in {seconds:.2f} s "
              f"= {report.total / seconds:,.0f} records/s")  # fmt: skip
    after = load()
    print(f"1-min load average after: {after:.2f}")

    if args.markdown:
        cpu = platform.processor() or platform.machine()
        try:
            model = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
            cpu = next((ln.split(":", 1)[1].strip() for ln in model.splitlines() if ln.startswith("Model name")), cpu)
        except OSError:  # no lscpu on this system: keep the platform's processor name
            pass
        contended = (
            "\n\nOther jobs on this shared machine raised the load during the run, so the 2-worker figures are\n"
            "lower bounds: workers and the other jobs shared the same 2 cores. Rerun on an idle machine for the speed-up.\n"
            if max(before, after) > 1.5
            else ""
        )
        table = "\n".join(f"| `--check {c}` | {n:,} | {m:,} | {s:.2f} | {n / s:,.0f} |" for c, n, m, s in rows)
        section = f"""## Data

Measured {datetime.date.today().isoformat()} on {os.cpu_count()} cores ({cpu}), Python {platform.python_version()};
1-min load average {before:.2f} before and {after:.2f} after (other work shared the machine).
Command: `.venv/bin/python bench/bench_data.py --n {args.n} --records {args.records} --markdown docs/benchmarks.md`

Synthetic world generation (`generate_world`: render, H.264 + AAC encode, still + depth png, captions and
questions; 128x128, 25 fps, 3-5 s clips):

| run | clips | seconds | clips/s |
|---|---:|---:|---:|
| 1 process (baseline, same run) | {baseline.n:,} | {baseline.seconds:.1f} | {baseline.clips_per_second:.1f} |
| {world.workers} worker processes | {world.n:,} | {world.seconds:.1f} | {world.clips_per_second:.1f} |

{world.workers} workers run at {world.clips_per_second / baseline.clips_per_second:.2f}x the 1-process rate; the {world.n:,}-clip world
({world.num_records:,} instruction records) takes {du_mib(world_dir):.0f} MiB.{contended}

Validation of the first {args.records:,} instruction records of that world (`validate_records`, {args.workers} workers; each
distinct media file is checked once):

| check | records | media files | seconds | records/s |
|---|---:|---:|---:|---:|
{table}
"""
        write_markdown(args.markdown, section)
        print(f"wrote the '## Data' section of {args.markdown}")


if __name__ == "__main__":
    main()
