"""The OpenAI-compatible API, driven by the official ``openai`` client against a running server."""

from __future__ import annotations

import base64
import http.server
import threading

import httpx
import openai
import pytest
from helpers.serve_api import TINY_NAME, data_url, start_api

from mico_chat.api import GenerationSettings


def user(*parts):
    return [{"role": "user", "content": list(parts)}]


def text(t):
    return {"type": "text", "text": t}


def media_parts(serve_media):
    """Each media kind as an OpenAI content part, and the same media as a ChatModel part."""
    clip, wav, image = serve_media["clip"], serve_media["wav"], serve_media["image"]
    return {
        "video_url": (
            {"type": "video_url", "video_url": {"url": data_url(clip, "video/mp4")}},
            {"type": "video", "video": clip.read_bytes()},
        ),
        "image_url": (
            {"type": "image_url", "image_url": {"url": data_url(image, "image/png")}},
            {"type": "image", "image": image.read_bytes()},
        ),
        "input_audio": (
            {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav.read_bytes()).decode(), "format": "wav"}},
            {"type": "audio", "audio": wav.read_bytes()},
        ),
        "audio_url": (
            {"type": "audio_url", "audio_url": {"url": data_url(wav, "audio/wav")}},
            {"type": "audio", "audio": wav.read_bytes()},
        ),
    }


def reference(api, messages, **settings):
    """What the model answers to ``messages`` alone, without the server."""
    return api.chat.complete(messages, GenerationSettings(**{"max_new_tokens": 12, **settings}))


# ---------------------------------------------------------------------------------------------- routes
def test_models_health_and_model_card(api):
    client = api.client()
    assert [m.id for m in client.models.list()] == [TINY_NAME]
    assert client.models.retrieve(TINY_NAME).owned_by == "mico-chat"
    health = httpx.get(f"{api.url}/health").json()
    assert health["status"] == "ok" and health["model"] == TINY_NAME and health["waiting"] == 0


def test_text_chat_matches_the_model_and_reports_usage(api):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of France?"}]
    response = api.client().chat.completions.create(model=TINY_NAME, messages=messages, max_tokens=10)
    expected = reference(api, messages, max_new_tokens=10)
    choice = response.choices[0]
    assert response.object == "chat.completion" and response.id.startswith("chatcmpl-")
    assert choice.message.role == "assistant" and choice.message.content == expected.text
    assert choice.finish_reason == expected.finish_reason
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (expected.prompt_tokens, expected.completion_tokens)
    assert response.usage.total_tokens == expected.prompt_tokens + expected.completion_tokens


def test_streaming_joins_to_the_non_streaming_reply(api, serve_media):
    part, _ = media_parts(serve_media)["video_url"]
    messages = user(part, text("What moves?"))
    client = api.client()
    whole = client.chat.completions.create(model=TINY_NAME, messages=messages)
    chunks = list(
        client.chat.completions.create(model=TINY_NAME, messages=messages, stream=True, stream_options={"include_usage": True})
    )
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len([p for p in pieces if p]) >= 2, "the answer arrives in several pieces"
    assert "".join(pieces) == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == whole.usage.model_dump()


@pytest.mark.parametrize("kind", ["video_url", "image_url", "input_audio", "audio_url"])
def test_every_media_kind_reaches_the_model(api, serve_media, kind):
    part, local = media_parts(serve_media)[kind]
    response = api.client().chat.completions.create(model=TINY_NAME, messages=user(part, text("Describe it.")))
    expected = reference(api, user(local, text("Describe it.")))
    text_only = reference(api, user(text("Describe it.")))
    assert response.choices[0].message.content == expected.text
    # The media's feature tokens are in the prompt: the server decoded them as the model would.
    assert response.usage.prompt_tokens == expected.prompt_tokens > text_only.prompt_tokens


def test_multi_turn_with_media_in_an_earlier_turn(api, serve_media):
    parts = media_parts(serve_media)
    messages = [
        {"role": "user", "content": [parts["video_url"][0], text("What is this?")]},
        {"role": "assistant", "content": "A clip."},
        {"role": "user", "content": [parts["input_audio"][0], text("And this sound?")]},
    ]
    local = [
        {"role": "user", "content": [parts["video_url"][1], text("What is this?")]},
        {"role": "assistant", "content": "A clip."},
        {"role": "user", "content": [parts["input_audio"][1], text("And this sound?")]},
    ]
    response = api.client().chat.completions.create(model=TINY_NAME, messages=messages)
    assert response.choices[0].message.content == reference(api, local).text


def test_per_request_frames_and_video_audio(api, serve_media):
    part, _ = media_parts(serve_media)["video_url"]
    client = api.client()

    def prompt_tokens(**options):
        r = client.chat.completions.create(model=TINY_NAME, messages=user(part, text("hi")), max_tokens=1, extra_body=options)
        return r.usage.prompt_tokens

    base = prompt_tokens()
    assert prompt_tokens(mm_processor_kwargs={"num_frames": 8}) > base
    assert prompt_tokens(mm_processor_kwargs={"use_audio_in_video": False}) < base


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(api):
    import asyncio

    questions = ["hello world", "What is the capital of France?", "beeps", "What colour is the circle?"]
    before = api.engine.stats()["batches"]

    async def ask_all():
        client = openai.AsyncOpenAI(base_url=f"{api.url}/v1", api_key="x", max_retries=0)
        calls = [client.chat.completions.create(model=TINY_NAME, messages=[{"role": "user", "content": q}]) for q in questions]
        return await asyncio.gather(*calls)

    responses = asyncio.run(ask_all())
    answers = [r.choices[0].message.content for r in responses]
    assert answers == [reference(api, [{"role": "user", "content": q}]).text for q in questions]
    assert api.engine.stats()["batches"] - before < len(questions), "requests arriving together share a batch"


# ---------------------------------------------------------------------------------------------- errors
def error_of(call):
    with pytest.raises(openai.APIStatusError) as info:
        call()
    return info.value.status_code, info.value.body


def test_corrupt_media_is_a_400_naming_the_part(api, serve_media):
    client = api.client()
    bad = {"type": "video_url", "video_url": {"url": data_url(serve_media["corrupt"], "video/mp4")}}
    status, body = error_of(lambda: client.chat.completions.create(model=TINY_NAME, messages=user(text("hi"), bad)))
    assert status == 400 and body["code"] == "invalid_media"
    assert body["param"] == "messages[0].content[1].video_url" and "bad video" in body["message"]
    wrong_kind = {"type": "image_url", "image_url": {"url": data_url(serve_media["wav"], "image/png")}}
    status, body = error_of(lambda: client.chat.completions.create(model=TINY_NAME, messages=user(wrong_kind)))
    assert status == 400 and "not an image" in body["message"]
    not_b64 = {"type": "input_audio", "input_audio": {"data": "not base64!!", "format": "wav"}}
    status, body = error_of(lambda: client.chat.completions.create(model=TINY_NAME, messages=user(not_b64)))
    assert status == 400 and "base64" in body["message"]


def test_oversized_body_media_and_duration_are_413(api, serve_media):
    client = api.client()
    status, body = error_of(lambda: client.chat.completions.create(model=TINY_NAME, messages=[{"role": "user", "content": "x" * (4 << 20)}]))
    assert status == 413 and body["code"] == "request_too_large"
    big = {"type": "video_url", "video_url": {"url": "data:video/mp4;base64," + base64.b64encode(b"\0" * (2 << 20)).decode()}}
    status, body = error_of(lambda: client.chat.completions.create(model=TINY_NAME, messages=user(big)))
    assert status == 413 and "limit is 1,048,576" in body["message"]
    long = {"type": "video_url", "video_url": {"url": data_url(serve_media["long_clip"], "video/mp4")}}
    status, body = error_of(lambda: client.chat.completions.create(model=TINY_NAME, messages=user(long)))
    assert status == 413 and "lasts 4.0 s" in body["message"]


def _png_header_only(width, height):
    """A PNG whose header claims ``width x height`` RGB pixels and holds no image data (a bomb's header)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [5_000, 10_000, 30_000])  # over the server's 16M, the loaders' 64M, PIL's 179M
def test_a_decompression_bomb_image_is_413_as_documented(api, side):
    url = "data:image/png;base64," + base64.b64encode(_png_header_only(side, side)).decode()
    part = {"type": "image_url", "image_url": {"url": url}}
    status, body = error_of(lambda: api.client().chat.completions.create(model=TINY_NAME, messages=user(part)))
    assert status == 413 and body["code"] == "request_too_large", body


def test_text_over_the_character_limit_is_400_before_tokenizing(api):
    for content in ("x" * 50_001, [{"type": "text", "text": "x" * 30_000}, {"type": "text", "text": "y" * 30_000}]):
        status, body = error_of(
            lambda: api.client().chat.completions.create(model=TINY_NAME, messages=[{"role": "user", "content": content}])
        )
        assert status == 400 and body["code"] == "context_length_exceeded" and "50,000 characters" in body["message"]


def test_a_question_about_html_tags_is_text_in_a_string_and_in_a_part(api):
    question = "What does the <video> tag do in HTML, and <audio>?"
    for content in (question, [{"type": "text", "text": question}]):
        reply = api.client().chat.completions.create(
            model=TINY_NAME, messages=[{"role": "user", "content": content}], max_tokens=2
        )
        assert reply.usage.prompt_tokens > 0


def test_unknown_model_is_404(api):
    status, body = error_of(lambda: api.client().chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}]))
    assert status == 404 and body["code"] == "model_not_found" and TINY_NAME in body["message"]
    with pytest.raises(openai.NotFoundError):
        api.client().models.retrieve("gpt-4o")


def test_local_paths_and_remote_urls_are_refused_without_any_fetch(api, serve_media):
    hits = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the stdlib's name)
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(serve_media["image"].read_bytes())

        def log_message(self, *args):
            pass

    origin = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    remote = f"http://127.0.0.1:{origin.server_address[1]}/square.png"
    client = api.client()
    try:
        for url in (remote, f"file://{serve_media['image']}", str(serve_media["image"])):
            part = {"type": "image_url", "image_url": {"url": url}}
            status, body = error_of(lambda: client.chat.completions.create(model=TINY_NAME, messages=user(part)))
            assert status == 400 and "base64 data URL" in body["message"]
        assert hits == [], "the server made no request on the client's behalf"
    finally:
        origin.shutdown()


def test_an_allowed_media_host_is_fetched(tiny_folder, serve_media):
    class Origin(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            data = serve_media["image"].read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    origin = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    server, running = start_api(tiny_folder, allowed_media_hosts=("127.0.0.1",))
    try:
        part = {"type": "image_url", "image_url": {"url": f"http://127.0.0.1:{origin.server_address[1]}/square.png"}}
        response = running.client().chat.completions.create(model=TINY_NAME, messages=user(part, text("What is it?")))
        local = user({"type": "image", "image": serve_media["image"].read_bytes()}, text("What is it?"))
        assert response.choices[0].message.content == reference(running, local).text
    finally:
        server.stop()
        running.engine.close()
        origin.shutdown()


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"max_tokens": 65}, "max_tokens"),
        ({"n": 2}, "n"),
        ({"stop": ["\n"]}, "stop"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"temperature": 3}, "temperature"),
        ({"extra_body": {"mm_processor_kwargs": {"num_frames": 0}}}, "mm_processor_kwargs.num_frames"),
        ({"extra_body": {"mm_processor_kwargs": {"num_frames": 17}}}, "mm_processor_kwargs.num_frames"),  # > segment_limit
    ],
)
def test_parameters_that_cannot_be_honoured_are_400(api, extra, param):
    status, body = error_of(
        lambda: api.client().chat.completions.create(model=TINY_NAME, messages=[{"role": "user", "content": "hi"}], **extra)
    )
    assert status == 400 and body["param"] == param


def test_malformed_requests_are_400_in_openai_shape(api):
    for payload, fragment in (
        ({"model": TINY_NAME}, "messages"),
        ({"model": TINY_NAME, "messages": []}, "non-empty"),
        ({"model": TINY_NAME, "messages": [{"role": "tool", "content": "x"}]}, "role"),
        ({"model": TINY_NAME, "messages": [{"role": "user", "content": [{"type": "file"}]}]}, "unsupported content part"),
        ({"model": TINY_NAME, "messages": [{"role": "user", "content": [{"type": ["text"]}]}]}, "type must be a string"),
        ({"model": TINY_NAME, "messages": [{"role": "user", "content": [{"type": {"a": 1}}]}]}, "type must be a string"),
        ({"model": TINY_NAME, "messages": [{"role": "user", "content": ["hi"]}]}, "must be an object"),
        ({"model": TINY_NAME, "messages": [{"role": ["user"], "content": "hi"}]}, "role"),
        ({"model": TINY_NAME, "messages": [{"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]}, "only user"),
    ):
        response = httpx.post(f"{api.url}/v1/chat/completions", json=payload)
        assert response.status_code == 400, payload
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and fragment in error["message"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("stream", "yes"), ("max_tokens", True), ("max_tokens", 4.0), ("temperature", "0.5"), ("seed", 2**64),
     ("seed", -(2**63) - 1), ("top_p", [0.5]), ("n", "1")],
)  # fmt: skip
def test_fields_of_the_wrong_type_or_out_of_range_are_400_naming_the_field(api, field, value):
    payload = {"model": TINY_NAME, "messages": [{"role": "user", "content": "hi"}], field: value}
    response = httpx.post(f"{api.url}/v1/chat/completions", json=payload)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == field


def test_seed_takes_the_whole_signed_64_bit_range(api):
    for seed in (2**63 - 1, -(2**63)):
        payload = {"model": TINY_NAME, "messages": [{"role": "user", "content": "hi"}], "seed": seed, "max_tokens": 2}
        assert httpx.post(f"{api.url}/v1/chat/completions", json=payload).status_code == 200


def test_api_key_is_required_when_set(tiny_folder):
    server, running = start_api(tiny_folder, api_key="s3cret")
    try:
        with pytest.raises(openai.AuthenticationError) as info:
            running.client(api_key="wrong").chat.completions.create(model=TINY_NAME, messages=[{"role": "user", "content": "hi"}])
        assert info.value.status_code == 401 and info.value.body["code"] == "invalid_api_key"
        # The openai client always sends a key, so "missing" is checked with plain HTTP.
        missing = httpx.post(f"{running.url}/v1/chat/completions", json={"model": TINY_NAME, "messages": [{"role": "user", "content": "hi"}]})
        assert missing.status_code == 401 and "no API key" in missing.json()["error"]["message"]
        assert missing.headers["www-authenticate"] == "Bearer"
        assert httpx.get(f"{running.url}/v1/models").status_code == 401
        ok = running.client(api_key="s3cret").chat.completions.create(model=TINY_NAME, messages=[{"role": "user", "content": "hi"}])
        assert ok.choices[0].message.content
        assert httpx.get(f"{running.url}/health").status_code == 200  # liveness probes need no key
    finally:
        server.stop()
        running.engine.close()


def test_full_queue_is_429_and_a_closed_engine_is_503(tiny_folder):
    import asyncio

    server, running = start_api(tiny_folder, max_waiting=3)
    client = running.client()
    try:
        # Hold the model: the first request occupies the batch, the next ones wait (limit: 3).
        with running.chat._lock:

            async def flood():
                aclient = openai.AsyncOpenAI(base_url=f"{running.url}/v1", api_key="x", max_retries=0)
                first = asyncio.create_task(aclient.chat.completions.create(model=TINY_NAME, messages=[{"role": "user", "content": "a"}]))
                while running.engine.stats()["running"] == 0:
                    await asyncio.sleep(0.01)
                waiting = [
                    asyncio.create_task(aclient.chat.completions.create(model=TINY_NAME, messages=[{"role": "user", "content": q}]))
                    for q in "bcd"
                ]
                while running.engine.stats()["waiting"] < 3:
                    await asyncio.sleep(0.01)
                with pytest.raises(openai.RateLimitError) as info:
                    await aclient.chat.completions.create(model=TINY_NAME, messages=[{"role": "user", "content": "e"}])
                assert info.value.body["code"] == "rate_limit_exceeded"
                return first, waiting

            loop = asyncio.new_event_loop()
            first, waiting = loop.run_until_complete(flood())
        # The model is free again: everyone admitted gets an answer.
        answers = loop.run_until_complete(asyncio.gather(first, *waiting))
        loop.close()
        assert all(a.choices[0].message.content for a in answers)
        running.engine.close()
        status, body = error_of(lambda: client.chat.completions.create(model=TINY_NAME, messages=[{"role": "user", "content": "hi"}]))
        assert status == 503 and body["code"] == "service_unavailable"
    finally:
        server.stop()
        running.engine.close()


def test_a_chunked_body_over_the_limit_is_413_too(api):
    def chunks():  # no Content-Length: the server must count what arrives
        yield b'{"model": "tiny-mico", "messages": [{"role": "user", "content": "'
        for _ in range(4):
            yield b"x" * (1 << 20)
        yield b'"}]}'

    response = httpx.post(f"{api.url}/v1/chat/completions", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"


def test_a_prompt_longer_than_the_context_is_400(api):
    status, body = error_of(
        lambda: api.client().chat.completions.create(model=TINY_NAME, messages=[{"role": "user", "content": "hello world " * 2000}])
    )
    assert status == 400 and "context" in body["message"] and api.engine.stats()["waiting"] == 0
