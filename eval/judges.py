"""LLM judges: any OpenAI-compatible endpoint, or a local :class:`mico_chat.ChatModel`.

Every request is sent at temperature 0 and its reply is kept in a :class:`VerdictCache` keyed by a
hash of the full request (judge model, messages, temperature, token limit and the re-ask attempt
number), so an interrupted scoring run resumes and a rerun costs nothing. Transport failures are
retried a bounded number of times, then raise :class:`JudgeError`. A reply the benchmark cannot
parse is re-asked at most ``attempts - 1`` times (each re-ask is its own cached request) and then
reported as unparseable by :func:`ask_and_parse`; it is never retried forever nor dropped.

    judge = build_judge("openai:gpt-3.5-turbo", base_url="http://127.0.0.1:8000/v1")
    verdicts = ask_and_parse(judge, [messages, ...], parse=parse_score_dict, attempts=3)
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from tqdm.auto import tqdm

from mico_chat.errors import ConfigError

T = TypeVar("T")
Messages = Sequence[Mapping[str, str]]


class JudgeError(RuntimeError):
    """The judge could not be reached or refused the request (after bounded retries)."""


@dataclass(frozen=True)
class JudgeConfig:
    """Which judge to ask and how.

    Args:
        kind: ``openai`` (any OpenAI-compatible HTTP endpoint) or ``local`` (a ChatModel).
        model: the endpoint's model name, or for ``local`` a preset name or saved model folder.
        base_url: the endpoint (e.g. ``http://127.0.0.1:8000/v1``); ``None`` is OpenAI's own.
        api_key_env: environment variable holding the API key (``EMPTY`` is sent when unset).
        max_retries: transport attempts per request (timeouts, 429, 5xx, refused connections).
        timeout_s: per-request timeout.
        max_tokens: reply token limit (``None``: the endpoint's default; local: 256).
        workers: concurrent requests to an HTTP endpoint.
        retry_wait_s: wait before the first transport retry (doubling after each, at most 8 s).
        cache: verdict cache file (JSONL); ``None`` keeps verdicts in memory only.
    """

    kind: Literal["openai", "local"] = "openai"
    model: str = "gpt-3.5-turbo"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    max_retries: int = 3
    timeout_s: float = 60.0
    max_tokens: int | None = None
    workers: int = 4
    retry_wait_s: float = 0.25
    cache: Path | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("openai", "local"):
            raise ValueError(f"judge kind must be 'openai' or 'local', got {self.kind!r}")
        if self.max_retries < 1 or self.workers < 1:
            raise ValueError("judge max_retries and workers must be >= 1")


@dataclass(frozen=True)
class JudgeRequest:
    """One request: the messages, and which re-ask of them this is (0 for the first ask)."""

    messages: tuple[tuple[str, str], ...]
    attempt: int = 0

    @classmethod
    def of(cls, messages: Messages, attempt: int = 0) -> JudgeRequest:
        return cls(tuple((str(m["role"]), str(m["content"])) for m in messages), attempt)

    def message_dicts(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.messages]


class VerdictCache:
    """Judge replies keyed by the SHA-256 of the canonical JSON of the full request.

    Backed by an append-only JSONL file when ``path`` is given; a torn last line (a crash while
    writing) is ignored on load. Safe to use from several threads.
    """

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else None
        self._replies: dict[str, str] = {}
        self._lock = threading.Lock()
        if self.path and self.path.is_file():
            lines = self.path.read_text(encoding="utf-8").splitlines()
            for n, line in enumerate(lines):
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    if n == len(lines) - 1:
                        continue  # torn final line from an interrupted write
                    raise ValueError(f"{self.path}: line {n + 1} is not JSON; the verdict cache is corrupt") from None
                self._replies[entry["key"]] = entry["reply"]

    @staticmethod
    def key(payload: Mapping[str, Any]) -> str:
        return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()

    def get(self, key: str) -> str | None:
        return self._replies.get(key)

    def put(self, key: str, reply: str) -> None:
        with self._lock:
            self._replies[key] = reply
            if self.path:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps({"key": key, "reply": reply}, ensure_ascii=False) + "\n")

    def __len__(self) -> int:
        return len(self._replies)


class Judge(ABC):
    """Answers judge requests, through the verdict cache."""

    def __init__(self, config: JudgeConfig):
        self.config = config
        self.cache = VerdictCache(config.cache)
        self.requests_sent = 0  # requests that missed the cache (for reports and tests)

    def payload(self, request: JudgeRequest) -> dict[str, Any]:
        """Everything that determines the reply; its hash is the cache key."""
        return {
            "kind": self.config.kind,
            "model": self.config.model,
            "messages": request.message_dicts(),
            "temperature": 0,
            "max_tokens": self.config.max_tokens,
            "attempt": request.attempt,
        }

    def ask(self, requests: Sequence[JudgeRequest], *, progress: str | None = None) -> list[str]:
        """Replies to ``requests`` in order; cached ones are not sent again.

        Each reply is cached as soon as it arrives, so a failure part-way keeps what was answered.
        """
        keys = [VerdictCache.key(self.payload(r)) for r in requests]
        replies: list[str | None] = [self.cache.get(k) for k in keys]
        missing = [i for i, r in enumerate(replies) if r is None]
        if not missing:
            return [r or "" for r in replies]
        bar = tqdm(total=len(missing), desc=progress or "judge", unit="req", disable=progress is None)

        def on_reply(j: int, reply: str) -> None:
            i = missing[j]
            self.cache.put(keys[i], reply)
            replies[i] = reply
            self.requests_sent += 1
            bar.update(1)

        try:
            self._send([requests[i] for i in missing], on_reply)
        finally:
            bar.close()
        return [r or "" for r in replies]

    @abstractmethod
    def _send(self, requests: Sequence[JudgeRequest], on_reply: Callable[[int, str], None]) -> None:
        """Send uncached requests; call ``on_reply(index, text)`` for each as it arrives."""

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.config.kind,
            "model": self.config.model,
            "base_url": self.config.base_url,
            "temperature": 0,
            "max_tokens": self.config.max_tokens,
            "max_retries": self.config.max_retries,
        }


class OpenAIJudge(Judge):
    """A judge behind any OpenAI-compatible ``/chat/completions`` endpoint (uses the ``openai`` client)."""

    # HTTP statuses worth another try; anything else (400, 401, 404, ...) fails at once.
    RETRY_STATUSES = (408, 409, 429, 500, 502, 503, 504)

    def __init__(self, config: JudgeConfig):
        super().__init__(config)
        try:
            import openai
        except ImportError:
            raise JudgeError("the openai package is needed for HTTP judges: pip install 'mico-chat[eval]'") from None
        self._openai = openai
        self._client = openai.OpenAI(
            base_url=config.base_url,
            api_key=os.environ.get(config.api_key_env) or "EMPTY",
            max_retries=0,  # retries are counted here, so the bound is ours
            timeout=config.timeout_s,
        )

    def _one(self, request: JudgeRequest) -> str:
        openai = self._openai
        last: Exception | None = None
        for attempt in range(self.config.max_retries):
            try:
                kwargs: dict[str, Any] = {"model": self.config.model, "messages": request.message_dicts(), "temperature": 0}
                if self.config.max_tokens is not None:
                    kwargs["max_tokens"] = self.config.max_tokens
                completion = self._client.chat.completions.create(**kwargs)
                if not completion.choices:
                    raise JudgeError(f"judge {self.config.model} returned no choices")
                return completion.choices[0].message.content or ""
            except (openai.APIConnectionError, openai.APITimeoutError) as err:
                last = err
            except openai.APIStatusError as err:
                if err.status_code not in self.RETRY_STATUSES:
                    raise JudgeError(
                        f"judge {self.config.model} at {self.config.base_url}: HTTP {err.status_code}: {err.message}"
                    ) from None
                last = err
            if attempt + 1 < self.config.max_retries:
                time.sleep(min(8.0, self.config.retry_wait_s * 2**attempt))
        raise JudgeError(
            f"judge {self.config.model} at {self.config.base_url or 'api.openai.com'}: no answer after "
            f"{self.config.max_retries} attempts ({type(last).__name__}: {last})"
        )

    def _send(self, requests: Sequence[JudgeRequest], on_reply: Callable[[int, str], None]) -> None:
        with ThreadPoolExecutor(max_workers=self.config.workers) as pool:
            futures = {pool.submit(self._one, r): j for j, r in enumerate(requests)}
            failure: BaseException | None = None
            for future in futures:
                try:
                    on_reply(futures[future], future.result())
                except JudgeError as err:
                    failure = failure or err
            if failure is not None:
                raise failure


class ChatModelJudge(Judge):
    """A local :class:`mico_chat.ChatModel` as judge (greedy, batched)."""

    def __init__(self, config: JudgeConfig, chat: Any = None, batch_size: int = 8):
        super().__init__(config)
        self._chat = chat
        self.batch_size = batch_size

    @property
    def chat(self) -> Any:
        if self._chat is None:
            from mico_chat.api import ChatModel

            self._chat = ChatModel.load(self.config.model)
        return self._chat

    def _send(self, requests: Sequence[JudgeRequest], on_reply: Callable[[int, str], None]) -> None:
        from mico_chat.api import GenerationSettings

        settings = GenerationSettings(max_new_tokens=self.config.max_tokens or 256, temperature=0.0)
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start : start + self.batch_size]
            replies = self.chat.batch_chat([r.message_dicts() for r in chunk], settings)
            for j, reply in enumerate(replies):
                on_reply(start + j, reply)


def build_judge(spec: str | JudgeConfig, **overrides: Any) -> Judge:
    """A judge from a config, or from ``openai:MODEL`` / ``local:PRESET_OR_FOLDER`` plus overrides.

    ``build_judge("openai:gpt-3.5-turbo", base_url="http://127.0.0.1:8000/v1", cache=Path("v.jsonl"))``
    """
    if isinstance(spec, JudgeConfig):
        config = spec
    else:
        kind, sep, model = spec.partition(":")
        if not sep or kind not in ("openai", "local") or not model:
            raise ConfigError(f"--judge must look like 'openai:MODEL' or 'local:PRESET_OR_FOLDER', got {spec!r}")
        config = JudgeConfig(kind=kind, model=model, **{k: v for k, v in overrides.items() if v is not None})
    return OpenAIJudge(config) if config.kind == "openai" else ChatModelJudge(config)


@dataclass
class Verdict(Generic[T]):
    """A parsed judge reply; ``value is None`` means unparseable after every attempt."""

    value: T | None
    raw: str
    attempts: int
    replies: list[str] = field(default_factory=list)

    @property
    def parsed(self) -> bool:
        return self.value is not None


def ask_and_parse(
    judge: Judge,
    conversations: Sequence[Messages],
    parse: Callable[[str], T | None],
    *,
    attempts: int = 3,
    progress: str | None = None,
) -> list[Verdict[T]]:
    """Ask the judge about each conversation and parse the replies.

    A reply ``parse`` returns ``None`` for is asked again (as a new, separately cached request)
    up to ``attempts`` times in all; what is still unparseable comes back with ``value=None``.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    verdicts: list[Verdict[T] | None] = [None] * len(conversations)
    history: list[list[str]] = [[] for _ in conversations]
    pending = list(range(len(conversations)))
    for attempt in range(attempts):
        if not pending:
            break
        label = None if progress is None else (progress if attempt == 0 else f"{progress} (re-ask {attempt})")
        replies = judge.ask([JudgeRequest.of(conversations[i], attempt) for i in pending], progress=label)
        still = []
        for i, reply in zip(pending, replies):
            history[i].append(reply)
            value = parse(reply)
            if value is None:
                still.append(i)
            else:
                verdicts[i] = Verdict(value, reply, attempt + 1, history[i])
        pending = still
    for i in pending:
        verdicts[i] = Verdict(None, history[i][-1], len(history[i]), history[i])
    return [v for v in verdicts if v is not None]
