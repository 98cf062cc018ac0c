"""``mico-chat train CONFIG.yaml [key=value ...]``: run one training stage."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a training YAML, e.g. configs/default/stage1_align.yaml")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides, e.g. data.train=caps.jsonl train.max_steps=100",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")


def run(args: argparse.Namespace) -> int:
    import logging

    from mico_chat.training import load_config

    config = load_config(args.config, args.overrides)
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    from mico_chat.training import TrainingError, TrainRecipe

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        summary = TrainRecipe(config, progress=not args.no_progress).run()
    except TrainingError as err:
        print(f"mico-chat train: error: {err}", file=sys.stderr)
        return 2
    keys = ("status", "steps", "tokens_seen", "tokens_per_second", "last_loss", "export")
    print(json.dumps({k: summary.get(k) for k in keys}, indent=2, default=str))
    return 0
