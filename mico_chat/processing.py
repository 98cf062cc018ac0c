"""``MiCoChatProcessor``: conversations with media -> ``input_ids``, ``attention_mask``, media tensors.

Two input styles are accepted:

- **Structured messages** (the API, the UI): ``content`` is a string or a list of parts
  ``{"type": "text", "text": ...}``, ``{"type": "video", "video": path_or_bytes_or_frames}``,
  ``{"type": "audio", "audio": ...}``, ``{"type": "image", "image": ...}``, ``depth``, ``normal``.
  Each media part becomes its placeholder token followed by a newline, in the order the parts
  come. A video part also brings its audio track when ``settings.video_audio`` is on and the file
  has one: as an ``<audio>`` item after it, or, when the video connector fuses a track itself (the
  Combiner, ``fuses_audio_track``), as the video item's own track, with no placeholder of its own
  (the batch then carries ``video_audio`` and ``video_spans``, see :meth:`MiCoChatProcessor.collate`).
  Placeholder strings typed inside text parts are neutralised, so a user cannot forge media slots.
- **Record style** (training data): ``content`` strings already hold placeholders such as
  ``<video>``, and the media are given separately, in order of appearance.

Every placeholder is then expanded to exactly the number of tokens its connector emits
(:meth:`MiCoChatConfig.num_media_tokens`). A placeholder without media, or media without a
placeholder, raises :class:`ProcessorError`; so does an item with more frames or clips than the
encoder or its connector takes, before anything is decoded (:meth:`check_media_limits`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, BatchFeature

from mico_chat import media as media_io
from mico_chat.connectors import connector_class
from mico_chat.modality import Modality, find_placeholders

from .configuration import MiCoChatConfig
from .preprocess import MediaSettings, VideoTrack, num_segments, preprocess, preprocess_video_track
from .templates import ChatTemplate, get_template

PROCESSOR_CONFIG = "processor_config.json"
IGNORE_INDEX = -100


class ProcessorError(ValueError):
    """A conversation that cannot be turned into model inputs (placeholders vs media, length)."""


@dataclass
class MediaItem:
    """One media input: its modality, its source and per-item options (e.g. ``start``/``end``).

    ``track``: a video item whose audio track its connector fuses with the frames (loaded with
    them over the same window, see :class:`~mico_chat.preprocess.VideoTrack`)."""

    modality: Modality
    source: Any
    options: dict[str, Any] = field(default_factory=dict)
    track: bool = False


@dataclass
class PreparedConversation:
    """Messages with string content (placeholders in place) and their media, in placeholder order."""

    messages: list[dict[str, str]]
    media: list[MediaItem]


def _media_part(part: Mapping[str, Any]) -> MediaItem | None:
    kind = part.get("type")
    if kind == "text":
        return None
    try:
        modality = Modality.parse(kind)
    except ValueError:
        raise ProcessorError(f"unknown content part type {kind!r}") from None
    if modality.value not in part:
        raise ProcessorError(f"{modality} part needs a {modality.value!r} field with the media, got keys {sorted(part)}")
    options = {k: v for k, v in part.items() if k not in ("type", modality.value)}
    return MediaItem(modality, part[modality.value], options)


class MiCoChatProcessor:
    """Turns conversations into model inputs for one :class:`MiCoChatConfig` and tokenizer.

    Args:
        tokenizer: the LLM's tokenizer, extended with the placeholder tokens.
        config: the model config (placeholder token ids, connector token counts, template name).
        settings: media sampling and normalisation.
    """

    def __init__(self, tokenizer: Any, config: MiCoChatConfig, settings: MediaSettings | None = None):
        self.tokenizer = tokenizer
        self.config = config
        self.settings = settings or MediaSettings()
        self.placeholders = {m: m.placeholder for m in config.modalities}
        for modality, token in self.placeholders.items():
            token_id = tokenizer.convert_tokens_to_ids(token)
            if config.media_token_ids.get(modality.value) != token_id:
                raise ProcessorError(
                    f"tokenizer id of {token} is {token_id} but the model config says "
                    f"{config.media_token_ids.get(modality.value)}; extend the tokenizer with mico_chat.builder"
                )
        self.token_to_modality = {config.media_token_ids[m.value]: m for m in config.modalities}
        video = config.connector_config(Modality.VIDEO) if Modality.VIDEO in config.modalities else None
        self.fuses_track = (
            video is not None and config.gated_xattn is None and connector_class(video.type).fuses_audio_track
        )  # the video connector takes a video's audio track itself, not as an <audio> item
        self.template: ChatTemplate = get_template(config.chat_template, tokenizer, list(self.placeholders.values()))
        if tokenizer.pad_token_id is None:
            raise ProcessorError("the tokenizer has no pad token; set tokenizer.pad_token (e.g. to its EOS token)")

    # ------------------------------------------------------------------ preparation
    def _neutralise(self, text: str) -> str:
        for token in self.placeholders.values():
            text = text.replace(token, token[:-1] + " >")
        return text

    def prepare(
        self, messages: Sequence[Mapping[str, Any]], media: Sequence[MediaItem | tuple] | None = None
    ) -> PreparedConversation:
        """Normalise one conversation: string contents with placeholders, media in placeholder order.

        Media come either as parts of the messages (``{"type": "video", "video": ...}``; the chat
        API's form) or as the separate ``media`` list, whose items the placeholders in string
        contents place (the record format). Without a separate list, text is text: a question
        about HTML that mentions ``<video>`` is not a media slot, in a string or in a text part.

        When the video connector fuses a video's audio track (:attr:`fuses_track`), a video file
        with a track gets ``track=True`` in either form; in the record form its text is unchanged
        (the track needs no placeholder).
        """
        out_messages: list[dict[str, str]] = []
        items: list[MediaItem] = []
        given = [m if isinstance(m, MediaItem) else MediaItem(Modality.parse(m[0]), *m[1:]) for m in (media or [])]
        if self.fuses_track:
            given = [
                replace(m, track=True) if m.modality is Modality.VIDEO and self._wants_track(m) else m for m in given
            ]
        for i, msg in enumerate(messages):
            content = msg.get("content")
            if isinstance(content, str):
                out_messages.append({"role": msg.get("role"), "content": content if given else self._neutralise(content)})
                continue
            if not isinstance(content, Sequence):
                raise ProcessorError(f"message {i} content must be a string or a list of parts")
            text = ""
            for part in content:
                item = _media_part(part)
                if item is None:
                    text += self._neutralise(str(part.get("text", "")))
                    continue
                if msg.get("role") != "user":
                    raise ProcessorError(f"message {i}: only user messages may carry media, not {msg.get('role')!r}")
                text += item.modality.placeholder + "\n"
                items.append(item)
                if item.modality is Modality.VIDEO and self._wants_track(item):
                    if self.fuses_track:
                        item.track = True
                        continue
                    text += Modality.AUDIO.placeholder + "\n"
                    items.append(MediaItem(Modality.AUDIO, item.source, dict(item.options)))
            out_messages.append({"role": msg.get("role"), "content": text})
        if given and items:
            raise ProcessorError("give media either inside structured message parts or as a separate list, not both")
        system = self.config.system_prompt
        if system is not None and out_messages and out_messages[0].get("role") != "system":
            out_messages.insert(0, {"role": "system", "content": system})
        prepared = PreparedConversation(out_messages, items or given)
        self._check_placeholders(prepared)
        return prepared

    def _wants_track(self, item: MediaItem) -> bool:
        if not self.settings.video_audio or Modality.AUDIO not in self.placeholders:
            return False
        if not isinstance(item.source, (str, os.PathLike, bytes)):
            return False  # decoded frames carry no audio
        return media_io.probe(item.source, limits=self.settings.limits).has_audio

    def _check_placeholders(self, prepared: PreparedConversation) -> None:
        found = [m for msg in prepared.messages for m in find_placeholders(msg["content"] or "", self.placeholders)]
        expected = [item.modality for item in prepared.media]
        if found != expected:
            raise ProcessorError(
                "placeholders in the text do not match the media: text has "
                f"[{', '.join(m.placeholder for m in found) or 'none'}], media are "
                f"[{', '.join(str(m) for m in expected) or 'none'}]"
            )

    # ------------------------------------------------------------------ tokens
    def _expand(self, ids: list[int], counts: list[int]) -> list[int]:
        """Repeat the k-th placeholder id ``counts[k]`` times."""
        out: list[int] = []
        k = 0
        for token in ids:
            if token in self.token_to_modality:
                out.extend([token] * counts[k])
                k += 1
            else:
                out.append(token)
        if k != len(counts):
            raise ProcessorError(f"tokenizer produced {k} placeholder tokens for {len(counts)} media items")
        return out

    def load_media(self, items: Sequence[MediaItem]) -> list[torch.Tensor]:
        """Decode and preprocess each item (shapes: see :mod:`mico_chat.preprocess`); a video with
        a ``track`` gives its frames here (:meth:`encode` keeps the track too)."""
        return [self._load(item)[0] for item in items]

    def _load(self, item: MediaItem) -> tuple[torch.Tensor, VideoTrack | None]:
        """One item's tensor, and its :class:`VideoTrack` for a video whose track is fused."""
        if item.track:
            track = preprocess_video_track(item.source, self.settings, self.config.encoder_config, **item.options)
            return track.frames, track
        return preprocess(item.modality, item.source, self.settings, self.config.encoder_config, **item.options), None

    def check_media_limits(self, items: Sequence[MediaItem]) -> None:
        """Raise :class:`ProcessorError` for an item the model cannot take, before any decoding: a
        video of more frames (``settings.num_frames``) or an audio of more clips than the encoder
        (``segment_limit``) or the modality's connector (e.g. a resampler's time table) allows."""
        for k, item in enumerate(items):
            segments = num_segments(item.modality, self.settings)
            try:
                self.config.num_media_tokens(item.modality, segments)
            except ValueError as err:
                raise ProcessorError(f"media item {k} ({item.modality}, {segments} segments from the media settings): {err}") from err

    def _token_counts(self, items: Sequence[MediaItem], tensors: Sequence[torch.Tensor]) -> list[int]:
        return [
            self.config.num_media_tokens(item.modality, tensor.shape[0]) for item, tensor in zip(items, tensors)
        ]

    def encode(
        self, prepared: PreparedConversation, *, add_generation_prompt: bool = True, with_labels: bool = False
    ) -> dict[str, Any]:
        """One conversation -> ``input_ids`` (list), optional ``labels``, and its media tensors.

        Labels keep only the tokens of assistant turns (per the template's segments); media and
        every other token are ``-100``. A token belongs to the segment holding its last character.
        """
        self.check_media_limits(prepared.media)
        loaded = [self._load(item) for item in prepared.media]
        tensors = [tensor for tensor, _ in loaded]
        counts = self._token_counts(prepared.media, tensors)
        out = self.encode_text(prepared, counts, add_generation_prompt=add_generation_prompt, with_labels=with_labels)
        out["media"] = list(zip(prepared.media, tensors))
        out["tracks"] = [track for _, track in loaded]  # per media item: its VideoTrack or None
        return out

    def encode_text(
        self,
        prepared: PreparedConversation,
        counts: Sequence[int],
        *,
        add_generation_prompt: bool = True,
        with_labels: bool = False,
    ) -> dict[str, list[int]]:
        """The token side of :meth:`encode` without decoding any media: ``input_ids`` (and
        ``labels``) with the k-th placeholder expanded to ``counts[k]`` tokens.

        Training uses it to measure and check samples before their media are loaded.
        """
        if with_labels:
            if add_generation_prompt:
                raise ProcessorError("labels are for complete conversations: use add_generation_prompt=False")
            segments = self.template.segments(prepared.messages)
            text = "".join(s.text for s in segments)
            enc = self.tokenizer(text, add_special_tokens=self.template.add_special_tokens, return_offsets_mapping=True)
            trainable = []
            pos = 0
            for seg in segments:
                if seg.trainable:
                    trainable.append((pos, pos + len(seg.text)))
                pos += len(seg.text)
            labels = []
            hits = [0] * len(trainable)
            for token, (start, end) in zip(enc["input_ids"], enc["offset_mapping"]):
                label = IGNORE_INDEX
                if end > start and token not in self.token_to_modality:
                    for k, (a, b) in enumerate(trainable):
                        if a < end <= b:
                            label = token
                            hits[k] += 1
                labels.append(label)
            empty = [k for k, n in enumerate(hits) if n == 0]
            if empty:
                raise ProcessorError(f"assistant segment(s) {empty} got no tokens to train on")
            ids = enc["input_ids"]
            expanded_ids = self._expand(ids, counts)
            expanded_labels = []
            k = 0
            for token, label in zip(ids, labels):
                if token in self.token_to_modality:
                    expanded_labels.extend([IGNORE_INDEX] * counts[k])
                    k += 1
                else:
                    expanded_labels.append(label)
            return {"input_ids": expanded_ids, "labels": expanded_labels}
        text = self.template.render(prepared.messages, add_generation_prompt=add_generation_prompt)
        ids = self.tokenizer(text, add_special_tokens=self.template.add_special_tokens)["input_ids"]
        return {"input_ids": self._expand(ids, counts)}

    def __call__(
        self,
        conversations: Sequence[Sequence[Mapping[str, Any]]] | Sequence[Mapping[str, Any]],
        *,
        media: Sequence[Sequence[MediaItem | tuple]] | None = None,
        add_generation_prompt: bool = True,
        with_labels: bool = False,
        padding_side: str = "left",
        max_length: int | None = None,
    ) -> BatchFeature:
        """Batch of conversations -> ``BatchFeature(input_ids (B, L), attention_mask (B, L),
        [labels (B, L)], media={modality: (N, S, ...)}, [video_audio, video_spans])`` (the last two
        when a video's track is fused, see :meth:`collate`).

        ``conversations`` may be one conversation (a list of messages) or a list of them. Padding
        is on the left for generation, on the right for training. ``max_length`` (default: the
        LLM's context size) is a hard limit: a longer prompt raises.
        """
        if conversations and isinstance(conversations[0], Mapping):
            conversations = [conversations]
            media = [media] if media is not None else None
        if media is not None and len(media) != len(conversations):
            raise ProcessorError(f"{len(media)} media lists for {len(conversations)} conversations")
        limit = max_length or self.config.context_length
        encoded = []
        for b, conv in enumerate(conversations):
            prepared = self.prepare(conv, media[b] if media is not None else None)
            item = self.encode(prepared, add_generation_prompt=add_generation_prompt, with_labels=with_labels)
            if limit is not None and len(item["input_ids"]) > limit:
                raise ProcessorError(f"conversation {b} is {len(item['input_ids'])} tokens; the limit is {limit}")
            encoded.append(item)
        return self.collate(encoded, padding_side=padding_side)

    def collate(self, encoded: Sequence[Mapping[str, Any]], *, padding_side: str = "left") -> BatchFeature:
        """Pad encoded conversations into one batch and stack media per modality.

        When some video item has a fused track (:attr:`MediaItem.track`), the batch also holds, for
        every video item in order, ``video_audio (N_video, K, F, M)`` (the track's fbank windows;
        zeros for a video without a track) and ``video_spans (N_video, 2)`` float64 seconds
        ``[video_s, audio_s]`` of each window (``[1, 0]`` without a track: frames over a unit span,
        no audio).
        """
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        width = max(len(e["input_ids"]) for e in encoded)
        pad = self.tokenizer.pad_token_id
        input_ids, attention, labels = [], [], []
        for e in encoded:
            n = len(e["input_ids"])
            fill = width - n
            left, right = (fill, 0) if padding_side == "left" else (0, fill)
            input_ids.append([pad] * left + list(e["input_ids"]) + [pad] * right)
            attention.append([0] * left + [1] * n + [0] * right)
            if "labels" in e:
                labels.append([IGNORE_INDEX] * left + list(e["labels"]) + [IGNORE_INDEX] * right)
        per_modality: dict[str, list[torch.Tensor]] = {}
        for e in encoded:
            for item, tensor in e["media"]:
                per_modality.setdefault(item.modality.value, []).append(tensor)
        media_batch = {}
        for modality, tensors in per_modality.items():
            shapes = {tuple(t.shape) for t in tensors}
            if len(shapes) != 1:
                raise ProcessorError(f"{modality} items in one batch must share a shape, got {sorted(shapes)}")
            media_batch[modality] = torch.stack(tensors)  # (N, S, ...)
        data: dict[str, Any] = {
            "input_ids": torch.tensor(input_ids, dtype=torch.long),
            "attention_mask": torch.tensor(attention, dtype=torch.long),
        }
        if labels:
            data["labels"] = torch.tensor(labels, dtype=torch.long)
        data["media"] = media_batch
        data.update(self._collate_tracks(encoded))
        return BatchFeature(data)

    def _collate_tracks(self, encoded: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """``video_audio`` and ``video_spans`` over the batch's video items (see :meth:`collate`)."""
        return stack_tracks([track for e in encoded for track in video_tracks(e)])

    # ------------------------------------------------------------------ decoding
    def decode(self, ids: Sequence[int] | torch.Tensor, **kwargs) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=kwargs.pop("skip_special_tokens", True), **kwargs)

    def batch_decode(self, ids, **kwargs) -> list[str]:
        return [self.decode(row, **kwargs) for row in ids]

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write the tokenizer files and ``processor_config.json`` (media settings) to ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(directory)
        payload = {"processor_class": type(self).__name__, "media_settings": self.settings.to_dict()}
        (directory / PROCESSOR_CONFIG).write_text(json.dumps(payload, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, config: MiCoChatConfig | None = None) -> MiCoChatProcessor:
        """Load what :meth:`save_pretrained` wrote (and the model config beside it when not given)."""
        directory = Path(directory)
        path = directory / PROCESSOR_CONFIG
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no processor config (is {directory} a MiCo-Chat model folder?)")
        try:
            payload = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
        config = config or MiCoChatConfig.from_pretrained(directory)
        tokenizer = AutoTokenizer.from_pretrained(directory)
        return cls(tokenizer, config, MediaSettings.from_dict(payload.get("media_settings", {})))


def video_tracks(encoded: Mapping[str, Any]) -> list[VideoTrack | None]:
    """The fused track (or ``None``) of each video item of one :meth:`MiCoChatProcessor.encode` output."""
    tracks = encoded.get("tracks") or [None] * len(encoded["media"])
    return [track for (item, _), track in zip(encoded["media"], tracks) if item.modality is Modality.VIDEO]


def stack_tracks(tracks: Sequence[VideoTrack | None]) -> dict[str, torch.Tensor]:
    """A batch's video items' tracks -> ``{"video_audio": (N_video, K, F, M), "video_spans":
    (N_video, 2)}`` (zeros and ``[1, 0]`` for a video without one), or ``{}`` when none has one."""
    present = [t for t in tracks if t is not None]
    if not present:
        return {}
    shapes = {tuple(t.audio.shape) for t in present}
    if len(shapes) != 1:
        raise ProcessorError(f"video audio tracks in one batch must share a shape, got {sorted(shapes)}")
    silent = torch.zeros_like(present[0].audio)
    return {
        "video_audio": torch.stack([silent if t is None else t.audio for t in tracks]),  # (N_video, K, F, M)
        "video_spans": torch.tensor(
            [[1.0, 0.0] if t is None else [t.video_s, t.audio_s] for t in tracks], dtype=torch.float64
        ),  # (N_video, 2)
    }
