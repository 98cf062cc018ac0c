"""Cross-modal retrieval metrics on a text x item score matrix (VAST/VALOR protocol).

``scores[t, i]`` is how well text ``t`` matches item ``i`` (a video, an audio clip, an image);
``text_item[t]`` is the index of the item text ``t`` describes. An item may have several texts.

- **text -> item**: each text is a query; its rank is the position of its item among all items.
- **item -> text**: each item is a query; its rank is the position of its *best-ranked* caption
  among all texts (VAST/VALOR: the minimum rank over the item's captions).

Ranks are 1-based. R@K is the percentage of queries with rank <= K; the median rank is the
*lower* median (``torch.median``, as VAST/VALOR compute it); the mean rank is the plain mean.

**Ties** (the rule is ours: the reference code sorts with an unstable sort, so its result on ties
is arbitrary): with ``ties="pessimistic"`` (default) every wrong candidate scoring the same as the
correct one is ranked ahead of it, so a model that gives every candidate the same score gets the
worst rank, not the best. ``ties="optimistic"`` ranks them behind it. For item -> text the other
captions of the same item never count against it.

Both directions are computed column- or row-chunk-wise, so a 10k x 10k matrix needs a few
hundred MB at most.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch

Ties = Literal["pessimistic", "optimistic"]
RECALL_KS: tuple[int, ...] = (1, 5, 10)


def _as_tensor(scores: np.ndarray | torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(scores)
    if x.dim() != 2:
        raise ValueError(f"scores must be a (texts, items) matrix, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        x = x.double()
    if not bool(torch.isfinite(x).all()):
        raise ValueError("scores contain NaN or infinite values")
    return x


def _as_index(text_item: Sequence[int] | np.ndarray | torch.Tensor, num_texts: int, num_items: int) -> torch.Tensor:
    index = torch.as_tensor(np.asarray(text_item), dtype=torch.long)
    if index.dim() != 1 or index.numel() != num_texts:
        raise ValueError(f"text_item must give one item index per text ({num_texts}), got shape {tuple(index.shape)}")
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= num_items):
        bad = int(index[(index < 0) | (index >= num_items)][0])
        raise ValueError(f"text_item names item {bad}, but the score matrix has items 0..{num_items - 1}")
    return index


def text_to_item_ranks(
    scores: np.ndarray | torch.Tensor,
    text_item: Sequence[int] | np.ndarray | torch.Tensor,
    *,
    ties: Ties = "pessimistic",
    chunk: int = 4096,
) -> torch.Tensor:
    """1-based rank of each text's item among all items: ``(T,)`` long.

    Args:
        scores: ``(T, I)`` text x item scores (higher = better match).
        text_item: ``(T,)`` item index of each text.
        ties: how candidates scoring exactly the same as the correct item count (module docstring).
        chunk: rows processed at once (bounds memory at ``chunk * I`` booleans).
    """
    s = _as_tensor(scores)
    index = _as_index(text_item, s.shape[0], s.shape[1])
    ranks = torch.empty(s.shape[0], dtype=torch.long)
    for start in range(0, s.shape[0], chunk):
        rows = s[start : start + chunk]  # (c, I)
        gt = rows.gather(1, index[start : start + chunk, None])  # (c, 1)
        if ties == "pessimistic":
            ahead = (rows >= gt).sum(1) - 1  # every other item scoring >= the right one
        elif ties == "optimistic":
            ahead = (rows > gt).sum(1)
        else:
            raise ValueError(f"ties must be 'pessimistic' or 'optimistic', got {ties!r}")
        ranks[start : start + chunk] = ahead + 1
    return ranks


def item_to_text_ranks(
    scores: np.ndarray | torch.Tensor,
    text_item: Sequence[int] | np.ndarray | torch.Tensor,
    *,
    ties: Ties = "pessimistic",
    chunk: int = 4096,
) -> torch.Tensor:
    """1-based rank of each item's best-ranked caption among all texts: ``(I,)`` long.

    Every item must have at least one text. Other captions of the same item are not counted
    against it (they are right answers too).
    """
    s = _as_tensor(scores)
    index = _as_index(text_item, s.shape[0], s.shape[1])
    counts = torch.bincount(index, minlength=s.shape[1])
    if bool((counts == 0).any()):
        missing = int(torch.nonzero(counts == 0)[0])
        raise ValueError(f"item {missing} has no caption; item -> text retrieval needs one per item")
    ranks = torch.empty(s.shape[1], dtype=torch.long)
    for start in range(0, s.shape[1], chunk):
        cols = s[:, start : start + chunk]  # (T, c)
        own = index[:, None] == torch.arange(start, start + cols.shape[1])[None, :]  # (T, c) right captions
        best = cols.masked_fill(~own, float("-inf")).amax(0, keepdim=True)  # (1, c) best right caption
        if ties == "pessimistic":
            ahead = ((cols >= best) & ~own).sum(0)
        elif ties == "optimistic":
            ahead = ((cols > best) & ~own).sum(0)
        else:
            raise ValueError(f"ties must be 'pessimistic' or 'optimistic', got {ties!r}")
        ranks[start : start + cols.shape[1]] = ahead + 1
    return ranks


def summarize_ranks(ranks: torch.Tensor | np.ndarray, ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
    """``{"R@1": %, "R@5": %, "R@10": %, "median_rank": lower median, "mean_rank": mean, "num_queries": n}``."""
    r = torch.as_tensor(np.asarray(ranks)).long()
    if r.numel() == 0:
        raise ValueError("no queries to summarize")
    out: dict[str, float] = {f"R@{k}": 100.0 * float((r <= k).double().mean()) for k in ks}
    out["median_rank"] = float(r.sort().values[(r.numel() - 1) // 2])  # lower median, as torch.median
    out["mean_rank"] = float(r.double().mean())
    out["num_queries"] = int(r.numel())
    return out


def retrieval_metrics(
    scores: np.ndarray | torch.Tensor,
    text_item: Sequence[int] | np.ndarray | torch.Tensor,
    *,
    ties: Ties = "pessimistic",
    ks: Sequence[int] = RECALL_KS,
) -> dict[str, dict[str, float]]:
    """Both directions: ``{"text_to_item": {...}, "item_to_text": {...}}`` (see :func:`summarize_ranks`)."""
    return {
        "text_to_item": summarize_ranks(text_to_item_ranks(scores, text_item, ties=ties), ks),
        "item_to_text": summarize_ranks(item_to_text_ranks(scores, text_item, ties=ties), ks),
    }


def dual_softmax(
    scores: np.ndarray | torch.Tensor, temperature: float, *, query: Literal["text", "item"]
) -> torch.Tensor:
    """Dual-softmax inference (CAMoE; VALOR's and VidLA's evaluation): re-weight each score by a
    softmax over the *other* queries, so a candidate that many queries like is demoted.

    For text queries each item's column is normalised over texts:
    ``S'[t, i] = S[t, i] * softmax_t(S[:, i] / temperature) * T``; for item queries each text's row
    is normalised over items: ``S'[t, i] = S[t, i] * softmax_i(S[t, :] / temperature) * I``.
    The constant factor (``T`` or ``I``) does not change any ranking; it keeps VALOR's scale.
    Returns ``(T, I)``; use it for the ranking of that query direction only.
    """
    s = _as_tensor(scores)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if query == "text":
        return s * torch.softmax(s / temperature, dim=0) * s.shape[0]
    if query == "item":
        return s * torch.softmax(s / temperature, dim=1) * s.shape[1]
    raise ValueError(f"query must be 'text' or 'item', got {query!r}")


PairScorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(text_indices (P,), item_indices (P,)) -> (P,)`` match scores (e.g. matching-head probabilities)."""


def rerank_top_k(
    scores: np.ndarray | torch.Tensor,
    k: int,
    pair_scorer: PairScorer,
    *,
    query: Literal["text", "item"] = "text",
    batch_size: int = 256,
    progress: bool = False,
) -> torch.Tensor:
    """Two-stage ranking (VAST/MiCo appendix B): keep each query's top ``k`` candidates by
    ``scores``, order them by ``pair_scorer``, and place every other candidate below them in its
    first-stage order.

    Returns a ``(T, I)`` matrix to rank in the ``query`` direction only. The top-``k`` entries hold
    ``pair score + offset`` and the rest ``first-stage score - offset'``, with offsets chosen so the
    two tiers never overlap. (VAST's code sets the rest to 0; keeping their first-stage order
    changes only ranks beyond ``k``.) Ties between pair scores follow the metric's tie rule.
    """
    s = _as_tensor(scores).double()
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if query not in ("text", "item"):
        raise ValueError(f"query must be 'text' or 'item', got {query!r}")
    mat = s if query == "text" else s.T  # rows are queries
    k = min(k, mat.shape[1])
    top = mat.topk(k, dim=1).indices  # (Q, k)
    q_idx = torch.arange(mat.shape[0])[:, None].expand_as(top).reshape(-1)
    c_idx = top.reshape(-1)
    text_idx, item_idx = (q_idx, c_idx) if query == "text" else (c_idx, q_idx)
    pair_scores = []
    from tqdm.auto import tqdm  # deferred: only rerank needs it

    for start in tqdm(range(0, q_idx.numel(), batch_size), desc=f"rerank top-{k}", disable=not progress):
        stop = start + batch_size
        out = torch.as_tensor(pair_scorer(text_idx[start:stop], item_idx[start:stop])).double().flatten()
        if out.numel() != min(stop, q_idx.numel()) - start:
            raise ValueError(f"pair_scorer returned {out.numel()} scores for {min(stop, q_idx.numel()) - start} pairs")
        pair_scores.append(out)
    pairs = torch.cat(pair_scores) if pair_scores else torch.empty(0, dtype=torch.float64)
    if not bool(torch.isfinite(pairs).all()):
        raise ValueError("pair_scorer returned NaN or infinite scores")
    new = mat - mat.max(dim=1, keepdim=True).values - 1.0  # tier 2: <= -1, first-stage order kept
    if pairs.numel():
        new[q_idx, c_idx] = pairs - pairs.min() + 1.0  # tier 1: >= 1, ordered by pair score
    return new if query == "text" else new.T
