"""Padding vs packing: the same loss and gradients on the same samples, and no attention across samples."""

import json

import pytest
import torch

from mico_chat.processing import IGNORE_INDEX
from mico_chat.training.collator import PackingCollator, PaddingCollator, pack_rows
from mico_chat.training.data import SampleDataset, cache_encoder_features, scan_records


@pytest.fixture(scope="module")
def batch_samples(tiny, tmp_path_factory):
    """Five samples of different lengths: images, a multi-turn one, a text-only one."""
    from helpers.train_fixtures import colour_images

    _, processor = tiny
    root = tmp_path_factory.mktemp("mixed")
    images = colour_images(root, 4)
    rows = [
        {
            "id": "a",
            "media": [{"modality": "image", "path": images[0][0]}],
            "conversations": [{"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "red"}],
        },
        {
            "id": "b",
            "media": [{"modality": "image", "path": images[1][0]}],
            "conversations": [
                {"from": "human", "value": "<image>\nWhat colour is the whole picture, please?"},
                {"from": "gpt", "value": "The picture is green."},
                {"from": "human", "value": "And is it bright?"},
                {"from": "gpt", "value": "Yes."},
            ],
        },
        {
            "id": "c",
            "conversations": [
                {"from": "human", "value": "Hello there"},
                {"from": "gpt", "value": "Hi! How can I help?"},
            ],
        },
        {
            "id": "d",
            "media": [{"modality": "image", "path": images[2][0]}, {"modality": "image", "path": images[3][0]}],
            "conversations": [
                {"from": "human", "value": "<image> and <image>: same colour?"},
                {"from": "gpt", "value": "No."},
            ],
        },
        {
            "id": "e",
            "media": [{"modality": "image", "path": images[3][0]}],
            "conversations": [{"from": "human", "value": "<image>\nName it."}, {"from": "gpt", "value": "yellow"}],
        },
    ]
    path = root / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = scan_records([path], processor, progress=False)
    assert len(report.samples) == 5 and len({s.length for s in report.samples}) == 5
    return SampleDataset(report.samples, processor)


def forward(model, batch):
    batch = {k: v for k, v in batch.items() if k != "meta"}
    return model(**batch)


def test_packing_gives_the_loss_and_gradients_of_padding(tiny, batch_samples):
    model, processor = tiny
    samples = [batch_samples[i] for i in range(5)]
    pad = processor.tokenizer.pad_token_id
    results = {}
    for name, collate in (
        ("padding", PaddingCollator(pad)),
        ("packing", PackingCollator(pad)),
        ("packing-rows", PackingCollator(pad, 64)),
    ):
        model.zero_grad()
        batch = collate(samples)
        loss = forward(model, batch).loss
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if n.startswith("connectors.image")}
        results[name] = (loss.detach(), grads, batch)
    model.zero_grad()
    padded, packed, rows = results["padding"], results["packing"], results["packing-rows"]
    assert packed[2]["input_ids"].shape[0] == 1 and rows[2]["input_ids"].shape[0] > 1
    assert padded[2]["meta"]["num_labels"] == packed[2]["meta"]["num_labels"]
    for other in (packed, rows):
        torch.testing.assert_close(other[0], padded[0], rtol=1e-5, atol=1e-6)
        for name, grad in padded[1].items():
            torch.testing.assert_close(other[1][name], grad, rtol=1e-4, atol=1e-6)
    # the packed row trains exactly the tokens the padded batch trains
    assert int((packed[2]["labels"][:, 1:] != IGNORE_INDEX).sum()) == int(
        (padded[2]["labels"][:, 1:] != IGNORE_INDEX).sum()
    )


def test_collators_ask_for_logits_at_answer_positions_only(tiny, batch_samples):
    _, processor = tiny
    pad = processor.tokenizer.pad_token_id
    for collate in (PackingCollator(pad), PaddingCollator(pad)):
        assert collate([batch_samples[0], batch_samples[2]])["logits_to_keep"] == "labels"


def test_no_attention_across_packed_samples(tiny, batch_samples):
    model, processor = tiny
    collate = PackingCollator(processor.tokenizer.pad_token_id)

    def every_logit(batch):  # logits at every position, not only where a label follows
        return forward(model, {k: v for k, v in batch.items() if k != "logits_to_keep"}).logits

    a, b = batch_samples[2], batch_samples[0]  # text-only, then an image sample
    altered = dict(a, input_ids=[t + 1 if t < 300 else t for t in a["input_ids"]])
    with torch.no_grad():
        first = every_logit(collate([a, b]))[0, len(a["input_ids"]) :]
        second = every_logit(collate([altered, b]))[0, len(a["input_ids"]) :]
        alone = every_logit(collate([b]))[0]
    torch.testing.assert_close(first, second, rtol=0, atol=1e-5)
    torch.testing.assert_close(first, alone, rtol=0, atol=1e-5)


def test_cached_encoder_features_give_the_same_loss(tiny, batch_samples):
    model, processor = tiny
    model.encoder.requires_grad_(False)
    try:
        features = cache_encoder_features(batch_samples, model.encoder, progress=False)
    finally:
        model.encoder.requires_grad_(True)
    cached = SampleDataset(batch_samples.samples, processor, features)
    collate = PackingCollator(processor.tokenizer.pad_token_id)
    live_batch = collate([batch_samples[i] for i in range(5)])
    cached_batch = collate([cached[i] for i in range(5)])
    assert "media" not in cached_batch and cached_batch["encoder_features"]["image"].shape[0] == 5
    assert torch.equal(live_batch["input_ids"], cached_batch["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(
            forward(model, cached_batch).loss, forward(model, live_batch).loss, rtol=1e-6, atol=1e-6
        )
    with pytest.raises(ValueError, match="frozen encoder"):
        cache_encoder_features(batch_samples, model.encoder, progress=False)


def test_the_feature_cache_encodes_each_file_once(tiny, batch_samples):
    """Samples d and e both read images[3]: one encoder call and one tensor serve both."""
    from mico_chat.modeling import encode_views

    model, processor = tiny
    calls = []
    hook = model.encoder.register_forward_hook(lambda module, args, out: calls.append(1))
    model.encoder.requires_grad_(False)
    try:
        features = cache_encoder_features(batch_samples, model.encoder, progress=False)
    finally:
        model.encoder.requires_grad_(True)
        hook.remove()
    assert len(calls) == 4  # five image items, four distinct files
    shared = features[3][1][1]
    assert features[4][0][1] is shared
    item = batch_samples.samples[4].media[0]
    alone = processor.load_media([item])[0][None]
    with torch.no_grad():
        expected = encode_views(model.encoder, {item.modality: alone}, ())[item.modality][0]
    torch.testing.assert_close(shared, expected, rtol=0, atol=0)


def test_padding_masks_pads_and_packing_restarts_positions(batch_samples, tiny):
    pad = tiny[1].tokenizer.pad_token_id
    samples = [batch_samples[i] for i in (0, 2)]
    padded = PaddingCollator(pad)(samples)
    n0 = len(samples[0]["input_ids"])
    assert padded["attention_mask"][0].sum() == n0 and (padded["labels"][0, n0:] == IGNORE_INDEX).all()
    packed = PackingCollator(pad)(samples)
    assert "attention_mask" not in packed and packed["use_cache"] is False
    positions = packed["position_ids"][0].tolist()
    assert positions[:n0] == list(range(n0)) and positions[n0] == 0
    assert packed["labels"][0, n0] == IGNORE_INDEX  # never predicted from the previous sample


def test_first_fit_decreasing_rows():
    assert pack_rows([5, 9, 3, 7], None) == [[0, 1, 2, 3]]
    rows = pack_rows([5, 9, 3, 7, 12], 10)
    assert sorted(i for row in rows for i in row) == [0, 1, 2, 3, 4]
    assert rows == [[4], [1], [3, 2], [0]]  # 12 alone (too long), 9, 7+3, 5
