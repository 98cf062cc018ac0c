"""``ChatModel``: the one Python API. The web UI, the HTTP API, the CLI and the evaluators call it.

    chat = ChatModel.load("default")               # a preset, or a saved MiCo-Chat folder
    chat.chat([{"role": "user", "content": "Hi!"}])
    for piece in chat.stream(messages): print(piece, end="")
    chat.batch_chat([messages_a, messages_b])       # left-padded batched generation

Messages follow :mod:`mico_chat.processing`: ``content`` is a string or a list of parts, where
media parts look like ``{"type": "video", "video": "clip.mp4"}``.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import TextIteratorStreamer

from .modeling import MiCoChatForConditionalGeneration
from .processing import MiCoChatProcessor

Messages = Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings. ``temperature=0`` is greedy decoding (the default, and what evaluators use)."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {self.temperature}, {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "repetition_penalty": self.repetition_penalty}
        if self.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k or None)
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ChatResult:
    """One reply with its token counts; ``finish_reason`` is ``stop`` (EOS/stop string) or ``length``."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length"]


def _pick_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


class ChatModel:
    """A loaded MiCo-Chat model with its processor, ready to chat.

    Args:
        model: the assembled model.
        processor: its processor.
        name: what it was loaded from (shown by the UI and recorded by evaluators).
        defaults: generation settings used when a call gives none.
    """

    def __init__(
        self,
        model: MiCoChatForConditionalGeneration,
        processor: MiCoChatProcessor,
        *,
        name: str = "",
        defaults: GenerationSettings | None = None,
    ):
        self.model = model.eval()
        self.processor = processor
        self.name = name
        self.defaults = defaults or GenerationSettings()
        tokenizer = processor.tokenizer
        eos = {tokenizer.eos_token_id}
        gen_eos = getattr(model.language_model.generation_config, "eos_token_id", None)
        eos.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        self.eos_token_ids = sorted(i for i in eos if i is not None)
        self.stop_strings = processor.template.stop_strings()
        # One generation at a time per model: generate() is not re-entrant across threads.
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        name_or_path: str | os.PathLike = "default",
        *,
        llm: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        auto_fetch: bool = True,
    ) -> ChatModel:
        """Load a preset (``default``, see :mod:`mico_chat.presets`) or a saved MiCo-Chat folder.

        Args:
            llm: for presets, replace the preset's LLM with this name or local folder (e.g. a
                Vicuna-7B-v1.5 download); the encoder and connectors come from the preset.
            device: ``cpu``, ``cuda``, ``cuda:1`` or ``auto`` (default).
            dtype: ``float32`` (CPU default), ``bfloat16`` (CUDA default), ...
            auto_fetch: fetch known weights on first use (with a progress bar).
        """
        from .presets import PRESETS, load_preset  # deferred: presets pull in the weights machinery

        device_ = _pick_device(device)
        dtype_ = _pick_dtype(dtype, device_)
        name = str(name_or_path)
        if name in PRESETS:
            model, processor = load_preset(name, llm=llm, dtype=dtype_, auto_fetch=auto_fetch)
        else:
            if llm is not None:
                raise ValueError("llm= replaces the LLM of a preset; a saved model folder already has its LLM")
            model, processor = load_folder(Path(name_or_path), dtype=dtype_)
        return cls(model.to(device_), processor, name=name)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Save model (safetensors) and processor so ``ChatModel.load(directory)`` restores them exactly."""
        self.model.save_pretrained(directory)
        self.processor.save_pretrained(directory)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ chatting
    def _settings(self, settings: GenerationSettings | None, overrides: Mapping[str, Any]) -> GenerationSettings:
        return replace(settings or self.defaults, **overrides)

    def _inputs(self, conversations: Sequence[Messages]) -> dict[str, Any]:
        batch = self.processor(list(conversations), add_generation_prompt=True, padding_side="left")
        dtype = next(self.model.parameters()).dtype
        return {
            "input_ids": batch["input_ids"].to(self.device),
            "attention_mask": batch["attention_mask"].to(self.device),
            "media": {m: t.to(self.device, dtype) for m, t in batch["media"].items()},
        }

    def _generate_kwargs(self, settings: GenerationSettings) -> dict[str, Any]:
        kwargs = settings.generate_kwargs()
        kwargs.update(
            eos_token_id=self.eos_token_ids,
            pad_token_id=self.processor.tokenizer.pad_token_id,
            # Placeholder tokens mark media slots in prompts; the model must never write one.
            suppress_tokens=sorted(self.model.config.media_token_ids.values()),
        )
        if self.stop_strings:
            kwargs.update(stop_strings=self.stop_strings, tokenizer=self.processor.tokenizer)
        return kwargs

    def _trim(self, text: str) -> str:
        cut = min((text.find(s) for s in self.stop_strings if s in text), default=-1)
        return text[:cut] if cut >= 0 else text

    def generate(
        self, conversations: Sequence[Messages], settings: GenerationSettings | None = None, **overrides
    ) -> list[ChatResult]:
        """Reply to each conversation (one left-padded batch); returns text and token counts."""
        settings = self._settings(settings, overrides)
        inputs = self._inputs(conversations)
        with self._lock:
            if settings.seed is not None:
                torch.manual_seed(settings.seed)
            new_tokens = self.model.generate(**inputs, **self._generate_kwargs(settings))  # (B, new)
        prompt_lengths = inputs["attention_mask"].sum(dim=1).tolist()
        results = []
        for row, prompt_len in zip(new_tokens.tolist(), prompt_lengths):
            ended = [i for i, t in enumerate(row) if t in self.eos_token_ids]
            content = row[: ended[0]] if ended else row
            text = self.processor.decode(content)
            trimmed = self._trim(text)
            stopped = bool(ended) or trimmed != text or len(row) < settings.max_new_tokens
            results.append(ChatResult(trimmed.strip(), int(prompt_len), len(content), "stop" if stopped else "length"))
        return results

    def complete(self, messages: Messages, settings: GenerationSettings | None = None, **overrides) -> ChatResult:
        """Reply to one conversation, with token counts."""
        return self.generate([messages], settings, **overrides)[0]

    def chat(self, messages: Messages, settings: GenerationSettings | None = None, **overrides) -> str:
        """Reply to one conversation (any turn may carry media); returns the assistant's text."""
        return self.complete(messages, settings, **overrides).text

    def batch_chat(
        self, conversations: Sequence[Messages], settings: GenerationSettings | None = None, **overrides
    ) -> list[str]:
        """Reply to several conversations in one batch (greedy results equal one-by-one calls)."""
        return [r.text for r in self.generate(conversations, settings, **overrides)]

    def stream(self, messages: Messages, settings: GenerationSettings | None = None, **overrides) -> Iterator[str]:
        """Yield the reply to one conversation piece by piece as it is generated.

        The pieces join to exactly what :meth:`chat` returns for the same settings (greedy).
        """
        settings = self._settings(settings, overrides)
        inputs = self._inputs([messages])
        streamer = TextIteratorStreamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with self._lock:
                    if settings.seed is not None:
                        torch.manual_seed(settings.seed)
                    self.model.generate(**inputs, **self._generate_kwargs(settings), streamer=streamer)
            except BaseException as err:  # re-raised in the consumer below
                failure.append(err)
                streamer.end()

        worker = threading.Thread(target=run, name="mico-chat-generate", daemon=True)
        worker.start()
        yield from _StreamCleaner(self.stop_strings).clean(streamer)
        worker.join()
        if failure:
            raise failure[0]

    def describe(self) -> dict[str, Any]:
        """What is loaded: name, LLM, encoder shape, connectors, template (for UIs and result files)."""
        config = self.model.config
        enc = config.encoder_config
        return {
            "name": self.name,
            "llm": config.llm_name_or_path,
            "chat_template": config.chat_template,
            "encoder": {k: getattr(enc, k) for k in ("hidden_size", "num_hidden_layers", "image_size", "patch_size")},
            "connectors": config.connectors,
            "media_settings": self.processor.settings.to_dict(),
            "parameters": sum(p.numel() for p in self.model.parameters()),
        }


class _StreamCleaner:
    """Strips surrounding whitespace and anything from a stop string on, as :meth:`ChatModel.chat` does.

    Text that could be the start of a stop string, and trailing whitespace, are held back until
    more text shows what they are.
    """

    def __init__(self, stop_strings: Sequence[str]):
        self.stop_strings = list(stop_strings)

    def clean(self, pieces: Iterator[str]) -> Iterator[str]:
        pending = ""
        started = False
        for piece in pieces:
            pending += piece
            if not started:
                pending = pending.lstrip()
                if not pending:
                    continue
                started = True
            cut = min((pending.find(s) for s in self.stop_strings if s in pending), default=-1)
            if cut >= 0:
                pending = pending[:cut]
                break
            hold_stop = max((k for s in self.stop_strings for k in range(1, len(s)) if pending.endswith(s[:k])), default=0)
            hold = max(hold_stop, len(pending) - len(pending.rstrip()))  # trailing space may be the end
            ready, pending = pending[: len(pending) - hold], pending[len(pending) - hold :]
            if ready:
                yield ready
        tail = pending.rstrip()
        if tail:
            yield tail


def load_folder(directory: Path, *, dtype: torch.dtype) -> tuple[MiCoChatForConditionalGeneration, MiCoChatProcessor]:
    """Load a folder written by :meth:`ChatModel.save_pretrained` (clear errors for anything else)."""
    config_path = directory / "config.json"
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such model folder (and not a preset name)")
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: missing; {directory} is not a saved MiCo-Chat model")
    try:
        model_type = json.loads(config_path.read_text()).get("model_type")
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_path}: not valid JSON ({err})") from None
    if model_type != "mico_chat":
        raise ValueError(
            f"{directory} holds a {model_type!r} model, not a MiCo-Chat one; to chat with media around this LLM "
            f"use ChatModel.load('default', llm='{directory}') (untrained connectors) or train one"
        )
    model = MiCoChatForConditionalGeneration.from_pretrained(directory, dtype=dtype)
    processor = MiCoChatProcessor.from_pretrained(directory, config=model.config)
    return model, processor
