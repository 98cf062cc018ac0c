"""Lexical alignment: connectors trained to put media tokens next to the LLM's own word embeddings.

Stage ``stage1_lexical`` (see :mod:`.stages`) replaces the LLM loss of stage-1 alignment with a
loss in the LLM's input-embedding space. For each caption-pair sample, with ``M`` its media tokens
after the connectors and ``W`` the input embeddings of its caption's content words (both
L2-normalised, so only directions count)::

    coverage  = mean over words  of (1 - max over media tokens of cos(m, w))   every word is shown
    precision = mean over tokens of (1 - max over words       of cos(m, w))   every token shows a word
    loss      = coverage + precision      (averaged over the samples of the batch)

A symmetric Chamfer distance: a red square's clip pulls some tokens towards " red" and others
towards " square", and nothing towards " blue". The LLM never runs, so a step costs the
connectors' forward and backward only (the frozen encoder's outputs are cached): thousands of
captions per minute on a CPU, where the LLM-loss stage 1 of the default recipe read 16 captions in
about 9 s and, after 120 steps, still captioned three red squares as "a ball rolls across a row
of rows". Measured on the synthetic world (docs/default_model.md): after this stage (its first
version, ``docs/experiments/lexical/lexical_prototype.py``) and 150 steps of LoRA instruction tuning
the chat model names the colour of 32 of 40 training clips from the media (6 of 40 without it,
at the text prior's rate) and follows swapped media 30 times of 40.

Content words are caption tokens that contain a letter and occur in at most ``max_df`` of the
training captions (:func:`content_token_mask`): template words such as "background" or "moves",
present in most captions, carry nothing about a particular clip, and left in they become the
cheapest match for every token.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from mico_chat.processing import IGNORE_INDEX


def content_token_mask(
    label_rows: Iterable[Sequence[int]], tokenizer: Any, vocab_size: int, *, max_df: float = 0.4
) -> torch.Tensor:
    """``(vocab_size,)`` bool: tokens with a letter that occur in at most ``max_df`` of the label rows.

    ``label_rows``: per training sample, its label ids (``IGNORE_INDEX`` entries are skipped).
    """
    if not 0.0 < max_df <= 1.0:
        raise ValueError(f"max_df must be in (0, 1], got {max_df}")
    counts = torch.zeros(vocab_size, dtype=torch.long)
    rows = 0
    for labels in label_rows:
        ids = torch.as_tensor([i for i in labels if i != IGNORE_INDEX], dtype=torch.long).unique()
        counts[ids] += 1
        rows += 1
    if rows == 0:
        raise ValueError("no captions to count words in")
    seen = (counts > 0).nonzero().flatten().tolist()
    lettered = torch.zeros(vocab_size, dtype=torch.bool)
    for i in seen:
        lettered[i] = any(ch.isalpha() for ch in tokenizer.decode([i]))
    return lettered & (counts > 0) & (counts <= max_df * rows)


def _segments(input_ids: torch.Tensor, position_ids: torch.Tensor | None) -> torch.Tensor:
    """``(B*L,)`` sample index of every token: rows of a padded batch, position-id restarts of a packed one."""
    if position_ids is not None:
        starts = position_ids == 0
    else:
        starts = torch.zeros_like(input_ids, dtype=torch.bool)
        starts[:, 0] = True
    return starts.flatten().long().cumsum(0) - 1


def lexical_alignment_loss(
    model: torch.nn.Module, inputs: Mapping[str, Any], content: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss above for one collated batch (``input_ids``, ``labels``, ``media`` or
    ``encoder_features``, and ``position_ids`` when packed); returns ``(loss, parts)``."""
    input_ids, labels = inputs["input_ids"], inputs["labels"]
    tracks = {key: inputs[key] for key in ("video_audio", "video_spans") if key in inputs}  # fused video audio
    projected = model.encode_media(inputs.get("media"), inputs.get("encoder_features"), **tracks)
    seg = _segments(input_ids, inputs.get("position_ids"))
    flat_ids = input_ids.flatten()
    tokens, token_seg = [], []
    for modality, feats in projected.items():
        token_id = model.config.media_token_ids[modality.value]
        where = (flat_ids == token_id).nonzero().flatten()  # row-major: the order embed_inputs fills them
        tokens.append(feats.reshape(-1, feats.shape[-1]))
        token_seg.append(seg[where])
    if not tokens:
        raise ValueError("lexical alignment needs media in every batch; this batch has none")
    media = F.normalize(torch.cat(tokens).float(), dim=-1)
    media_seg = torch.cat(token_seg)
    flat_labels = labels.flatten()
    is_word = (flat_labels != IGNORE_INDEX) & content.to(flat_labels.device)[flat_labels.clamp(min=0)]
    words = F.normalize(model.get_input_embeddings()(flat_labels[is_word]).detach().float(), dim=-1)
    word_seg = seg[is_word]
    coverage, precision = [], []
    for s in media_seg.unique().tolist():
        m, w = media[media_seg == s], words[word_seg == s]
        if len(w) == 0:
            continue  # a caption of template words only: nothing to align to
        sim = m @ w.T  # (tokens, words)
        coverage.append(1 - sim.max(dim=0).values.mean())
        precision.append(1 - sim.max(dim=1).values.mean())
    if not coverage:
        zero = media.sum() * 0.0  # keeps the graph: a batch without content words trains nothing
        return zero, {"coverage": 0.0, "precision": 0.0}
    cov, prec = torch.stack(coverage).mean(), torch.stack(precision).mean()
    return cov + prec, {"coverage": float(cov.detach()), "precision": float(prec.detach())}
