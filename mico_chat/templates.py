"""Chat templates: one registry, chosen by the model config's ``chat_template`` field.

A template turns a conversation (messages whose content is already text, with media placeholder
tokens in place) into the prompt string the LLM reads, and into *segments*: the same string cut
at message boundaries, each marked trainable or not, so training can mask labels per message
(only assistant turns train). Templates never guess from model names.

Registered templates:

- ``llm``: the LLM's own Jinja chat template from its tokenizer (SmolLM2, Vicuna folders that ship
  one, ...).
- ``vicuna_v1``: Vicuna v1.1 / LLaVA-1.5's conversation format.
- ``plain``: stage-1 alignment: media placeholders followed by the caption, nothing else.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

ROLES = ("system", "user", "assistant")


class TemplateError(ValueError):
    """A conversation the template cannot render, or a template that renders inconsistently."""


@dataclass(frozen=True)
class Segment:
    """A piece of the rendered prompt; ``trainable`` pieces are the assistant's own words."""

    text: str
    trainable: bool


def check_messages(messages: Sequence[Mapping[str, Any]]) -> None:
    """Raise :class:`TemplateError` unless every message has a known role and string content."""
    if not messages:
        raise TemplateError("conversation is empty")
    for i, msg in enumerate(messages):
        role = msg.get("role")
        if role not in ROLES:
            raise TemplateError(f"message {i} has role {role!r}; expected one of {ROLES}")
        if not isinstance(msg.get("content"), str):
            raise TemplateError(
                f"message {i} content must be a string once media are replaced by placeholders, "
                f"got {type(msg.get('content')).__name__}"
            )
        if role == "system" and i != 0:
            raise TemplateError(f"a system message may only come first (message {i})")


class ChatTemplate(ABC):
    """Renders conversations for one prompt format."""

    name: str

    @abstractmethod
    def render(self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool) -> str:
        """The prompt string; with ``add_generation_prompt`` it ends where the assistant's reply starts."""

    @abstractmethod
    def segments(self, messages: Sequence[Mapping[str, Any]]) -> list[Segment]:
        """The rendered conversation (no generation prompt) cut into trainable and fixed pieces."""

    def stop_strings(self) -> list[str]:
        """Strings that end an assistant turn besides the tokenizer's EOS token."""
        return []

    #: Whether the tokenizer should add its own special tokens (BOS) around the rendered text;
    #: templates that write every special token themselves (the LLM's own) set this False.
    add_special_tokens: bool = True


class VicunaV1Template(ChatTemplate):
    """``SYSTEM USER: ... ASSISTANT: ...</s>USER: ... ASSISTANT:`` (Vicuna v1.1, LLaVA-1.5)."""

    name = "vicuna_v1"
    default_system = (
        "A chat between a curious user and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the user's questions."
    )

    def __init__(self, eos_token: str = "</s>"):
        self.eos_token = eos_token

    def _pieces(self, messages: Sequence[Mapping[str, Any]]) -> list[Segment]:
        check_messages(messages)
        system = messages[0]["content"] if messages[0]["role"] == "system" else self.default_system
        turns = messages[1:] if messages[0]["role"] == "system" else messages
        pieces = [Segment(system + " ", False)]
        for msg in turns:
            if msg["role"] == "user":
                pieces.append(Segment(f"USER: {msg['content']} ", False))
            else:
                # The generation prompt ends at "ASSISTANT:", so the reply (and its loss) starts with the space.
                pieces.append(Segment("ASSISTANT:", False))
                pieces.append(Segment(" " + msg["content"] + self.eos_token, True))
        return pieces

    def render(self, messages, *, add_generation_prompt: bool) -> str:
        text = "".join(p.text for p in self._pieces(messages))
        return text + "ASSISTANT:" if add_generation_prompt else text

    def segments(self, messages) -> list[Segment]:
        return self._pieces(messages)

    def stop_strings(self) -> list[str]:
        return [self.eos_token, "USER:"]


class PlainTemplate(ChatTemplate):
    """Stage-1 alignment format (LLaVA's ``plain``): the user's media placeholders, then the caption.

    Only placeholder tokens of user turns are kept (their text is dropped); the assistant turn is
    the caption followed by a newline.
    """

    name = "plain"

    def __init__(self, placeholders: Sequence[str] = ()):
        self.placeholders = tuple(placeholders)

    def _media_only(self, text: str) -> str:
        found = []
        i = 0
        while i < len(text):
            for ph in self.placeholders:
                if text.startswith(ph, i):
                    found.append(ph)
                    i += len(ph)
                    break
            else:
                i += 1
        return "".join(found)

    def _pieces(self, messages) -> list[Segment]:
        check_messages(messages)
        pieces = []
        for msg in messages:
            if msg["role"] == "user":
                pieces.append(Segment(self._media_only(msg["content"]), False))
            elif msg["role"] == "assistant":
                pieces.append(Segment(msg["content"] + "\n", True))
        return pieces

    def render(self, messages, *, add_generation_prompt: bool) -> str:
        return "".join(p.text for p in self._pieces(messages))

    def segments(self, messages) -> list[Segment]:
        return self._pieces(messages)

    def stop_strings(self) -> list[str]:
        return ["\n"]


class LLMTemplate(ChatTemplate):
    """The LLM's own Jinja chat template, as its tokenizer ships it.

    Segments come from rendering growing prefixes of the conversation: each prefix must render
    to a prefix of the whole, else the template cannot be masked per message and
    :class:`TemplateError` is raised (never a silent fallback).
    """

    name = "llm"
    add_special_tokens = False

    def __init__(self, tokenizer: Any):
        if not getattr(tokenizer, "chat_template", None):
            raise TemplateError(
                "chat_template 'llm' needs a tokenizer that ships a chat template; this one has none "
                "(choose 'vicuna_v1' or 'plain' in the model config)"
            )
        self.tokenizer = tokenizer

    def render(self, messages, *, add_generation_prompt: bool) -> str:
        check_messages(messages)
        return self.tokenizer.apply_chat_template(
            [dict(role=m["role"], content=m["content"]) for m in messages],
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )

    def segments(self, messages) -> list[Segment]:
        check_messages(messages)
        full = self.render(messages, add_generation_prompt=False)
        pieces: list[Segment] = []
        done = 0  # characters of `full` already assigned to a segment
        for i, msg in enumerate(messages):
            if msg["role"] != "assistant":
                continue
            head = self.render(messages[:i], add_generation_prompt=True) if i else ""
            upto = self.render(messages[: i + 1], add_generation_prompt=False)
            if not full.startswith(head) or not full.startswith(upto) or len(head) < done:
                raise TemplateError(
                    f"the LLM's chat template renders message {i} differently depending on what follows; "
                    "labels cannot be masked per message with it"
                )
            if msg["content"] not in upto[len(head) :]:
                raise TemplateError(f"the LLM's chat template rewrites assistant message {i}; cannot mask it")
            pieces.append(Segment(full[done : len(head)], False))
            pieces.append(Segment(full[len(head) : len(upto)], True))
            done = len(upto)
        pieces.append(Segment(full[done:], False))
        return [p for p in pieces if p.text]

    def stop_strings(self) -> list[str]:
        return []


_TEMPLATES: dict[str, Callable[..., ChatTemplate]] = {}
TEMPLATES: Mapping[str, Callable[..., ChatTemplate]] = MappingProxyType(_TEMPLATES)


def register_template(name: str, factory: Callable[..., ChatTemplate]) -> None:
    """Make ``factory(tokenizer=..., placeholders=...)`` available under ``name``."""
    if name in _TEMPLATES:
        raise ValueError(f"chat template {name!r} is already registered")
    _TEMPLATES[name] = factory


register_template("llm", lambda tokenizer, placeholders=(): LLMTemplate(tokenizer))
register_template(
    "vicuna_v1", lambda tokenizer, placeholders=(): VicunaV1Template(getattr(tokenizer, "eos_token", None) or "</s>")
)
register_template("plain", lambda tokenizer, placeholders=(): PlainTemplate(placeholders))


def get_template(name: str, tokenizer: Any, placeholders: Sequence[str] = ()) -> ChatTemplate:
    """The template registered as ``name``, bound to ``tokenizer``."""
    if name not in _TEMPLATES:
        raise TemplateError(f"unknown chat template {name!r}; registered: {', '.join(sorted(_TEMPLATES))}")
    return _TEMPLATES[name](tokenizer=tokenizer, placeholders=placeholders)
