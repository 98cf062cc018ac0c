"""Media-contrastive decoding (mico_chat.contrast): the step rule by hand, on a tiny model."""

import pytest
import torch

from mico_chat.api import GenerationSettings
from mico_chat.contrast import MediaContrastLogitsProcessor, noise_like_media
from test_model import media_batch, prompt_ids


def _by_hand(model, ids, mask, media, alpha, cutoff, steps):
    """Greedy decoding with VCD's rule, each step a full forward pass of both prompts (no cache)."""
    embeds = model.embed_inputs(ids, media)
    negative = model.embed_inputs(ids, noise_like_media(media))
    out = []
    for _ in range(steps):
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        pos = model.language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits[:, -1]
        neg = model.language_model(inputs_embeds=negative, attention_mask=mask, position_ids=positions).logits[:, -1]
        pos, neg = pos.float().log_softmax(-1), neg.float().log_softmax(-1)
        scores = (1 + alpha) * pos - alpha * neg
        scores[pos < pos.max(-1, keepdim=True).values + torch.log(torch.tensor(cutoff))] = float("-inf")
        token = scores.argmax(-1, keepdim=True)  # (B, 1)
        out.append(token)
        step = model.get_input_embeddings()(token)
        embeds, negative = torch.cat([embeds, step], 1), torch.cat([negative, step], 1)
        mask = torch.cat([mask, torch.ones_like(token)], 1)
    return torch.cat(out, 1)


@pytest.mark.parametrize("alpha, cutoff", [(1.0, 0.1), (3.0, 0.5)])
def test_generate_follows_the_contrast_rule_with_left_padding(tiny, alpha, cutoff):
    model, _ = tiny
    model.eval()
    one = prompt_ids(model, n_video=1, n_audio=1)
    pad = torch.zeros(1, 3, dtype=one.dtype)
    ids = torch.cat([torch.cat([pad, one], 1), torch.cat([torch.tensor([[10, 11, 12]]), one], 1)])  # row 0 left-padded
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    media = media_batch(2, 2)
    with torch.no_grad():
        got = model.generate(
            ids, mask, media, media_contrast=alpha, media_contrast_cutoff=cutoff, max_new_tokens=6,
            do_sample=False, min_new_tokens=6, eos_token_id=None, pad_token_id=0,
        )  # fmt: skip
        expected = _by_hand(model, ids, mask, media, alpha, cutoff, steps=6)
        plain = model.generate(ids, mask, media, max_new_tokens=6, do_sample=False, min_new_tokens=6, pad_token_id=0)
    assert torch.equal(got, expected)
    assert got.shape == plain.shape == (2, 6)


def test_the_contrast_keeps_only_plausible_tokens_and_what_earlier_rules_removed():
    class Fixed(torch.nn.Module):  # a "language model" whose next-token logits never change
        def __init__(self, logits):
            super().__init__()
            self.logits, self.emb = logits, torch.nn.Embedding(4, 2)

        def get_input_embeddings(self):
            return self.emb

        def forward(self, inputs_embeds, **kwargs):
            return type("Out", (), {"logits": self.logits.expand(inputs_embeds.shape[0], 1, -1), "past_key_values": None})

    # Media-conditioned: token 0 likeliest, token 1 close behind, token 2 implausible, token 3 banned.
    positive = torch.tensor([[2.0, 1.8, -5.0, 0.0]])
    positive[0, 3] = float("-inf")
    # Without media the model also likes token 0 (the prior) and dislikes 1 and 2.
    negative = torch.tensor([[3.0, -1.0, -9.0, 0.0]])
    proc = MediaContrastLogitsProcessor(Fixed(negative), torch.zeros(1, 2, 2), torch.ones(1, 2), alpha=1.0, cutoff=0.1)
    scores = proc(torch.zeros(1, 0, dtype=torch.long), positive.clone())
    assert scores.argmax().item() == 1  # the media's evidence for token 1 beats the prior's token 0
    assert torch.isinf(scores[0, 2]) and torch.isinf(scores[0, 3])  # implausible; banned earlier
    with pytest.raises(ValueError, match="alpha"):
        MediaContrastLogitsProcessor(Fixed(negative), torch.zeros(1, 2, 2), torch.ones(1, 2), alpha=0.0)


def test_settings_pass_the_contrast_only_when_on(tiny):
    assert "media_contrast" not in GenerationSettings().generate_kwargs()
    kwargs = GenerationSettings(media_contrast=1.0).generate_kwargs()
    assert kwargs["media_contrast"] == 1.0 and kwargs["media_contrast_cutoff"] == 0.1
    with pytest.raises(ValueError, match="media_contrast"):
        GenerationSettings(media_contrast=-1.0)
    model, _ = tiny
    with pytest.raises(ValueError, match="one sequence"):
        model.generate(prompt_ids(model), media=media_batch(), media_contrast=1.0, num_beams=2, max_new_tokens=2)
