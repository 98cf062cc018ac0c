"""What ``mico-chat serve`` and ``mico-chat api`` share: their flags, loading the engine, running.

Kept free of gradio/FastAPI imports at module level, so ``mico-chat --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from .config import ServeLimits

PUBLIC_HOSTS = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class ServerOptions:
    """Parsed command-line options (see :func:`add_arguments` for their meaning)."""

    model: str
    llm: str | None
    host: str
    port: int
    device: str
    quantization: str | None
    device_map: str | None
    served_model_name: str | None
    api_key: str | None
    allow_media_hosts: tuple[str, ...]
    max_batch_size: int
    max_waiting: int
    max_new_tokens: int
    limits: ServeLimits

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServerOptions:
        """The options, every flag checked before anything loads; a bad one raises one-line :class:`ConfigError`."""
        from mico_chat.errors import ConfigError

        from .config import ApiConfig

        positive = {"--max-batch-size": args.max_batch_size, "--max-body-mb": args.max_body_mb,
                    "--max-media-mb": args.max_media_mb, "--max-media-seconds": args.max_media_seconds,
                    "--max-new-tokens": args.max_new_tokens, "--max-tokens-limit": args.max_tokens_limit,
                    "--max-text-chars": args.max_text_chars}  # fmt: skip
        for flag, value in positive.items():
            if not value > 0 or value != value:  # also NaN
                raise ConfigError(f"{flag} must be positive, got {value}")
        if args.max_waiting < 0:
            raise ConfigError(f"--max-waiting must be 0 or more, got {args.max_waiting}")
        if not 0 <= args.port <= 65535:
            raise ConfigError(f"--port must be 0-65535, got {args.port}")
        if args.max_new_tokens > args.max_tokens_limit:
            raise ConfigError(f"--max-new-tokens {args.max_new_tokens} is over --max-tokens-limit {args.max_tokens_limit}")
        limits = ServeLimits(
            max_body_bytes=int(args.max_body_mb * (1 << 20)),
            max_media_bytes=int(args.max_media_mb * (1 << 20)),
            max_media_duration_s=args.max_media_seconds,
            max_new_tokens=args.max_tokens_limit,
            max_text_chars=args.max_text_chars,
        )
        return cls(
            model=args.model,
            llm=args.llm,
            host=args.host,
            port=args.port,
            device=args.device,
            quantization=args.quantization,
            device_map=args.device_map,
            served_model_name=args.served_model_name,
            api_key=args.api_key or ApiConfig.key_from_env(),
            allow_media_hosts=tuple(args.allow_media_host or ()),
            max_batch_size=args.max_batch_size,
            max_waiting=args.max_waiting,
            max_new_tokens=args.max_new_tokens,
            limits=limits,
        )


def add_arguments(parser: argparse.ArgumentParser, *, default_port: int) -> None:
    """Flags common to ``mico-chat serve`` and ``mico-chat api``."""
    parser.add_argument("--model", default="default", help="preset name or saved model folder (default: default)")
    parser.add_argument("--llm", help="replace the preset's LLM with this known name or local HF folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=default_port, help=f"port (default {default_port}; 0 picks a free one)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument("--quantization", choices=("4bit", "8bit"), help="load the LLM's linear layers with bitsandbytes")
    parser.add_argument("--device-map", help="spread the LLM over devices, e.g. auto (several GPUs)")
    parser.add_argument("--served-model-name", help="model id for API clients (default: the --model value)")
    parser.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1 (or set MICO_CHAT_API_KEY)")
    parser.add_argument(
        "--allow-media-host", action="append", metavar="HOST",
        help="let clients give http(s) media URLs on HOST (repeatable); by default the server fetches nothing",
    )  # fmt: skip
    parser.add_argument("--max-batch-size", type=int, default=8, help="requests decoded together (default 8)")
    parser.add_argument("--max-waiting", type=int, default=64, help="requests allowed to wait; more get 429 (default 64)")
    parser.add_argument("--max-body-mb", type=float, default=64.0, help="largest request body in MiB (default 64)")
    parser.add_argument("--max-media-mb", type=float, default=48.0, help="largest media item in MiB (default 48)")
    parser.add_argument("--max-media-seconds", type=float, default=600.0, help="longest video/audio (default 600)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="reply length when a request gives none (default 256)")
    parser.add_argument("--max-tokens-limit", type=int, default=1024, help="most new tokens a request may ask (default 1024)")
    parser.add_argument("--max-text-chars", type=int, default=ServeLimits.max_text_chars,
                        help=f"most characters of text in one request (default {ServeLimits.max_text_chars:,})")  # fmt: skip


def load_engine(options: ServerOptions):
    """Load the model once and wrap it in a :class:`ChatEngine` with the request limits."""
    from dataclasses import replace

    from mico_chat.api import ChatModel

    from .engine import ChatEngine, EngineConfig

    print(f"loading {options.model} ...", file=sys.stderr, flush=True)
    chat = ChatModel.load(
        options.model, llm=options.llm, device=options.device, quantization=options.quantization, device_map=options.device_map
    )
    chat.defaults = replace(chat.defaults, max_new_tokens=options.max_new_tokens)
    limits = options.limits.media_limits
    media = replace(
        chat.processor.settings,
        max_bytes=limits.max_bytes,
        max_pixels=limits.max_pixels,
        max_duration_s=limits.max_duration_s,
    )
    config = EngineConfig(max_batch_size=options.max_batch_size, max_waiting=options.max_waiting)
    return ChatEngine(chat, config, media_settings=media)


def model_name(options: ServerOptions) -> str:
    return options.served_model_name or options.model


def warn_if_public(options: ServerOptions) -> None:
    if options.host in PUBLIC_HOSTS:
        print(
            f"warning: binding {options.host or 'all interfaces'}: anyone on the network can use this server"
            + ("" if options.api_key else "; consider --api-key"),
            file=sys.stderr,
        )
