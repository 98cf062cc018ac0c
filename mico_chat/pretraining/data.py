"""Pretraining and retrieval data: records -> cached media tensors -> seeded batches.

- :func:`build_media_table` reads a record file once, preprocesses the media of every usable
  record with the project's preprocessors (:mod:`mico_chat.preprocess`) and caches the tensors
  (float16, safetensors) keyed by the file, the media settings and the encoder's input shape, so
  training never decodes video in the loop and a second run starts at once. Records that share
  the same media become one row with several captions (retrieval benchmarks have 1-20 per item).
- :class:`PretrainingMixture` draws step ``t``'s batch as a pure function of ``(seed, t)``: one
  dataset by its ratio (VAST/MiCo sample one corpus per step), then the batch's rows; with
  ``cross_sample`` each modality's rows are drawn independently (MiCo eq. 3). Resuming at step
  ``t`` therefore continues exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mico_chat.encoders import MiCoEncoderConfig, PretrainingBatch, join_captions, parse_group
from mico_chat.instruct_data.records import BadRecord, Record, read_records
from mico_chat.media import MediaError
from mico_chat.modality import Modality
from mico_chat.preprocess import CLIP_MEAN, CLIP_STD, MediaSettings, grayscale, preprocess

from .config import DatasetSpec, PretrainConfigError

CACHE_VERSION = 1


class WordSwapper:
    """Hard-negative captions by swapping one word (NegCLIP's swaps, on the world's own vocabulary).

    ``groups`` are sets of interchangeable words or phrases; :meth:`swap` picks, at random, one group
    that occurs in the caption (whole words, case ignored), one of its occurrences, and replaces it
    with another member of the group, keeping an initial capital. ``"A large blue cross moves to
    the left."`` with ``[[circle, square, triangle, cross], ["to the left", "to the right"]]``
    becomes e.g. ``"A large blue square moves to the left."``: a caption wrong in exactly one
    factor, which random in-batch negatives (other colours, other sounds) almost never are.
    """

    def __init__(self, groups: Sequence[Sequence[str]]):
        self.groups = [tuple(w.strip() for w in g) for g in groups]
        # Longest first, so "to the left" wins over a shorter member it contains.
        alternatives = ["|".join(re.escape(w) for w in sorted(g, key=len, reverse=True)) for g in self.groups]
        self.patterns = [re.compile(rf"\b({a})\b", re.IGNORECASE) for a in alternatives]

    def swap(self, text: str, rng: np.random.Generator) -> str | None:
        """``text`` with one swapped word, or ``None`` when no group occurs in it."""
        found = [(g, list(p.finditer(text))) for g, p in zip(self.groups, self.patterns)]
        found = [(g, hits) for g, hits in found if hits]
        if not found:
            return None
        group, hits = found[int(rng.integers(len(found)))]
        hit = hits[int(rng.integers(len(hits)))]
        old = hit.group(0)
        others = [w for w in group if w.lower() != old.lower()]
        new = others[int(rng.integers(len(others)))]
        if old[:1].isupper():
            new = new[:1].upper() + new[1:]
        return text[: hit.start()] + new + text[hit.end() :]


class WordExchanger:
    """Exchanges the two members of each pair wherever either occurs (whole words, case ignored,
    an initial capital kept), in one pass: with ``[[to the left, to the right], [upward, downward]]``
    ``"A cross moves to the left."`` becomes ``"A cross moves to the right."``."""

    def __init__(self, pairs: Sequence[Sequence[str]]):
        self.partner: dict[str, str] = {}
        for a, b in pairs:
            self.partner[a.strip().lower()], self.partner[b.strip().lower()] = b.strip(), a.strip()
        alternatives = "|".join(re.escape(w) for w in sorted(self.partner, key=len, reverse=True))
        self.pattern = re.compile(rf"\b({alternatives})\b", re.IGNORECASE)

    def _replace(self, hit: re.Match) -> str:
        old, new = hit.group(0), self.partner[hit.group(0).lower()]
        return new[:1].upper() + new[1:] if old[:1].isupper() else new

    def __call__(self, text: str) -> str:
        return self.pattern.sub(self._replace, text)


class WordDropper:
    """Removes whole words (case ignored) from captions and tidies the spaces and the initial
    capital: ``"A large blue cross moves left."`` without ``[blue]`` is ``"A large cross moves left."``."""

    def __init__(self, words: Sequence[str]):
        alternatives = "|".join(re.escape(w.strip()) for w in sorted(words, key=len, reverse=True))
        self.pattern = re.compile(rf"\b({alternatives})\b\s*", re.IGNORECASE)

    def __call__(self, text: str) -> str:
        out = re.sub(r"\s+([,.;:!?])", r"\1", re.sub(r"\s{2,}", " ", self.pattern.sub("", text))).strip()
        return out[:1].upper() + out[1:] if text[:1].isupper() else out


CHANNEL_ORDERS: tuple[tuple[int, int, int], ...] = ((0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))
"""The five RGB channel orders other than the original (``channel_shuffle`` draws one per sample)."""


def shuffle_channels(
    values: torch.Tensor,
    orders: Sequence[Sequence[int]],
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """Normalised frames or images ``(N, ..., 3, H, W)`` with sample ``i``'s RGB channels in the
    order ``orders[i]``, permuted in pixel space (un-normalised with ``mean``/``std`` first, so a
    pixel's value moves with its channel and the result is normalised as the input was)."""
    if len(orders) != values.shape[0]:
        raise ValueError(f"{len(orders)} channel orders for {values.shape[0]} samples")
    shape = (3, 1, 1)
    m = torch.tensor(mean, dtype=values.dtype).view(shape)
    s = torch.tensor(std, dtype=values.dtype).view(shape)
    pixels = values * s + m
    index = torch.as_tensor(orders, dtype=torch.long)  # (N, 3)
    index = index.view(index.shape[0], *([1] * (values.dim() - 4)), 3, 1, 1).expand_as(pixels)
    return (torch.gather(pixels, -3, index) - m) / s


@dataclass
class MediaTable:
    """Preprocessed media of one record file.

    Attributes:
        keys: one identity per row (the media paths and time windows it was read from).
        ids: the record ids of each row (several when records share media).
        captions: per row, the caption dicts of its records (``{"vision": ..., "omni": ...}``).
        tensors: ``{modality name: (rows, ...) float16}`` in the encoder's input shapes.
        skipped: ``(where, why)`` for every record that could not be used.
    """

    keys: list[str]
    ids: list[list[str]]
    captions: list[list[dict[str, str]]]
    tensors: dict[str, torch.Tensor]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)

    def rows_with(self, kind: str) -> np.ndarray:
        """Rows whose first record has a caption of ``kind``."""
        return np.array([i for i, caps in enumerate(self.captions) if caps[0].get(kind)], dtype=np.int64)


def _cache_key(
    path: Path,
    modalities: Sequence[Modality],
    settings: MediaSettings,
    encoder: MiCoEncoderConfig,
    limit: int | None,
    media_root: str | None,
) -> str:
    stat = path.stat()
    shape = {k: getattr(encoder, k) for k in ("image_size", "audio_num_mel_bins", "audio_target_length")}
    blob = json.dumps(
        {
            "version": CACHE_VERSION,
            "file": str(path.resolve()),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "modalities": [m.value for m in modalities],
            "settings": settings.to_dict(),
            "shape": shape,
            "limit": limit,
            "media_root": media_root,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_media_table(
    records: str | os.PathLike,
    modalities: Sequence[str | Modality],
    settings: MediaSettings,
    encoder: MiCoEncoderConfig,
    *,
    media_root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    strict: bool = False,
    progress: bool = True,
) -> MediaTable:
    """Preprocess the ``modalities`` of every usable record of ``records`` (see module docstring).

    A record is usable when it parses and has a media item of each modality that loads. Others
    are skipped and listed in ``skipped`` (``strict=True`` raises at the first one instead).
    """
    path = Path(records)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such records file")
    mods = tuple(parse_group(modalities))
    root = Path(media_root) if media_root is not None else path.parent
    cache_file = None
    if cache_dir is not None:
        key = _cache_key(path, mods, settings, encoder, limit, None if media_root is None else str(media_root))
        cache_file = Path(cache_dir) / f"{path.stem}-{'+'.join(m.value for m in mods)}-{key}.safetensors"
        if cache_file.is_file():
            return _read_table(cache_file)
    builder = _TableBuilder(path, root, mods, settings, encoder, limit, strict)
    # One thread: these tensors are small, and on a shared CPU extra OpenMP threads spin-wait for
    # cores other processes hold (measured here: 16 ms per clip with one thread, 270 ms with two).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for item in tqdm(read_records(path), desc=f"reading {path.name}", disable=not progress, unit="rec"):
            builder.add(item)
    finally:
        torch.set_num_threads(threads)
    table = builder.build()
    if cache_file is not None:
        _write_table(table, cache_file)
    return table


class _TableBuilder:
    """Accumulates the rows of a :class:`MediaTable` record by record."""

    def __init__(self, path: Path, root: Path, mods: tuple[Modality, ...], settings: MediaSettings,
                 encoder: MiCoEncoderConfig, limit: int | None, strict: bool):  # fmt: skip
        self.path, self.root, self.mods, self.settings, self.encoder = path, root, mods, settings, encoder
        self.limit, self.strict = limit, strict
        self.keys: list[str] = []
        self.ids: list[list[str]] = []
        self.captions: list[list[dict[str, str]]] = []
        self.columns: dict[str, list[torch.Tensor]] = {m.value: [] for m in mods}
        self.skipped: list[tuple[str, str]] = []
        self.row_of: dict[str, int] = {}

    def skip(self, where: str, why: str) -> None:
        if self.strict:
            raise PretrainConfigError(f"{where}: {why}")
        self.skipped.append((where, why))

    def add(self, item: Record | BadRecord) -> None:
        if isinstance(item, BadRecord):
            self.skip(f"{item.source}:{item.line}", item.reason)
            return
        where = f"{self.path}: record {item.id}"
        refs = {m: next((r for r in item.media if r.modality == m), None) for m in self.mods}
        absent = [m.value for m, r in refs.items() if r is None]
        if absent:
            self.skip(where, f"has no {', '.join(absent)} media")
            return
        key = json.dumps([[m.value, str(r.resolve(self.root)), r.start, r.end] for m, r in refs.items()])
        if key in self.row_of:  # the same media with another caption
            self.ids[self.row_of[key]].append(item.id)
            self.captions[self.row_of[key]].append(dict(item.captions))
            return
        if self.limit is not None and len(self.keys) >= self.limit:
            return
        try:
            values = {
                m: preprocess(m, r.resolve(self.root), self.settings, self.encoder, **r.options())
                for m, r in refs.items()
            }
        except (MediaError, FileNotFoundError, ValueError) as err:
            self.skip(where, str(err))
            return
        for m, v in values.items():
            first = self.columns[m.value][0] if self.columns[m.value] else None
            if first is not None and tuple(v.shape) != tuple(first.shape):
                self.skip(where, f"{m} shape {tuple(v.shape)} differs from the first record's {tuple(first.shape)}")
                return
        self.row_of[key] = len(self.keys)
        self.keys.append(key)
        self.ids.append([item.id])
        self.captions.append([dict(item.captions)])
        for m, v in values.items():
            self.columns[m.value].append(v.to(torch.float16))

    def build(self) -> MediaTable:
        if not self.keys:
            names = ", ".join(m.value for m in self.mods)
            raise PretrainConfigError(f"{self.path}: no usable record with {names} media ({len(self.skipped)} skipped)")
        tensors = {m: torch.stack(v) for m, v in self.columns.items()}
        return MediaTable(self.keys, self.ids, self.captions, tensors, self.skipped)


def _write_table(table: MediaTable, path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"keys": table.keys, "ids": table.ids, "captions": table.captions, "skipped": table.skipped}
    # One temporary name per process: runs sharing a cache folder may build the same table at once,
    # and each must rename a whole file of its own into place.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    save_file({k: v.contiguous() for k, v in table.tensors.items()}, str(tmp), metadata={"table": json.dumps(meta)})
    tmp.replace(path)


def _read_table(path: Path) -> MediaTable:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as handle:
        meta = json.loads(handle.metadata()["table"])
    skipped = [tuple(x) for x in meta["skipped"]]
    return MediaTable(meta["keys"], meta["ids"], meta["captions"], load_file(str(path)), skipped)


@dataclass(frozen=True)
class _Source:
    spec: DatasetSpec
    table: MediaTable
    group: tuple[Modality, ...]
    rows: tuple[np.ndarray, ...]  # usable rows per modality (one array when not cross-sampled)
    dropper: WordDropper | None = None
    exchanger: WordExchanger | None = None


class PretrainingMixture:
    """Seeded batches from several datasets (see the module docstring).

    Args:
        sources: ``(spec, table)`` per dataset, in config order (the order gives the
            sampling-context ids).
        tokenizer: the text tower's tokenizer.
        batch_size: samples per batch.
        max_text_length: captions are truncated to this many tokens.
        seed: the run's data seed.
        sampling_contexts: attach each dataset's index as the sampling context (MiCo eq. 3).
        word_swaps: groups for :class:`WordSwapper`; when given, each batch carries one swapped
            copy of every caption (``PretrainingBatch.negative_*``) for the contrastive loss.
        image_mean, image_std: the RGB normalisation the tables were made with (``channel_shuffle``
            permutes channels in pixel space).
    """

    def __init__(
        self,
        sources: Sequence[tuple[DatasetSpec, MediaTable]],
        tokenizer: Any,
        *,
        batch_size: int,
        max_text_length: int,
        seed: int,
        sampling_contexts: bool,
        word_swaps: Sequence[Sequence[str]] = (),
        image_mean: Sequence[float] = CLIP_MEAN,
        image_std: Sequence[float] = CLIP_STD,
    ):
        self.tokenizer = tokenizer
        self.image_mean, self.image_std = tuple(image_mean), tuple(image_std)
        self.swapper = WordSwapper(word_swaps) if word_swaps else None
        self.batch_size = batch_size
        self.max_text_length = max_text_length
        self.seed = seed
        self.sampling_contexts = sampling_contexts
        self.sources: list[_Source] = []
        for spec, table in sources:
            group = parse_group(spec.group)
            if spec.cross_sample:
                rows = tuple(table.rows_with(kind) for kind in spec.captions)
            else:
                usable = set(range(len(table)))
                for kind in spec.captions:
                    usable &= set(table.rows_with(kind).tolist())
                rows = (np.array(sorted(usable), dtype=np.int64),)
            for r in rows:
                if len(r) < batch_size:
                    raise PretrainConfigError(
                        f"dataset {spec.name}: {len(r)} records have captions {spec.captions}; a batch needs {batch_size}"
                    )
            self.sources.append(
                _Source(
                    spec, table, group, rows,
                    WordDropper(spec.drop_words) if spec.drop_words else None,
                    WordExchanger(spec.reverse_words) if spec.reverse_words else None,
                )
            )  # fmt: skip
        ratios = np.array([s.spec.ratio for s in self.sources], dtype=np.float64)
        self.probabilities = ratios / ratios.sum()

    @property
    def names(self) -> list[str]:
        return [s.spec.name for s in self.sources]

    def batch(self, step: int) -> tuple[int, PretrainingBatch]:
        """``(dataset index, batch)`` of step ``step`` (the same for the same seed and step)."""
        rng = np.random.default_rng([self.seed, step])
        index = int(rng.choice(len(self.sources), p=self.probabilities))
        src = self.sources[index]
        b = self.batch_size
        if src.spec.cross_sample:
            picks = [rng.choice(rows, size=b, replace=False) for rows in src.rows]
            media = {m.value: src.table.tensors[m.value][torch.as_tensor(p)].float() for m, p in zip(src.group, picks)}
            texts = [
                join_captions([src.table.captions[p[i]][0][kind] for p, kind in zip(picks, src.spec.captions)])
                for i in range(b)
            ]
        else:
            pick = rng.choice(src.rows[0], size=b, replace=False)
            rows = torch.as_tensor(pick)
            media = {m.value: src.table.tensors[m.value][rows].float() for m in src.group}
            texts = [join_captions([src.table.captions[r][0][kind] for kind in src.spec.captions]) for r in pick]
        if src.spec.reverse_time:
            backwards = torch.as_tensor(rng.random(b) < src.spec.reverse_time)
            video = media["video"]  # (N, T, 3, H, W)
            media["video"] = torch.where(backwards.view(-1, 1, 1, 1, 1), video.flip(1), video)
            if src.exchanger is not None:
                texts = [src.exchanger(t) if back else t for t, back in zip(texts, backwards.tolist())]
        if src.spec.grayscale:
            media = {m: grayscale(v) if Modality.parse(m).input_kind == "rgb" else v for m, v in media.items()}
        if src.spec.channel_shuffle:
            orders = [CHANNEL_ORDERS[int(i)] for i in rng.integers(len(CHANNEL_ORDERS), size=b)]
            media = {
                m: shuffle_channels(v, orders, self.image_mean, self.image_std) if Modality.parse(m).input_kind == "rgb" else v
                for m, v in media.items()
            }  # fmt: skip
        if src.dropper is not None:
            texts = [src.dropper(t) for t in texts]
        tok = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_text_length, return_tensors="pt")
        distinct: dict[str, int] = {}
        caption_ids = torch.tensor([distinct.setdefault(t, len(distinct)) for t in texts])
        negatives: dict[str, torch.Tensor] = {}
        if self.swapper is not None:
            swapped = [self.swapper.swap(t, rng) for t in texts]
            neg = self.tokenizer(
                [t if s is None else s for t, s in zip(texts, swapped)],
                padding=True, truncation=True, max_length=self.max_text_length, return_tensors="pt",
            )  # fmt: skip
            negatives = {
                "negative_input_ids": neg["input_ids"],
                "negative_attention_mask": neg["attention_mask"],
                "negative_valid": torch.tensor([s is not None for s in swapped]),
            }
        batch = PretrainingBatch(
            group=src.group,
            media=media,
            input_ids=tok["input_ids"],
            attention_mask=tok["attention_mask"],
            sampling_context=torch.full((b,), index, dtype=torch.long) if self.sampling_contexts else None,
            caption_ids=caption_ids,
            objectives=tuple(src.spec.objectives),
            **negatives,
        )
        return index, batch
