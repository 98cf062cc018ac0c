"""``ChatEngine``: admission, batching by settings, cancellation, failures, shutdown."""

from __future__ import annotations

import asyncio

import pytest

from mico_chat.api import ChatModel, GenerationSettings
from mico_chat.media import MediaError
from mico_chat.serve.engine import ChatEngine, EngineClosedError, EngineConfig

QUESTIONS = ["hello world", "What is the capital of France?", "beeps"]


@pytest.fixture(scope="module")
def chat():
    from helpers.tiny import tiny_model

    model, processor = tiny_model()
    return ChatModel(model, processor, name="tiny", defaults=GenerationSettings(max_new_tokens=10))


def conv(q):
    return [{"role": "user", "content": q}]


def run(coro):
    return asyncio.run(coro)


def test_requests_with_equal_settings_share_a_batch_and_others_wait_for_their_own(chat):
    engine = ChatEngine(chat, EngineConfig(max_batch_size=8, batch_window_s=0.2))
    try:
        greedy = GenerationSettings(max_new_tokens=10)
        short = GenerationSettings(max_new_tokens=4)

        async def go():
            calls = [engine.complete(conv(q), greedy) for q in QUESTIONS] + [engine.complete(conv(QUESTIONS[0]), short)]
            return await asyncio.gather(*calls)

        results = run(go())
        assert results[:3] == [chat.complete(conv(q), greedy) for q in QUESTIONS]
        assert results[3] == chat.complete(conv(QUESTIONS[0]), short)
        assert engine.stats() == {"waiting": 0, "running": 0, "served": 4, "batches": 2}
    finally:
        engine.close()


def test_bad_media_fails_at_submit_before_anything_is_queued(chat, tmp_path):
    engine = ChatEngine(chat)
    try:
        bad = tmp_path / "broken.mp4"
        bad.write_bytes(b"not a video at all" * 10)
        with pytest.raises(MediaError, match="broken.mp4"):
            run(engine.submit([{"role": "user", "content": [{"type": "video", "video": str(bad)}]}]))
        assert engine.stats()["waiting"] == 0 and engine.stats()["batches"] == 0
    finally:
        engine.close()


def test_leaving_a_stream_early_cancels_only_that_row(chat):
    engine = ChatEngine(chat, EngineConfig(batch_window_s=0.2))
    settings = GenerationSettings(max_new_tokens=30)
    try:

        async def go():
            leaver = await engine.submit(conv(QUESTIONS[0]), settings)
            stayer = await engine.submit(conv(QUESTIONS[1]), settings)
            async for _ in leaver:
                break  # the client went away after the first piece
            return await stayer.text()

        assert run(go()) == chat.complete(conv(QUESTIONS[1]), settings)
        assert engine.stats()["served"] == 1
    finally:
        engine.close()


def test_a_failing_batch_fails_its_callers_and_the_engine_goes_on(chat, monkeypatch):
    engine = ChatEngine(chat)
    try:
        real = chat.model.language_model.generate

        def broken(*args, **kwargs):
            raise RuntimeError("out of memory (simulated)")

        monkeypatch.setattr(chat.model.language_model, "generate", broken)
        with pytest.raises(RuntimeError, match="simulated"):
            run(engine.complete(conv("hi")))
        monkeypatch.setattr(chat.model.language_model, "generate", real)
        assert run(engine.complete(conv("hi"))) == chat.complete(conv("hi"))
    finally:
        engine.close()


def test_a_closed_engine_refuses_requests(chat):
    engine = ChatEngine(chat)
    engine.close()
    with pytest.raises(EngineClosedError):
        run(engine.submit(conv("hi")))


def test_config_is_checked():
    with pytest.raises(ValueError):
        EngineConfig(max_batch_size=0)


def test_text_only_requests_join_a_batch_with_media_but_different_frame_counts_do_not(chat):
    import numpy as np

    engine = ChatEngine(chat, EngineConfig(max_batch_size=8, batch_window_s=0.2))
    frames = np.random.default_rng(0).integers(0, 255, size=(6, 32, 32, 3), dtype=np.uint8)
    video = [{"role": "user", "content": [{"type": "video", "video": frames}, {"type": "text", "text": "what?"}]}]
    try:

        async def go():
            return await asyncio.gather(
                engine.complete(video),
                engine.complete(conv("hello world")),
                engine.complete(video, num_frames=2),  # another shape: its own batch
            )

        results = run(go())
        assert results[0] == chat.complete(video) and results[1] == chat.complete(conv("hello world"))
        assert engine.stats()["batches"] == 2
    finally:
        engine.close()
