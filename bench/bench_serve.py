"""Load test of the HTTP API: N concurrent streaming chats for a fixed time, loopback only.

Starts ``mico-chat api`` (the default model unless ``--model``) as a child process on 127.0.0.1,
then runs ``--clients`` streaming clients (the official ``openai`` client) for ``--duration``
seconds. Every client loops: ask, read the stream to the end, ask again. Even-numbered clients ask
about the demo clip (8 frames + its audio track, sent as a base64 ``video_url``), odd-numbered ones
ask a text question. Reports requests/s, time to first token (p50/p95), tokens/s, errors, and the
server's resident memory sampled every 0.5 s. Each ``--batch-sizes`` value is one server run, so a
batch size of 1 (one request at a time) is the baseline measured in the same invocation.

    .venv/bin/python bench/bench_serve.py                       # 16 clients, 60 s, batch 1 and 16
    .venv/bin/python bench/bench_serve.py --duration 20 --batch-sizes 8

Check ``uptime`` first: on a 2-core machine the 1-minute load should be below ~1.5.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from openai import AsyncOpenAI

from mico_chat.media.samples import make_demo_clip
from mico_chat.weights import mico_home

HOST = "127.0.0.1"
VIDEO_QUESTION = "What happens in this clip?"
TEXT_QUESTION = "Name three things people like about Paris."


@dataclass
class Outcome:
    ttft_s: list[float] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)
    tokens: int = 0
    completed: int = 0
    errors: list[str] = field(default_factory=list)
    window: tuple[float, float] = (0.0, 0.0)  # perf_counter() start and end of the load window


def start_server(model: str, batch_size: int, clients: int, max_tokens: int) -> tuple[subprocess.Popen, str]:
    command = [
        sys.executable, "-m", "mico_chat.cli", "api", "--model", model, "--host", HOST, "--port", "0",
        "--served-model-name", "bench", "--max-batch-size", str(batch_size), "--max-waiting", str(clients * 2), "--max-new-tokens", str(max_tokens),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    for line in process.stdout:
        match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        if match:
            return process, match.group(1)
    raise RuntimeError(f"the server exited with {process.wait()} before printing its URL")


def sample_rss(pid: int, samples: list[tuple[float, int]], stop: threading.Event) -> None:
    proc = psutil.Process(pid)
    while not stop.wait(0.5):
        samples.append((time.perf_counter(), proc.memory_info().rss))


async def client_loop(client: AsyncOpenAI, index: int, video_url: str, until: float, max_tokens: int, out: Outcome) -> None:
    if index % 2 == 0:
        content = [{"type": "video_url", "video_url": {"url": video_url}}, {"type": "text", "text": VIDEO_QUESTION}]
    else:
        content = TEXT_QUESTION
    while time.perf_counter() < until:
        start = time.perf_counter()
        first = None
        try:
            stream = await client.chat.completions.create(
                model="bench", messages=[{"role": "user", "content": content}], stream=True,
                max_tokens=max_tokens, stream_options={"include_usage": True},
            )  # fmt: skip
            async for chunk in stream:
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter() - start
                if chunk.usage is not None:
                    out.tokens += chunk.usage.completion_tokens
        except Exception as err:  # counted and reported: the load test's verdict
            out.errors.append(f"{type(err).__name__}: {err}")
            continue
        end = time.perf_counter()
        if end <= until:  # only requests completed inside the window count towards requests/s
            out.completed += 1
            out.latency_s.append(end - start)
            if first is not None:
                out.ttft_s.append(first)


async def run_clients(url: str, clients: int, duration_s: float, max_tokens: int, video_url: str) -> Outcome:
    out = Outcome()
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)
    # One warm-up request per kind (first-call costs are not what is measured).
    for index in (0, 1):
        await client_loop(client, index, video_url, time.perf_counter() + 1e-3, max_tokens, Outcome())
    start = time.perf_counter()
    until = start + duration_s
    out.window = (start, until)
    await asyncio.gather(*(client_loop(client, i, video_url, until, max_tokens, out) for i in range(clients)))
    await client.close()
    return out


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load per server run")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args()

    clip = mico_home() / "demo" / "demo_clip.mp4"
    if not clip.exists():
        make_demo_clip(clip)
    video_url = "data:video/mp4;base64," + base64.b64encode(Path(clip).read_bytes()).decode()
    print(f"load: {os.getloadavg()[0]:.2f} (1 min); {args.clients} streaming clients, {args.duration:.0f} s each run, "
          f"max_tokens {args.max_tokens}, half video+audio questions, half text", flush=True)  # fmt: skip
    rows = []
    for batch_size in args.batch_sizes:
        process, url = start_server(args.model, batch_size, args.clients, args.max_tokens)
        samples: list[tuple[float, int]] = []
        stop = threading.Event()
        sampler = threading.Thread(target=sample_rss, args=(process.pid, samples, stop), daemon=True)
        try:
            sampler.start()
            out = asyncio.run(run_clients(url, args.clients, args.duration, args.max_tokens, video_url))
        finally:
            stop.set()
            sampler.join()
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)
        # Resident memory during the load window, as the max of each quarter (MiB): flat = bounded.
        window = [r for t, r in samples if out.window[0] <= t <= out.window[1]]
        quarters = [window[i * len(window) // 4 : (i + 1) * len(window) // 4] for i in range(4)]
        rows.append({
            "batch": batch_size,
            "requests": out.completed,
            "rps": out.completed / args.duration,
            "ttft_p50": percentile(out.ttft_s, 50),
            "ttft_p95": percentile(out.ttft_s, 95),
            "latency_p50": percentile(out.latency_s, 50),
            "tok_s": out.tokens / args.duration,
            "errors": len(out.errors),
            "rss_quarters": [max(q) / 2**20 if q else float("nan") for q in quarters],
        })  # fmt: skip
        if out.errors:
            print(f"batch {batch_size}: {len(out.errors)} errors, e.g. {out.errors[0]}", flush=True)
        print(f"batch {batch_size}: done ({out.completed} requests)", flush=True)

    print(f"\nload after: {os.getloadavg()[0]:.2f}")
    print("| max batch | requests | requests/s | TTFT p50 (s) | TTFT p95 (s) | latency p50 (s) | tokens/s | errors | server RSS, max per quarter of the run (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['batch']} | {r['requests']} | {r['rps']:.2f} | {r['ttft_p50']:.2f} | {r['ttft_p95']:.2f} | "
            f"{r['latency_p50']:.2f} | {r['tok_s']:.1f} | {r['errors']} | "
            f"{' / '.join(f'{q:.0f}' for q in r['rss_quarters'])} |"
        )
    if len(rows) > 1:
        base = rows[0]
        for r in rows[1:]:
            print(f"batch {r['batch']} vs {base['batch']}: requests/s x{r['rps'] / base['rps']:.2f}, "
                  f"TTFT p50 x{r['ttft_p50'] / base['ttft_p50']:.2f}, p95 x{r['ttft_p95'] / base['ttft_p95']:.2f}")  # fmt: skip
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
