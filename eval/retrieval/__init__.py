"""Cross-modal retrieval: metrics on a score matrix (VAST/VALOR protocol, several captions per
item, dual-softmax, top-K rerank) and the evaluator that scores a pretrained MiCo model on records.

The metrics (:mod:`.metrics`, :mod:`.ground_truth`) need only numpy and torch; the evaluator
(:mod:`.evaluator`) loads models and media and is imported on demand.
"""

from .ground_truth import load_ground_truth
from .metrics import (
    RECALL_KS,
    dual_softmax,
    item_to_text_ranks,
    rerank_top_k,
    retrieval_metrics,
    summarize_ranks,
    text_to_item_ranks,
)

__all__ = [
    "RECALL_KS",
    "dual_softmax",
    "item_to_text_ranks",
    "load_ground_truth",
    "rerank_top_k",
    "retrieval_metrics",
    "summarize_ranks",
    "text_to_item_ranks",
]
