"""``mico-chat chat``: one-shot (``--prompt``) or interactive chat, streamed to the terminal.

In the interactive chat, slash commands attach media to the next message, mid-conversation:

    you> /video clip.mp4
    attached video clip.mp4 (4.0 s, 160x120, with audio): it goes with your next message
    you> What happens here?
    assistant> ...
    you> /audio street.wav
    you> And what do you hear now?
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import replace
from typing import Any, TextIO

MEDIA_FLAGS = ("video", "audio", "image", "depth", "normal")
HELP = """commands:
  /video PATH   /audio PATH   /image PATH   /depth PATH   /normal PATH
                attach a file to your next message (several may be attached)
  /reset        start a new conversation (drops attachments not yet sent)
  /help         this help
  /quit         leave (Ctrl-D too)
anything else is sent as your message, with the attachments waiting for it"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", help="preset name or saved model folder (default: default)")
    parser.add_argument("--llm", help="replace the preset's LLM with this known name or local HF folder")
    for flag in MEDIA_FLAGS:
        parser.add_argument(f"--{flag}", metavar="FILE", help=f"attach a {flag} file to the first message")
    parser.add_argument("--prompt", help="ask this and exit (without it: an interactive chat; /help lists commands)")
    parser.add_argument("--system", help="system message")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--frames", type=int, help="frames sampled per video (default: the model's)")
    parser.add_argument("--no-video-audio", action="store_true", help="ignore the audio track of videos")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quantization", choices=("4bit", "8bit"), help="load the LLM's linear layers with bitsandbytes")
    parser.add_argument("--no-stream", action="store_true", help="print the answer at once instead of streaming")


class ChatSession:
    """An interactive conversation: lines are messages or slash commands (see :data:`HELP`).

    Args:
        chat: the loaded :class:`~mico_chat.api.ChatModel`.
        settings: generation settings for every answer.
        system: optional system message, kept across ``/reset``.
        stream: print answers piece by piece (else at once).
        out: where answers and notices go (default: stdout).
    """

    def __init__(self, chat, settings, *, system: str | None = None, stream: bool = True, out: TextIO | None = None):
        self.chat = chat
        self.settings = settings
        self.system = system
        self.stream = stream
        self.out = out or sys.stdout
        self.messages: list[dict[str, Any]] = []
        self.pending: list[dict[str, Any]] = []
        self.reset()

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system}] if self.system else []
        self.pending = []

    def attach(self, kind: str, path: str) -> None:
        """Queue a media part for the next message, after checking the file's header (MediaError if bad)."""
        from mico_chat.media import probe
        from mico_chat.modality import Modality
        from mico_chat.preprocess import preprocess

        limits = self.chat.processor.settings.limits
        if kind in ("video", "audio"):
            info = probe(path, limits=limits)
            if kind == "video" and not info.has_video:
                raise _Refused(f"{path}: holds no video stream; attach it with /audio")
            if kind == "audio" and not info.has_audio:
                raise _Refused(f"{path}: holds no audio track")
            facts = [f"{info.duration_s:.1f} s"] if info.duration_s else []
            if info.width:
                facts.append(f"{info.width}x{info.height}")
            if kind == "video":
                facts.append("with audio" if info.has_audio else "no audio track")
            detail = f" ({', '.join(facts)})"
        else:  # images and maps are small: decode once to check them
            preprocess(Modality.parse(kind), path, self.chat.processor.settings, self.chat.model.config.encoder_config)
            detail = ""
        self.pending.append({"type": kind, kind: path})
        self.say(f"attached {kind} {path}{detail}: it goes with your next message")

    def handle(self, line: str) -> bool:
        """Act on one input line; returns False when the user asked to quit."""
        from mico_chat.cli import user_errors

        line = line.strip()
        if not line:
            return True
        if line.startswith("/"):
            command, _, rest = line.partition(" ")
            name = command[1:].lower()
            if name in ("quit", "exit", "q"):
                return False
            if name == "help":
                self.say(HELP)
            elif name == "reset":
                self.reset()
                self.say("new conversation")
            elif name in MEDIA_FLAGS:
                path = _one_path(rest)
                if path is None:
                    self.say(f"usage: /{name} PATH")
                    return True
                try:
                    self.attach(name, path)
                except (*user_errors(), _Refused, ValueError) as err:
                    self.say(f"error: {err} (nothing attached; the conversation goes on)")
            else:
                self.say(f"unknown command {command}; /help lists them")
            return True
        self.ask(line)
        return True

    def ask(self, text: str) -> str | None:
        """Send ``text`` with the pending attachments; print and return the answer (None on error)."""
        from mico_chat.cli import user_errors

        content: list[dict[str, Any]] | str = [*self.pending, {"type": "text", "text": text}] if self.pending else text
        self.messages.append({"role": "user", "content": content})
        self.out.write("assistant> ")
        self.out.flush()
        pieces: list[str] = []
        try:
            if self.stream:
                for piece in self.chat.stream(self.messages, self.settings):
                    pieces.append(piece)
                    self.out.write(piece)
                    self.out.flush()
            else:
                pieces.append(self.chat.chat(self.messages, self.settings))
                self.out.write(pieces[0])
            self.out.write("\n")
        except user_errors() as err:
            self.messages.pop()  # the conversation stays as it was; the attachments wait for a retry
            self.say(f"\nerror: {err} (your message was not sent; /reset drops the attachments)")
            return None
        answer = "".join(pieces)
        self.messages.append({"role": "assistant", "content": answer})
        self.pending = []
        return answer

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


class _Refused(ValueError):
    """An attachment of the wrong kind (a video without a picture, an audio without sound)."""


def _one_path(rest: str) -> str | None:
    rest = rest.strip()
    if not rest:
        return None
    try:
        parts = shlex.split(rest)
    except ValueError:
        return rest
    return parts[0] if len(parts) == 1 else rest  # an unquoted path with spaces is taken whole


def run(args: argparse.Namespace) -> int:
    from mico_chat.api import ChatModel, GenerationSettings

    chat = ChatModel.load(args.model, llm=args.llm, device=args.device, quantization=args.quantization)
    if args.frames or args.no_video_audio:
        settings = chat.processor.settings
        chat.processor.settings = replace(
            settings,
            num_frames=args.frames or settings.num_frames,
            video_audio=settings.video_audio and not args.no_video_audio,
        )
    gen = GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    session = ChatSession(chat, gen, system=args.system, stream=not args.no_stream)
    for flag in MEDIA_FLAGS:
        if getattr(args, flag):
            session.pending.append({"type": flag, flag: getattr(args, flag)})

    if args.prompt is not None:
        return 0 if session.ask(args.prompt) is not None else 2
    print("Interactive chat; /help lists commands (/video PATH attaches a clip), /quit or Ctrl-D leaves.", file=sys.stderr)
    while True:
        try:
            line = input("you> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        if not session.handle(line):
            return 0
