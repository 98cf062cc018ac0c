"""``mico-chat chat`` slash commands, and ``mico-chat api`` as a real process."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

from mico_chat.api import ChatModel, GenerationSettings
from mico_chat.commands.chat import ChatSession


@pytest.fixture(scope="module")
def chat():
    from helpers.tiny import tiny_model

    model, processor = tiny_model()
    return ChatModel(model, processor, name="tiny", defaults=GenerationSettings(max_new_tokens=8))


def session(chat, **kwargs):
    out = io.StringIO()
    return ChatSession(chat, GenerationSettings(max_new_tokens=8), out=out, **kwargs), out


def test_slash_commands_attach_media_to_the_next_message(chat, serve_media):
    s, out = session(chat, system="Be brief.")
    assert s.handle(f"/video {serve_media['clip']}")
    assert "attached video" in out.getvalue() and "with audio" in out.getvalue()
    assert s.handle("What happens?")
    user = s.messages[1]
    assert user["content"][0] == {"type": "video", "video": str(serve_media["clip"])}
    expected = chat.chat(s.messages[:2], GenerationSettings(max_new_tokens=8))
    assert s.messages[2] == {"role": "assistant", "content": expected}
    assert f"assistant> {expected}\n" in out.getvalue()
    # Mid-conversation: an audio and an image go with the second question only.
    s.handle(f"/audio {serve_media['wav']}")
    s.handle(f"/image {serve_media['image']}")
    s.handle("And now?")
    kinds = [p["type"] for p in s.messages[3]["content"]]
    assert kinds == ["audio", "image", "text"] and s.pending == []
    assert len(s.messages) == 5


def test_bad_attachments_and_failures_lose_nothing(chat, serve_media, tmp_path):
    s, out = session(chat)
    s.handle("hello")
    before = list(s.messages)
    s.handle(f"/video {tmp_path / 'missing.mp4'}")
    s.handle(f"/video {serve_media['corrupt']}")
    s.handle(f"/video {serve_media['wav']}")  # sound only: belongs to /audio
    assert out.getvalue().count("nothing attached") == 3 and "attach it with /audio" in out.getvalue()
    assert s.messages == before and s.pending == []
    s.pending.append({"type": "video", "video": str(serve_media["corrupt"])})  # e.g. given by --video
    assert s.ask("what is it?") is None
    assert "your message was not sent" in out.getvalue() and s.messages == before


def test_reset_help_quit_and_unknown_commands(chat, serve_media):
    s, out = session(chat, system="sys")
    s.handle("hi")
    s.handle(f"/image {serve_media['image']}")
    assert s.handle("/reset") and s.messages == [{"role": "system", "content": "sys"}] and s.pending == []
    s.handle("/help")
    assert "/video PATH" in out.getvalue()
    s.handle("/frobnicate")
    assert "unknown command /frobnicate" in out.getvalue()
    s.handle("/video")
    assert "usage: /video PATH" in out.getvalue()
    assert s.handle("") and not s.handle("/quit")


def test_one_shot_chat_streams_to_stdout(tiny_folder, capsys):
    from mico_chat.cli import main

    assert main(["chat", "--model", str(tiny_folder), "--prompt", "hello world", "--max-new-tokens", "6"]) == 0
    printed = capsys.readouterr().out
    expected = ChatModel.load(tiny_folder).chat([{"role": "user", "content": "hello world"}], max_new_tokens=6)
    assert printed == f"assistant> {expected}\n"


def start_command(args: list[str], timeout_s: float = 120.0) -> tuple[subprocess.Popen, str]:
    """Run ``mico-chat ARGS`` in its own session; return it with the URL it printed."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "mico_chat.cli", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + timeout_s
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        if match:
            return process, match.group(1)
    process.kill()
    raise AssertionError("the server printed no URL:\n" + "".join(lines))


def stop_with_ctrl_c(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack: what holds it
        time.sleep(2)
        process.kill()
        raise AssertionError("Ctrl-C did not stop the server within 30 s:\n" + process.stdout.read()[-6000:]) from None
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.slow  # a server subprocess
def test_api_command_serves_until_ctrl_c(tiny_folder):
    process, url = start_command(["api", "--model", str(tiny_folder), "--port", "0", "--served-model-name", "tiny"])
    try:
        assert httpx.get(f"{url}/health").json()["model"] == "tiny"
        reply = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "tiny", "messages": [{"role": "user", "content": "hello world"}], "max_tokens": 5},
        ).json()
        assert reply["usage"]["completion_tokens"] <= 5
    finally:
        assert stop_with_ctrl_c(process) == 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--max-body-mb", "0"], "--max-body-mb must be positive"), (["--max-batch-size", "0"], "--max-batch-size must be"),
     (["--max-waiting", "-1"], "--max-waiting must be"), (["--port", "70000"], "--port must be"),
     (["--max-text-chars", "0"], "--max-text-chars must be"), (["--max-media-seconds", "nan"], "--max-media-seconds"),
     (["--max-new-tokens", "2000"], "over --max-tokens-limit")],
)  # fmt: skip
def test_bad_limit_flags_stop_with_one_line_before_any_model_loads(flags, message, capsys, monkeypatch):
    from mico_chat import api
    from mico_chat.cli import main

    monkeypatch.setattr(api.ChatModel, "load", lambda *a, **k: pytest.fail("the model loaded before the flags were checked"))
    for command in ("api", "serve"):
        assert main([command, *flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
