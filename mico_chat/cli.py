"""``mico-chat``: the command-line entry point.

Each subcommand lives in its own module with ``add_arguments(parser)`` and ``run(args) -> int``;
only the chosen one is imported, so ``mico-chat fetch`` does not pay for gradio or lm-eval.
Errors the user can fix (bad media, missing weights, malformed configs) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "fetch": ("mico_chat.commands.fetch", "download and convert the default weights (no hub needed)"),
    "chat": ("mico_chat.commands.chat", "chat with a model about video, audio, images, depth maps"),
    "demo": ("mico_chat.commands.demo", "the main job: a chat about a generated clip with the default model"),
    "data": ("mico_chat.commands.data", "validate, convert, generate (synthetic world) and caption training data"),
    "train": ("mico_chat.commands.train", "train a stage (alignment, instruction tuning, LoRA/QLoRA, new modality) from a YAML"),
    "eval": ("mico_chat.eval.cli", "zero-shot benchmarks (MME, MMBench, Video-ChatGPT, video QA, Clotho, retrieval), re-scoring, lm-eval"),
    "serve": ("mico_chat.commands.serve", "web UI for chatting about video and audio (with the OpenAI-compatible API)"),
    "api": ("mico_chat.commands.api", "OpenAI-compatible HTTP API: /v1/chat/completions, /v1/models, /health"),
    "pipeline": ("mico_chat.commands.pipeline", "train, evaluate and export a model end to end, resumably (configs/default/pipeline.yaml)"),
    "pretrain": ("mico_chat.commands.pretrain", "MiCo pretraining of the omni-modal encoder (YAML config + key=value overrides)"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mico-chat", description="MiCo-Chat: omni-modal chat assistants.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module).add_arguments(sp)
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that describe a problem with the user's input, not a bug."""
    from mico_chat.errors import ConfigError
    from mico_chat.media import MediaError
    from mico_chat.modeling import MediaTokenMismatchError
    from mico_chat.processing import ProcessorError
    from mico_chat.templates import TemplateError
    from mico_chat.weights import WeightsError

    return (ConfigError, MediaError, MediaTokenMismatchError, ProcessorError, TemplateError, WeightsError, FileNotFoundError)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except user_errors() as err:
        print(f"mico-chat {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
