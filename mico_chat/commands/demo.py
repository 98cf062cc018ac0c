"""``mico-chat demo``: a chat about a generated clip with the default model, in the terminal.

The clip is the web UI's first example (:mod:`mico_chat.serve.examples`): a clip of a small held-out
synthetic world, generated on first use, so the demo needs no downloaded media and the default
(trained on that world) can be checked against the clip's ground-truth caption, printed too.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default")
    parser.add_argument("--question", help="default: the example's own question (its ground-truth answer is printed)")
    parser.add_argument("--out", type=Path, help="folder for the generated example world (default: the cache)")


def run(args: argparse.Namespace) -> int:
    from mico_chat.api import ChatModel
    from mico_chat.instruct_data.synth import read_world
    from mico_chat.presets import PRESETS, preset_note
    from mico_chat.serve.examples import world_examples
    from mico_chat.weights import mico_home

    world = args.out or (mico_home() / "demo" / "world")
    example = world_examples(world)[0]
    caption = next(e["captions"]["omni"] for e in read_world(world) if (world / e["media"]["video"]) == example.path)
    question = args.question or example.question
    print(f"clip: {example.path}\nthe clip (ground truth): {caption}")
    if not args.question:
        print(f"expected answer: {example.answer}")
    if args.model in PRESETS and preset_note(args.model):
        print(f"note: {preset_note(args.model)}")
    chat = ChatModel.load(args.model)
    print(f"you> {question}")
    print("assistant> ", end="", flush=True)
    content = [{"type": "video", "video": str(example.path)}, {"type": "text", "text": question}]
    messages = [{"role": "user", "content": content}]
    for piece in chat.stream(messages):
        print(piece, end="", flush=True)
    print()
    return 0
