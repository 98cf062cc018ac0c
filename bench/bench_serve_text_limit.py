"""Memory under the largest text requests the API accepts: 8 concurrent requests at ``--max-text-chars``.

Starts ``mico-chat api`` (the default model unless ``--model``) on 127.0.0.1 and samples the server's
resident memory every 0.1 s while three waves of ``--clients`` concurrent requests arrive:

1. ``small``: a one-line question each (the baseline, measured in the same run);
2. ``at_limit``: exactly ``--max-text-chars`` characters each, accepted by the character check,
   tokenized, then refused for their token count (they are longer than the LLM's context);
3. ``over_limit``: one character more each, refused before any tokenizing.

Prints each wave's status codes, wall time and peak RSS above the idle server, and checks the
peak against ``--bound-mb`` (the bound docs/serving.md states).

    .venv/bin/python bench/bench_serve_text_limit.py
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil

HOST = "127.0.0.1"
MIB = 1 << 20


def start_server(model: str, max_text_chars: int) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "mico_chat.cli", "api", "--model", model, "--host", HOST, "--port", "0",
               "--served-model-name", "bench", "--max-text-chars", str(max_text_chars)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    for line in process.stdout:
        match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        if match:
            return process, match.group(1)
    raise RuntimeError(f"the server exited with {process.wait()} before printing its URL")


def wave(url: str, text: str, clients: int, pid: int) -> dict:
    samples: list[int] = []
    stop = threading.Event()
    proc = psutil.Process(pid)

    def sample() -> None:
        while not stop.wait(0.1):
            samples.append(proc.memory_info().rss)

    def ask(_: int) -> int:
        body = {"model": "bench", "messages": [{"role": "user", "content": text}], "max_tokens": 4}
        return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=600).status_code

    thread = threading.Thread(target=sample, daemon=True)
    idle = proc.memory_info().rss
    thread.start()
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        codes = list(pool.map(ask, range(clients)))
    seconds = time.perf_counter() - start
    time.sleep(0.3)
    stop.set()
    thread.join()
    peak = max(samples + [proc.memory_info().rss])
    return {"chars": len(text), "codes": sorted(set(codes)), "seconds": round(seconds, 2),
            "idle_mb": round(idle / MIB), "peak_above_idle_mb": round((peak - idle) / MIB)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-text-chars", type=int, default=200_000)
    parser.add_argument("--bound-mb", type=float, default=1024.0, help="largest allowed peak RSS above idle")
    args = parser.parse_args()
    process, url = start_server(args.model, args.max_text_chars)
    try:
        results = {
            "small": wave(url, "What is the capital of France?", args.clients, process.pid),
            "at_limit": wave(url, ("lorem ipsum " * args.max_text_chars)[: args.max_text_chars], args.clients, process.pid),
            "over_limit": wave(url, "x" * (args.max_text_chars + 1), args.clients, process.pid),
        }
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=60)
    for name, r in results.items():
        print(f"{name:<11} {r['chars']:>9,} chars x {args.clients}: HTTP {r['codes']}, {r['seconds']:.2f} s, "
              f"peak RSS {r['peak_above_idle_mb']} MiB above idle ({r['idle_mb']} MiB)")  # fmt: skip
    base = max(results["small"]["peak_above_idle_mb"], 1)
    print(f"at_limit / small peak: {results['at_limit']['peak_above_idle_mb'] / base:.1f}x; "
          f"bound {args.bound_mb:.0f} MiB: {'kept' if results['at_limit']['peak_above_idle_mb'] <= args.bound_mb else 'EXCEEDED'}")  # fmt: skip
    print(json.dumps(results))
    return 0 if results["at_limit"]["peak_above_idle_mb"] <= args.bound_mb else 1


if __name__ == "__main__":
    sys.exit(main())
