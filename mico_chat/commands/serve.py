"""``mico-chat serve``: the web UI for chatting about video and audio, with the HTTP API beside it.

    mico-chat serve                      # http://127.0.0.1:7860 (UI) and .../v1 (OpenAI-compatible API)
    mico-chat serve --model ./my-model --port 8080 --no-api

The server binds 127.0.0.1 unless ``--host`` says otherwise and never opens a public share link
unless ``--share`` is given (then gradio's own launcher runs the UI alone, without the API).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mico_chat.serve.launch import add_arguments as add_server_arguments

    add_server_arguments(parser, default_port=7860)
    parser.add_argument("--no-api", action="store_true", help="serve the web UI only, without /v1")
    parser.add_argument("--share", action="store_true", help="ask gradio for a public share link (off by default)")


def run(args: argparse.Namespace) -> int:
    from fastapi import FastAPI

    from mico_chat.presets import PRESETS, preset_note
    from mico_chat.serve.config import ApiConfig
    from mico_chat.serve.examples import example_clips
    from mico_chat.serve.launch import ServerOptions, load_engine, model_name, warn_if_public
    from mico_chat.serve.openai_api import build_api
    from mico_chat.serve.server import serve_until_interrupted
    from mico_chat.serve.web_ui import UiConfig, build_ui, mount

    options = ServerOptions.from_args(args)
    warn_if_public(options)
    note = preset_note(options.model) if options.model in PRESETS else ""
    engine = load_engine(options)
    ui_config = UiConfig(
        title="MiCo-Chat", note=note, examples=example_clips(), limits=options.limits, max_new_tokens=options.max_new_tokens
    )
    demo = build_ui(engine, ui_config)
    if args.share:
        print("note: --share runs gradio's launcher: the web UI only, no /v1 API", flush=True)
        try:
            demo.launch(server_name=options.host, server_port=options.port, share=True, max_file_size=options.limits.max_media_bytes)
        finally:
            engine.close()
        return 0
    app = FastAPI(title="MiCo-Chat", docs_url=None, redoc_url=None)
    api_line = ""
    if not args.no_api:
        config = ApiConfig(
            model_name=model_name(options),
            api_key=options.api_key,
            allowed_media_hosts=options.allow_media_hosts,
            limits=options.limits,
        )
        build_api(engine, config, app)
        api_line = f"; OpenAI-compatible API at {{url}}/v1 (model {config.model_name!r})"
    mount(app, demo, ui_config, host=options.host, port=options.port)
    return serve_until_interrupted(
        app,
        options.host,
        options.port,
        banner=lambda url: f"MiCo-Chat web UI: {url}{api_line.format(url=url)}  (Ctrl-C to stop)",
        on_stop=engine.close,
    )
