"""The OpenAI-compatible HTTP API (FastAPI) over a :class:`~mico_chat.serve.engine.ChatEngine`.

Routes: ``POST /v1/chat/completions`` (JSON or, with ``stream: true``, server-sent events),
``GET /v1/models``, ``GET /v1/models/{id}``, ``GET /health``. Content parts: see
:mod:`mico_chat.serve.content`. Errors use OpenAI's shape
``{"error": {"message", "type", "param", "code"}}`` with these statuses:

====  =======================================================================================
400   malformed request, corrupt or unreadable media, a remote or local media URL refused,
      unsupported parameters, a prompt longer than the model's context, too many tokens asked
401   an API key is set and the request lacks it or has another one
404   unknown model id
413   request body, or one media item's size, duration or pixel count, over the limits
429   the request queue is full (retry later)
503   the server is shutting down
====  =======================================================================================

Extensions beyond OpenAI's fields, in the request body (``extra_body`` in the Python client):
``mm_processor_kwargs: {"num_frames": int, "use_audio_in_video": bool}`` (vLLM's name for
per-request media options; ``use_audio_in_video`` is Qwen-Omni's name for reading a video's audio
track).
"""

from __future__ import annotations

import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mico_chat.api import GenerationSettings
from mico_chat.media import MediaError, MediaTooLargeError
from mico_chat.processing import ProcessorError

from .config import ApiConfig
from .content import RequestError, to_chat_messages
from .engine import ChatEngine, EngineClosedError, QueueFullError

# Request fields whose OpenAI meaning this server cannot honour: refused rather than ignored.
UNSUPPORTED = {
    "tools": "tool calling",
    "functions": "function calling",
    "logprobs": "log-probabilities",
    "top_logprobs": "log-probabilities",
    "logit_bias": "logit_bias",
    "audio": "audio output",
    "prediction": "predicted outputs",
}


SEED_RANGE = (-(2**63), 2**63 - 1)
"""``seed`` is a 64-bit signed integer, as in OpenAI's API."""


class ChatCompletionRequest(BaseModel):
    """The fields of OpenAI's chat-completions request this server reads (others are ignored).

    Strict types, as OpenAI's API checks them: ``stream: "yes"``, ``max_tokens: true`` or
    ``temperature: "0.5"`` are 400s, not coerced (an integer is still a valid number).
    """

    model_config = ConfigDict(extra="allow", strict=True)

    model: str
    messages: list[Any]
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = Field(default=None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    n: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    response_format: dict[str, Any] | None = None
    mm_processor_kwargs: dict[str, Any] | None = None


def build_api(engine: ChatEngine, config: ApiConfig, app: FastAPI | None = None) -> FastAPI:
    """Add the API routes to ``app`` (a new FastAPI app by default) and return it."""
    app = app or FastAPI(title="MiCo-Chat API", docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, max_bytes=config.limits.max_body_bytes)
    created = int(time.time())

    @app.exception_handler(RequestError)
    async def request_error(_: Request, err: RequestError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
        return JSONResponse(err.body(), status_code=err.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        return JSONResponse(RequestError(400, f"{param or 'body'}: {first['msg']}", param).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(err.status_code)
        return JSONResponse(RequestError(err.status_code, str(err.detail), None, code).body(), status_code=err.status_code)

    def authorize(request: Request) -> None:
        if config.api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), config.api_key.encode()):
            what = "no API key given" if not given else "the API key is wrong"
            raise RequestError(401, f"{what}; send 'Authorization: Bearer <key>'", None, "invalid_api_key")

    def model_card() -> dict[str, Any]:
        return {"id": config.model_name, "object": "model", "created": created, "owned_by": "mico-chat"}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": config.model_name, **engine.stats()}

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        authorize(request)
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str, request: Request) -> dict[str, Any]:
        authorize(request)
        check_model(model_id, config)
        return model_card()

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        authorize(request)
        check_model(body.model, config)
        settings, media_options = generation_settings(body, engine, config)
        messages = await run_in_threadpool(to_chat_messages, body.messages, config)
        try:
            reply = await engine.submit(messages, settings, **media_options)
        except QueueFullError as err:
            raise RequestError(429, str(err), None, "rate_limit_exceeded", "rate_limit_error") from None
        except EngineClosedError as err:
            raise RequestError(503, str(err), None, "service_unavailable", "server_error") from None
        except MediaTooLargeError as err:
            raise RequestError(413, f"media too large: {err}", "messages", "request_too_large") from None
        except MediaError as err:
            raise RequestError(400, f"bad media: {err}", "messages", "invalid_media") from None
        except (ProcessorError, ValueError) as err:
            raise RequestError(400, str(err), "messages") from None
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            return StreamingResponse(
                sse_chunks(reply, completion_id, config.model_name, include_usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        try:
            result = await reply.text()
        except Exception as err:
            raise RequestError(500, f"generation failed: {err}", None, "generation_failed", "server_error") from None
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": config.model_name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": result.text},
                    "finish_reason": result.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": usage(result.prompt_tokens, result.completion_tokens),
        }

    return app


def check_model(model: str, config: ApiConfig) -> None:
    if model != config.model_name:
        raise RequestError(404, f"the model {model!r} does not exist; this server serves {config.model_name!r}", "model", "model_not_found")


def generation_settings(
    body: ChatCompletionRequest, engine: ChatEngine, config: ApiConfig
) -> tuple[GenerationSettings, dict[str, Any]]:
    """Request fields -> generation settings and per-request media options (400 for what cannot be honoured)."""
    extra = body.model_extra or {}
    for name, what in UNSUPPORTED.items():
        if extra.get(name) not in (None, False, [], {}):
            raise RequestError(400, f"{name}: {what} is not supported by this server", name, "unsupported_parameter")
    if (body.n or 1) != 1:
        raise RequestError(400, "n: this server returns one choice per request", "n", "unsupported_parameter")
    if body.stop:
        raise RequestError(400, "stop: custom stop sequences are not supported; the chat template's are used", "stop", "unsupported_parameter")
    for name in ("frequency_penalty", "presence_penalty"):
        if getattr(body, name):
            raise RequestError(400, f"{name} is not supported", name, "unsupported_parameter")
    if body.response_format and body.response_format.get("type", "text") != "text":
        raise RequestError(400, "response_format: only text is supported", "response_format", "unsupported_parameter")
    defaults = engine.chat.defaults
    max_tokens = body.max_completion_tokens or body.max_tokens or defaults.max_new_tokens
    if max_tokens > config.limits.max_new_tokens:
        raise RequestError(
            400, f"max_tokens is {max_tokens}; this server generates at most {config.limits.max_new_tokens}", "max_tokens"
        )
    settings = GenerationSettings(
        max_new_tokens=max_tokens,
        temperature=defaults.temperature if body.temperature is None else body.temperature,
        top_p=defaults.top_p if body.top_p is None else body.top_p,
        top_k=defaults.top_k,
        repetition_penalty=defaults.repetition_penalty,
        seed=body.seed,
    )
    media: dict[str, Any] = {}
    options = dict(body.mm_processor_kwargs or {})
    if "num_frames" in options:
        frames = options.pop("num_frames")
        if not isinstance(frames, int) or not 1 <= frames <= engine.chat.model.config.encoder_config.segment_limit:
            limit = engine.chat.model.config.encoder_config.segment_limit
            raise RequestError(400, f"mm_processor_kwargs.num_frames must be an integer in 1..{limit}", "mm_processor_kwargs.num_frames")
        media["num_frames"] = frames
    if "use_audio_in_video" in options:
        media["video_audio"] = bool(options.pop("use_audio_in_video"))
    if options:
        raise RequestError(400, f"mm_processor_kwargs: unknown options {sorted(options)}", "mm_processor_kwargs")
    return settings, media


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}


async def sse_chunks(reply, completion_id: str, model: str, include_usage: bool) -> AsyncIterator[str]:
    """The reply as OpenAI ``chat.completion.chunk`` server-sent events, ending with ``[DONE]``."""
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> str:
        payload = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
            **extra,
        }
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    try:
        async for event in reply:
            if event.text:
                yield chunk({"content": event.text})
            if event.result is not None:
                yield chunk({}, event.result.finish_reason)
                if include_usage:
                    payload = {
                        "id": completion_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "choices": [],
                        "usage": usage(event.result.prompt_tokens, event.result.completion_tokens),
                    }
                    yield f"data: {json.dumps(payload)}\n\n"
    except Exception as err:  # headers are sent: report in the stream, as OpenAI and vLLM do
        error = RequestError(500, f"generation failed: {err}", None, "generation_failed", "server_error")
        yield f"data: {json.dumps(error.body())}\n\n"
    yield "data: [DONE]\n\n"


class BodyLimit:
    """ASGI middleware: answer 413 to request bodies over ``max_bytes`` (declared or streamed)."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        seen = 0
        response_started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracking_send)
        except _BodyTooLarge:
            if not response_started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        error = RequestError(413, f"the request body is over the limit of {self.max_bytes:,} bytes", None, "request_too_large")
        body = json.dumps(error.body()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(HTTPException):
    """Raised inside the app's receive when a streamed body passes the limit.

    A FastAPI ``HTTPException`` because FastAPI turns any other error while reading a body into 400.
    """

    def __init__(self, max_bytes: int):
        super().__init__(413, f"the request body is over the limit of {max_bytes:,} bytes")
