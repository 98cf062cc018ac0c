"""Retrieval metrics on hand-computed cases: ties, several captions per item, dual softmax, rerank."""

import json
import math

import numpy as np
import pytest
import torch

from mico_chat.eval.retrieval import (
    dual_softmax,
    item_to_text_ranks,
    load_ground_truth,
    rerank_top_k,
    retrieval_metrics,
    summarize_ranks,
    text_to_item_ranks,
)
from mico_chat.eval.retrieval.ground_truth import GroundTruthError

# 5 captions of 3 items: item 0 has captions 0 and 1, item 1 caption 2, item 2 captions 3 and 4.
SCORES = np.array(
    [
        [0.9, 0.9, 0.2],  # t0 -> item 0, tied with item 1
        [0.3, 0.5, 0.4],  # t1 -> item 0, ranked last
        [0.2, 0.6, 0.8],  # t2 -> item 1, item 2 ahead
        [0.1, 0.7, 0.5],  # t3 -> item 2, item 1 ahead
        [0.0, 0.0, 0.8],  # t4 -> item 2, first
    ]
)
TEXT_ITEM = [0, 0, 1, 2, 2]


def test_text_to_item_ranks_by_hand_with_both_tie_rules():
    assert text_to_item_ranks(SCORES, TEXT_ITEM).tolist() == [2, 3, 2, 2, 1]
    assert text_to_item_ranks(SCORES, TEXT_ITEM, ties="optimistic").tolist() == [1, 3, 2, 2, 1]


def test_item_to_text_takes_the_best_caption_and_ignores_the_items_other_captions():
    # item 0: its captions t0 (0.9) and t1 (0.3); nothing else reaches 0.9 -> 1.
    # item 1: its caption t2 (0.6); t0 (0.9) and t3 (0.7) are ahead -> 3.
    # item 2: captions t3 (0.5) and t4 (0.8); t2 ties 0.8 -> 2 pessimistic, 1 optimistic.
    assert item_to_text_ranks(SCORES, TEXT_ITEM).tolist() == [1, 3, 2]
    assert item_to_text_ranks(SCORES, TEXT_ITEM, ties="optimistic").tolist() == [1, 3, 1]


def test_summary_values_and_lower_median():
    metrics = retrieval_metrics(SCORES, TEXT_ITEM)
    t2i = metrics["text_to_item"]
    assert t2i["R@1"] == pytest.approx(20.0) and t2i["R@5"] == 100.0 and t2i["R@10"] == 100.0
    assert t2i["median_rank"] == 2.0 and t2i["mean_rank"] == pytest.approx(2.0) and t2i["num_queries"] == 5
    i2t = metrics["item_to_text"]
    assert i2t["R@1"] == pytest.approx(100 / 3) and i2t["median_rank"] == 2.0 and i2t["mean_rank"] == pytest.approx(2.0)
    # Even count: the lower of the two middle ranks, as torch.median (VAST/VALOR) gives.
    assert summarize_ranks(np.array([4, 1, 3, 2]))["median_rank"] == 2.0
    assert summarize_ranks(np.array([1, 2, 3, 40]), ks=(1, 3))["R@3"] == 75.0


def test_constant_scores_rank_last_not_first():
    flat = np.zeros((4, 4))
    assert text_to_item_ranks(flat, [0, 1, 2, 3]).tolist() == [4, 4, 4, 4]
    assert retrieval_metrics(flat, [0, 1, 2, 3])["text_to_item"]["R@1"] == 0.0
    assert text_to_item_ranks(flat, [0, 1, 2, 3], ties="optimistic").tolist() == [1, 1, 1, 1]


def test_chunked_ranks_match_a_plain_loop():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(23, 9)).astype(float)  # many ties
    text_item = np.concatenate([np.arange(9), rng.integers(0, 9, size=14)])
    slow_t2i = [
        1 + sum(scores[t, j] >= scores[t, text_item[t]] for j in range(9) if j != text_item[t]) for t in range(23)
    ]
    slow_i2t = []
    for i in range(9):
        own = [t for t in range(23) if text_item[t] == i]
        best = max(scores[t, i] for t in own)
        slow_i2t.append(1 + sum(scores[t, i] >= best for t in range(23) if t not in own))
    assert text_to_item_ranks(scores, text_item, chunk=4).tolist() == slow_t2i
    assert item_to_text_ranks(scores, text_item, chunk=2).tolist() == slow_i2t


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="item 1 has no caption"):
        item_to_text_ranks(np.zeros((2, 3)), [0, 2])
    with pytest.raises(ValueError, match="names item 5"):
        text_to_item_ranks(np.zeros((2, 3)), [0, 5])
    with pytest.raises(ValueError, match="NaN"):
        text_to_item_ranks(np.array([[np.nan, 1.0]]), [0])
    with pytest.raises(ValueError, match="one item index per text"):
        text_to_item_ranks(np.zeros((2, 3)), [0])


def test_dual_softmax_demotes_an_item_every_text_likes():
    scores = np.array([[0.9, 0.8], [0.9, 0.1]])
    text_item = [1, 0]
    assert text_to_item_ranks(scores, text_item).tolist() == [2, 1]  # item 0 is a hub: t0 misses
    reweighted = dual_softmax(scores, 0.1, query="text")
    p = 1 / (1 + math.exp(-(0.8 - 0.1) / 0.1))  # softmax of column 1 over the two texts
    expected = torch.tensor([[0.9, 0.8 * p * 2], [0.9, 0.1 * (1 - p) * 2]], dtype=torch.float64)
    torch.testing.assert_close(reweighted, expected)
    assert text_to_item_ranks(reweighted, text_item).tolist() == [1, 1]
    by_item = dual_softmax(scores, 0.1, query="item")  # rows normalised over items
    q = 1 / (1 + math.exp(-(0.9 - 0.8) / 0.1))
    torch.testing.assert_close(by_item[0], torch.tensor([0.9 * q * 2, 0.8 * (1 - q) * 2], dtype=torch.float64))


def test_rerank_top_k_reorders_only_the_top_candidates():
    scores = np.array([[0.9, 0.8, 0.7, 0.1], [0.1, 0.2, 0.3, 0.4]])
    match = {(0, 0): 0.1, (0, 1): 0.9, (1, 3): 0.2, (1, 2): 0.7}
    calls = []

    def scorer(texts, items):
        calls.append(len(texts))
        return torch.tensor([match[(int(t), int(i))] for t, i in zip(texts, items)])

    reranked = rerank_top_k(scores, 2, scorer, batch_size=3)
    assert sorted(calls) == [1, 3]  # 4 pairs in batches of 3
    order = reranked.argsort(dim=1, descending=True).tolist()
    assert order[0] == [1, 0, 2, 3]  # top-2 {0, 1} swapped by the matcher; 2, 3 keep their order below
    assert order[1] == [2, 3, 1, 0]
    assert text_to_item_ranks(reranked, [1, 0]).tolist() == [1, 4]
    by_item = rerank_top_k(scores, 1, lambda t, i: torch.ones(len(t)), query="item")
    assert by_item.shape == (2, 4)
    assert by_item.argmax(0).tolist() == [0, 0, 0, 1]  # each item's best text stays first


def test_ground_truth_file_forms(tmp_path):
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([0, 0, 1]))
    assert load_ground_truth(listed, 3, 2).tolist() == [0, 0, 1]
    named = tmp_path / "named.json"
    named.write_text(json.dumps({"items": ["a", "b"], "text_item": ["b", "a", "b"]}))
    assert load_ground_truth(named, 3, 2).tolist() == [1, 0, 1]
    with pytest.raises(GroundTruthError, match="3 text rows"):
        load_ground_truth(named, 4, 2)
    with pytest.raises(GroundTruthError, match="'c'"):
        named.write_text(json.dumps({"items": ["a", "b"], "text_item": ["c"]}))
        load_ground_truth(named, 1, 2)
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(GroundTruthError, match="bad.json: not valid JSON"):
        load_ground_truth(bad, 1, 1)
