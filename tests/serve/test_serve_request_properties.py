"""Property tests: arbitrary JSON at the API's request edges gives success or a typed 4xx error, never
another exception (which the server would answer with a 500)."""

import base64
import io

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import ValidationError

from mico_chat.serve.config import ApiConfig
from mico_chat.serve.content import RequestError, to_chat_messages
from mico_chat.serve.openai_api import ChatCompletionRequest

CONFIG = ApiConfig(model_name="m")
BOUNDED = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def _png() -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


# Parts that look like the real ones, with any field replaced by an arbitrary value.
part_keys = st.sampled_from(["type", "text", "image_url", "video_url", "input_audio", "audio_url", "url"])
near_parts = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": json_values}),
    st.fixed_dictionaries({"type": st.sampled_from(["image_url", "video_url", "audio_url"]),
                           "image_url": st.one_of(json_values, st.just({"url": _png()}))}),  # fmt: skip
    st.fixed_dictionaries({"type": json_values}),
    st.dictionaries(part_keys, json_values, max_size=3),
    json_values,
)
messages = st.lists(
    st.one_of(
        st.fixed_dictionaries({"role": st.one_of(st.sampled_from(["user", "system", "assistant", "developer"]), json_values),
                               "content": st.one_of(json_values, st.lists(near_parts, max_size=3))}),  # fmt: skip
        json_values,
    ),
    max_size=4,
)


@BOUNDED
@given(messages)
def test_content_parser_gives_messages_or_a_request_error(value):
    try:
        out = to_chat_messages(value, CONFIG)
    except RequestError as err:
        assert 400 <= err.status < 500 and err.message
        return
    assert isinstance(out, list) and all(m["role"] in ("system", "user", "assistant") for m in out)


@BOUNDED
@given(json_values)
def test_content_parser_takes_any_json_value(value):
    try:
        to_chat_messages(value, CONFIG)
    except RequestError as err:
        assert 400 <= err.status < 500


request_fields = st.sampled_from(
    ["model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature", "top_p",
     "seed", "n", "stop", "frequency_penalty", "presence_penalty", "response_format", "mm_processor_kwargs", "other"]
)  # fmt: skip


@BOUNDED
@given(st.dictionaries(request_fields, json_values, max_size=8))
def test_request_schema_validates_or_raises_a_validation_error(body):
    try:
        request = ChatCompletionRequest.model_validate(body)
    except ValidationError:
        return  # the app turns it into a 400 naming the field
    assert isinstance(request.model, str) and isinstance(request.messages, list)
    assert request.seed is None or -(2**63) <= request.seed < 2**63
    assert isinstance(request.stream, bool)
