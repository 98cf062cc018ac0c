"""External checkpoints: HF CLIP vision parity, MiCo's release layout, safe loading."""

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import BertConfig, BertModel, CLIPVisionConfig, CLIPVisionModel

from mico_chat.encoders.convert import (
    CheckpointError,
    clip_vision_to_mico,
    convert_mico_checkpoint,
    load_clip_vision,
    load_state_dict_file,
)
from mico_chat.modality import Modality


def _randomize_norms(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Fresh LayerNorms are the identity; make them not, so the test sees whether they are applied."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=gen))


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
    )
    torch.manual_seed(0)
    model = CLIPVisionModel(config).eval()
    gen = torch.Generator().manual_seed(1)
    _randomize_norms(model, gen)
    with torch.no_grad():
        model.embeddings.class_embedding.normal_(generator=gen)
    folder = tmp_path_factory.mktemp("clip")
    model.save_pretrained(folder)
    return model, folder


def test_clip_vision_weights_give_the_same_features(tiny_clip):
    clip, folder = tiny_clip
    ours = load_clip_vision(
        folder,
        modalities=["image", "video", "audio", "depth"],
        audio_num_mel_bins=32,
        audio_target_length=32,
        audio_patch_size=8,
    )
    assert ours.config.hidden_act == "quick_gelu" and ours.config.pre_layernorm and not ours.config.patch_bias
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref = clip(pixel_values=pixels)
        got = ours({"image": pixels})[Modality.IMAGE]  # (3, 1 + 16, 32), post-LayerNorm on every token
        expected = clip.post_layernorm(ref.last_hidden_state)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(got[:, 0], ref.pooler_output, rtol=0, atol=1e-5)  # CLIP's pooled CLS
    # Video frames encode as CLIP images when they do not attend to each other.
    with torch.no_grad():
        ours.config.segment_attention = "segment"
        video = ours({"video": pixels[None]})[Modality.VIDEO].view(3, 17, 32)
        ours.config.segment_attention = "joint"
    torch.testing.assert_close(video, expected, rtol=0, atol=1e-5)
    # One-channel inputs use the RGB kernel summed over channels: a grey image's patches.
    grey = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            ours.patch_embeddings["audio"](grey),
            ours.patch_embeddings["rgb"](grey.expand(-1, 3, -1, -1)),
            atol=1e-5,
            rtol=0,
        )


def test_clip_model_layout_and_resized_grid(tiny_clip):
    clip, _ = tiny_clip
    state = {f"vision_model.{k}": v for k, v in clip.state_dict().items()}
    state["text_model.embeddings.token_embedding.weight"] = torch.zeros(4, 4)
    state["logit_scale"] = torch.tensor(1.0)
    config, converted, report = clip_vision_to_mico(
        state, {"vision_config": clip.config.to_dict()}, image_size=48, modalities=["image"]
    )
    assert config.image_size == 48 and converted["position_embedding.weight"].shape == (1 + 36, 32)
    assert "logit_scale" in report.ignored and "text_model.embeddings.token_embedding.weight" in report.ignored
    torch.testing.assert_close(
        converted["position_embedding.weight"][0], clip.state_dict()["embeddings.position_embedding.weight"][0]
    )
    with pytest.raises(CheckpointError, match="unexpected tensors"):
        clip_vision_to_mico({**state, "vision_model.extra.weight": torch.zeros(1)}, clip.config)
    with pytest.raises(CheckpointError, match="missing embeddings.class_embedding"):
        clip_vision_to_mico({k: v for k, v in state.items() if "class_embedding" not in k}, clip.config)


class NotATensor:
    pass


def test_checkpoint_files_are_never_unpickled_freely(tmp_path):
    tensors = {"a": torch.arange(3.0)}
    save_file(tensors, tmp_path / "w.safetensors")
    torch.save({"state_dict": tensors}, tmp_path / "w.pt")
    assert torch.equal(load_state_dict_file(tmp_path / "w.safetensors")["a"], tensors["a"])
    assert torch.equal(load_state_dict_file(tmp_path / "w.pt")["a"], tensors["a"])
    torch.save({"a": NotATensor()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="evil.pt: not a plain tensor checkpoint"):
        load_state_dict_file(tmp_path / "evil.pt")
    (tmp_path / "w.pkl").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        load_state_dict_file(tmp_path / "w.pkl")


# ---------------------------------------------------------------------------------- MiCo release
D, TEXT, HEADS, LAYERS, PATCH, GRID, MLP, CONTRA = 32, 32, 16, 2, 8, 2, 64, 16


def _mico_state(gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Tensors named and shaped as MiCo's released checkpoints (EVA01-CLIP tower, BERT with cross-attention)."""

    def r(*shape, scale=0.2):
        return scale * torch.randn(*shape, generator=gen)

    s = {
        "vision_encoder.visual.patch_embed.proj.weight": r(D, 3, PATCH, PATCH),
        "vision_encoder.visual.patch_embed.proj.bias": r(D),
        "vision_encoder.visual.cls_token": r(1, 1, D),
        "vision_encoder.visual.pos_embed": r(1, 1 + GRID * GRID, D),
        "vision_encoder.visual.norm.weight": 1 + r(D),
        "vision_encoder.visual.norm.bias": r(D),
        "vision_encoder.visual.head.weight": r(8, D),
        "vision_encoder.visual.head.bias": r(8),
        "vision_encoder.text.token_embedding.weight": r(5, 8),
        "vision_encoder.logit_scale": torch.tensor(4.0),
    }
    for i in range(LAYERS):
        b = f"vision_encoder.visual.blocks.{i}."
        s.update({
            b + "norm1.weight": 1 + r(D), b + "norm1.bias": r(D), b + "norm2.weight": 1 + r(D), b + "norm2.bias": r(D),
            b + "attn.qkv.weight": r(3 * D, D), b + "attn.q_bias": r(D), b + "attn.v_bias": r(D),
            b + "attn.proj.weight": r(D, D), b + "attn.proj.bias": r(D),
            b + "mlp.fc1.weight": r(MLP, D), b + "mlp.fc1.bias": r(MLP), b + "mlp.fc2.weight": r(D, MLP), b + "mlp.fc2.bias": r(D),
            b + "gamma_1": 1 + r(D), b + "gamma_2": 1 + r(D),
        })  # fmt: skip
    bert = BertModel(
        BertConfig(
            vocab_size=50,
            hidden_size=TEXT,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=40,
            is_decoder=True,
            add_cross_attention=True,
        )  # fmt: skip
    )
    for k, v in bert.state_dict().items():
        s[f"multimodal_encoder.bert.{k}"] = v + r(*v.shape, scale=0.01)
    words = s["multimodal_encoder.bert.embeddings.word_embeddings.weight"]
    p = "multimodal_encoder.cls.predictions."
    s.update({p + "transform.dense.weight": r(TEXT, TEXT), p + "transform.dense.bias": r(TEXT),
              p + "transform.LayerNorm.weight": 1 + r(TEXT), p + "transform.LayerNorm.bias": r(TEXT),
              p + "bias": r(50), p + "decoder.weight": words, p + "decoder.bias": r(50)})  # fmt: skip
    for short in "tvads":
        s[f"contra_head_{short}.linear.weight"] = r(CONTRA, TEXT if short in "ts" else D)
    s.update({"contra_head_va.weight": r(CONTRA, 2 * D), "contra_head_va.bias": r(CONTRA),
              "contra_head_vs.weight": r(CONTRA, D + TEXT), "contra_head_vs.bias": r(CONTRA),
              "contra_temp": torch.tensor(0.05)})  # fmt: skip
    for name, (rows, cols) in {"linear1": (TEXT, TEXT), "linear2": (2, TEXT)}.items():
        s[f"itm_head.{name}.weight"], s[f"itm_head.{name}.bias"] = r(rows, cols), r(rows)
    s["itm_head.layernorm.weight"], s["itm_head.layernorm.bias"] = 1 + r(TEXT), r(TEXT)
    for mod in ("vision", "audio", "depth", "subtitle"):
        s[f"hidden_trans_{mod}_multimodal.0.weight"] = r(TEXT, D)
        s[f"hidden_trans_{mod}_multimodal.0.bias"] = r(TEXT)
        s[f"hidden_trans_{mod}_multimodal.1.weight"] = 1 + r(TEXT)
        s[f"hidden_trans_{mod}_multimodal.1.bias"] = r(TEXT)
        s[f"{mod}_type_embeddings"] = r(1, 1, TEXT)
    s["video_frame_embedding"] = r(1, 8, TEXT)  # saved under the old name: MiCo's loader renames video -> vision
    s["audio_frame_embedding"] = r(1, 4, TEXT)
    s["depth_frame_embedding"] = r(1, 8, TEXT)
    return s


def _eva_reference(s: dict[str, torch.Tensor], image: torch.Tensor) -> torch.Tensor:
    """EVA01 ViT forward written from MiCo's eva_vit_model.py (return_all_features=True)."""
    v = "vision_encoder.visual."
    x = F.conv2d(image, s[v + "patch_embed.proj.weight"], s[v + "patch_embed.proj.bias"], stride=PATCH)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([s[v + "cls_token"].expand(x.shape[0], -1, -1), x], dim=1) + s[v + "pos_embed"]
    for i in range(LAYERS):
        b = f"{v}blocks.{i}."
        h = F.layer_norm(x, (D,), s[b + "norm1.weight"], s[b + "norm1.bias"], eps=1e-6)
        bias = torch.cat([s[b + "attn.q_bias"], torch.zeros(D), s[b + "attn.v_bias"]])
        qkv = (
            F.linear(h, s[b + "attn.qkv.weight"], bias)
            .reshape(x.shape[0], x.shape[1], 3, HEADS, -1)
            .permute(2, 0, 3, 1, 4)
        )
        q, k, vv = qkv[0], qkv[1], qkv[2]
        attn = ((q * (D // HEADS) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        h = F.linear(
            (attn @ vv).transpose(1, 2).reshape(x.shape[0], x.shape[1], D),
            s[b + "attn.proj.weight"],
            s[b + "attn.proj.bias"],
        )
        x = x + s[b + "gamma_1"] * h
        h = F.layer_norm(x, (D,), s[b + "norm2.weight"], s[b + "norm2.bias"], eps=1e-6)
        h = F.linear(
            F.gelu(F.linear(h, s[b + "mlp.fc1.weight"], s[b + "mlp.fc1.bias"])),
            s[b + "mlp.fc2.weight"],
            s[b + "mlp.fc2.bias"],
        )
        x = x + s[b + "gamma_2"] * h
    return F.layer_norm(x, (D,), s[v + "norm.weight"], s[v + "norm.bias"], eps=1e-6)


@pytest.fixture(scope="module")
def mico_release():
    state = _mico_state(torch.Generator().manual_seed(0))
    cfg = {"vision_encoder_type": "evaclip01_giant", "pool_video": True, "audio_melbins": 16, "audio_target_length": 16}
    model, report = convert_mico_checkpoint(
        state, cfg, text_num_attention_heads=4, mask_token_id=4, random_token_start=5
    )
    return state, model, report


def test_mico_vision_tower_matches_the_eva_forward(mico_release):
    state, model, _ = mico_release
    image = torch.randn(2, 3, GRID * PATCH, GRID * PATCH)
    with torch.no_grad():
        got = model.encoder({"image": image})[Modality.IMAGE]
    torch.testing.assert_close(got, _eva_reference(state, image), rtol=0, atol=1e-5)
    assert model.encoder.config.num_attention_heads == HEADS and not model.config.joint_context


def test_mico_text_tower_matches_transformers_bert(mico_release):
    state, model, _ = mico_release
    ref = BertModel(
        BertConfig(
            vocab_size=50,
            hidden_size=TEXT,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=40,
            is_decoder=True,
            add_cross_attention=True,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            attn_implementation="eager",
        )  # fmt: skip
    ).eval()
    prefix = "multimodal_encoder.bert."
    ref.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    ids, cond = torch.randint(5, 50, (2, 6)), torch.randn(2, 3, TEXT)
    with torch.no_grad():
        expected = ref(input_ids=ids, encoder_hidden_states=cond, use_cache=False).last_hidden_state
        got = model.text(ids, torch.ones_like(ids), causal=True, condition=cond)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_mico_heads_keep_their_meaning(mico_release):
    state, model, report = mico_release
    assert model.logit_scale.item() == pytest.approx(math.log(20.0))
    video, audio = torch.randn(2, 3, 3, 16, 16), torch.randn(2, 2, 16, 16)
    with torch.no_grad():
        encoded = model.encode_group(("audio", "video"), {"video": video, "audio": audio})
        got = model.media_features(encoded)
        pooled_v = model.encoder({"video": video})[Modality.VIDEO].view(2, 3, 5, D)[:, :, 0].mean(1)
        pooled_a = model.encoder({"audio": audio})[Modality.AUDIO].view(2, 2, 5, D)[:, :, 0].mean(1)
        # MiCo: contra_head_va(cat(vision, audio)), modalities encoded separately
        expected = F.normalize(
            F.linear(torch.cat([pooled_v, pooled_a], 1), state["contra_head_va.weight"], state["contra_head_va.bias"]),
            dim=-1,
        )
        cond = model.condition_tokens({Modality.VIDEO: encoded[Modality.VIDEO]})
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    # Condition tokens: MiCo's pool_video (CLS, mean of patches), hidden_trans, frame and type embeddings.
    feats = model.encoder({"video": video})[Modality.VIDEO].view(2, 3, 5, D)
    pooled = torch.stack([feats[:, :, 0], feats[:, :, 1:].mean(2)], 2)
    h = F.layer_norm(F.linear(pooled, state["hidden_trans_vision_multimodal.0.weight"], state["hidden_trans_vision_multimodal.0.bias"]),
                     (TEXT,), state["hidden_trans_vision_multimodal.1.weight"], state["hidden_trans_vision_multimodal.1.bias"], eps=1e-12)  # fmt: skip
    h = h + state["video_frame_embedding"][0, :3, None] + state["vision_type_embeddings"].reshape(-1)
    torch.testing.assert_close(cond, h.reshape(2, 6, TEXT), rtol=0, atol=1e-5)
    for key in ("contra_head_s.linear.weight", "contra_head_vs.weight", "hidden_trans_subtitle_multimodal.0.weight",
                "vision_encoder.visual.head.weight", "vision_encoder.text.token_embedding.weight"):  # fmt: skip
        assert key in report.ignored
    assert not any(
        k.startswith(("contra_head_v.", "itm_head", "multimodal_encoder.bert.encoder")) for k in report.ignored
    )


def test_mico_unsupported_towers_raise():
    state = _mico_state(torch.Generator().manual_seed(0))
    with pytest.raises(CheckpointError, match="EVA02"):
        convert_mico_checkpoint(state, {"vision_encoder_type": "evaclip02_large"})
    with pytest.raises(CheckpointError, match="unknown vision tower"):
        convert_mico_checkpoint(state, {})
    state.pop("itm_head.linear1.weight")
    with pytest.raises(CheckpointError, match="missing itm_head.linear1.weight"):
        convert_mico_checkpoint(
            state, {"vision_encoder_type": "evaclip01_giant"}, text_num_attention_heads=4, random_token_start=5
        )
