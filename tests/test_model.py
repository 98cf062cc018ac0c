import pytest
import torch

from mico_chat.modality import Modality
from mico_chat.modeling import MediaTokenMismatchError, MiCoChatForConditionalGeneration


def media_batch(n_video=1, n_audio=0):
    torch.manual_seed(1)
    media = {"video": torch.randn(n_video, 4, 3, 32, 32)}
    if n_audio:
        media["audio"] = torch.randn(n_audio, 1, 64, 32)
    return media


def prompt_ids(model, n_video=1, n_audio=0):
    cfg = model.config
    video = [cfg.media_token_ids["video"]] * cfg.num_media_tokens("video", 4)
    audio = [cfg.media_token_ids["audio"]] * cfg.num_media_tokens("audio", 1)
    return torch.tensor([[5, 6] + video * n_video + [7] + audio * n_audio + [8, 9]])


def test_features_land_exactly_on_placeholder_positions(tiny):
    model, _ = tiny
    ids = prompt_ids(model, n_video=1, n_audio=1)
    media = media_batch(1, 1)
    embeds = model.embed_inputs(ids, media)
    projected = model.encode_media(media)
    vmask = ids[0] == model.config.media_token_ids["video"]
    amask = ids[0] == model.config.media_token_ids["audio"]
    torch.testing.assert_close(embeds[0, vmask], projected[Modality.VIDEO][0])
    torch.testing.assert_close(embeds[0, amask], projected[Modality.AUDIO][0])
    text = ~(vmask | amask)
    torch.testing.assert_close(embeds[0, text], model.get_input_embeddings()(ids)[0, text])


def test_token_count_mismatch_raises(tiny):
    model, _ = tiny
    ids = prompt_ids(model)
    with pytest.raises(MediaTokenMismatchError, match="video"):
        model(input_ids=ids[:, :-3], media=media_batch())  # fine: text tokens removed only
        model(input_ids=ids[:, 3:], media=media_batch())  # one placeholder token cut off
    with pytest.raises(MediaTokenMismatchError, match="0 feature tokens"):
        model(input_ids=ids)  # placeholders but no media
    with pytest.raises(MediaTokenMismatchError, match="audio"):
        model(input_ids=ids, media=media_batch(1, 1))  # audio given, no audio placeholders


def test_save_and_load_round_trip_gives_identical_logits(tiny, tmp_path):
    model, processor = tiny
    ids = prompt_ids(model, 1, 1)
    media = media_batch(1, 1)
    with torch.no_grad():
        before = model(input_ids=ids, media=media).logits
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))
    again = MiCoChatForConditionalGeneration.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        after = again(input_ids=ids, media=media).logits
    assert torch.equal(before, after)
    assert again.config.media_token_ids == model.config.media_token_ids
    assert again.config.connectors == model.config.connectors
    emb, head = again.get_input_embeddings().weight, again.get_output_embeddings().weight
    assert emb.data_ptr() == head.data_ptr()  # tied like the source LLM
    # The saved folder is a regular Hugging Face folder: AutoConfig knows its model type.
    from transformers import AutoConfig

    assert type(AutoConfig.from_pretrained(tmp_path)).__name__ == "MiCoChatConfig"


def test_labels_give_a_finite_loss_and_gradients_reach_connectors(tiny):
    model, _ = tiny
    ids = prompt_ids(model)
    labels = ids.clone()
    labels[ids == model.config.media_token_ids["video"]] = -100
    out = model(input_ids=ids, media=media_batch(), labels=labels)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.connectors["video"].fc1.weight.grad.abs().sum() > 0
    assert model.encoder.patch_embeddings["rgb"].weight.grad.abs().sum() > 0
    model.zero_grad()


def test_builder_keeps_llm_weights_and_extends_vocabulary():
    from helpers.tiny import TINY_ENCODER, tiny_llm, tiny_tokenizer

    from mico_chat.builder import build_model

    tok = tiny_tokenizer()
    llm = tiny_llm(len(tok))
    reference = {k: v.clone() for k, v in llm.state_dict().items()}
    model, processor = build_model(llm, tokenizer=tok, encoder=TINY_ENCODER)
    state = model.language_model.state_dict()
    for key, value in reference.items():
        if "embed_tokens" in key or "lm_head" in key:
            assert torch.equal(state[key][: value.shape[0]], value)
        else:
            assert torch.equal(state[key], value), key
    assert len(tok) == 405 and model.get_input_embeddings().weight.shape[0] == 405
    assert model.config.text_config.vocab_size == 405
    new_rows = model.get_input_embeddings().weight[400:]
    torch.testing.assert_close(new_rows, reference["model.embed_tokens.weight"].mean(0).expand_as(new_rows))


def test_logits_at_labels_give_the_full_loss_and_its_gradients(tiny):
    """``logits_to_keep="labels"`` runs the LM head on the supervised positions only, same loss."""
    model, _ = tiny
    ids = torch.cat([prompt_ids(model, 1, 1), prompt_ids(model, 1, 1)])  # two rows, one padded
    labels = torch.full_like(ids, -100)
    labels[0, -2:] = ids[0, -2:]
    labels[1, -4:-2] = ids[1, -4:-2]
    media = {k: torch.cat([v, v]) for k, v in media_batch(1, 1).items()}
    full = model(input_ids=ids, media=media, labels=labels)
    full.loss.backward()
    grad_full = model.connectors["video"].fc1.weight.grad.clone()
    model.zero_grad()
    kept = model(input_ids=ids, media=media, labels=labels, logits_to_keep="labels")
    kept.loss.backward()
    grad_kept = model.connectors["video"].fc1.weight.grad.clone()
    model.zero_grad()
    torch.testing.assert_close(kept.loss, full.loss)
    torch.testing.assert_close(grad_kept, grad_full)
    # positions predicting a label: row 0 needs the last two tokens (2 positions), row 1 two others
    assert kept.logits.shape[:2] == (2, 4) and full.logits.shape[1] == ids.shape[1]
    # num_items_in_batch (the Trainer's count over accumulated batches) divides the summed loss
    halved = model(input_ids=ids, media=media, labels=labels, logits_to_keep="labels", num_items_in_batch=8)
    torch.testing.assert_close(halved.loss, full.loss / 2)
    with pytest.raises(ValueError, match="logits_to_keep"):
        model(input_ids=ids, media=media, logits_to_keep="labels")


def test_context_length_is_the_llms():
    from mico_chat.configuration import MiCoChatConfig

    config = MiCoChatConfig(text_config={"model_type": "llama", "max_position_embeddings": 77})
    assert config.context_length == 77 and "context_length" not in config.to_dict()  # read, never saved
