"""Batches for training: padding, or packing without attention across samples.

Both collators take the dicts of :class:`~mico_chat.training.data.SampleDataset` and return the
model's keyword arguments plus ``meta`` (popped by the trainer before the forward):

- ``input_ids``, ``labels``: ``(B, L)``; labels are ``-100`` on padding, media, and every token
  outside assistant turns.
- padding: ``attention_mask (B, L)``; packing: ``position_ids (R, L)`` restarting at 0 for each
  sample and no attention mask, which transformers turns into a block-diagonal causal mask (SDPA,
  eager) or variable-length flash attention, so no token attends to another sample.
- ``media``: ``{modality: (N, S, ...)}`` or ``encoder_features``: ``{modality: (N, S*(1+P), D)}``,
  items in the order their placeholders appear in the batch (row-major); with a video connector
  that fuses audio tracks, ``video_audio`` and ``video_spans`` over the video items in that order
  (:func:`mico_chat.processing.stack_tracks`).
- ``use_cache=False``: a KV cache is useless in training, and transformers only honours packed
  position ids when no cache is built.
- ``logits_to_keep="labels"``: the model runs its LM head only where a trained token follows
  (same loss; ``logits`` then hold those positions only).
- ``meta``: ``{"num_tokens": real tokens, "num_labels": trained tokens, "ids": record ids}``.

Packing gives the same loss as padding on the same samples: each sample's first label is set to
``-100`` in a packed row (in a padded row it is never predicted either), so both average the same
tokens' losses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mico_chat.processing import IGNORE_INDEX, ProcessorError, stack_tracks

from .errors import DataError


def _stack(samples: Sequence[Mapping[str, Any]], key: str) -> dict[str, torch.Tensor]:
    per_modality: dict[str, list[torch.Tensor]] = {}
    for sample in samples:
        for modality, tensor in sample.get(key) or []:
            per_modality.setdefault(modality, []).append(tensor)
    out = {}
    for modality, tensors in per_modality.items():
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) != 1:
            ids = [s.get("id") for s in samples]
            raise DataError(f"{modality} items of one batch differ in shape {sorted(shapes)} (records {ids})")
        out[modality] = torch.stack(tensors)
    return out


def _common(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    # The LM head runs only where a trained token follows (same loss, see MiCoChatForConditionalGeneration).
    out: dict[str, Any] = {"use_cache": False, "logits_to_keep": "labels"}
    media = _stack(samples, "media")
    features = _stack(samples, "features")
    if media:
        out["media"] = media
    if features:
        out["encoder_features"] = features
    try:
        out.update(stack_tracks([track for sample in samples for track in sample.get("tracks") or []]))
    except ProcessorError as err:
        raise DataError(f"{err} (records {[s.get('id') for s in samples]})") from None
    out["meta"] = {
        "num_tokens": sum(len(s["input_ids"]) for s in samples),
        "num_labels": sum(sum(1 for x in s["labels"][1:] if x != IGNORE_INDEX) for s in samples),
        "ids": [s.get("id") for s in samples],
    }
    return out


@dataclass
class PaddingCollator:
    """Right-pads the samples of a batch to the longest one."""

    pad_token_id: int

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not samples:
            raise DataError("empty batch")
        width = max(len(s["input_ids"]) for s in samples)
        input_ids = torch.full((len(samples), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(samples), width), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(samples), width), dtype=torch.long)
        for row, sample in enumerate(samples):
            n = len(sample["input_ids"])
            input_ids[row, :n] = torch.as_tensor(sample["input_ids"])
            labels[row, :n] = torch.as_tensor(sample["labels"])
            attention[row, :n] = 1
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention, **_common(samples)}


def pack_rows(lengths: Sequence[int], capacity: int | None) -> list[list[int]]:
    """Assign samples to rows: all in one row without ``capacity``, else first-fit decreasing
    (a sample longer than ``capacity`` gets a row of its own). Returns sample indices per row."""
    if capacity is None:
        return [list(range(len(lengths)))]
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


@dataclass
class PackingCollator:
    """Concatenates samples into rows of at most ``pack_length`` tokens (one row when ``None``)."""

    pad_token_id: int
    pack_length: int | None = None

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not samples:
            raise DataError("empty batch")
        rows = pack_rows([len(s["input_ids"]) for s in samples], self.pack_length)
        width = max(sum(len(samples[i]["input_ids"]) for i in row) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            pos = 0
            for i in row:
                n = len(samples[i]["input_ids"])
                input_ids[r, pos : pos + n] = torch.as_tensor(samples[i]["input_ids"])
                labels[r, pos : pos + n] = torch.as_tensor(samples[i]["labels"])
                labels[r, pos] = IGNORE_INDEX  # never predicted from the previous sample's last token
                position_ids[r, pos : pos + n] = torch.arange(n)
                pos += n
            position_ids[r, pos:] = torch.arange(width - pos)  # padding: a sequence of its own, no labels
        ordered = [samples[i] for row in rows for i in row]  # placeholders appear in this order
        return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, **_common(ordered)}
