"""``mico-chat eval <benchmark>``: evaluation programs, one module each in :data:`EVAL_COMMANDS`.

Like the top-level CLI, only the chosen program is imported.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module with add_arguments/run, one-line help)
EVAL_COMMANDS: dict[str, tuple[str, str]] = {
    "retrieval": ("mico_chat.eval.retrieval.cli", "text <-> video/audio/image retrieval (R@1/5/10, median/mean rank)"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="eval_command", metavar="BENCHMARK")
    for name, (module, help_text) in EVAL_COMMANDS.items():
        importlib.import_module(module).add_arguments(sub.add_parser(name, help=help_text, description=help_text))


def run(args: argparse.Namespace) -> int:
    if args.eval_command is None:
        print(f"mico-chat eval: choose a benchmark: {', '.join(EVAL_COMMANDS)}", file=sys.stderr)
        return 2
    return int(importlib.import_module(EVAL_COMMANDS[args.eval_command][0]).run(args) or 0)
