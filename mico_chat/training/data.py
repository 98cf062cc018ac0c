"""Records -> training samples: the scan, the dataset, the encoder-feature cache and the sampler.

Before training, :func:`scan_records` reads every record once without decoding any media: it
turns the record into a conversation (a caption pair becomes ``user: placeholders [+
instruction]`` / ``assistant: caption``), tokenizes it with the model's template, builds the
per-message loss mask and checks it against the assistant messages, measures the sample's length
(media tokens included) and, optionally, reads each media file's header. Records that fail are
skipped and counted (:class:`ScanReport`), or stop the run in strict mode. A loss mask that does
not cover the assistant's words raises :class:`LabelMaskError` in every mode.

:class:`SampleDataset` then decodes the media of one sample at a time; its ``lengths`` feed the
length-grouped sampler and packing.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler
from tqdm.auto import tqdm

from mico_chat import media as media_io
from mico_chat.instruct_data.records import BadRecord, Record, read_records
from mico_chat.modality import Modality
from mico_chat.modeling import encode_views
from mico_chat.processing import (
    IGNORE_INDEX,
    MediaItem,
    MiCoChatProcessor,
    PreparedConversation,
    ProcessorError,
    video_tracks,
)
from mico_chat.templates import TemplateError

from .errors import DataError, LabelMaskError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleSpec:
    """One scanned training sample: what to load, and how long it is in tokens."""

    record_id: str
    source: str
    messages: tuple[Mapping[str, str], ...]
    media: tuple[MediaItem, ...]
    length: int
    num_labels: int


@dataclass
class ScanReport:
    """What the scan kept and what it skipped (with reasons)."""

    samples: list[SampleSpec] = field(default_factory=list)
    skipped: list[BadRecord] = field(default_factory=list)
    num_records: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        reasons: dict[str, int] = {}
        for bad in self.skipped:
            key = bad.reason.split(":")[0] if ": " in bad.reason else bad.reason
            reasons[key[:80]] = reasons.get(key[:80], 0) + 1
        return {
            "records": self.num_records,
            "samples": len(self.samples),
            "skipped": len(self.skipped),
            "skipped_by_reason": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
            "scan_seconds": round(self.seconds, 3),
        }


def record_messages(record: Record, caption_kinds: Sequence[str], instruction: str | None) -> list[dict[str, str]]:
    """The conversation a record trains on.

    A conversation record is used as it is. A caption pair becomes one exchange: the user turn
    holds the media placeholders (in media order) and ``instruction``, the assistant turn the first
    caption found among ``caption_kinds``. Raises ``ValueError`` when a caption pair has none of them.
    """
    if record.messages:
        return [dict(m) for m in record.messages]
    caption = next((record.captions[k] for k in caption_kinds if record.captions.get(k)), None)
    if caption is None:
        raise ValueError(
            f"caption pair has no caption of kinds {list(caption_kinds)} (it has {sorted(record.captions)})"
        )
    user = "\n".join(ref.modality.placeholder for ref in record.media)
    if instruction:
        user = f"{user}\n{instruction}"
    return [{"role": "user", "content": user}, {"role": "assistant", "content": caption}]


def merge_turns(
    items: Iterable[tuple[int, Record | BadRecord]], max_turns: int
) -> Iterator[tuple[int, Record | BadRecord]]:
    """Nearby conversation records about the same media, joined into multi-turn conversations.

    LLaVA's multi-turn records: a clip's questions become turns of one conversation, so its media
    tokens are read once per conversation instead of once per question, and every answer is still
    trained. Records join while they have identical media (same modalities, paths and windows) and
    system message, up to ``max_turns`` user turns; the media placeholders stay in the first user
    turn only. ``(line, item)`` pairs in, ``(first line, item)`` out; the merged record's id is the
    first one's plus ``+N`` (N records joined). Caption pairs, bad lines and records without media
    pass through unchanged (and close the runs open before them), and ``max_turns <= 1`` changes
    nothing. Records about the same media join while at most :data:`OPEN_RUNS` media are open (a
    clip's views interleave in the world's files).

    No turn may give away another's answer, or the model learns to copy from the conversation
    instead of reading the media (and is then asked each question alone): a record joins a
    conversation only when no turn in it asks about the same facts (the keys of ``meta["facts"]``
    and of a multi-turn record's ``meta["turns"][i]["facts"]``, as the synthetic world writes them),
    asks the same question, or names one of its fact values ("How many crosses?" names the shape
    "What shape is it?" asks for). A run of records about the same media is split greedily, in file
    order, into as few such conversations as that allows. Inside one, long answers (more than
    :data:`LONG_ANSWER_WORDS` words: detailed descriptions, which state more than the facts they
    are judged on) come last, so they cannot give away the short answers either.
    """
    runs: dict[tuple, list[tuple[int, Record]]] = {}  # open runs by (media, system message)

    def flush(key: tuple) -> Iterator[tuple[int, Record]]:
        groups: list[list[tuple[int, Record]]] = []
        for line, record in runs.pop(key):
            home = next((g for g in groups if _can_join(g, record, max_turns)), None)
            if home is None:
                groups.append([(line, record)])
            else:
                home.append((line, record))
        for group in groups:  # in the order of their first records
            if len(group) == 1:
                yield group[0]
            else:
                ordered = sorted(group, key=lambda item: _answer_words(item[1]) > LONG_ANSWER_WORDS)  # stable
                yield group[0][0], _joined([r for _, r in ordered])

    for line, item in items:
        mergeable = max_turns > 1 and isinstance(item, Record) and bool(item.messages) and bool(item.media)
        if not mergeable:
            for key in list(runs):
                yield from flush(key)
            yield line, item
            continue
        key = (item.media, _system(item))
        if key not in runs and len(runs) == OPEN_RUNS:
            yield from flush(next(iter(runs)))  # the oldest
        runs.setdefault(key, []).append((line, item))
    for key in list(runs):
        yield from flush(key)


OPEN_RUNS = 4
"""Media kept open at once by :func:`merge_turns`: a clip's records interleave its views (video
with its track, the track alone, a still, a depth map), and each view's questions still join."""


LONG_ANSWER_WORDS = 8
"""Answers longer than this go last in a merged conversation (:func:`merge_turns`)."""


def _can_join(group: Sequence[tuple[int, Record]], record: Record, max_turns: int) -> bool:
    if sum(_turns(r) for _, r in group) + _turns(record) > max_turns:
        return False
    return not any(_gives_away(r, record) or _gives_away(record, r) for _, r in group)


def _gives_away(a: Record, b: Record) -> bool:
    """Whether ``a`` and ``b`` in one conversation could answer each other: they ask about the same
    fact, ask the same question, or ``a``'s text (questions and answers) names a value of ``b``'s
    facts ("How many crosses?" names the shape that "What shape is it?" asks for)."""
    facts_a, facts_b = _facts(a), _facts(b)
    if facts_a.keys() & facts_b.keys() or _questions(a) & _questions(b):
        return True
    words = _words(a)
    return any(value in words for value in _fact_words(facts_b))


def _facts(record: Record) -> dict[str, str]:
    """The facts a record's answers state (``meta["facts"]``, a multi-turn record's per-turn ones
    included). ``answer`` is left out: the world files a yes/no or option letter under it."""
    meta = record.meta or {}
    found = {str(k): str(v) for k, v in (meta.get("facts") or {}).items()}
    for turn in meta.get("turns") or ():
        if isinstance(turn, Mapping):
            found.update({str(k): str(v) for k, v in (turn.get("facts") or {}).items()})
    found.pop("answer", None)
    return found


def _fact_words(facts: Mapping[str, str]) -> set[str]:
    """Fact values that are words (three letters or more): names a text can give away; numbers
    and short tokens are left out (they appear in option lists and counts of other things)."""
    return {v.lower() for v in facts.values() if len(v) >= 3 and v.replace(" ", "").isalpha()}


def _words(record: Record) -> set[str]:
    """Every word and word pair of a record's turns, lower case, with plurals also singular
    ("crosses" -> "cross", "circles" -> "circle")."""
    text = " ".join(m["content"] for m in record.messages if m["role"] != "system").lower()
    tokens = re.findall(r"[a-z]+", text)
    singular = [t[:-2] if t.endswith("es") and t[:-2].endswith(("s", "x", "ch", "sh")) else t[:-1] if t.endswith("s") else t
                for t in tokens]  # fmt: skip
    words = set(tokens) | set(singular)
    words |= {f"{x} {y}" for x, y in zip(tokens, tokens[1:])}
    return words


def _questions(record: Record) -> set[str]:
    """A record's user turns without media placeholders, whitespace squashed."""
    out = set()
    for msg in record.messages:
        if msg["role"] == "user":
            text = msg["content"]
            for modality in Modality:
                text = text.replace(modality.placeholder, " ")
            out.add(" ".join(text.split()))
    return out


def _answer_words(record: Record) -> int:
    return max((len(m["content"].split()) for m in record.messages if m["role"] == "assistant"), default=0)


def _system(record: Record) -> str | None:
    first = record.messages[0]
    return first["content"] if first["role"] == "system" else None


def _turns(record: Record) -> int:
    return sum(1 for m in record.messages if m["role"] == "user")


def _joined(records: Sequence[Record]) -> Record:
    placeholders = [m.modality.placeholder for m in records[0].media]
    messages = [dict(m) for m in records[0].messages]
    for record in records[1:]:
        for msg in record.messages:
            if msg["role"] == "system":
                continue  # identical to the first record's (checked by merge_turns)
            content = msg["content"]
            if msg["role"] == "user":
                for placeholder in placeholders:
                    content = content.replace(placeholder + "\n", "").replace(placeholder, "")
            messages.append({"role": msg["role"], "content": content})
    return Record(
        id=f"{records[0].id}+{len(records)}", media=records[0].media, messages=tuple(messages),
        meta={"merged": [r.id for r in records]},
    )  # fmt: skip


def expected_segments(modality: Modality, processor: MiCoChatProcessor) -> int:
    """Segments one item will have after preprocessing (frames, audio windows; 1 for pictures)."""
    if modality is Modality.VIDEO:
        return processor.settings.num_frames
    if modality is Modality.AUDIO:
        return processor.settings.audio_clips
    return 1


def _squash(text: str) -> str:
    return "".join(text.split())


def check_label_mask(
    processor: MiCoChatProcessor, messages: Sequence[Mapping[str, str]], input_ids: Sequence[int], labels: Sequence[int]
) -> None:
    """Raise :class:`LabelMaskError` unless the trained tokens hold every assistant message, in order.

    Compared with whitespace removed, so a tokenizer's space handling does not matter; what must
    hold is that no assistant word is masked out and no other message's text is trained on.
    """
    if len(input_ids) != len(labels):
        raise LabelMaskError(f"{len(input_ids)} input ids but {len(labels)} labels")
    if any(label != token for token, label in zip(input_ids, labels) if label != IGNORE_INDEX):
        raise LabelMaskError("labels differ from the input ids they should copy")
    trained = [token for token, label in zip(input_ids, labels) if label != IGNORE_INDEX]
    decoded = _squash(processor.tokenizer.decode(trained, skip_special_tokens=False))
    position = 0
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        content = _squash(msg["content"])
        found = decoded.find(content, position)
        if found < 0:
            raise LabelMaskError(
                f"assistant message {i} ({msg['content'][:60]!r}) is not covered by the trained tokens "
                f"({processor.tokenizer.decode(trained)[:120]!r}); the template '{processor.config.chat_template}' "
                "and the tokenizer disagree on where messages end"
            )
        position = found + len(content)
    replies = [_squash(m["content"]) for m in messages if m["role"] == "assistant"]
    users = []
    for msg in messages:
        if msg["role"] == "user":
            text = msg["content"]
            for placeholder in processor.placeholders.values():
                text = text.replace(placeholder, " ")
            users.append(_squash(text))
    leaked = [u for u in users if len(u) > 12 and u in decoded and not any(u in r for r in replies)]
    if leaked:
        raise LabelMaskError(f"user text {leaked[0][:60]!r} is among the trained tokens")


def scan_records(
    paths: Sequence[str | Path],
    processor: MiCoChatProcessor,
    *,
    media_root: str | Path | None = None,
    caption_kinds: Sequence[str] = ("omni", "vision", "audio", "subtitle"),
    instruction: str | None = None,
    max_length: int | None = None,
    strict: bool = False,
    probe_media: bool = True,
    limit: int | None = None,
    merge: int = 1,
    progress: bool = True,
) -> ScanReport:
    """Read, check and measure every record (no media decoded); see the module docstring.

    Args:
        paths: record files (``.jsonl`` / ``.json``).
        media_root: folder media paths are relative to (default: the record file's folder).
        max_length: longest sample in tokens; longer ones are skipped.
        strict: raise :class:`DataError` at the first bad record instead of skipping it.
        probe_media: read each media file's header (catches unreadable files before training).
        limit: stop after this many good samples.
        merge: join consecutive records about the same media into conversations of up to this many
            user turns (:func:`merge_turns`; 1: every record is its own sample).
    """
    report = ScanReport()
    start = time.perf_counter()
    limit_ = max_length or processor.config.context_length
    bar = tqdm(desc="scanning records", unit="rec", disable=not progress)
    for path in paths:
        path = Path(path)
        root = Path(media_root) if media_root is not None else path.parent
        for k, item in merge_turns(enumerate(read_records(path), start=1), merge):
            if limit is not None and len(report.samples) >= limit:
                break
            # a merged sample counts the records it joined
            report.num_records += (len(item.meta.get("merged", ())) or 1) if isinstance(item, Record) else 1
            bar.update(1)
            if isinstance(item, BadRecord):
                _skip(report, item, strict)
                continue
            source = f"{path} record {k}"
            try:
                report.samples.append(
                    _scan_one(item, source, processor, root, caption_kinds, instruction, limit_, probe_media)
                )
            except LabelMaskError as err:  # a template bug, not a bad record: stop, naming where it showed
                raise LabelMaskError(f"{source} (id {item.id}): {err}") from None
            except (ValueError, ProcessorError, TemplateError, media_io.MediaError, OSError) as err:
                _skip(report, BadRecord(source, k, str(err), item.id), strict)
    bar.close()
    report.seconds = time.perf_counter() - start
    logger.info(
        "scanned %d records: %d samples, %d skipped (%.1f s)",
        report.num_records,
        len(report.samples),
        len(report.skipped),
        report.seconds,
    )
    return report


def _skip(report: ScanReport, bad: BadRecord, strict: bool) -> None:
    if strict:
        raise DataError(f"{bad} (strict mode: fix the record or set data.strict=false to skip bad records)")
    report.skipped.append(bad)
    logger.warning("skipping %s", bad)


def _scan_one(
    record: Record,
    source: str,
    processor: MiCoChatProcessor,
    root: Path,
    caption_kinds: Sequence[str],
    instruction: str | None,
    max_length: int | None,
    probe_media: bool,
) -> SampleSpec:
    messages = record_messages(record, caption_kinds, instruction)
    items = []
    for ref in record.media:
        path = ref.resolve(root)
        if not path.is_file():
            raise FileNotFoundError(f"media file {path} is missing")
        if probe_media:
            media_io.probe(path, limits=processor.settings.limits)
        items.append(MediaItem(ref.modality, str(path), ref.options()))
    prepared = processor.prepare(messages, items)
    enc = _encode_text(prepared, processor)
    length = len(enc["input_ids"])
    if max_length is not None and length > max_length:
        raise ValueError(f"sample is {length} tokens (media included); the limit is {max_length}")
    check_label_mask(processor, prepared.messages, enc["input_ids"], enc["labels"])
    num_labels = sum(1 for label in enc["labels"][1:] if label != IGNORE_INDEX)
    return SampleSpec(record.id, source, tuple(prepared.messages), tuple(prepared.media), length, num_labels)


def _encode_text(prepared: PreparedConversation, processor: MiCoChatProcessor) -> dict[str, Any]:
    """Token ids and labels of a prepared sample, media counted from the settings (nothing decoded)."""
    counts = [processor.config.num_media_tokens(it.modality, expected_segments(it.modality, processor))
              for it in prepared.media]  # fmt: skip
    return processor.encode_text(prepared, counts, add_generation_prompt=False, with_labels=True)


def sample_labels(spec: SampleSpec, processor: MiCoChatProcessor) -> list[int]:
    """A scanned sample's labels without decoding its media (for statistics over the captions)."""
    return _encode_text(PreparedConversation([dict(m) for m in spec.messages], list(spec.media)), processor)["labels"]


# ---------------------------------------------------------------------------------------- dataset


class SampleDataset(Dataset):
    """Scanned samples -> ``{"input_ids", "labels", "media" | "features", "id"}`` (lists / tensors).

    ``media`` is a list of ``(modality, tensor)`` in placeholder order (shapes: see
    :mod:`mico_chat.preprocess`), with ``tracks``: each video item's fused audio track
    (:class:`~mico_chat.preprocess.VideoTrack`) or ``None``; with an encoder-feature cache,
    ``features`` holds the cached encoder outputs ``(S*(1+P), D)`` instead and nothing is decoded.
    """

    def __init__(
        self,
        samples: Sequence[SampleSpec],
        processor: MiCoChatProcessor,
        features: Sequence[Sequence[tuple[str, torch.Tensor]]] | None = None,
    ):
        if features is not None and len(features) != len(samples):
            raise ValueError(f"{len(features)} cached feature lists for {len(samples)} samples")
        self.samples = list(samples)
        self.processor = processor
        self.features = features

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def lengths(self) -> list[int]:
        return [s.length for s in self.samples]

    def __getitem__(self, index: int) -> dict[str, Any]:
        spec = self.samples[index]
        prepared = PreparedConversation([dict(m) for m in spec.messages], list(spec.media))
        try:
            if self.features is not None:
                feats = self.features[index]
                counts = [self._count(Modality.parse(m), f) for m, f in feats]
                enc = self.processor.encode_text(prepared, counts, add_generation_prompt=False, with_labels=True)
                out = {"features": list(feats), "media": []}
            else:
                enc = self.processor.encode(prepared, add_generation_prompt=False, with_labels=True)
                out = {"media": [(item.modality.value, tensor) for item, tensor in enc["media"]], "features": []}
                out["tracks"] = video_tracks(enc)  # per video item: its fused audio track or None
        except (media_io.MediaError, ProcessorError, TemplateError, ValueError) as err:
            raise DataError(f"{spec.source} (id {spec.record_id}): {err}") from err
        if len(enc["input_ids"]) != spec.length:
            raise DataError(
                f"{spec.source} (id {spec.record_id}): {len(enc['input_ids'])} tokens now, {spec.length} at the scan "
                "(a media item gave a different number of frames or windows than the settings ask for)"
            )
        out.update(input_ids=enc["input_ids"], labels=enc["labels"], id=spec.record_id)
        return out

    def _count(self, modality: Modality, feats: torch.Tensor) -> int:
        config = self.processor.config
        per_segment = config.encoder_config.layout(modality, 1).tokens_per_segment
        views = 2 if modality.value in config.grey_views else 1  # cached [colour; grey] features
        return config.num_media_tokens(modality, feats.shape[0] // (views * per_segment))


@torch.no_grad()
def cache_encoder_features(
    dataset: SampleDataset,
    encoder: torch.nn.Module,
    *,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    grey_views: Sequence[str] = (),
) -> list[list[tuple[str, torch.Tensor]]]:
    """Run the (frozen) encoder once over every distinct media item; returns per-sample
    ``[(modality, (S*(1+P), D))]`` in placeholder order, stored in ``dtype`` on the CPU. For a
    modality in ``grey_views``, the features of its frames in grey follow along the tokens,
    ``(2*S*(1+P), D)``, as :meth:`~mico_chat.modeling.MiCoChatForConditionalGeneration.encode_items`
    gives them.

    Samples that read the same file with the same options (a clip's questions split over several
    conversations) share one encoding and one tensor: preprocessing is deterministic, so this
    changes no value, and it saves the time and memory of encoding a clip once per conversation.

    The encoder must not train: its outputs would go stale after the first step.
    """
    if any(p.requires_grad for p in encoder.parameters()):
        raise ValueError("encoder features can only be cached for a frozen encoder")
    was_training = encoder.training
    encoder.eval()
    param = next(encoder.parameters())
    encoded: dict[tuple[str, str, str], torch.Tensor] = {}
    out = []
    for spec in tqdm(dataset.samples, desc="caching encoder features", unit="sample", disable=not progress):
        if any(item.track for item in spec.media):
            raise DataError(
                f"{spec.source} (id {spec.record_id}): the feature cache does not hold fused video audio tracks; "
                "set data.cache_encoder_features=false or media_settings.video_audio=false"
            )
        feats = []
        for item in spec.media:
            key = _media_key(item)
            feature = encoded.get(key) if key is not None else None
            if feature is None:
                try:
                    tensor = dataset.processor.load_media([item])[0]
                except (media_io.MediaError, ValueError) as err:
                    raise DataError(f"{spec.source} (id {spec.record_id}): {err}") from err
                values = {item.modality: tensor[None].to(param.device, param.dtype)}
                feature = encode_views(encoder, values, grey_views)[item.modality][0].to("cpu", dtype)  # (L, D)
                if key is not None:
                    encoded[key] = feature
            feats.append((item.modality.value, feature))
        out.append(feats)
    encoder.train(was_training)
    return out


def _media_key(item: MediaItem) -> tuple[str, str, str] | None:
    """What makes two media items the same input, as a feature store finds them
    (:func:`~mico_chat.instruct_data.feature_store.item_identity`); None for an in-memory source."""
    from mico_chat.instruct_data.feature_store import item_identity

    if not isinstance(item.source, (str, Path)):
        return None
    return item_identity(item.modality.value, str(item.source), item.options)


def stored_encoder_features(
    store: str | Path,
    samples: Sequence[SampleSpec],
    encoder: torch.nn.Module,
    processor: MiCoChatProcessor,
    *,
    dtype: torch.dtype = torch.float32,
) -> list[list[tuple[str, torch.Tensor]]]:
    """:func:`cache_encoder_features`' result read from a feature store (``mico-chat data
    encode-features``) instead of computed. The store's manifest must name this encoder (config
    and weights) and these media settings; :class:`DataError` names the store otherwise, or the
    sample whose item the store lacks.
    """
    from mico_chat.instruct_data.feature_store import FeatureStoreError, check_manifest, load_features

    if any(p.requires_grad for p in encoder.parameters()):
        raise ValueError("encoder features can only be cached for a frozen encoder")
    for spec in samples:
        if any(item.track for item in spec.media):
            raise DataError(
                f"{spec.source} (id {spec.record_id}): the feature cache does not hold fused video audio tracks; "
                "set data.cache_encoder_features=false or media_settings.video_audio=false"
            )
    try:
        check_manifest(store, encoder, processor)
        wanted = [[(item.modality.value, str(item.source), item.options) for item in spec.media] for spec in samples]
        names = [f"{spec.source} (id {spec.record_id})" for spec in samples]
        features = load_features(store, wanted, dtype=dtype, names=names)
    except FeatureStoreError as err:
        raise DataError(str(err)) from err
    logger.info("read the encoder features of %d samples from %s", len(samples), store)
    return features


# ---------------------------------------------------------------------------------------- sampler


class LengthGroupedSampler(Sampler[int]):
    """Shuffled indices where each run of ``group_size`` has similar lengths (less padding).

    The order of epoch ``e`` is a function of ``(seed, e)`` only, so a resumed run replays it
    exactly. Indices are shuffled, cut into mega-batches of ``50 * group_size``, each sorted by
    length (longest first) and cut into groups; the groups are shuffled, with the group holding the
    longest sample first so that an out-of-memory shows at the first step.
    """

    def __init__(self, lengths: Sequence[int], group_size: int, seed: int = 0):
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        self.lengths = list(lengths)
        self.group_size = group_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        mega = 50 * self.group_size
        groups: list[list[int]] = []
        for start in range(0, len(order), mega):
            chunk = sorted(order[start : start + mega], key=lambda i: -self.lengths[i])
            groups.extend(chunk[k : k + self.group_size] for k in range(0, len(chunk), self.group_size))
        shuffled = [groups[i] for i in torch.randperm(len(groups), generator=generator).tolist()]
        if shuffled:
            longest = max(range(len(shuffled)), key=lambda g: max(self.lengths[i] for i in shuffled[g]))
            shuffled[0], shuffled[longest] = shuffled[longest], shuffled[0]
        return iter([i for group in shuffled for i in group])
