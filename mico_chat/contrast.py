"""Media-contrastive decoding: subtract what the LLM would say without the media.

A chat model trained on a world where some factor values always come together (every held-out
clip of the synthetic world shows a (shape, colour) pair no training clip shows) learns that
co-occurrence as a language prior: asked "What colour is the cross?", it leans towards the colours
crosses had in training, whatever the frames show. Visual Contrastive Decoding (Leng et al., CVPR
2024, "Mitigating Object Hallucinations in Large Vision-Language Models through Visual Contrastive
Decoding") counters such priors at inference: each step's next-token scores are

    (1 + alpha) * log p(token | prompt, media) - alpha * log p(token | prompt, distorted media)

over the tokens that the media-conditioned model itself finds plausible (probability at least
``cutoff`` times its most likely token's; the others are never chosen). The distorted media here
are Gaussian noise in the processor's normalised value space, the same shapes as the real media,
so the prompt, its placeholders and its padding are unchanged: what the two passes disagree on is
what the media contributed. VCD's defaults are alpha = 1 and cutoff = 0.1.

The contrast costs a second LLM pass per step (its own key-value cache) and one more encoder pass.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from transformers import LogitsProcessor


def noise_like(values: torch.Tensor, *, seed: int = 0) -> torch.Tensor:
    """Standard Gaussian noise of ``values``' shape, dtype and device; ``seed`` fixes it. Media
    values are the processor's normalised pixels and filterbanks, so noise is in their range."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(values.shape, generator=generator).to(device=values.device, dtype=values.dtype)


def noise_like_media(media: Mapping[str, torch.Tensor] | None, *, seed: int = 0) -> dict[str, torch.Tensor] | None:
    """:func:`noise_like` for each modality's values (``None`` stays ``None``)."""
    if media is None:
        return None
    return {k: noise_like(v, seed=seed + i) for i, (k, v) in enumerate(media.items())}


class MediaContrastLogitsProcessor(LogitsProcessor):
    """VCD's step rule (module docstring) for a ``generate`` started from ``inputs_embeds``.

    Args:
        language_model: the causal LM that ``generate`` runs (called here with its own cache).
        negative_embeds: ``(B, L, d)`` prompt embeddings with the distorted media merged in,
            aligned row for row and position for position with the real prompt.
        attention_mask: ``(B, L)`` the prompt's mask (left padding as in the real prompt).
        alpha: contrast strength (> 0).
        cutoff: adaptive plausibility threshold in (0, 1].
    """

    def __init__(
        self,
        language_model: torch.nn.Module,
        negative_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        alpha: float = 1.0,
        cutoff: float = 0.1,
    ):
        if alpha <= 0:
            raise ValueError(f"media contrast alpha must be > 0, got {alpha}")
        if not 0 < cutoff <= 1:
            raise ValueError(f"media contrast cutoff must be in (0, 1], got {cutoff}")
        self.lm = language_model
        self.alpha, self.cutoff = alpha, cutoff
        self._pending: torch.Tensor | None = negative_embeds
        self._mask = attention_mask
        self._cache = None
        self._seen = 0  # generated tokens already fed to the negative pass

    @torch.no_grad()
    def _negative_scores(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self._pending is not None:  # first step: the whole prompt
            embeds, self._pending = self._pending, None
            mask = self._mask
            positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        else:
            new = input_ids[:, self._seen :]
            embeds = self.lm.get_input_embeddings()(new)
            ones = torch.ones(new.shape, dtype=self._mask.dtype, device=self._mask.device)
            self._mask = torch.cat([self._mask, ones], dim=1)
            last = self._mask.long().cumsum(-1) - 1
            positions = last[:, -new.shape[1] :]
        self._seen = input_ids.shape[1]
        out = self.lm(
            inputs_embeds=embeds,
            attention_mask=self._mask,
            position_ids=positions,
            past_key_values=self._cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self._cache = out.past_key_values
        return out.logits[:, -1].float()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        negative = torch.log_softmax(self._negative_scores(input_ids), dim=-1)
        positive = torch.log_softmax(scores.float(), dim=-1)
        contrasted = (1 + self.alpha) * positive - self.alpha * negative
        # Adaptive plausibility: only tokens the real media make likely enough may be chosen;
        # tokens an earlier processor ruled out (-inf) stay out.
        keep = positive >= positive.max(dim=-1, keepdim=True).values + torch.log(torch.tensor(self.cutoff))
        return torch.where(keep, contrasted, torch.full_like(contrasted, float("-inf"))).to(scores.dtype)
