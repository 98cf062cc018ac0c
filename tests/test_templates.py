import pytest

from mico_chat.templates import TEMPLATES, TemplateError, get_template
from helpers.tiny import tiny_tokenizer

CONV = [
    {"role": "user", "content": "<video>\nWhat moves?"},
    {"role": "assistant", "content": "A red square."},
    {"role": "user", "content": "Which way?"},
    {"role": "assistant", "content": "Left to right."},
]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def test_llm_template_snapshot(tokenizer):
    t = get_template("llm", tokenizer)
    assert t.render(CONV[:3], add_generation_prompt=True) == (
        "<|im_start|>user\n<video>\nWhat moves?<|im_end|>\n"
        "<|im_start|>assistant\nA red square.<|im_end|>\n"
        "<|im_start|>user\nWhich way?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_vicuna_v1_snapshot(tokenizer):
    t = get_template("vicuna_v1", tokenizer)
    system = (
        "A chat between a curious user and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the user's questions."
    )
    assert t.render(CONV[:3], add_generation_prompt=True) == (
        f"{system} USER: <video>\nWhat moves? ASSISTANT: A red square.<|im_end|>USER: Which way? ASSISTANT:"
    )
    custom = [{"role": "system", "content": "Be brief."}] + CONV[:1]
    assert t.render(custom, add_generation_prompt=True) == "Be brief. USER: <video>\nWhat moves? ASSISTANT:"


def test_plain_snapshot_keeps_only_media_and_caption(tokenizer):
    t = get_template("plain", tokenizer, ["<video>", "<audio>"])
    conv = [{"role": "user", "content": "<video>\n<audio>\nDescribe."}, {"role": "assistant", "content": "A beep."}]
    assert t.render(conv, add_generation_prompt=False) == "<video><audio>A beep.\n"
    assert t.render(conv[:1], add_generation_prompt=True) == "<video><audio>"


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_segments_join_to_render_and_mark_only_assistant_text(tokenizer, name):
    t = get_template(name, tokenizer, ["<video>"])
    segments = t.segments(CONV)
    assert "".join(s.text for s in segments) == t.render(CONV, add_generation_prompt=False)
    trainable = "".join(s.text for s in segments if s.trainable)
    assert "A red square." in trainable and "Left to right." in trainable
    assert "What moves?" not in trainable and "Which way?" not in trainable
    # The generation prompt for a turn is exactly the text before that turn's trainable segment.
    head = t.render(CONV[:3], add_generation_prompt=True)
    before = ""
    for s in segments:
        if s.trainable and "Left to right." in s.text:
            break
        before += s.text
    assert before == head


def test_llm_template_that_depends_on_later_messages_raises():
    tok = tiny_tokenizer()
    # A template that renders each message differently depending on whether it is the last one.
    tok.chat_template = (
        "{% for m in messages %}{% if loop.last %}[{{ m['content'] }}]{% else %}{{ m['content'] }};{% endif %}"
        "{% endfor %}"
    )
    with pytest.raises(TemplateError, match="differently"):
        get_template("llm", tok).segments(CONV)


def test_bad_conversations_raise(tokenizer):
    t = get_template("llm", tokenizer)
    with pytest.raises(TemplateError, match="empty"):
        t.render([], add_generation_prompt=True)
    with pytest.raises(TemplateError, match="role"):
        t.render([{"role": "robot", "content": "x"}], add_generation_prompt=True)
    with pytest.raises(TemplateError, match="only come first"):
        t.render([CONV[0], {"role": "system", "content": "x"}], add_generation_prompt=True)
    with pytest.raises(TemplateError, match="unknown chat template"):
        get_template("chatml9000", tokenizer)
    tokenizer_without = tiny_tokenizer()
    tokenizer_without.chat_template = None
    with pytest.raises(TemplateError, match="ships a chat template"):
        get_template("llm", tokenizer_without)
