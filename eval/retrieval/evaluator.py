"""Score a pretrained MiCo model on text <-> media retrieval over caption records.

Items are the distinct media of the records (records sharing media are one item with several
captions); texts are the chosen caption kinds of every record. Features come from
:meth:`MiCoForPretraining.embed_media` / :meth:`embed_text` in batches (progress bar); the score
matrix is their dot product (cosine similarity). Options:

- ``dual_softmax``: re-weight the scores per query direction (:func:`.metrics.dual_softmax`) with
  the model's learned temperature;
- ``rerank_k``: re-order each query's top-K candidates with the matching head (MiCo appendix B,
  VAST section 5.1: K = 50).
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
) -> RetrievalResult:
    """Retrieval metrics of ``model`` for the query group ``group`` over ``table``'s items.

    Args:
        table: preprocessed media (:func:`mico_chat.pretraining.build_media_table`) with the
            group's modalities.
        caption_kinds: caption kinds used as texts (default :func:`default_caption_kind`).
        dual: also report dual-softmax metrics.
        rerank_k: also report metrics after re-ranking the top ``rerank_k`` with the matching head.
        rerank_queries: the query directions to re-rank (``text``: text -> item, ``item``:
            item -> text); each costs ``queries x rerank_k`` matching passes.
        limit: evaluate on the first ``limit`` items only.
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
    device = model.logit_scale.device
    was_training = model.training
    model.eval()
    media_feats, conditions = [], []
    for start in tqdm(range(0, len(table), batch_size), desc=f"encode {key}", disable=not progress):
        media = {m.value: table.tensors[m.value][start : start + batch_size].to(device).float() for m in mods}
        feats, cond = model.embed_media(mods, media)
        media_feats.append(feats)
        conditions.append(cond if rerank_k else None)
    # All texts padded to the longest one, so the rerank can gather any texts' hidden states.
    tok = tokenizer(
        data.texts, padding=True, truncation=True, max_length=model.config.max_text_length, return_tensors="pt"
    )
    text_feats, lowers = [], []
    for start in tqdm(range(0, len(data.texts), batch_size), desc="encode texts", disable=not progress):
        ids = tok["input_ids"][start : start + batch_size].to(device)
        feats, lower = model.embed_text(mods, ids, tok["attention_mask"][start : start + batch_size].to(device))
        text_feats.append(feats)
        if rerank_k:
            lowers.append(lower)
    item_matrix = torch.cat(media_feats)  # (I, C)
    text_matrix = torch.cat(text_feats)  # (T, C)
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
        condition = torch.cat(conditions)  # (I, M, D)
        lower, mask = torch.cat(lowers), tok["attention_mask"].to(device)  # (T, L, D), (T, L)

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
