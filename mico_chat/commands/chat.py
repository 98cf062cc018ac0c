"""``mico-chat chat``: one-shot (``--prompt``) or interactive chat, streamed to the terminal."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import Any

MEDIA_FLAGS = ("video", "audio", "image", "depth", "normal")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", help="preset name or saved model folder (default: default)")
    parser.add_argument("--llm", help="replace the preset's LLM with this known name or local HF folder")
    for flag in MEDIA_FLAGS:
        parser.add_argument(f"--{flag}", metavar="FILE", help=f"attach a {flag} file to the first message")
    parser.add_argument("--prompt", help="ask this and exit (without it: an interactive chat)")
    parser.add_argument("--system", help="system message")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--frames", type=int, help="frames sampled per video (default: the model's)")
    parser.add_argument("--no-video-audio", action="store_true", help="ignore the audio track of videos")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-stream", action="store_true", help="print the answer at once instead of streaming")


def first_content(args: argparse.Namespace, text: str) -> list[dict[str, Any]] | str:
    parts: list[dict[str, Any]] = [
        {"type": flag, flag: getattr(args, flag)} for flag in MEDIA_FLAGS if getattr(args, flag)
    ]
    return parts + [{"type": "text", "text": text}] if parts else text


def run(args: argparse.Namespace) -> int:
    from mico_chat.api import ChatModel, GenerationSettings

    chat = ChatModel.load(args.model, llm=args.llm, device=args.device)
    if args.frames or args.no_video_audio:
        settings = chat.processor.settings
        chat.processor.settings = replace(
            settings,
            num_frames=args.frames or settings.num_frames,
            video_audio=settings.video_audio and not args.no_video_audio,
        )
    gen = GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    messages: list[dict[str, Any]] = [{"role": "system", "content": args.system}] if args.system else []

    def answer() -> str:
        if args.no_stream:
            text = chat.chat(messages, gen)
            print(text, flush=True)
            return text
        pieces = []
        for piece in chat.stream(messages, gen):
            pieces.append(piece)
            print(piece, end="", flush=True)
        print(flush=True)
        return "".join(pieces)

    if args.prompt is not None:
        messages.append({"role": "user", "content": first_content(args, args.prompt)})
        answer()
        return 0
    print("Interactive chat; an empty line or Ctrl-D quits.", file=sys.stderr)
    first = True
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            return 0
        if not line:
            return 0
        messages.append({"role": "user", "content": first_content(args, line) if first else line})
        first = False
        print("assistant> ", end="", flush=True)
        messages.append({"role": "assistant", "content": answer()})
