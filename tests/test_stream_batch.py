"""``ChatModel.prepare`` + ``stream_batch``: batched streaming that the server's scheduler runs."""

import numpy as np
import pytest

from mico_chat.api import ChatModel, GenerationSettings
from mico_chat.preprocess import MediaSettings
from mico_chat.processing import ProcessorError


def frames(seed, n=5):
    return np.random.default_rng(seed).integers(0, 255, size=(n, 32, 32, 3), dtype=np.uint8)


def conv(text, seed=None):
    if seed is None:
        return [{"role": "user", "content": text}]
    return [{"role": "user", "content": [{"type": "video", "video": frames(seed)}, {"type": "text", "text": text}]}]


@pytest.fixture(scope="module")
def chat():
    from helpers.tiny import tiny_model

    model, processor = tiny_model()
    return ChatModel(model, processor, name="tiny", defaults=GenerationSettings(max_new_tokens=16))


CONVERSATIONS = [conv("hello world", seed=0), conv("What is the capital of France?", seed=1), conv("beeps", seed=2)]


def test_every_row_streams_the_reply_it_would_get_alone(chat):
    prompts = [chat.prepare(c) for c in CONVERSATIONS]
    pieces: dict[int, list[str]] = {i: [] for i in range(len(prompts))}
    results = {}
    for event in chat.stream_batch(prompts):
        assert event.index not in results, "no events after a row's result"
        pieces[event.index].append(event.text)
        if event.result is not None:
            results[event.index] = event.result
    alone = [chat.complete(c) for c in CONVERSATIONS]
    assert [results[i] for i in range(3)] == alone
    assert ["".join(pieces[i]) for i in range(3)] == [r.text for r in alone]
    assert all(r.completion_tokens > 0 for r in alone)


def test_text_only_and_media_rows_batch_together(chat):
    mixed = [conv("hello world"), conv("beeps", seed=3)]
    results = {e.index: e.result for e in chat.stream_batch([chat.prepare(c) for c in mixed]) if e.result}
    assert [results[0].text, results[1].text] == [chat.chat(c) for c in mixed]


def test_length_limit_and_finish_reason(chat):
    (event,) = [e for e in chat.stream_batch([chat.prepare(conv("hello", seed=4))], max_new_tokens=2) if e.result]
    assert event.result.completion_tokens <= 2
    assert event.result == chat.complete(conv("hello", seed=4), max_new_tokens=2)


def test_a_cancelled_row_gets_no_more_events_and_the_others_finish(chat):
    prompts = [chat.prepare(c) for c in CONVERSATIONS[:2]]
    seen = {0: 0, 1: 0}
    cancelled = set()
    results = {}
    for event in chat.stream_batch(prompts, max_new_tokens=12, cancelled=lambda i: i in cancelled):
        seen[event.index] += 1
        cancelled.add(0)  # row 0 cancelled after the first event of any row
        if event.result:
            results[event.index] = event.result
    assert 0 not in results and seen[0] <= 1
    assert results[1] == chat.complete(CONVERSATIONS[1], max_new_tokens=12)


def test_closing_the_iterator_early_ends_generation(chat):
    stream = chat.stream_batch([chat.prepare(c) for c in CONVERSATIONS], max_new_tokens=16)
    next(stream)
    stream.close()  # joins the generating thread; the model is free again
    assert chat._lock.acquire(timeout=5)
    chat._lock.release()


def test_prepare_takes_per_request_media_settings_without_touching_the_shared_ones(chat):
    before = chat.processor.settings
    eight = chat.prepare(conv("hi", seed=5), media_settings=MediaSettings(num_frames=8, video_audio=False))
    four = chat.prepare(conv("hi", seed=5))
    assert dict(eight.batch_key)["video"][0] == 8 and dict(four.batch_key)["video"][0] == before.num_frames
    assert eight.prompt_tokens > four.prompt_tokens
    assert chat.processor.settings is before


def test_prepare_refuses_a_prompt_longer_than_the_context(chat):
    with pytest.raises(ProcessorError, match="context"):
        chat.prepare(conv("hello world " * 2000))
