"""The prediction cache: one JSONL file per run, appended after every batch.

The first line records a fingerprint of what made the predictions (benchmark config, model,
decoding settings). A rerun with the same fingerprint skips the items already answered, so a
crashed or interrupted run resumes where it stopped; a different fingerprint is refused rather
than mixed in.

A data-parallel run (:mod:`mico_chat.eval.distributed`) keeps one such file per process
(``predictions.rank1-of-4.jsonl``), so each process resumes its own shard; :func:`read_matching`
reads the other files of a run folder, so a rerun with another number of processes still skips
what is done, and :func:`write_cache` writes the gathered predictions in item order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .items import ItemError, Prediction


def fingerprint(payload: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``payload``."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode("utf-8")).hexdigest()


class PredictionCache:
    """Predictions of one run, backed by ``path`` (JSONL: a header line, then one line per item).

    Args:
        path: the cache file.
        identity: what the predictions depend on; stored in the header and compared on resume.
        overwrite: start afresh even if ``path`` holds predictions made differently.
    """

    def __init__(self, path: Path, identity: Mapping[str, Any], *, overwrite: bool = False):
        self.path = Path(path)
        self.identity = json.loads(json.dumps(identity, default=str))
        self.key = fingerprint(self.identity)
        self.predictions: dict[str, Prediction] = {}
        self.resumed = 0
        if self.path.is_file() and not overwrite:
            self._load()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"header": {"fingerprint": self.key, "identity": self.identity}}) + "\n")

    def _load(self) -> None:
        self.predictions, good, total = _read(self.path, self.key, self.identity)
        if good != total:
            lines = self.path.read_text(encoding="utf-8").splitlines()[: len(good)]
            self.path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.resumed = len(self.predictions)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self.predictions

    def __len__(self) -> int:
        return len(self.predictions)

    def add(self, predictions: Iterable[Prediction]) -> None:
        """Record predictions and append them to the file at once (flushed)."""
        lines = []
        for pred in predictions:
            self.predictions[pred.id] = pred
            lines.append(json.dumps(pred.to_dict(), ensure_ascii=False))
        if lines:
            with self.path.open("a", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
                f.flush()


def _read(path: Path, key: str, identity: Mapping[str, Any]) -> tuple[dict[str, Prediction], list[str], int]:
    """``(predictions, good lines, all lines)`` of a cache file; a torn last line is not good.

    Raises :class:`ItemError` when the file is not a cache or was made with another ``key``.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    good: list[str] = []
    predictions: dict[str, Prediction] = {}
    for n, line in enumerate(lines):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines) - 1:
                break  # torn last line of an interrupted write: that item is simply redone
            raise ItemError(f"{path}: line {n + 1} is not JSON; delete the file or pass --overwrite") from None
        if n == 0:
            header = entry.get("header") if isinstance(entry, dict) else None
            if not header or "fingerprint" not in header:
                raise ItemError(f"{path}: not a prediction cache (no header line)")
            if header["fingerprint"] != key:
                old = header.get("identity", {})
                changed = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
                raise ItemError(
                    f"{path}: these predictions were made with a different {', '.join(changed) or 'setup'}; "
                    "use another --out folder or pass --overwrite"
                )
        else:
            pred = Prediction.from_dict(entry)
            predictions[pred.id] = pred
        good.append(line)
    return predictions, good, len(lines)


def read_matching(paths: Iterable[Path], identity: Mapping[str, Any]) -> dict[str, Prediction]:
    """The predictions of every cache file in ``paths`` made with ``identity``, read only.

    Files made differently are left out (they are some other run's, or stale); so are torn last
    lines. Used to resume from the shards of a run with another number of processes.
    """
    identity = json.loads(json.dumps(identity, default=str))
    key = fingerprint(identity)
    found: dict[str, Prediction] = {}
    for path in paths:
        try:
            predictions, _, _ = _read(path, key, identity)
        except ItemError:
            continue
        found.update(predictions)
    return found


def write_cache(path: Path, identity: Mapping[str, Any], predictions: Iterable[Prediction]) -> Path:
    """Write a whole cache file (header, then ``predictions`` in the order given) atomically."""
    identity = json.loads(json.dumps(identity, default=str))
    header = {"header": {"fingerprint": fingerprint(identity), "identity": identity}}
    lines = [json.dumps(header)] + [json.dumps(p.to_dict(), ensure_ascii=False) for p in predictions]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
