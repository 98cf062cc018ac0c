import numpy as np
import pytest
import torch

from mico_chat.api import ChatModel, GenerationSettings, _StreamCleaner


def frames(seed):
    return np.random.default_rng(seed).integers(0, 255, size=(5, 32, 32, 3), dtype=np.uint8)


def conv(text, seed=None):
    if seed is None:
        return [{"role": "user", "content": text}]
    return [{"role": "user", "content": [{"type": "video", "video": frames(seed)}, {"type": "text", "text": text}]}]


@pytest.fixture(scope="module")
def chat():
    from helpers.tiny import tiny_model

    model, processor = tiny_model()
    return ChatModel(model, processor, name="tiny", defaults=GenerationSettings(max_new_tokens=12))


def test_reply_is_nonempty_and_counts_tokens(chat):
    result = chat.complete(conv("hello world", seed=0))
    assert result.text and result.completion_tokens > 0 and result.prompt_tokens > 20
    assert result.finish_reason in ("stop", "length")
    assert chat.complete(conv("hello"), max_new_tokens=3).completion_tokens <= 3


def test_streaming_joins_to_the_non_streaming_reply(chat):
    for messages in (conv("What colour is the circle?", seed=1), conv("hello world")):
        pieces = list(chat.stream(messages))
        assert len(pieces) >= 1
        assert "".join(pieces) == chat.chat(messages)


def test_batched_greedy_equals_one_by_one(chat):
    conversations = [conv("hi", seed=2), conv("What is the capital of France? Tell me now.", seed=3), conv("beeps")]
    one_by_one = [chat.chat(c) for c in conversations]
    assert chat.batch_chat(conversations) == one_by_one


def test_sampling_with_seed_is_reproducible(chat):
    messages = conv("hello world", seed=4)
    a = chat.chat(messages, temperature=1.0, seed=7)
    b = chat.chat(messages, temperature=1.0, seed=7)
    assert a == b


def test_save_and_load_restores_the_same_replies(chat, tmp_path):
    messages = conv("What moves?", seed=5)
    chat.save_pretrained(tmp_path)
    again = ChatModel.load(tmp_path)
    assert again.chat(messages, max_new_tokens=12) == chat.chat(messages)


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        ChatModel.load(tmp_path / "missing")
    (tmp_path / "llm").mkdir()
    (tmp_path / "llm" / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ValueError, match="not a MiCo-Chat one"):
        ChatModel.load(tmp_path / "llm")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        ChatModel.load(tmp_path / "bad")


def test_generation_errors_in_the_worker_thread_reach_the_caller(chat, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(chat.model.language_model, "generate", broken)
    with pytest.raises(RuntimeError, match="boom"):
        list(chat.stream(conv("hi")))


@pytest.mark.parametrize(
    "pieces,stops,expected",
    [
        (["  Hel", "lo", " wor", "ld  "], [], ["Hel", "lo", " wor", "ld"]),
        (["The answer", " is 4", "USE", "R: next"], ["USER:"], ["The answer", " is 4"]),
        (["US", "A is big"], ["USER:"], ["USA is big"]),
    ],
)
def test_stream_cleaner_strips_like_the_non_streaming_path(pieces, stops, expected):
    cleaner = _StreamCleaner(stops)  # driven as _RowDecoder drives it: push each piece, then finish
    out = [cleaner.push(piece) for piece in pieces] + [cleaner.finish()]
    assert [piece for piece in out if piece] == expected


def test_generation_settings_validate():
    with pytest.raises(ValueError):
        GenerationSettings(max_new_tokens=0)
    with pytest.raises(ValueError):
        GenerationSettings(top_p=0)
    assert GenerationSettings().generate_kwargs()["do_sample"] is False
    assert torch.is_tensor(torch.zeros(1))
