"""Encoder-feature stores: the frozen encoder's output per media item, computed once and kept on disk.

``mico-chat data encode-features RECORDS OUT_DIR --model M`` runs the model's encoder over every
media item of every record, exactly as the training recipe's in-memory cache does
(:func:`mico_chat.training.data.cache_encoder_features`: one item per encoder call, the output of
the encoder before any connector, ``(S*(1+P), D)`` per item), and writes::

    OUT_DIR/
      manifest.json                 what made the store (see below); written last
      features-KKKKK.safetensors    shard K's tensors, key "<record id>/<media index>"
      index.jsonl                   one line per encoded record, in input order:
                                    {"id", "file", "media": [{"key", "modality", "source", "options", "shape"}]}
      failed.jsonl                  records whose media could not be read (if any), with the reason
      index.jsonl.shards/           the shard plan and per-shard bookkeeping (:mod:`.shards`)

The media index is the item's position in the record's ``media`` list (the training sample's
placeholder order). Tensors are stored in ``float16`` by default (``--store-dtype``: ``bfloat16``,
``float32``, or ``model``: the dtype the encoder ran in); training converts them to its
``data.cache_dtype`` when it reads them.

``manifest.json`` names the encoder: its config and a SHA-256 of that config, a SHA-256 of its
weights (taken in bfloat16, so a float32 and a bfloat16 load of one checkpoint agree; a trained
encoder does not), the model it was loaded from, the media settings (frames, audio windows,
normalisation: all change the features), the records file (path and SHA-256) and media root,
the dtypes and the shard size. :func:`check_manifest` refuses a store whose encoder or media settings differ from a
model's, naming the store and what differs.

Every shard file also carries the fingerprint in its safetensors metadata: the manifest is
written from the shards (after a resumed or Ray run) and refuses shards made by two encoders.
The shards are :class:`~.shards.ShardPlan` shards of the records (input order, contiguous), so
the single-process run and a Ray run with the same shard size write the same files. A shard is
written whole (temporary file, then renamed) and marked done; a killed run redoes only the
shards without a done marker. A shard with a record that failed is not marked done and is redone
by the next run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mico_chat.processing import MediaItem

from .pipeline import RunReport
from .records import Record
from .shards import ShardPlan

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
INDEX = "index.jsonl"
FAILED = "failed.jsonl"
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


class FeatureStoreError(ValueError):
    """A store that cannot be used here (another encoder, other media settings, a missing item)."""


# ------------------------------------------------------------------------------------- identity


def _sha256_json(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def encoder_config_dict(encoder: torch.nn.Module) -> dict[str, Any]:
    """The encoder's config as JSON-able data, without bookkeeping keys (versions, names)."""
    config = getattr(encoder, "config", None)
    data = config.to_dict() if config is not None and hasattr(config, "to_dict") else {"class": type(encoder).__name__}
    drop = {"transformers_version", "torch_dtype", "dtype", "architectures"}
    return {k: v for k, v in data.items() if k not in drop and not k.startswith("_")}


@torch.no_grad()
def weights_sha256(encoder: torch.nn.Module) -> str:
    """SHA-256 over the encoder's state dict (names, shapes, values cast to bfloat16)."""
    h = hashlib.sha256()
    for name, tensor in encoder.state_dict().items():
        value = tensor.detach()
        if value.is_floating_point():
            value = value.to(torch.bfloat16)
        value = value.to("cpu").reshape(-1).contiguous()
        h.update(f"{name}:{tuple(tensor.shape)}:{value.dtype}\n".encode())
        h.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return h.hexdigest()


def media_settings_dict(processor: Any) -> dict[str, Any]:
    """The processor's media settings as JSON data (tuples become lists)."""
    return json.loads(json.dumps(processor.settings.to_dict(), default=str))


def fingerprint(encoder: torch.nn.Module, processor: Any, *, source: str, store_dtype: str) -> dict[str, Any]:
    """What identifies the features a store holds: the encoder, its media settings and the dtypes."""
    config = encoder_config_dict(encoder)
    param = next(encoder.parameters())
    return {
        "format_version": FORMAT_VERSION,
        "encoder": {
            "source": source,
            "class": type(encoder).__name__,
            "config": config,
            "config_sha256": _sha256_json(config),
            "weights_sha256": weights_sha256(encoder),
        },
        "media_settings": media_settings_dict(processor),
        "compute_dtype": str(param.dtype).removeprefix("torch."),
        "store_dtype": store_dtype,
    }


# ------------------------------------------------------------------------------------- writing


def media_items(record: Record, media_root: str | os.PathLike | None) -> list[MediaItem]:
    """A record's media as the training scan makes them (absolute paths; ``track`` never set)."""
    items = []
    for ref in record.media:
        path = ref.resolve(media_root)
        if not path.is_file():
            raise FileNotFoundError(f"media file {path} is missing")
        items.append(MediaItem(ref.modality, os.path.abspath(path), ref.options()))
    return items


def item_identity(modality: str, source: str, options: Mapping[str, Any]) -> tuple[str, str, str]:
    """How a training sample's media item finds its features: modality, absolute path, options."""
    return modality, os.path.abspath(source), json.dumps(dict(options), sort_keys=True)


def shard_number(out: Path) -> int:
    """``K`` of a shard's output ``shard-KKKKK.jsonl``."""
    return int(out.name.split("-")[1].split(".")[0])


def features_file(store: Path, shard: int) -> Path:
    return store / f"features-{shard:05d}.safetensors"


@dataclass
class EncodeFeaturesJob:
    """The ``encode-features`` pipeline as a :class:`~.shards.ShardJob` (picklable until ``setup``).

    Args:
        store: the store folder (OUT_DIR); shard K writes ``features-KKKKK.safetensors`` there.
        model: preset or saved model folder, loaded by ``setup`` (on the worker) with
            :meth:`~mico_chat.api.ChatModel.load`; or pass ``loaded=(encoder, processor)``.
        media_root: folder the records' media paths are relative to.
        batch_size: items of one modality and shape per encoder call; 1 (default) is what the
            training cache does; more is faster on a GPU but may differ by float rounding.
        store_dtype: ``float16``, ``bfloat16``, ``float32`` or ``model``.
        threads: torch's CPU threads while encoding (``None``: leave as is). A CPU's sums depend
            on the thread count in the last bits, so one process and Ray actors (whose threads
            are their CPUs) write bit-identical stores on a CPU only with the same count.
    """

    store: Path
    model: str = "default"
    media_root: Path | None = None
    batch_size: int = 1
    store_dtype: str = "float16"
    device: str = "auto"
    dtype: str | None = None
    llm: str | None = None
    loaded: tuple[Any, Any] | None = None
    threads: int | None = None
    fingerprint: dict[str, Any] = field(default_factory=dict)

    def key(self, record: Record) -> str:
        return record.id

    def setup(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        if self.loaded is None:
            from mico_chat.api import ChatModel

            chat = ChatModel.load(self.model, llm=self.llm, device=self.device, dtype=self.dtype)
            self.loaded = (chat.model.encoder, chat.processor)
        encoder, processor = self.loaded
        encoder.eval()
        param = next(encoder.parameters())
        self._out_dtype = param.dtype if self.store_dtype == "model" else DTYPES[self.store_dtype]
        self.fingerprint = fingerprint(encoder, processor, source=str(self.model), store_dtype=self.store_dtype)

    @torch.no_grad()
    def run(self, records: list[Record], out: Path, log: Path | None) -> RunReport:
        from safetensors.torch import save_file

        encoder, processor = self.loaded
        param = next(encoder.parameters())
        shard = shard_number(Path(out))
        target = features_file(self.store, shard)
        tensors: dict[str, torch.Tensor] = {}
        rows: list[dict[str, Any]] = []
        failed: list[tuple[str, str]] = []
        batch: list[tuple[str, Any, torch.Tensor]] = []  # (key, modality, item) of one modality and shape

        def flush() -> None:
            if not batch:
                return
            modality = batch[0][1]
            stacked = torch.stack([t for _, _, t in batch]).to(param.device, param.dtype)
            encoded = encoder({modality: stacked})[modality]  # (B, L, D)
            for (key, _, _), value in zip(batch, encoded):
                tensors[key] = value.to("cpu", self._out_dtype).clone()  # own storage: safetensors refuses shared
            batch.clear()

        for record in records:
            try:
                items = media_items(record, self.media_root)
                loaded = processor.load_media(items)
            except Exception as err:  # noqa: BLE001 (an unreadable item fails its record, logged)
                failed.append((record.id, f"{type(err).__name__}: {err}"))
                continue
            media = []
            for k, (item, tensor) in enumerate(zip(items, loaded)):
                key = f"{record.id}/{k}"
                full = len(batch) >= self.batch_size
                if batch and (full or batch[0][1] is not item.modality or batch[0][2].shape != tensor.shape):
                    flush()
                batch.append((key, item.modality, tensor))
                media.append({"key": key, "modality": item.modality.value, "source": item.source,
                              "options": item.options})  # fmt: skip
            rows.append({"id": record.id, "file": target.name, "media": media})
        flush()
        for row in rows:
            for m in row["media"]:
                m["shape"] = list(tensors[m["key"]].shape)

        metadata = {"mico_chat_feature_store": json.dumps(self.fingerprint, sort_keys=True)}
        tmp = target.with_name(target.name + ".tmp")
        save_file(tensors, str(tmp), metadata=metadata)
        tmp.replace(target)
        out = Path(out)
        tmp_out = out.with_name(out.name + ".tmp")
        tmp_out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        tmp_out.replace(out)
        log = Path(log) if log else out.with_name(out.name + ".log.jsonl")
        if failed:
            log.write_text("".join(json.dumps({"id": i, "error": e}) + "\n" for i, e in failed), encoding="utf-8")
        elif log.exists():
            log.unlink()
        return RunReport(out=out, log=log, total=len(records), done=len(rows), failed=[i for i, _ in failed])


def _file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(
    store: Path, plan: ShardPlan, *, records_file: str | os.PathLike, media_root: str | os.PathLike | None
) -> dict[str, Any]:
    """Write ``manifest.json`` from the shard files' fingerprints; refuses shards of two encoders."""
    from safetensors import safe_open

    prints: dict[str, list[str]] = {}
    files, items = [], 0
    for shard in range(plan.num_shards):
        path = features_file(store, shard)
        if not path.exists():
            continue
        with safe_open(str(path), framework="pt") as handle:
            meta = (handle.metadata() or {}).get("mico_chat_feature_store", "{}")
            items += len(list(handle.keys()))
        prints.setdefault(meta, []).append(path.name)
        files.append(path.name)
    if len(prints) > 1:
        groups = "; ".join(f"{json.loads(m).get('encoder', {}).get('source')}: {', '.join(f[:3])}"
                           for m, f in prints.items())  # fmt: skip
        raise FeatureStoreError(
            f"feature store {store} holds shards made by different encoders or settings ({groups}): "
            "delete the store (or its other shards) and run again"
        )
    found = json.loads(next(iter(prints))) if prints else {}
    manifest = {
        **found,
        "records": os.path.abspath(records_file),
        "records_sha256": _file_sha256(records_file),
        "media_root": os.path.abspath(media_root) if media_root is not None else None,
        "key": "<record id>/<media index>",
        "shard_size": plan.shard_size,
        "num_records": len(plan.keys),
        "num_items": items,
        "files": files,
        "complete": not plan.pending(),
    }
    tmp = store / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(store / MANIFEST)
    return manifest


# ------------------------------------------------------------------------------------- reading


def read_manifest(store: str | os.PathLike) -> dict[str, Any]:
    path = Path(store) / MANIFEST
    if not path.is_file():
        raise FeatureStoreError(f"{store} is not a feature store (no {MANIFEST}; made by `mico-chat data encode-features`)")
    return json.loads(path.read_text(encoding="utf-8"))


def check_manifest(store: str | os.PathLike, encoder: torch.nn.Module, processor: Any) -> dict[str, Any]:
    """The store's manifest, or :class:`FeatureStoreError` when another encoder or other media
    settings made it (the message names the store and what differs)."""
    manifest = read_manifest(store)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise FeatureStoreError(f"feature store {store} has format {manifest.get('format_version')}, "
                                f"this version reads {FORMAT_VERSION}")  # fmt: skip
    made = manifest.get("encoder", {})
    config = encoder_config_dict(encoder)
    problems = []
    if made.get("config_sha256") != _sha256_json(config):
        theirs = made.get("config", {})
        keys = sorted(k for k in set(theirs) | set(config) if theirs.get(k) != config.get(k))
        problems.append(f"encoder config differs ({', '.join(keys[:6]) or 'hash'})")
    elif made.get("weights_sha256") != weights_sha256(encoder):
        problems.append("encoder weights differ")
    settings = media_settings_dict(processor)
    if manifest.get("media_settings") != settings:
        theirs = manifest.get("media_settings", {})
        keys = sorted(k for k in set(theirs) | set(settings) if theirs.get(k) != settings.get(k))
        problems.append(f"media settings differ ({', '.join(keys)})")
    if problems:
        raise FeatureStoreError(
            f"feature store {store} was made by another encoder than this model's (made from "
            f"{made.get('source')!r}): {'; '.join(problems)}. Re-run `mico-chat data encode-features` with this "
            "model, or turn data.feature_store off"
        )
    return manifest


def iter_index(store: str | os.PathLike) -> Iterator[dict[str, Any]]:
    path = Path(store) / INDEX
    if not path.exists():
        return
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def load_features(
    store: str | os.PathLike,
    wanted: Sequence[Sequence[tuple[str, str, Mapping[str, Any]]]],
    *,
    dtype: torch.dtype = torch.float32,
    names: Sequence[str] | None = None,
) -> list[list[tuple[str, torch.Tensor]]]:
    """Features of each sample's items ``(modality, source path, options)``, as
    :func:`~mico_chat.training.data.cache_encoder_features` returns them (in ``dtype``).

    An item is found by its modality, absolute path and options, so merged conversations and
    records about the same clip share their features. A missing item raises
    :class:`FeatureStoreError` naming the store and the sample (``names[i]``).
    """
    from safetensors import safe_open

    store = Path(store)
    where: dict[tuple[str, str, str], tuple[str, str]] = {}
    for row in iter_index(store):
        for m in row["media"]:
            where.setdefault(item_identity(m["modality"], m["source"], m.get("options", {})), (row["file"], m["key"]))
    plan: dict[str, list[tuple[int, int, str]]] = {}
    for i, items in enumerate(wanted):
        for k, (modality, source, options) in enumerate(items):
            found = where.get(item_identity(modality, str(source), options))
            if found is None:
                name = names[i] if names is not None else f"sample {i}"
                raise FeatureStoreError(
                    f"feature store {store} has no features for {name}'s {modality} item {k} ({source}); "
                    "encode these records (same media root) with `mico-chat data encode-features`"
                )
            plan.setdefault(found[0], []).append((i, k, found[1]))
    out: list[list[Any]] = [[None] * len(items) for items in wanted]
    for file, needed in plan.items():
        with safe_open(str(store / file), framework="pt") as handle:
            for i, k, key in needed:
                out[i][k] = (wanted[i][k][0], handle.get_tensor(key).to(dtype))
    return out
