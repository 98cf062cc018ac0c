"""Text tower parity with transformers' BERT, the three objectives, and the pretraining model's contracts."""

import dataclasses
import math

import pytest
import torch
from transformers import BertConfig, BertModel

from mico_chat.encoders import (
    MiCoEncoder,
    MiCoForPretraining,
    MiCoTextModel,
    PretrainingBatch,
    build_pretraining_model,
    group_key,
    join_captions,
    parse_group,
)
from mico_chat.encoders.losses import contrastive_loss, mask_caption_tokens, sample_hard_negatives
from mico_chat.modality import Modality
from helpers.tiny_pretraining import (
    CAPTIONS,
    TINY_PT_ENCODER,
    tiny_bert_tokenizer,
    tiny_pretraining_model,
    tiny_text_config,
)

# ------------------------------------------------------------------ text tower


def _bert_pair(is_decoder: bool):
    config = BertConfig(
        vocab_size=50, hidden_size=24, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        is_decoder=is_decoder, add_cross_attention=is_decoder, attn_implementation="eager",
    )  # fmt: skip
    torch.manual_seed(0)
    ref = BertModel(config, add_pooling_layer=False).eval()
    ours = MiCoTextModel(tiny_text_config(50, num_hidden_layers=2, cross_attention_layers=None if is_decoder else []))
    state = {k: v for k, v in ref.state_dict().items() if k in ours.state_dict()}
    missing, unexpected = ours.load_state_dict(state, strict=False)
    assert not unexpected and all("sampling" in k for k in missing)
    return ref, ours.eval()


def test_text_tower_matches_bert_bidirectional_with_padding():
    ref, ours = _bert_pair(is_decoder=False)
    ids = torch.randint(5, 50, (2, 7))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask).last_hidden_state
        got = ours(ids, mask)
    torch.testing.assert_close(got[mask.bool()], expected[mask.bool()], rtol=0, atol=1e-5)


def test_text_tower_matches_bert_decoder_causal_with_cross_attention():
    ref, ours = _bert_pair(is_decoder=True)
    ids = torch.randint(5, 50, (2, 6))
    cond = torch.randn(2, 5, 24)
    with torch.no_grad():
        expected = ref(input_ids=ids, encoder_hidden_states=cond, use_cache=False).last_hidden_state
        got = ours(ids, torch.ones_like(ids), causal=True, condition=cond)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_minilm_weights_load_and_match_transformers():
    from transformers import AutoTokenizer

    from mico_chat.weights import resolve_model_path

    path = resolve_model_path("all-minilm-l6-v2", kind="text-encoder", auto_fetch=False)
    tokenizer = AutoTokenizer.from_pretrained(path)
    ref = BertModel.from_pretrained(path).eval()
    ours, fresh = MiCoTextModel.from_bert(path, cross_attention_layers=[4, 5])
    assert fresh and all("crossattention" in k for k in fresh)  # only the new cross-attention is not loaded
    batch = tokenizer(CAPTIONS[:4], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = ref(**batch).last_hidden_state
        got = ours.eval()(batch["input_ids"], batch["attention_mask"])
    keep = batch["attention_mask"].bool()
    torch.testing.assert_close(got[keep], expected[keep], rtol=0, atol=1e-5)


def test_from_bert_refuses_a_folder_without_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        MiCoTextModel.from_bert(tmp_path)


# ------------------------------------------------------------------ losses


def test_contrastive_loss_by_hand():
    media = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    scale = torch.tensor(math.log(2.0))
    loss, logits = contrastive_loss(media, text, scale)
    sims = 2 * media @ text.T  # [[2, 1.2], [0, 1.6]]
    row = -(torch.log_softmax(sims, 1).diagonal()).mean()
    col = -(torch.log_softmax(sims, 0).diagonal()).mean()
    torch.testing.assert_close(loss, 0.5 * (row + col))
    torch.testing.assert_close(logits, sims)


def test_contrastive_loss_with_extra_negative_captions():
    media = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    negatives = torch.tensor([[0.8, 0.6]])  # close to medium 0, not its caption
    scale = torch.tensor(math.log(2.0))
    loss, logits = contrastive_loss(media, text, scale, negatives=negatives)
    sims = 2 * media @ text.T
    to_text = torch.cat([sims, 2 * media @ negatives.T], 1)  # (2, 3): the negative joins each row
    row = -(torch.log_softmax(to_text, 1).diagonal()).mean()
    col = -(torch.log_softmax(sims, 0).diagonal()).mean()  # text->media is unchanged
    torch.testing.assert_close(loss, 0.5 * (row + col))
    torch.testing.assert_close(logits, sims)
    assert loss > contrastive_loss(media, text, scale)[0]  # a hard negative makes the task harder
    with pytest.raises(ValueError, match="width"):
        contrastive_loss(media, text, scale, negatives=torch.zeros(1, 3))


def test_hard_negatives_skip_positives_and_identical_captions():
    logits = torch.tensor([[0.0, 50.0, 49.0], [50.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_hard_negatives(logits, generator=gen) for _ in range(200)])
    assert (draws[:, 0] == 1).float().mean() > 0.6 and (draws[:, 0] != 0).all()  # the hardest wins most often
    assert (draws[:, 1] == 0).all()  # softmax mass of 1 on column 0
    same = torch.tensor([[True, True, False], [True, True, False], [False, False, True]])
    draws = torch.stack([sample_hard_negatives(logits, same, generator=gen) for _ in range(50)])
    assert (draws[:, 0] == 2).all() and (draws[:, 1] == 2).all()  # column 1/0 is the same caption
    alone = torch.ones(2, 2, dtype=torch.bool)  # every other column excluded: fall back to a uniform draw
    assert sample_hard_negatives(torch.zeros(2, 2), alone, generator=gen).tolist() == [1, 0]


def test_caption_masking_rules():
    ids = torch.arange(10, 74).view(2, 32)
    mask = torch.ones_like(ids)
    mask[1, 20:] = 0
    gen = torch.Generator().manual_seed(0)
    masked, labels = mask_caption_tokens(
        ids, mask, mask_prob=0.6, mask_token_id=4, random_token_range=(5, 9), generator=gen
    )
    chosen = labels != -100
    assert not chosen[:, 0].any() and not chosen[1, 20:].any()
    assert (labels[chosen] == ids[chosen]).all()
    assert (masked[~chosen] == ids[~chosen]).all()
    assert 0.4 < chosen[0].float().mean() < 0.8
    replaced = masked[chosen]
    assert (replaced == 4).float().mean() > 0.6 and ((replaced >= 5) & (replaced < 9)).any()
    again = mask_caption_tokens(
        ids, mask, mask_prob=0.6, mask_token_id=4, random_token_range=(5, 9), generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(again[0], masked) and torch.equal(again[1], labels)
    short = torch.tensor([[2, 7, 3]])
    _, one = mask_caption_tokens(
        short, torch.ones_like(short), mask_prob=1e-9, mask_token_id=4, random_token_range=(5, 9)
    )
    assert (one != -100).sum() == 1  # at least one token per caption


# ------------------------------------------------------------------ model


def _batch(tokenizer, group=("video",), n=4, objectives=("contrastive", "matching", "generation"), seed=0):
    g = torch.Generator().manual_seed(seed)
    media = {
        "video": torch.randn(n, 2, 3, 16, 16, generator=g),
        "audio": torch.randn(n, 1, 32, 16, generator=g),
    }
    captions = CAPTIONS[:n]
    tok = tokenizer(captions, padding=True, return_tensors="pt")
    return PretrainingBatch(
        group=parse_group(group),
        media={m: media[m] for m in group},
        input_ids=tok["input_ids"],
        attention_mask=tok["attention_mask"],
        sampling_context=torch.full((n,), 1),
        caption_ids=torch.arange(n),
        objectives=tuple(objectives),
    )


@pytest.fixture(scope="module")
def tiny_pt():
    return tiny_pretraining_model()


def test_all_objectives_train_every_part(tiny_pt):
    model, tok = tiny_pt
    model.train()
    model.zero_grad()
    out = model(_batch(tok, ("audio", "video")), generator=torch.Generator().manual_seed(0))
    assert set(out.losses) == {"contrastive", "matching", "generation"}
    assert torch.isfinite(out.loss) and out.loss.item() == pytest.approx(
        sum(v.item() for v in out.losses.values()), rel=1e-5
    )
    out.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    for name in (
        "encoder.layers.0.mlp.fc1.weight",
        "fusion_heads.audio+video.weight",
        "text.encoder.layer.1.crossattention.self.query.weight",
        "matching_head.linear2.weight",
        "lm_head.transform.dense.weight",
        "condition_adapters.video.proj.weight",
        "logit_scale",
    ):
        assert grads[name] is not None and grads[name].abs().sum() > 0, name
    assert grads["contrastive_heads.video.weight"] is None  # a joint group uses its fusion head


def test_swapped_captions_enter_the_contrastive_loss_as_negatives(tiny_pt):
    model, tok = tiny_pt
    model.eval()
    batch = _batch(tok, objectives=("contrastive",))
    plain = model(batch).losses["contrastive"]
    neg = tok(CAPTIONS[: batch.input_ids.shape[0]], padding=True, return_tensors="pt")
    with_neg = dataclasses.replace(
        batch,
        negative_input_ids=neg["input_ids"],
        negative_attention_mask=neg["attention_mask"],
        negative_valid=torch.tensor([True] + [False] * (batch.input_ids.shape[0] - 1)),
    )
    # Row 0's "negative" is a copy of a true caption: one more candidate scoring like a positive.
    assert model(with_neg).losses["contrastive"] > plain
    none_valid = dataclasses.replace(with_neg, negative_valid=torch.zeros_like(with_neg.negative_valid))
    torch.testing.assert_close(model(none_valid).losses["contrastive"], plain)


def test_contrastive_only_leaves_the_other_heads_alone(tiny_pt):
    model, tok = tiny_pt
    model.zero_grad()
    out = model(_batch(tok, objectives=("contrastive",)))
    out.loss.backward()
    assert set(out.losses) == {"contrastive"}
    assert model.matching_head.linear1.weight.grad is None and model.lm_head.bias.grad is None
    assert model.contrastive_heads["video"].weight.grad is not None
    with pytest.raises(ValueError, match="hard negatives"):
        model(_batch(tok, objectives=("matching",)))


def test_matching_pass_resumes_exactly_from_the_shared_lower_layers(tiny_pt):
    model, tok = tiny_pt
    model.eval()
    batch = _batch(tok)
    with torch.no_grad():
        encoded = model.encode_group(batch.group, batch.media)
        cond = model.condition_tokens(encoded)
        _, lower = model.encode_text(batch.input_ids, batch.attention_mask)
        resumed = model.matching_logits(lower, batch.attention_mask, cond)
        full = model.text(batch.input_ids, batch.attention_mask, condition=cond)
        direct = model.matching_head(full[:, 0])
    torch.testing.assert_close(resumed, direct)
    assert cond.shape == (4, 2 * 2, 24)  # 2 frames x (CLS, mean of patches)


def test_generation_pass_is_causal(tiny_pt):
    model, tok = tiny_pt
    model.eval()
    batch = _batch(tok, n=2)
    with torch.no_grad():
        cond = model.condition_tokens(model.encode_group(batch.group, batch.media))
        positions = torch.zeros_like(batch.input_ids, dtype=torch.bool)
        positions[:, :3] = True
        a = model.generation_logits(batch.input_ids, batch.attention_mask, cond, positions)
        later = batch.input_ids.clone()
        later[:, 3:] = 7
        b = model.generation_logits(later, batch.attention_mask, cond, positions)
    torch.testing.assert_close(a, b)


def test_sampling_contexts_start_as_no_ops_and_fold_into_the_exported_encoder(tiny_pt):
    model, tok = tiny_pt
    model.eval()
    batch = _batch(tok)
    with torch.no_grad():
        plain = model.text(batch.input_ids, batch.attention_mask)
        marked = model.text(batch.input_ids, batch.attention_mask, sampling_context=batch.sampling_context)
        torch.testing.assert_close(plain, marked)  # zero-initialised E'_Sam
        model.encoder.sampling_embedding.weight[2] = 0.3
        model.config.group_sampling_contexts = {"video": 2}
        trained = model.encoder({"video": batch.media["video"]}, sampling_context=torch.full((4,), 2))[Modality.VIDEO]
        exported = model.export_encoder()
        assert exported.config.num_sampling_contexts == 0 and exported.sampling_embedding is None
        folded = exported({"video": batch.media["video"]})[Modality.VIDEO]
        model.encoder.sampling_embedding.weight.zero_()
        model.config.group_sampling_contexts = {}
    torch.testing.assert_close(folded, trained)
    assert isinstance(exported, MiCoEncoder)


def test_save_and_reload_round_trip(tiny_pt, tmp_path):
    model, tok = tiny_pt
    model.eval()
    model.save_pretrained(tmp_path)
    again = MiCoForPretraining.from_pretrained(tmp_path).eval()
    batch = _batch(tok)
    with torch.no_grad():
        a = model.embed_media(batch.group, batch.media)[0]
        b = again.embed_media(batch.group, batch.media)[0]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert again.config.fusion_groups == ["audio+video"]


def test_groups_and_caption_joining():
    assert group_key(parse_group("video+audio")) == "audio+video"
    assert parse_group(["audio"]) == (Modality.AUDIO,)
    with pytest.raises(ValueError, match="twice"):
        parse_group("audio+audio")
    assert join_captions(["A red circle moves left", "  ", "High beeps."]) == "A red circle moves left. High beeps."
    with pytest.raises(ValueError, match="no non-empty"):
        join_captions(["", " "])


def test_mean_pooling_and_a_locked_text_tower():
    model, tok = tiny_pretraining_model(text_pooling="mean")
    for name, p in model.text.named_parameters():
        p.requires_grad_(".crossattention." in name)  # LiT-style: only the new cross-attention trains
    batch = _batch(tok)
    out = model(batch, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert model.text.encoder.layer[2].crossattention.self.query.weight.grad is not None
    assert all(p.grad is None for n, p in model.text.named_parameters() if ".crossattention." not in n)
    model.eval()
    with torch.no_grad():
        hidden, _ = model.encode_text(batch.input_ids, batch.attention_mask)
        m = batch.attention_mask[..., None].float()
        expected = torch.nn.functional.normalize(model.text_head((hidden * m).sum(1) / m.sum(1)), dim=-1)
        torch.testing.assert_close(model.text_features(hidden, batch.attention_mask), expected)


def test_matching_can_read_the_token_mean_and_draw_random_negatives():
    model, tok = tiny_pretraining_model(matching_pooling="mean", matching_negatives="random")
    model.eval()
    batch = _batch(tok, n=4)
    with torch.no_grad():
        encoded = model.encode_group(batch.group, batch.media)
        condition = model.condition_tokens(encoded)
        _, lower = model.encode_text(batch.input_ids, batch.attention_mask)
        first = model.config.text_config.first_cross_attention_layer
        hidden = model.text.run_layers(lower, batch.attention_mask, start=first, condition=condition)
        m = batch.attention_mask[..., None].float()
        expected = model.matching_head((hidden * m).sum(1) / m.sum(1))
        torch.testing.assert_close(model.matching_logits(lower, batch.attention_mask, condition), expected)
    # Similarities that make column 1 the hard negative of every row: "hard" nearly always draws
    # it, "random" spreads the draws over the three allowed columns.
    logits = torch.zeros(4, 4)
    logits[:, 1] = 20.0
    logits[1, 2] = 20.0  # row 1 cannot draw itself; its hard negative is column 2
    hard_model, _ = tiny_pretraining_model(matching_negatives="hard")
    generator = torch.Generator().manual_seed(0)
    draws = {name: torch.stack([m.draw_negatives(logits, None, generator)[1] for _ in range(300)])
             for name, m in (("hard", hard_model), ("random", model))}  # fmt: skip
    assert (draws["hard"][:, 0] == 1).float().mean() > 0.99
    counts = torch.bincount(draws["random"][:, 0], minlength=4)
    assert counts[0] == 0 and all(70 < int(c) < 130 for c in counts[1:])  # uniform over 1, 2, 3
    assert not (draws["random"] == torch.arange(4)).any()  # never the positive
    with pytest.raises(ValueError, match="matching_negatives"):
        tiny_pretraining_model(matching_negatives="hardest")


def test_conv_stem_and_max_pooling_train_under_every_objective():
    tokenizer = tiny_bert_tokenizer()
    model = build_pretraining_model(
        {**TINY_PT_ENCODER, "patch_embedding": "conv", "pooling": "cls_max"},
        tiny_text_config(len(tokenizer)),
        tokenizer=tokenizer,
        seed=0,
        contrastive_dim=16,
        fusion_groups=["audio+video"],
        max_text_length=32,
    )
    # the contrastive and fusion heads read [mean CLS, max patch]: twice the encoder width
    assert model.contrastive_heads["video"].in_features == 64 and model.fusion_heads["audio+video"].in_features == 128
    for group in (("video",), ("audio", "video")):
        model.zero_grad()
        out = model(_batch(tokenizer, group), generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(out.loss)
        out.loss.backward()
        assert model.encoder.patch_embeddings["rgb"].stem[0].weight.grad.abs().sum() > 0
