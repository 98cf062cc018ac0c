"""The prediction cache: one JSONL file per run, appended after every batch.

The first line records a fingerprint of what made the predictions (benchmark config, model,
decoding settings). A rerun with the same fingerprint skips the items already answered, so a
crashed or interrupted run resumes where it stopped; a different fingerprint is refused rather
than mixed in.
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
        lines = self.path.read_text(encoding="utf-8").splitlines()
        good: list[str] = []
        for n, line in enumerate(lines):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                if n == len(lines) - 1:
                    break  # torn last line of an interrupted write: that item is simply redone
                raise ItemError(f"{self.path}: line {n + 1} is not JSON; delete the file or pass --overwrite") from None
            if n == 0:
                header = entry.get("header") if isinstance(entry, dict) else None
                if not header or "fingerprint" not in header:
                    raise ItemError(f"{self.path}: not a prediction cache (no header line)")
                if header["fingerprint"] != self.key:
                    old = header.get("identity", {})
                    changed = sorted(k for k in set(old) | set(self.identity) if old.get(k) != self.identity.get(k))
                    raise ItemError(
                        f"{self.path}: these predictions were made with a different {', '.join(changed) or 'setup'}; "
                        "use another --out folder or pass --overwrite"
                    )
            else:
                pred = Prediction.from_dict(entry)
                self.predictions[pred.id] = pred
            good.append(line)
        if len(good) != len(lines):
            self.path.write_text("\n".join(good) + "\n", encoding="utf-8")
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
