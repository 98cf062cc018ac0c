"""Test doubles for LLM pipelines: a scripted text generator and a local OpenAI-compatible server."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mico_chat.instruct_data.llm import Generated


class ScriptedGenerator:
    """A :class:`~mico_chat.instruct_data.llm.TextGenerator` answering by a rule; records every call."""

    name = "scripted"

    def __init__(self, respond: Callable[[str, int], str | None]):
        self.respond = respond
        self.calls: list[tuple[int, list[str]]] = []

    def generate(self, conversations, *, attempt=0):
        prompts = [
            c[-1]["content"] if isinstance(c[-1]["content"], str) else str(c[-1]["content"]) for c in conversations
        ]
        self.calls.append((attempt, prompts))
        out = []
        for prompt in prompts:
            text = self.respond(prompt, attempt)
            out.append(Generated(text) if text is not None else Generated(None, "scripted failure"))
        return out


class OpenAIStub:
    """An OpenAI-compatible ``/v1/chat/completions`` endpoint on 127.0.0.1 (a thread, no network).

    ``reply(request_json) -> (status, text)`` decides each answer; requests are kept in ``seen``.
    """

    def __init__(self, reply: Callable[[dict], tuple[int, str]]):
        self.reply = reply
        self.seen: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
                status, text = stub.reply(body)
                if status == 200:
                    payload = {
                        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
                        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    }  # fmt: skip
                else:
                    payload = {"error": {"message": text, "type": "server_error"}}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep test output clean
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
