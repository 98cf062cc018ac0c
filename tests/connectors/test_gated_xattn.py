"""Gated cross-attention adapters on a tiny LLaMA: exact identity at tanh(0), shapes, gradients to
the gates, the tanh(1) option, a save/load round trip, and media that never enter the token sequence."""

import numpy as np
import pytest
import torch
from helpers.tiny import tiny_llm
from safetensors.torch import load_file, save_file

from mico_chat.connectors import GatedXAttn, GatedXAttnConfig, SeparableCrossAttention
from mico_chat.modeling import MediaTokenMismatchError

VOCAB = 64
ENC_DIM = 32  # the tiny encoder's width; the tiny LLaMA's is 48


def build(gate_init="zero", layers=(0, -1), seed=0):
    llm = tiny_llm(VOCAB, seed=seed)
    torch.manual_seed(seed + 1)
    config = GatedXAttnConfig(layers=list(layers), heads=4, ffn_mult=2, gate_init=gate_init)
    gx = GatedXAttn(config, media_dim=ENC_DIM, llm_dim=llm.config.hidden_size, num_layers=llm.config.num_hidden_layers)
    gx.attach(llm.model.layers)
    return llm, gx


def inputs(batch=2, length=7, frames=3, spatial=5):
    torch.manual_seed(123)
    return torch.randint(4, VOCAB, (batch, length)), torch.randn(batch, frames, spatial, ENC_DIM)


def test_zero_gates_give_the_plain_llm_exactly():
    llm, gx = build("zero")
    ids, media = inputs()
    with torch.no_grad():
        plain = llm(ids).logits
        with gx.media(media):
            gated = llm(ids).logits
    assert torch.equal(plain, gated)


def test_tanh_one_gates_change_the_output_and_depend_on_the_media():
    llm, gx = build("one")
    ids, media = inputs()
    with torch.no_grad():
        plain = llm(ids).logits
        with gx.media(media):
            gated = llm(ids).logits
        with gx.media(torch.randn_like(media)):
            other = llm(ids).logits
    assert gated.shape == plain.shape == (2, 7, VOCAB)
    assert not torch.allclose(plain, gated)
    assert not torch.allclose(gated, other)
    assert torch.allclose(torch.tanh(gx.adapters["0"].gate_attn), torch.full((48,), torch.tanh(torch.tensor(1.0)).item()))


def test_no_media_set_leaves_the_llm_plain_and_detach_removes_the_hooks():
    llm, gx = build("one")
    ids, media = inputs()
    with torch.no_grad():
        plain = llm(ids).logits
        gx.detach()
        with gx.media(media):
            detached = llm(ids).logits
    assert torch.equal(plain, detached)


def test_shapes_and_layer_keys():
    attn = SeparableCrossAttention(48, 4)
    assert attn(torch.randn(2, 7, 48), [torch.randn(2, 3, 5, 48)]).shape == (2, 7, 48)
    assert attn(torch.randn(2, 7, 48), [torch.randn(2, 3, 5, 48), torch.randn(2, 1, 9, 48)]).shape == (2, 7, 48)
    _, gx = build(layers=(0, -1, 1))
    assert sorted(gx.adapters) == ["0", "1"]  # -1 is layer 1 of 2; duplicates merge
    assert gx.adapters["0"].gate_attn.shape == gx.adapters["0"].gate_ffn.shape == (48,)  # vector gates


def test_gradients_reach_the_adapters_and_their_gates_at_zero_init():
    llm, gx = build("zero")
    ids, media = inputs()
    with gx.media(media):
        llm(ids, labels=ids).loss.backward()
    # With tanh(0) gates the branches get no gradient yet; the gates do (d tanh/dg = 1 at 0).
    for key in gx.adapters:
        for gate in ("gate_attn", "gate_ffn"):
            grad = getattr(gx.adapters[key], gate).grad
            assert grad is not None and grad.abs().sum() > 0, (key, gate)


def test_gradients_reach_every_adapter_parameter_at_tanh_one():
    llm, gx = build("one")
    ids, media = inputs()
    with gx.media({"video": media, "audio": torch.randn(2, 1, 9, ENC_DIM)}):
        llm(ids, labels=ids).loss.backward()
    for name, param in gx.named_parameters():
        if name in ("modality_embeddings.image", "modality_embeddings.depth"):  # not read here
            assert param.grad is None, name
            continue
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_a_video_and_its_audio_track_are_read_together():
    llm, gx = build("one")
    ids, video = inputs()
    audio = torch.randn(2, 1, 9, ENC_DIM)
    with torch.no_grad():
        for p in gx.modality_embeddings.values():
            p.normal_()  # "trained": the embeddings tell the items' modalities apart
        with gx.media({"video": video}):
            video_only = llm(ids).logits
        with gx.media({"video": video, "audio": audio}):
            both = llm(ids).logits
        with gx.media({"audio": audio, "video": video}):
            both_reordered = llm(ids).logits
        with gx.media({"video": audio, "audio": video}):
            swapped = llm(ids).logits  # the same features under each other's modality
    assert not torch.allclose(video_only, both)
    torch.testing.assert_close(both, both_reordered, rtol=1e-4, atol=1e-4)  # keys are a set: time and space attention ignore order
    assert not torch.allclose(both, swapped)
    with pytest.raises(ValueError, match="not 'smell'"):
        with gx.media({"smell": video}):
            pass
    with pytest.raises(ValueError, match="different batch sizes"):
        with gx.media({"video": video, "audio": audio[:1]}):
            pass
    with pytest.raises(ValueError, match=r"audio media must be \(B, T, S, D\)"):
        with gx.media({"video": video, "audio": audio[0]}):
            pass
    zero_llm, zero_gx = build("zero")
    with torch.no_grad():
        plain = zero_llm(ids).logits
        with zero_gx.media({"video": video, "audio": audio}):
            assert torch.equal(zero_llm(ids).logits, plain)
    with pytest.raises(ValueError, match="distinct modalities"):
        GatedXAttnConfig(modalities=["video", "video"])


def test_save_load_round_trip(tmp_path):
    llm, gx = build("one")
    with torch.no_grad():
        for p in gx.parameters():
            p.add_(0.01 * torch.randn_like(p))
    save_file(gx.state_dict(), tmp_path / "gated_xattn.safetensors")
    config = GatedXAttnConfig.from_dict(gx.config.to_dict())
    # The same LLM weights (its parameter names are untouched); only the adapters are rebuilt.
    gx.detach()
    fresh = GatedXAttn(config, media_dim=ENC_DIM, llm_dim=48, num_layers=2)
    fresh.load_state_dict(load_file(tmp_path / "gated_xattn.safetensors"))
    fresh.attach(llm.model.layers)
    ids, media = inputs()
    with torch.no_grad():
        with fresh.media(media):
            reloaded = llm(ids).logits
        fresh.detach()
        gx.attach(llm.model.layers)
        with gx.media(media):
            original = llm(ids).logits
    assert torch.equal(original, reloaded)


def test_media_come_through_their_own_argument_not_the_tokens():
    # The text holds no media placeholders: the same input_ids with and without media, and the
    # sequence length (and so the logits' shape) does not grow with the number of frames.
    llm, gx = build("one")
    ids, _ = inputs()
    for frames in (1, 4, 16):
        with torch.no_grad(), gx.media(torch.randn(2, frames, 5, ENC_DIM)):
            assert llm(ids).logits.shape == (2, 7, VOCAB)


def test_clear_errors():
    with pytest.raises(ValueError, match="gate_init"):
        GatedXAttnConfig(gate_init="half")
    with pytest.raises(ValueError, match="out of range"):
        GatedXAttn(GatedXAttnConfig(layers=[2]), media_dim=ENC_DIM, llm_dim=48, num_layers=2)
    with pytest.raises(ValueError, match="unknown gated_xattn config keys"):
        GatedXAttnConfig.from_dict({"layer": [0]})
    llm, gx = build()
    with pytest.raises(ValueError, match=r"\(B, T, S, D\)"):
        with gx.media(torch.randn(2, 5, ENC_DIM)):
            pass
    with pytest.raises(ValueError, match="media for 3 sequences in a batch of 2"):
        with gx.media(torch.randn(3, 2, 5, ENC_DIM)):
            llm(inputs()[0])
    with pytest.raises(ValueError, match="positions need samples"):
        with gx.media({"video": torch.randn(1, 2, 5, ENC_DIM)}, rows={"video": torch.tensor([0])},
                      positions={"video": torch.tensor([0])}):  # fmt: skip
            pass
    with pytest.raises(ValueError, match="one entry per video item"):
        with gx.media({"video": torch.randn(2, 2, 5, ENC_DIM)}, rows={"video": torch.tensor([0])}):
            pass
    with pytest.raises(ValueError, match="placed in row 3 of 2"):
        with gx.media({"video": torch.randn(1, 2, 5, ENC_DIM)}, rows={"video": torch.tensor([3])}, batch_size=2):
            pass


# ---------------------------------------------------------------- in the assembled model


def gated_model(gate_init="zero"):
    """The tiny model of ``helpers.tiny.tiny_model`` with adapters in both LLM layers."""
    from helpers.tiny import tiny_model

    return tiny_model(gated_xattn={"layers": [0, 1], "heads": 4, "ffn_mult": 2, "gate_init": gate_init})


def video_turns(n_frames=6):
    """A user turn with a random video and its answer (for labelled batches)."""
    frames = np.random.default_rng(0).integers(0, 255, size=(n_frames, 40, 48, 3), dtype=np.uint8)
    return [
        {"role": "user", "content": [{"type": "video", "video": frames}, {"type": "text", "text": "What moves?"}]},
        {"role": "assistant", "content": "A red square."},
    ]


def video_batch(processor, n_frames=6):
    frames = np.random.default_rng(0).integers(0, 255, size=(n_frames, 40, 48, 3), dtype=np.uint8)
    conv = [{"role": "user", "content": [{"type": "video", "video": frames}, {"type": "text", "text": "What moves?"}]}]
    return processor([conv])


def test_model_processor_puts_one_marker_token_per_item():
    model, processor = gated_model()
    batch = video_batch(processor)
    assert model.config.num_media_tokens("video", 4) == 1 == model.config.num_media_tokens("video", 16)
    video_id = model.config.media_token_ids["video"]
    assert int((batch["input_ids"] == video_id).sum()) == 1  # the item's place, not its features
    assert batch["media"]["video"].shape[:2] == (1, 4)  # the media come beside the text
    text_only = processor([[{"role": "user", "content": "What moves?"}]])
    assert batch["input_ids"].shape[1] == text_only["input_ids"].shape[1] + 2  # the marker and its newline


def test_model_with_zero_gates_equals_its_plain_llm_exactly():
    model, processor = gated_model("zero")
    batch = video_batch(processor)
    assert all((torch.tanh(a.gate_attn) == 0).all() for a in model.gated_xattn.adapters.values())  # post_init kept them
    with torch.no_grad():
        gated = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], media=batch["media"]).logits
        plain = model.language_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.equal(gated, plain)


def test_model_with_tanh_one_gates_uses_the_media_and_generates():
    model, processor = gated_model("one")
    batch = video_batch(processor)
    with torch.no_grad():
        gated = model(input_ids=batch["input_ids"], media=batch["media"]).logits
        plain = model.language_model(input_ids=batch["input_ids"]).logits
    assert not torch.allclose(gated, plain)
    new = model.generate(batch["input_ids"], batch["attention_mask"], media=batch["media"], max_new_tokens=3, do_sample=False)
    assert new.shape == (1, 3)


def test_model_rejects_markers_that_do_not_match_the_items():
    model, processor = gated_model()
    batch = video_batch(processor)
    video_id = model.config.media_token_ids["video"]
    ids = torch.tensor([[5, video_id, 6, video_id, 7]])  # two markers, one video
    with pytest.raises(MediaTokenMismatchError, match="2 <video> tokens but 1 video items"):
        model(input_ids=ids, media=batch["media"])


def test_text_before_an_item_does_not_read_it_and_text_after_does():
    # Flamingo's rule: a position reads only the items placed before it (in its own packed sample).
    model, processor = gated_model("one")
    batch = video_batch(processor)
    ids = batch["input_ids"]
    marker = int((ids[0] == model.config.media_token_ids["video"]).nonzero()[0, 0])
    with torch.no_grad():
        gated = model(input_ids=ids, media=batch["media"]).logits
        plain = model.language_model(input_ids=ids).logits
    assert torch.equal(gated[:, : marker + 1], plain[:, : marker + 1])  # up to and including the marker
    assert not torch.allclose(gated[:, marker + 1 :], plain[:, marker + 1 :])


def test_masks_follow_placement_and_packed_samples():
    from mico_chat.connectors.gated_xattn import MediaKeys

    # Row 0: item 0 (2 frames, 3 positions) placed at 1. Row 1 packs two samples (positions 0-2, 3-5):
    # item 1 at 1 (sample 0), item 2 at 4 (sample 1).
    keys = MediaKeys(
        time=torch.zeros(2, 4, 8), space=torch.zeros(2, 6, 8),
        time_item=torch.tensor([[0, 0, -1, -1], [1, 1, 2, 2]]),
        space_item=torch.tensor([[0, 0, 0, -1, -1, -1], [1, 1, 1, 2, 2, 2]]),
        item_position=torch.tensor([1, 1, 4]), item_sample=torch.tensor([0, 0, 1]),
        samples=torch.tensor([[0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1]]), length=6,
    )  # fmt: skip
    time, space, reads = keys.masks(6, torch.device("cpu"))
    assert reads.tolist() == [[False, False, True, True, True, True], [False, False, True, False, False, True]]
    assert time[0, 3].tolist() == [True, True, False, False]
    assert time[1, 2].tolist() == [True, True, False, False]  # sample 0 reads its own item only
    assert time[1, 5].tolist() == [False, False, True, True]  # sample 1 reads item 2, not sample 0's item 1
    assert space[1, 5].tolist() == [False, False, False, True, True, True]
    assert time[1, 3].tolist() == [True, False, False, False]  # reads nothing: pointed at key 0, output discarded
    step_time, _, step_reads = keys.masks(1, torch.device("cpu"))  # a decoding step reads every item of its row
    assert step_reads.tolist() == [[True], [True]] and step_time[0, 0].tolist() == [True, True, False, False]


def test_a_batch_mixing_rows_with_and_without_media_trains():
    model, processor = gated_model("one")
    text_only = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi."}]
    batch = processor([text_only, video_turns()], add_generation_prompt=False, with_labels=True, padding_side="right")
    out = model(input_ids=batch["input_ids"], media=batch["media"], labels=batch["labels"],
                attention_mask=batch["attention_mask"])  # fmt: skip
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.gated_xattn.proj.weight.grad.abs().sum() > 0
    with torch.no_grad():
        plain = model.language_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.equal(out.logits[0], plain[0])  # the text-only row reads nothing


def test_model_save_load_round_trip(tmp_path):
    from mico_chat.loading import load_folder

    model, processor = gated_model("one")
    with torch.no_grad():
        for p in model.gated_xattn.parameters():
            p.add_(0.01 * torch.randn_like(p))  # "trained"
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded, loaded_processor = load_folder(tmp_path, dtype=torch.float32)
    assert loaded.config.gated_xattn == model.config.gated_xattn
    batch = video_batch(loaded_processor)
    with torch.no_grad():
        before = model(input_ids=batch["input_ids"], media=batch["media"]).logits
        after = loaded.eval()(input_ids=batch["input_ids"], media=batch["media"]).logits
    assert torch.equal(before, after)


def test_chat_model_replies_with_and_without_media():
    from mico_chat.api import ChatModel, GenerationSettings

    model, processor = gated_model("one")
    chat = ChatModel(model, processor, name="tiny-gated", defaults=GenerationSettings(max_new_tokens=4))
    frames = np.random.default_rng(0).integers(0, 255, size=(6, 40, 48, 3), dtype=np.uint8)
    video = [{"role": "user", "content": [{"type": "video", "video": frames}, {"type": "text", "text": "What moves?"}]}]
    assert chat.complete(video).completion_tokens > 0
    assert chat.complete([{"role": "user", "content": "hello"}]).completion_tokens > 0


def test_gradient_checkpointing_gives_the_adapters_the_same_gradients():
    # The media are set for the forward call only; a checkpointed layer's recomputation must still see them.
    model, processor = gated_model("one")
    batch = processor([video_turns()], add_generation_prompt=False, with_labels=True, padding_side="right")
    model.train()

    def adapter_grads():
        model.zero_grad()
        model(input_ids=batch["input_ids"], media=batch["media"], labels=batch["labels"], use_cache=False).loss.backward()
        return {n: p.grad.clone() for n, p in model.gated_xattn.named_parameters() if p.grad is not None}

    plain = adapter_grads()
    assert "modality_embeddings.video" in plain and "modality_embeddings.audio" not in plain  # video only here
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    checkpointed = adapter_grads()
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=0, atol=0)
