"""Lexical alignment (stage1_lexical): the content-word mask, the loss, and a real run of the stage."""

import json

import pytest
import torch

from mico_chat.processing import IGNORE_INDEX
from mico_chat.training import TrainRecipe, config_from_dict
from mico_chat.training.lexical import _segments, content_token_mask, lexical_alignment_loss
from mico_chat.training.stages import STAGES


class _Tok:
    """decode() of a toy vocabulary: 0-2 punctuation, the rest words."""

    words = {0: ".", 1: ",", 2: "  ", 3: "red", 4: "blue", 5: "background", 6: "square", 7: "circle"}

    def decode(self, ids):
        return "".join(self.words[i] for i in ids)


def test_content_words_drop_punctuation_and_template_words():
    rows = [
        [IGNORE_INDEX, 3, 6, 5, 0],  # red square background .
        [IGNORE_INDEX, 4, 7, 5, 0],  # blue circle background .
        [4, 6, 5, 1],  # blue square background ,
        [3, 7, 5, 0],
    ]
    mask = content_token_mask(rows, _Tok(), vocab_size=10, max_df=0.5)
    # "background" is in every caption (df 1.0 > 0.5); punctuation has no letter; 8, 9 never occur.
    assert mask.nonzero().flatten().tolist() == [3, 4, 6, 7]
    assert content_token_mask(rows, _Tok(), vocab_size=10, max_df=1.0).nonzero().flatten().tolist() == [3, 4, 5, 6, 7]
    with pytest.raises(ValueError, match="max_df"):
        content_token_mask(rows, _Tok(), vocab_size=10, max_df=0.0)
    with pytest.raises(ValueError, match="no captions"):
        content_token_mask([], _Tok(), vocab_size=10)


def test_segments_follow_rows_when_padded_and_position_restarts_when_packed():
    ids = torch.zeros(2, 4, dtype=torch.long)
    assert _segments(ids, None).tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    packed = torch.tensor([[0, 1, 0, 1, 2, 0]])
    assert _segments(torch.zeros(1, 6, dtype=torch.long), packed).tolist() == [0, 0, 1, 1, 1, 2]


class _Aligned(torch.nn.Module):
    """A stand-in model whose 'connector' output is given: media tokens equal chosen word embeddings."""

    def __init__(self, media_rows, token_id=99):
        super().__init__()
        self.embed = torch.nn.Embedding(100, 8)
        self.media_rows = media_rows
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.config = type("C", (), {"media_token_ids": {"image": token_id}})()

    def get_input_embeddings(self):
        return self.embed

    def encode_media(self, media, encoder_features):
        from mico_chat.modality import Modality

        rows = [self.embed.weight[list(r)].detach() * self.scale for r in self.media_rows]
        return {Modality.IMAGE: torch.stack(rows)}


def _batch(captions, media_tokens=2, token_id=99):
    ids, labels = [], []
    for words in captions:
        ids.append([token_id] * media_tokens + list(words))
        labels.append([IGNORE_INDEX] * media_tokens + list(words))
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels)}


def test_loss_is_zero_when_tokens_are_the_captions_words_and_grows_when_swapped():
    content = torch.zeros(100, dtype=torch.bool)
    content[[3, 4, 6, 7]] = True
    captions = [(3, 6, 5), (4, 7, 5)]  # red square background / blue circle background
    right = _Aligned([(3, 6), (4, 7)])
    loss, parts = lexical_alignment_loss(right, _batch(captions), content)
    assert loss.item() == pytest.approx(0.0, abs=1e-5) and parts["coverage"] == pytest.approx(0.0, abs=1e-5)
    swapped = _Aligned([(4, 7), (3, 6)])  # each clip's tokens show the other clip's words
    worse, _ = lexical_alignment_loss(swapped, _batch(captions), content)
    assert worse.item() > 0.5
    half = _Aligned([(3, 3), (4, 4)])  # colour shown, shape missing: coverage suffers, precision does not
    loss, parts = lexical_alignment_loss(half, _batch(captions), content)
    assert parts["precision"] == pytest.approx(0.0, abs=1e-5) and parts["coverage"] > 0.1
    loss.backward()
    assert half.scale.grad is not None


def test_captions_without_content_words_train_nothing():
    content = torch.zeros(100, dtype=torch.bool)
    model = _Aligned([(3, 6)])
    loss, parts = lexical_alignment_loss(model, _batch([(5, 5, 5)]), content)
    assert loss.item() == 0.0 and parts == {"coverage": 0.0, "precision": 0.0}


@pytest.mark.slow  # trains
def test_stage_trains_only_connectors_without_running_the_llm(tiny_dir, data_dir, tmp_path, monkeypatch):
    from helpers.train_fixtures import tiny_config

    assert STAGES["stage1_lexical"].objective == "lexical" and STAGES["stage1_lexical"].chat_template == "plain"
    config = tiny_config(tiny_dir, data_dir["captions"], tmp_path / "run", "stage1_lexical",
                         train={"max_steps": 6, "learning_rate": 5e-3, "export": True, "lexical_max_df": 1.0},
                         data={"cache_encoder_features": True, "packing": True})  # fmt: skip
    recipe = TrainRecipe(config_from_dict(config), progress=False)
    recipe.setup()
    llm = recipe._unwrapped().language_model
    before = {n: p.detach().clone() for n, p in recipe._unwrapped().named_parameters()}
    monkeypatch.setattr(llm, "forward", lambda *a, **k: pytest.fail("the LLM ran"))
    recipe.train()
    recipe.save()
    summary = recipe.cleanup()
    assert summary["status"] == "completed" and summary["steps"] == 6
    losses = [e["loss"] for e in recipe.trainer.state.log_history if "loss" in e]
    assert losses[-1] < losses[0]
    changed = {n for n, p in recipe._unwrapped().named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith("connectors.image.") for n in changed)
    saved = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert saved["chat_template"] == "plain"
