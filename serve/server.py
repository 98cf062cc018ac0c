"""Run an ASGI app with uvicorn in a background thread: for the CLI (print the URL, stay up until
Ctrl-C) and for tests (start on a free port, stop cleanly)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable

import uvicorn

LOOPBACK = "127.0.0.1"


class BackgroundServer:
    """uvicorn serving ``app`` on ``host:port`` from a daemon thread (port 0 picks a free port).

    with BackgroundServer(app, port=0) as server:
        print(server.url)
    """

    def __init__(self, app, host: str = LOOPBACK, port: int = 0, *, log_level: str = "warning"):
        # timeout_graceful_shutdown: open event streams must not hold a Ctrl-C forever.
        config = uvicorn.Config(
            app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5, access_log=False
        )
        self.server = uvicorn.Server(config)
        self.host = host
        self.thread = threading.Thread(target=self.server.run, name="mico-chat-uvicorn", daemon=True)

    def start(self, timeout_s: float = 60.0) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"the server on {self.host} stopped while starting (is the port in use?)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not start within {timeout_s:.0f} s")
            time.sleep(0.02)
        return self

    @property
    def port(self) -> int:
        return self.server.servers[0].sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_until_interrupted(
    app, host: str, port: int, banner: Callable[[str], str], on_stop: Callable[[], None]
) -> int:
    """Start ``app``, print ``banner(url)``, block until Ctrl-C or SIGTERM (or the server dies), clean up.

    Called from a program's main thread. It handles SIGINT and SIGTERM itself for its duration:
    service managers stop the server as cleanly as Ctrl-C does, and Ctrl-C works even where the
    process was started with SIGINT ignored (a shell starts background jobs that way, and Python
    then never raises KeyboardInterrupt).
    """
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server = BackgroundServer(app, host, port, log_level="warning").start()
        print(banner(server.url), flush=True)
        try:
            while server.thread.is_alive() and not stop.wait(0.5):
                pass
        finally:
            print("stopping...", flush=True)
            server.stop()
            on_stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
