"""``ChatModel``: the one Python API. The web UI, the HTTP API, the CLI and the evaluators call it.

    chat = ChatModel.load("default")               # a preset, or a saved MiCo-Chat folder
    chat.chat([{"role": "user", "content": "Hi!"}])
    for piece in chat.stream(messages): print(piece, end="")
    chat.batch_chat([messages_a, messages_b])       # left-padded batched generation

Messages follow :mod:`mico_chat.processing`: ``content`` is a string or a list of parts, where
media parts look like ``{"type": "video", "video": "clip.mp4"}``.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from .loading import llm_placement, load_folder
from .modeling import MiCoChatForConditionalGeneration
from .preprocess import MediaSettings
from .processing import MiCoChatProcessor, ProcessorError

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
    media_contrast: float = 0.0
    media_contrast_cutoff: float = 0.1

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {self.temperature}, {self.top_p}")
        if self.media_contrast < 0 or not 0 < self.media_contrast_cutoff <= 1:
            raise ValueError(
                f"need media_contrast >= 0 and 0 < media_contrast_cutoff <= 1, "
                f"got {self.media_contrast}, {self.media_contrast_cutoff}"
            )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "repetition_penalty": self.repetition_penalty}
        if self.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k or None)
        if self.media_contrast > 0:  # media-contrastive decoding (mico_chat.contrast)
            kwargs.update(media_contrast=self.media_contrast, media_contrast_cutoff=self.media_contrast_cutoff)
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
        quantization: Literal["4bit", "8bit"] | None = None,
        device_map: str | dict[str, Any] | None = None,
    ) -> ChatModel:
        """Load a preset (``default``, see :mod:`mico_chat.presets`; or a preset ``.json`` file) or a
        saved MiCo-Chat folder.

        Args:
            llm: for presets, replace the preset's LLM with this name or local folder (e.g. a
                Vicuna-7B-v1.5 download); the encoder and connectors come from the preset.
            device: ``cpu``, ``cuda``, ``cuda:1`` or ``auto`` (default).
            dtype: ``float32`` (CPU default), ``bfloat16`` (CUDA default), ...
            auto_fetch: fetch known weights on first use (with a progress bar).
            quantization: ``"4bit"`` (NF4, double quantization, computing in ``dtype``) or ``"8bit"``
                (LLM.int8; the whole model then computes in float16, the only dtype its kernels
                take) loading of the LLM's linear layers with bitsandbytes. The encoder, connectors
                and ``lm_head`` are not quantized. By parameter count, a 7B LLM's weights take about
                3.9 GB in 4-bit and 6.7 GB in 8-bit instead of 13.5 GB in bf16.
            device_map: place the LLM's layers over several devices with accelerate, e.g.
                ``"auto"`` (fill the GPUs in order) or ``{"model.layers.0": 0, ...}``; the encoder
                and connectors go to the device of the input embeddings.
        """
        from .presets import is_preset, load_preset  # deferred: presets pull in the weights machinery

        device_ = _pick_device(device)
        # LLM.int8 multiplies in float16 and logs a warning on every call given anything else.
        dtype_ = torch.float16 if quantization == "8bit" else _pick_dtype(dtype, device_)
        name = str(name_or_path)
        placement = llm_placement(quantization, device_map, device_, dtype_)
        if is_preset(name):
            model, processor = load_preset(name, llm=llm, dtype=dtype_, auto_fetch=auto_fetch, llm_load_kwargs=placement)
        else:
            if llm is not None:
                raise ValueError("llm= replaces the LLM of a preset; a saved model folder already has its LLM")
            model, processor = load_folder(Path(name_or_path), dtype=dtype_, load_kwargs=placement)
        if placement:
            # The LLM is already placed (and may span devices): follow its input embeddings.
            home = model.get_input_embeddings().weight.device
            model.encoder.to(home, dtype_)
            model.connectors.to(home, dtype_)
        else:
            model.to(device_)
        return cls(model, processor, name=name)

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
        return self._on_device(self.processor(list(conversations), add_generation_prompt=True, padding_side="left"))

    def _on_device(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """A processor batch moved to the model's device (media in the model's dtype)."""
        dtype = next(self.model.parameters()).dtype
        inputs = {
            "input_ids": batch["input_ids"].to(self.device),
            "attention_mask": batch["attention_mask"].to(self.device),
            "media": {m: t.to(self.device, dtype) for m, t in batch["media"].items()},
        }
        if "video_audio" in batch:  # the videos' fused audio tracks; their spans stay float64 seconds
            inputs.update(video_audio=batch["video_audio"].to(self.device, dtype), video_spans=batch["video_spans"])
        return inputs

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
        for event in self.stream_batch([self.prepare(messages)], settings, **overrides):
            if event.text:
                yield event.text

    def prepare(self, messages: Messages, *, media_settings: MediaSettings | None = None) -> PreparedPrompt:
        """Decode the media of one conversation and tokenize it, ready for :meth:`stream_batch`.

        This is the step that fails on bad input (``MediaError``, ``ProcessorError`` for a prompt
        longer than the LLM's context), so a server can answer it before streaming starts.

        Args:
            media_settings: sample this conversation's media differently (e.g. more frames)
                without touching the shared processor; ``None`` uses ``processor.settings``.
        """
        processor = self.processor
        if media_settings is not None and media_settings != processor.settings:
            processor = MiCoChatProcessor(processor.tokenizer, processor.config, media_settings)
        encoded = processor.encode(processor.prepare(messages), add_generation_prompt=True)
        limit = self.model.config.context_length
        if limit is not None and len(encoded["input_ids"]) >= limit:
            raise ProcessorError(f"the prompt is {len(encoded['input_ids'])} tokens; the model's context is {limit}")
        return PreparedPrompt(encoded)

    def stream_batch(
        self,
        prompts: Sequence[PreparedPrompt],
        settings: GenerationSettings | None = None,
        *,
        cancelled: Callable[[int], bool] | None = None,
        **overrides,
    ) -> Iterator[StreamEvent]:
        """Generate replies to several prepared prompts in one left-padded batch, streaming every row.

        Yields :class:`StreamEvent` ``(index, text)`` pieces as tokens arrive, and one last event per
        row carrying its :class:`ChatResult`. Each row's pieces join to its ``result.text``, which
        equals :meth:`chat` on that conversation alone (greedy). ``cancelled(i)`` is polled after
        every decoding step: a row for which it is true stops generating and gets no more events.
        Closing the iterator early stops the whole batch.

        Media of one modality must have one shape across the batch (:attr:`PreparedPrompt.batch_key`);
        prompts without media fit any batch.
        """
        if not prompts:
            return
        settings = self._settings(settings, overrides)
        inputs = self._on_device(self.processor.collate([p.encoded for p in prompts], padding_side="left"))
        rows = [_RowDecoder(self.processor.tokenizer, self.stop_strings) for _ in prompts]
        steps: queue.Queue[list[int] | BaseException | None] = queue.Queue()
        abandoned = threading.Event()

        def row_stopped(index: int) -> bool:
            return abandoned.is_set() or rows[index].done or (cancelled is not None and cancelled(index))

        def run() -> None:
            try:
                with self._lock:
                    if settings.seed is not None:
                        torch.manual_seed(settings.seed)
                    self.model.generate(
                        **inputs,
                        **self._generate_kwargs(settings),
                        streamer=_StepStreamer(steps),
                        stopping_criteria=StoppingCriteriaList([_RowStop(row_stopped)]),
                    )
            except BaseException as err:  # re-raised in the consumer below
                steps.put(err)
            finally:
                steps.put(None)

        worker = threading.Thread(target=run, name="mico-chat-generate", daemon=True)
        worker.start()
        try:
            while (step := steps.get()) is not None:
                if isinstance(step, BaseException):
                    raise step
                for index, token in enumerate(step):
                    row = rows[index]
                    if row.done or (cancelled is not None and cancelled(index)):
                        continue
                    text = row.push(token, is_eos=token in self.eos_token_ids)
                    if row.ended or len(row.tokens) >= settings.max_new_tokens:
                        text += row.finish()
                        yield StreamEvent(index, text, row.result(prompts[index].prompt_tokens, settings))
                    elif text:
                        yield StreamEvent(index, text)
            for index, row in enumerate(rows):
                if not row.done and not (cancelled is not None and cancelled(index)):
                    text = row.finish()  # generation ended for a reason of its own (a stop string split oddly)
                    yield StreamEvent(index, text, row.result(prompts[index].prompt_tokens, settings))
        finally:
            abandoned.set()
            worker.join()

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


@dataclass(frozen=True)
class PreparedPrompt:
    """One conversation ready to generate from (:meth:`ChatModel.prepare`): tokens with media
    placeholders expanded, and the decoded media tensors. Opaque except for these properties."""

    encoded: Mapping[str, Any]

    @property
    def prompt_tokens(self) -> int:
        return len(self.encoded["input_ids"])

    @property
    def batch_key(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """``(modality, shape)`` of its media; prompts batch together when no modality has two shapes."""
        shapes = {(item.modality.value, tuple(t.shape)) for item, t in self.encoded["media"]}
        shapes |= {("video_audio", tuple(t.audio.shape)) for t in self.encoded.get("tracks") or [] if t is not None}
        return tuple(sorted(shapes))


@dataclass(frozen=True)
class StreamEvent:
    """A piece of one row's reply; ``result`` is set on that row's last event (its ``text`` may be empty)."""

    index: int
    text: str
    result: ChatResult | None = None


class _StepStreamer(BaseStreamer):
    """Hands each decoding step's new tokens ``(B,)`` to a queue (the prompt, put first, is skipped)."""

    def __init__(self, steps: queue.Queue):
        self.steps = steps
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.steps.put(value.reshape(-1).tolist())

    def end(self) -> None:
        pass  # the generating thread signals the end itself, also on errors


class _RowStop(StoppingCriteria):
    """Per-row stop: ``stopped(i)`` true ends row i (cancelled by its client, or finished by us)."""

    def __init__(self, stopped: Callable[[int], bool]):
        self.stopped = stopped

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs) -> torch.BoolTensor:
        flags = [self.stopped(i) for i in range(input_ids.shape[0])]
        return torch.tensor(flags, dtype=torch.bool, device=input_ids.device)


class _RowDecoder:
    """Turns one row's token ids into clean text pieces, trimmed as :meth:`ChatModel.chat` trims.

    Decoded text is released up to its last space or newline (a later token can change how the last
    word decodes; TextIteratorStreamer's rule), a trailing partial UTF-8 character is held, and
    :class:`_StreamCleaner` removes surrounding whitespace and everything from a stop string on.
    """

    def __init__(self, tokenizer: Any, stop_strings: Sequence[str]):
        self.tokenizer = tokenizer
        self.stop_strings = list(stop_strings)
        self.cleaner = _StreamCleaner(stop_strings)
        self.tokens: list[int] = []
        self.released = 0  # characters of the decoded text already handed to the cleaner
        self.parts: list[str] = []
        self.eos = False
        self.done = False

    @property
    def ended(self) -> bool:
        """The reply is over: EOS, or a stop string appeared."""
        return self.eos or self.cleaner.stopped

    def push(self, token: int, *, is_eos: bool) -> str:
        """Add one generated token; returns the text that became final (may be empty)."""
        if is_eos:
            self.eos = True
            return ""
        self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if any(s in text for s in self.stop_strings):
            return self._release(text, len(text))
        if text.endswith("\ufffd"):
            return ""
        return self._release(text, len(text) if text.endswith("\n") else text.rfind(" ") + 1)

    def finish(self) -> str:
        """No more tokens: returns the rest of the reply."""
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        released = self._release(text, len(text))
        rest = self.cleaner.finish()
        self.parts.append(rest)
        self.done = True
        return released + rest

    def result(self, prompt_tokens: int, settings: GenerationSettings) -> ChatResult:
        stopped = self.ended or len(self.tokens) < settings.max_new_tokens
        return ChatResult("".join(self.parts), prompt_tokens, len(self.tokens), "stop" if stopped else "length")

    def _release(self, text: str, cut: int) -> str:
        if cut <= self.released:
            return ""
        out = self.cleaner.push(text[self.released : cut])
        self.released = cut
        self.parts.append(out)
        return out


class _StreamCleaner:
    """Strips surrounding whitespace and anything from a stop string on, as :meth:`ChatModel.chat` does.

    Text that could be the start of a stop string, and trailing whitespace, are held back until
    more text shows what they are. Push pieces with :meth:`push`, then call :meth:`finish` once.
    """

    def __init__(self, stop_strings: Sequence[str]):
        self.stop_strings = list(stop_strings)
        self.pending = ""
        self.started = False
        self.stopped = False

    def push(self, piece: str) -> str:
        """Add text; returns what is certainly part of the clean reply (may be empty)."""
        if self.stopped:
            return ""
        pending = self.pending + piece
        if not self.started:
            pending = pending.lstrip()
            if not pending:
                self.pending = ""
                return ""
            self.started = True
        cut = min((pending.find(s) for s in self.stop_strings if s in pending), default=-1)
        if cut >= 0:
            self.pending = pending[:cut]
            self.stopped = True
            return ""
        hold_stop = max((k for s in self.stop_strings for k in range(1, len(s)) if pending.endswith(s[:k])), default=0)
        hold = max(hold_stop, len(pending) - len(pending.rstrip()))  # trailing space may be the end
        ready, self.pending = pending[: len(pending) - hold], pending[len(pending) - hold :]
        return ready

    def finish(self) -> str:
        """The rest of the reply, without trailing whitespace."""
        tail, self.pending = self.pending.rstrip(), ""
        return tail
