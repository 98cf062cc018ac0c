"""The ground-truth file of ``mico-chat eval retrieval --scores S.npy --gt GT.json``.

Two forms are accepted:

- a JSON list with one item *column index* per text row: ``[0, 0, 1, 2, 2]``;
- a JSON object naming the columns and the item of each row by id::

      {"items": ["clip-a", "clip-b", "clip-c"],
       "text_item": ["clip-a", "clip-a", "clip-b", "clip-c", "clip-c"]}

The evaluator writes the object form next to every score matrix it saves.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


class GroundTruthError(ValueError):
    """A ground-truth file that does not fit the format or the score matrix."""


def load_ground_truth(path: str | os.PathLike, num_texts: int, num_items: int) -> np.ndarray:
    """Read ``path`` and return ``(num_texts,)`` int64 item column indices; raises :class:`GroundTruthError`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ground-truth file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise GroundTruthError(f"{path}: not valid JSON ({err})") from None
    if isinstance(data, list):
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in data):
            raise GroundTruthError(f"{path}: a list ground truth must hold integer item columns")
        index = np.asarray(data, dtype=np.int64)
    elif isinstance(data, dict):
        items, rows = data.get("items"), data.get("text_item")
        if not isinstance(items, list) or not isinstance(rows, list):
            raise GroundTruthError(f"{path}: an object ground truth needs the lists 'items' and 'text_item'")
        column = {str(item): i for i, item in enumerate(items)}
        if len(column) != len(items):
            raise GroundTruthError(f"{path}: 'items' repeats an id")
        unknown = [r for r in rows if str(r) not in column]
        if unknown:
            raise GroundTruthError(f"{path}: text_item names {unknown[0]!r}, which is not in 'items'")
        if len(items) != num_items:
            raise GroundTruthError(
                f"{path}: 'items' lists {len(items)} ids but the score matrix has {num_items} columns"
            )
        index = np.asarray([column[str(r)] for r in rows], dtype=np.int64)
    else:
        raise GroundTruthError(f"{path}: expected a list or an object, got {type(data).__name__}")
    if index.shape[0] != num_texts:
        raise GroundTruthError(f"{path}: {index.shape[0]} text rows, but the score matrix has {num_texts} rows")
    if index.size and (index.min() < 0 or index.max() >= num_items):
        raise GroundTruthError(f"{path}: item column {int(index.max())} is outside 0..{num_items - 1}")
    return index
