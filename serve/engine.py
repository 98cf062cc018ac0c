"""``ChatEngine``: one shared :class:`~mico_chat.api.ChatModel` behind a bounded queue and a batcher.

The web UI and the HTTP API both submit conversations here. A request goes through three steps:

1. **Admission**: at most ``max_waiting`` requests may wait (being prepared or queued); one more
   raises :class:`QueueFullError` at once (HTTP 429) instead of piling up memory and latency.
2. **Preparation** (a small thread pool, off the event loop): media are decoded and the prompt is
   tokenized with :meth:`ChatModel.prepare`. Bad media fail here, before any streaming starts, so
   the caller can still answer with a proper status code.
3. **Generation** (one scheduler thread): waiting requests with the same generation settings (and
   media of one shape per modality; text-only requests fit anywhere) are taken together, up to
   ``max_batch_size``, and decoded as one batch with :meth:`ChatModel.stream_batch`; every row
   streams to its own caller. Requests arriving while a batch runs wait for the next one (static
   batching; measured against one-at-a-time in docs/benchmarks.md, ``## Serving``).

    engine = ChatEngine(ChatModel.load("default"), EngineConfig(max_batch_size=8))
    reply = await engine.submit(messages, GenerationSettings(max_new_tokens=64))
    async for event in reply:          # StreamEvent(index, text, result)
        print(event.text, end="")
    engine.close()
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from mico_chat.api import ChatModel, ChatResult, GenerationSettings, PreparedPrompt, StreamEvent
from mico_chat.preprocess import MediaSettings


class QueueFullError(RuntimeError):
    """Too many requests are waiting; try again later (HTTP 429)."""


class EngineClosedError(RuntimeError):
    """The engine is shut down and takes no more requests (HTTP 503)."""


@dataclass(frozen=True)
class EngineConfig:
    """How requests share the model.

    Args:
        max_batch_size: rows decoded together in one batch (the concurrency limit of generation).
        max_waiting: requests allowed to wait (being prepared, or queued for a batch); beyond this
            :meth:`ChatEngine.submit` raises :class:`QueueFullError`.
        batch_window_s: after the first request of an idle engine arrives, wait this long for
            others to join its batch (a few ms cost little and batch a burst of clients).
        prepare_threads: threads that decode media and tokenize, off the event loop.
    """

    max_batch_size: int = 8
    max_waiting: int = 64
    batch_window_s: float = 0.02
    prepare_threads: int = 2

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_waiting < 0 or self.prepare_threads < 1 or self.batch_window_s < 0:
            raise ValueError(f"invalid engine config: {self}")


@dataclass
class _Job:
    """One submitted request as the scheduler thread sees it."""

    prompt: PreparedPrompt
    settings: GenerationSettings
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue
    cancelled: threading.Event = field(default_factory=threading.Event)

    def deliver(self, item: StreamEvent | BaseException) -> None:
        """Hand an event to the caller's event loop (from the scheduler thread)."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)
        except RuntimeError:  # the caller's loop is closed: nobody is listening any more
            self.cancelled.set()


class Reply:
    """The stream of one submitted request: iterate for :class:`StreamEvent` pieces.

    The last event carries the :class:`ChatResult`. Leaving the iteration early (or calling
    :meth:`cancel`) stops generating this row; the other rows of its batch go on.
    """

    def __init__(self, job: _Job, prompt_tokens: int):
        self._job = job
        self.prompt_tokens = prompt_tokens
        self.result: ChatResult | None = None

    def cancel(self) -> None:
        self._job.cancelled.set()

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        try:
            while self.result is None:
                item = await self._job.events.get()
                if isinstance(item, BaseException):
                    raise item
                if item.result is not None:
                    self.result = item.result
                yield item
        finally:
            if self.result is None:
                self.cancel()

    async def text(self) -> ChatResult:
        """Wait for the whole reply."""
        async for _ in self:
            pass
        assert self.result is not None
        return self.result


class ChatEngine:
    """A :class:`ChatModel` shared by concurrent callers (see the module docstring).

    Args:
        chat: the loaded model; the engine is its only user from now on.
        config: batching and queue limits.
        media_settings: how to sample media and the media limits (default: the model's own);
            a request may replace ``num_frames`` and ``video_audio`` (:meth:`submit`).
    """

    def __init__(self, chat: ChatModel, config: EngineConfig | None = None, media_settings: MediaSettings | None = None):
        self.chat = chat
        self.config = config or EngineConfig()
        self.media_settings = media_settings or chat.processor.settings
        self._inbox: queue.Queue[_Job | None] = queue.Queue()
        self._count_lock = threading.Lock()
        self._waiting = 0
        self._running = 0
        self._served = 0
        self._batches = 0
        self._closed = False
        self._prepare_pool = ThreadPoolExecutor(self.config.prepare_threads, thread_name_prefix="mico-chat-prepare")
        self._scheduler = threading.Thread(target=self._schedule, name="mico-chat-scheduler", daemon=True)
        self._scheduler.start()

    # ------------------------------------------------------------------ callers (event loop)
    async def submit(
        self,
        messages: Sequence[Mapping[str, Any]],
        settings: GenerationSettings | None = None,
        *,
        num_frames: int | None = None,
        video_audio: bool | None = None,
    ) -> Reply:
        """Admit, prepare and queue one conversation; returns its :class:`Reply` stream.

        Raises (before anything is generated): :class:`QueueFullError`, :class:`EngineClosedError`,
        and whatever :meth:`ChatModel.prepare` raises for bad input (``MediaError``,
        ``ProcessorError``).
        """
        settings = settings or self.chat.defaults
        media = self.media_settings
        if num_frames is not None or video_audio is not None:
            media = replace(
                media,
                num_frames=media.num_frames if num_frames is None else num_frames,
                video_audio=media.video_audio if video_audio is None else video_audio,
            )
        with self._count_lock:
            if self._closed:
                raise EngineClosedError("the server is shutting down")
            if self._waiting >= self.config.max_waiting:
                raise QueueFullError(
                    f"{self._waiting} requests are already waiting (the limit is {self.config.max_waiting}); retry later"
                )
            self._waiting += 1
        try:
            loop = asyncio.get_running_loop()
            prompt = await loop.run_in_executor(self._prepare_pool, lambda: self.chat.prepare(messages, media_settings=media))
        except BaseException:
            with self._count_lock:
                self._waiting -= 1
            raise
        job = _Job(prompt, settings, loop, asyncio.Queue())
        self._inbox.put(job)
        return Reply(job, prompt.prompt_tokens)

    async def complete(self, messages: Sequence[Mapping[str, Any]], settings: GenerationSettings | None = None, **media) -> ChatResult:
        """The whole reply at once (same queue and batching as streaming)."""
        return await (await self.submit(messages, settings, **media)).text()

    def stats(self) -> dict[str, int]:
        """Requests waiting, rows generating now, replies finished and batches run since start."""
        with self._count_lock:
            return {"waiting": self._waiting, "running": self._running, "served": self._served, "batches": self._batches}

    def close(self) -> None:
        """Refuse new requests, let the running batch end, stop the scheduler thread."""
        with self._count_lock:
            if self._closed:
                return
            self._closed = True
        self._inbox.put(None)
        self._scheduler.join()
        self._prepare_pool.shutdown(wait=True)

    # ------------------------------------------------------------------ scheduler thread
    def _schedule(self) -> None:
        pending: deque[_Job] = deque()
        while True:
            if not pending:
                first = self._inbox.get()
                if first is None:
                    return
                pending.append(first)
                if not self._gather(pending, deadline=time.monotonic() + self.config.batch_window_s):
                    self._fail_all(pending)
                    return
            elif not self._gather(pending, deadline=None):
                self._fail_all(pending)
                return
            for job in [j for j in pending if j.cancelled.is_set()]:  # their callers left while waiting
                pending.remove(job)
                self._started(1)
            if pending:
                batch = self._take_batch(pending)
                self._started(len(batch))
                self._run(batch)

    def _gather(self, pending: deque[_Job], deadline: float | None) -> bool:
        """Move queued jobs to ``pending``; wait until ``deadline`` for more. False once closed."""
        while True:
            timeout = None if deadline is None else deadline - time.monotonic()
            try:
                if timeout is None or timeout <= 0 or len(pending) >= self.config.max_batch_size:
                    job = self._inbox.get_nowait()
                else:
                    job = self._inbox.get(timeout=timeout)
            except queue.Empty:
                return True
            if job is None:
                return False
            pending.append(job)

    def _take_batch(self, pending: deque[_Job]) -> list[_Job]:
        """The oldest job and the following ones that can share its batch, in arrival order.

        Rows share a batch when their generation settings are equal and media of one modality have
        one shape (they are stacked); rows without media fit any batch.
        """
        settings = pending[0].settings
        shapes: dict[str, tuple[int, ...]] = {}
        batch = []
        for job in pending:
            if len(batch) == self.config.max_batch_size:
                break
            if job.settings != settings or any(shapes.get(m, s) != s for m, s in job.prompt.batch_key):
                continue
            shapes.update(job.prompt.batch_key)
            batch.append(job)
        for job in batch:
            pending.remove(job)
        return batch

    def _started(self, n: int) -> None:
        with self._count_lock:
            self._waiting -= n
            self._running += n

    def _run(self, batch: list[_Job]) -> None:
        finished = 0
        try:
            events = self.chat.stream_batch(
                [job.prompt for job in batch], batch[0].settings, cancelled=lambda i: batch[i].cancelled.is_set()
            )
            for event in events:
                batch[event.index].deliver(event)
                finished += event.result is not None
        except Exception as err:  # a failed batch fails each of its callers, not the server
            for job in batch:
                job.deliver(err)
        finally:
            with self._count_lock:
                self._running -= len(batch)
                self._served += finished
                self._batches += 1

    def _fail_all(self, pending: deque[_Job]) -> None:
        for job in pending:
            job.deliver(EngineClosedError("the server shut down before this request started"))
        with self._count_lock:
            self._waiting -= len(pending)
        pending.clear()
