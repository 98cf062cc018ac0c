"""The three MiCo pretraining objectives as plain functions (MiCo eq. 4-6, VAST eq. 1-3).

Random choices (hard negatives, masked positions) take an explicit ``torch.Generator`` so that a
training step is a pure function of its seed, which exact resume relies on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _rand(shape: torch.Size | tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) numbers drawn on the generator's device (a CPU generator also drives GPU runs)."""
    origin = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=origin).to(device)


def contrastive_loss(
    media: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor,
    *,
    label_smoothing: float = 0.0,
    negatives: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Omni-modal contrastive loss (MiCo eq. 4): the mean of the media->text and text->media
    cross-entropies over the batch, with pair ``i`` the positive of row ``i``.

    Args:
        media, text: ``(N, C)`` L2-normalised features of matching pairs.
        logit_scale: scalar ``log(tau)``; similarities are multiplied by ``exp(logit_scale)``.
        negatives: ``(M, C)`` L2-normalised features of extra captions that match no medium (hard
            negatives such as word-swapped captions, NegCLIP). They join the candidates of the
            media->text direction only; the text->media direction and the returned ``logits``
            stay ``N x N``.

    Returns:
        ``(loss, logits)`` with ``logits (N, N)`` = scaled media x text similarities.
    """
    if media.shape != text.shape:
        raise ValueError(f"media {tuple(media.shape)} and text {tuple(text.shape)} features differ in shape")
    logits = logit_scale.exp() * media @ text.T  # (N, N)
    target = torch.arange(media.shape[0], device=media.device)
    to_text = logits
    if negatives is not None:
        if negatives.shape[1:] != text.shape[1:]:
            raise ValueError(f"negatives {tuple(negatives.shape)} and text {tuple(text.shape)} differ in width")
        to_text = torch.cat([logits, logit_scale.exp() * media @ negatives.T], dim=1)  # (N, N + M)
    loss = 0.5 * (
        F.cross_entropy(to_text, target, label_smoothing=label_smoothing)
        + F.cross_entropy(logits.T, target, label_smoothing=label_smoothing)
    )
    return loss, logits


def sample_hard_negatives(
    logits: torch.Tensor, same: torch.Tensor | None = None, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """For each row, draw one negative column with probability ``softmax(row)`` (hard-negative
    mining as in ALBEF/VAST: similar but wrong candidates are drawn more often).

    Args:
        logits: ``(N, N)`` similarities; row ``i``'s positive is column ``i``.
        same: ``(N, N)`` True where column ``j`` is an equally valid match for row ``i`` (e.g. an
            identical caption); those are never drawn. The diagonal is always excluded.

    Returns:
        ``(N,)`` column indices. A row whose every other column is excluded falls back to a
        uniform draw over the other columns (a false negative is better than none).
    """
    n = logits.shape[0]
    if n < 2:
        raise ValueError("hard-negative mining needs a batch of at least 2 pairs")
    eye = torch.eye(n, dtype=torch.bool, device=logits.device)
    excluded = eye if same is None else (same.bool() | eye)
    weights = torch.softmax(logits.detach().float(), dim=1).masked_fill(excluded, 0.0)
    empty = weights.sum(1) <= 0
    if bool(empty.any()):
        weights[empty] = (~eye[empty]).float()
    origin = generator.device if generator is not None else weights.device
    return torch.multinomial(weights.to(origin), 1, generator=generator).squeeze(1).to(logits.device)


def matching_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Feature-matching loss (MiCo eq. 5): binary match / no-match cross-entropy of ``(P, 2)`` logits."""
    return F.cross_entropy(logits, labels)


def mask_caption_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    mask_prob: float,
    mask_token_id: int,
    random_token_range: tuple[int, int],
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask caption tokens for conditional causal masked generation (MiCo eq. 6, VAST's masker).

    Every token after the first ([CLS]) that is not padding is chosen with ``mask_prob`` (at least
    one per caption); a chosen token becomes [MASK] 80 % of the time, a random ordinary token 10 %,
    and stays 10 %. [SEP] can be chosen, so the model learns where a caption ends.

    Returns:
        ``(masked_ids (B, L), labels (B, L))``: labels hold the original id at chosen positions
        and ``-100`` elsewhere.
    """
    ids = input_ids.clone()
    eligible = attention_mask.bool().clone()
    eligible[:, 0] = False
    if not bool(eligible.any(1).all()):
        raise ValueError("every caption needs at least one token after [CLS] to mask")
    chosen = (_rand(ids.shape, generator, ids.device) < mask_prob) & eligible
    # A caption with nothing chosen gets one random eligible position (VAST redraws until one is).
    none = ~chosen.any(1)
    if bool(none.any()):
        noise = _rand(ids.shape, generator, ids.device).masked_fill(~eligible, -1.0)
        pick = noise.argmax(1)
        chosen[none, pick[none]] = True
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    action = _rand(ids.shape, generator, ids.device)
    start, stop = random_token_range
    random_ids = (start + _rand(ids.shape, generator, ids.device) * (stop - start)).long().clamp(max=stop - 1)
    ids = torch.where(chosen & (action < 0.8), torch.full_like(ids, mask_token_id), ids)
    ids = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, ids)
    return ids, labels


def generation_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the masked positions only: ``logits (K, V)`` for ``labels (K,)``."""
    return F.cross_entropy(logits, labels)
