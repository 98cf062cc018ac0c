"""Text generators for the data pipelines: the project's own :class:`~mico_chat.api.ChatModel`, or any
OpenAI-compatible endpoint (vLLM, llama.cpp server, a hosted API) through the ``openai`` client.

Both take a batch of conversations (OpenAI-style messages; the ChatModel also accepts media parts)
and return one :class:`Generated` per conversation: the text, or the error that prevented it. A
failed request is an outcome, never an exception, so one bad item cannot stop a long run.
``attempt`` > 0 asks for a retry: greedy decoding would repeat the same bad output, so retries
sample (``retry_temperature``) with a seed that changes per attempt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

Messages = Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class Generated:
    """One generation: ``text``, or ``error`` (why there is none)."""

    text: str | None
    error: str | None = None


@dataclass(frozen=True)
class SamplingSettings:
    """Decoding for pipelines: greedy first, sampling on retries."""

    max_new_tokens: int = 96
    temperature: float = 0.0
    retry_temperature: float = 0.8
    seed: int = 0

    def for_attempt(self, attempt: int) -> tuple[float, int]:
        """``(temperature, seed)`` of attempt ``attempt`` (0 = first)."""
        return (self.temperature if attempt == 0 else self.retry_temperature), self.seed + attempt


class TextGenerator(Protocol):
    """What the pipelines need from an LLM."""

    name: str

    def generate(self, conversations: Sequence[Messages], *, attempt: int = 0) -> list[Generated]: ...


class ChatModelGenerator:
    """Generates with a loaded :class:`~mico_chat.api.ChatModel` (one left-padded batch per call)."""

    def __init__(self, chat: Any, settings: SamplingSettings = SamplingSettings()):
        self.chat = chat
        self.settings = settings
        self.name = f"chatmodel:{getattr(chat, 'name', '') or 'model'}"

    def generate(self, conversations: Sequence[Messages], *, attempt: int = 0) -> list[Generated]:
        from mico_chat.api import GenerationSettings
        from mico_chat.media import MediaError

        temperature, seed = self.settings.for_attempt(attempt)
        settings = GenerationSettings(max_new_tokens=self.settings.max_new_tokens, temperature=temperature, seed=seed)
        try:
            texts = self.chat.batch_chat(list(conversations), settings)
        except (MediaError, ValueError, RuntimeError, OSError) as err:  # bad media, processor errors, out of memory
            return [Generated(None, f"{type(err).__name__}: {err}") for _ in conversations]
        return [Generated(t) for t in texts]


class OpenAIGenerator:
    """Generates through an OpenAI-compatible ``/v1/chat/completions`` endpoint.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000/v1``.
        model: the served model's name.
        api_key: sent as a bearer token (local servers usually accept any string).
        timeout_s: per request.
        concurrency: requests in flight at once.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str = "EMPTY",
        settings: SamplingSettings = SamplingSettings(),
        timeout_s: float = 60.0,
        concurrency: int = 4,
    ):
        try:
            import openai
        except ImportError as err:  # an optional dependency: say how to get it
            raise ImportError("the OpenAI-compatible backend needs the openai client: pip install 'mico-chat[data]'") from err
        self._openai = openai
        # The pipeline retries bad outputs itself; the client's own retries would hide failures.
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0)
        self.model = model
        self.settings = settings
        self.concurrency = max(1, concurrency)
        self.name = f"openai:{model}@{base_url}"

    def _one(self, messages: Messages, temperature: float, seed: int) -> Generated:
        try:
            reply = self.client.chat.completions.create(
                model=self.model,
                messages=[dict(m) for m in messages],
                temperature=temperature,
                max_tokens=self.settings.max_new_tokens,
                seed=seed,
            )
        except self._openai.OpenAIError as err:
            return Generated(None, f"{type(err).__name__}: {err}")
        if not reply.choices or reply.choices[0].message.content is None:
            return Generated(None, "the endpoint returned no message content")
        return Generated(reply.choices[0].message.content)

    def generate(self, conversations: Sequence[Messages], *, attempt: int = 0) -> list[Generated]:
        temperature, seed = self.settings.for_attempt(attempt)
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(lambda m: self._one(m, temperature, seed), conversations))
