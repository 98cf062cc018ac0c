"""``mico-chat api``: the OpenAI-compatible HTTP API (``/v1/chat/completions``, ``/v1/models``, ``/health``).

    mico-chat api --model default --port 8000
    curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
         -d '{"model": "default", "messages": [{"role": "user", "content": "Hi!"}]}'
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mico_chat.serve.launch import add_arguments as add_server_arguments

    add_server_arguments(parser, default_port=8000)


def run(args: argparse.Namespace) -> int:
    from mico_chat.serve.config import ApiConfig
    from mico_chat.serve.launch import ServerOptions, load_engine, model_name, warn_if_public
    from mico_chat.serve.openai_api import build_api
    from mico_chat.serve.server import serve_until_interrupted

    options = ServerOptions.from_args(args)
    warn_if_public(options)
    engine = load_engine(options)
    config = ApiConfig(
        model_name=model_name(options),
        api_key=options.api_key,
        allowed_media_hosts=options.allow_media_hosts,
        limits=options.limits,
    )
    app = build_api(engine, config)
    return serve_until_interrupted(
        app,
        options.host,
        options.port,
        banner=lambda url: f"MiCo-Chat API: {url}/v1  (model {config.model_name!r}; Ctrl-C to stop)",
        on_stop=engine.close,
    )
