"""Score a pretrained MiCo model on text <-> media retrieval over caption records.

Items are the distinct media of the records (records sharing media are one item with several
captions); texts are the chosen caption kinds of every record. Features come from
:meth:`MiCoForPretraining.embed_media` / :meth:`embed_text` in batches (progress bar); the score
matrix is their dot product (cosine similarity). Options:

- ``dual_softmax``: re-weight the scores per query direction (:func:`.metrics.dual_softmax`) with
  the model's learned temperature;
- ``rerank_k``: re-order each query's top-K candidates with the matching head (MiCo appendix B,
  VAST section 5.1: K = 50).

With a :class:`~mico_chat.eval.distributed.DataParallel` group of several processes, each
encodes every ``world_size``-th item and text; rank 0 gathers the features, restores their order
and computes the scores, metrics and re-ranking alone (the other ranks return ``None``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mico_chat.encoders import MiCoForPretraining, group_key, parse_group
from mico_chat.pretraining.data import MediaTable

from ..distributed import DataParallel
from .metrics import Ties, dual_softmax, rerank_top_k, retrieval_metrics

DEFAULT_CAPTION = {"video": "vision", "image": "vision", "depth": "vision", "normal": "vision", "audio": "audio"}


def default_caption_kind(group: str | Sequence[str]) -> str:
    """The caption kind that describes a group: vision for visual inputs, audio, omni for several."""
    mods = parse_group(group)
    return DEFAULT_CAPTION[mods[0].value] if len(mods) == 1 else "omni"


@dataclass
class RetrievalTexts:
    """The texts of a retrieval set: ``texts[t]`` describes item ``text_item[t]``."""

    texts: list[str]
    text_item: np.ndarray
    item_ids: list[str]


def collect_texts(table: MediaTable, kinds: Sequence[str]) -> RetrievalTexts:
    """Every caption of the given kinds of every record, with its item (row) index.

    An item none of whose records has such a caption cannot be retrieved by text and raises.
    """
    texts, owner = [], []
    for row, captions in enumerate(table.captions):
        found = [c[k] for c in captions for k in kinds if c.get(k)]
        if not found:
            raise ValueError(f"item {table.ids[row][0]} has no caption of kind {list(kinds)}")
        texts.extend(found)
        owner.extend([row] * len(found))
    return RetrievalTexts(texts, np.asarray(owner, dtype=np.int64), [ids[0] for ids in table.ids])


@dataclass
class RetrievalResult:
    """Metrics per scoring method (``contrastive``, ``dual_softmax``, ``rerank@K``), the
    contrastive score matrix ``(T, I)`` and the ground truth."""

    group: str
    metrics: dict[str, dict[str, dict[str, float]]]
    scores: np.ndarray
    texts: RetrievalTexts
    details: dict[str, Any] = field(default_factory=dict)
    rerank_scores: np.ndarray | None = None
    """``(T, I)`` matching-head probabilities of every pair the re-ranking scored, NaN elsewhere."""

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "num_items": int(self.scores.shape[1]),
            "num_texts": int(self.scores.shape[0]),
            "metrics": self.metrics,
            **self.details,
        }

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``scores.npy``, ``gt.json`` (re-check with ``--scores/--gt``), ``metrics.json`` and,
        after a re-ranking, ``rerank_scores.npy`` (re-check with ``--rerank-scores --rerank K``)."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "scores.npy", self.scores.astype(np.float32))
        if self.rerank_scores is not None:
            np.save(out / "rerank_scores.npy", self.rerank_scores.astype(np.float32))
        gt = {"items": self.texts.item_ids, "text_item": [self.texts.item_ids[i] for i in self.texts.text_item]}
        (out / "gt.json").write_text(json.dumps(gt))
        (out / "metrics.json").write_text(json.dumps(self.to_json(), indent=2))
        return out


@torch.no_grad()
def evaluate_retrieval(
    model: MiCoForPretraining,
    tokenizer: Any,
    table: MediaTable,
    group: str | Sequence[str],
    *,
    caption_kinds: Sequence[str] | None = None,
    batch_size: int = 64,
    dual: bool = False,
    rerank_k: int = 0,
    rerank_queries: Sequence[str] = ("text", "item"),
    ties: Ties = "pessimistic",
    limit: int | None = None,
    progress: bool = True,
    parallel: DataParallel | None = None,
) -> RetrievalResult | None:
    """Retrieval metrics of ``model`` for the query group ``group`` over ``table``'s items.

    With ``parallel`` spanning several processes, the encoding is split over them and rank 0
    returns the result; the others return ``None``.

    Args:
        table: preprocessed media (:func:`mico_chat.pretraining.build_media_table`) with the
            group's modalities.
        caption_kinds: caption kinds used as texts (default :func:`default_caption_kind`).
        dual: also report dual-softmax metrics.
        rerank_k: also report metrics after re-ranking the top ``rerank_k`` with the matching head.
        rerank_queries: the query directions to re-rank (``text``: text -> item, ``item``:
            item -> text); each costs ``queries x rerank_k`` matching passes.
        limit: evaluate on the first ``limit`` items only.
        parallel: the process group (default: this process alone).
    """
    mods = parse_group(group)
    key = group_key(mods)
    kinds = list(caption_kinds or [default_caption_kind(mods)])
    if limit is not None:
        table = MediaTable(
            table.keys[:limit],
            table.ids[:limit],
            table.captions[:limit],
            {m: v[:limit] for m, v in table.tensors.items()},
        )
    data = collect_texts(table, kinds)
    parallel = parallel or DataParallel.single()
    device = model.logit_scale.device
    was_training = model.training
    model.eval()
    shard = parallel.shard
    label = "" if parallel.world_size == 1 else f" [{shard.suffix()}]"

    def encode_media(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        media = {m.value: table.tensors[m.value][rows].to(device).float() for m in mods}
        feats, cond = model.embed_media(mods, media)
        return feats, cond if rerank_k else None

    # All texts padded to the longest one, so the rerank can gather any texts' hidden states.
    tok = tokenizer(
        data.texts, padding=True, truncation=True, max_length=model.config.max_text_length, return_tensors="pt"
    )

    def encode_texts(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        ids, mask = tok["input_ids"][rows].to(device), tok["attention_mask"][rows].to(device)
        feats, lower = model.embed_text(mods, ids, mask)
        return feats, lower if rerank_k else None

    media_rows, text_rows = shard.indices(len(table)), shard.indices(len(data.texts))
    media_parts = _encode_shard(encode_media, media_rows, batch_size, f"encode {key}{label}", progress)
    text_parts = _encode_shard(encode_texts, text_rows, batch_size, f"encode texts{label}", progress)
    gathered = parallel.gather((media_parts, text_parts))
    if gathered is None:
        model.train(was_training)
        return None
    item_matrix, condition = _in_order([g[0] for g in gathered], len(table), device)  # (I, C), (I, M, D)
    text_matrix, lower = _in_order([g[1] for g in gathered], len(data.texts), device)  # (T, C), (T, L, D)
    scores = (text_matrix @ item_matrix.T).float().cpu()  # (T, I) cosine similarities
    metrics = {"contrastive": retrieval_metrics(scores, data.text_item, ties=ties)}
    if dual:
        temperature = float(torch.exp(-model.logit_scale.detach()).clamp(min=1.0 / model.config.max_logit_scale))
        metrics["dual_softmax"] = {
            "text_to_item": retrieval_metrics(
                dual_softmax(scores, temperature, query="text"), data.text_item, ties=ties
            )["text_to_item"],
            "item_to_text": retrieval_metrics(
                dual_softmax(scores, temperature, query="item"), data.text_item, ties=ties
            )["item_to_text"],
        }
    if rerank_k:
        mask = tok["attention_mask"].to(device)  # (T, L)

        pair_matrix = np.full(tuple(scores.shape), np.nan, dtype=np.float32)

        def pair_scorer(text_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
            probs = model.match_probability(lower[text_idx], mask[text_idx], condition[item_idx]).cpu()
            pair_matrix[text_idx.numpy(), item_idx.numpy()] = probs.float().numpy()
            return probs

        reranked = {}
        for query in rerank_queries:
            direction = "text_to_item" if query == "text" else "item_to_text"
            matrix = rerank_top_k(scores, rerank_k, pair_scorer, query=query, batch_size=batch_size, progress=progress)
            reranked[direction] = retrieval_metrics(matrix, data.text_item, ties=ties)[direction]
        metrics[f"rerank@{rerank_k}"] = reranked
    model.train(was_training)
    details = {"captions": kinds, "ties": ties, "random_R@5": 100.0 * min(5, len(table)) / len(table)}
    if rerank_k:
        details["rerank_k"] = rerank_k
    return RetrievalResult(key, metrics, scores.numpy(), data, details, pair_matrix if rerank_k else None)


Encoded = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]


def _encode_shard(encode, rows: range, batch_size: int, desc: str, progress: bool) -> Encoded:
    """``(row indices, features, extra)`` of ``rows``, encoded ``batch_size`` at a time; on the CPU
    when the rows are one process's shard of several (``rows.step > 1``), since they travel to rank 0."""
    index = torch.tensor(list(rows), dtype=torch.long)
    feats, extras = [], []
    for start in tqdm(range(0, len(index), batch_size), desc=desc, disable=not progress):
        f, extra = encode(index[start : start + batch_size])
        feats.append(f.cpu() if rows.step > 1 else f)
        extras.append(extra.cpu() if rows.step > 1 and extra is not None else extra)
    if not feats:  # more processes than rows
        return index, torch.empty(0), None
    extra = torch.cat(extras) if extras[0] is not None else None
    return index, torch.cat(feats), extra


def _in_order(parts: Sequence[Encoded], n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Features of all ``n`` rows in row order from the shards' ``(indices, features, extra)``."""
    parts = [p for p in parts if len(p[0])]
    if len(parts) == 1:
        return parts[0][1].to(device), None if parts[0][2] is None else parts[0][2].to(device)
    index = torch.cat([p[0] for p in parts])
    order = torch.empty_like(index)
    order[index] = torch.arange(len(index))
    if len(index) != n or not torch.equal(torch.sort(index).values, torch.arange(n)):
        raise RuntimeError(f"the shards hold rows {sorted(index.tolist())[:8]}..., not each of 0..{n - 1} once")
    feats = torch.cat([p[1].to(device) for p in parts])[order.to(device)]
    extra = None if parts[0][2] is None else torch.cat([p[2].to(device) for p in parts])[order.to(device)]
    return feats, extra


def format_table(results: Sequence[RetrievalResult] | Sequence[dict]) -> str:
    """A plain-text table: one row per (group, method, direction) with R@1/5/10, MdR, MnR."""
    header = f"{'group':<12} {'method':<14} {'direction':<13} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'MdR':>7} {'MnR':>8} {'n':>6}"
    lines = [header, "-" * len(header)]
    for result in results:
        data = result.to_json() if isinstance(result, RetrievalResult) else result
        for method, directions in data["metrics"].items():
            for direction, m in directions.items():
                name = "text->item" if direction == "text_to_item" else "item->text"
                lines.append(
                    f"{data['group']:<12} {method:<14} {name:<13} {m['R@1']:6.1f} {m['R@5']:6.1f} {m['R@10']:6.1f} "
                    f"{m['median_rank']:7.1f} {m['mean_rank']:8.1f} {m['num_queries']:6d}"
                )
    return "\n".join(lines)


def load_retrieval_model(folder: str | os.PathLike, device: str | torch.device = "cpu"):
    """``(model, tokenizer, media settings)`` of a pretraining run's ``model/`` folder."""
    from transformers import AutoTokenizer

    from mico_chat.preprocess import MediaSettings

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: not a saved MiCo pretraining model (no config.json)")
    model = MiCoForPretraining.from_pretrained(folder).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    settings_file = folder / "media_settings.json"
    settings = (
        MediaSettings.from_dict(json.loads(settings_file.read_text())) if settings_file.is_file() else MediaSettings()
    )
    return model, tokenizer, settings
