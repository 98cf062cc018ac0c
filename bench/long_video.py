"""Long video on CPU: a chat turn's time, peak memory and LLM tokens at 8, 32, 128 and 512 frames.

The model is the tests' tiny long-video model (``tests/helpers/tiny.py``: ``LONG_VIDEO_ENCODER``,
a 2-layer 32-wide ViT at 32x32 pixels encoding 16 frames at a time with chunk-local context
embeddings; ``LONG_VIDEO_CONNECTORS``, a resampler emitting 8 tokens per video; a 2-layer tiny
LLaMA), so the figures show how the long-video path scales, not what a real model costs.

A chat turn is: decode ``F`` frames of a generated 320x240 H.264 clip (512 distinct frames, 20.48 s
at 25 fps) and preprocess them, tokenize (:class:`MiCoChatProcessor`); encoder + connector and the
merge into the prompt (``embed_inputs``); greedy generation of ``--max-new-tokens`` tokens. Each
frame count runs in a fresh process (so one count's freed memory cannot hide another's peak): it
builds the model, warms up with one 1-frame turn, then reads its resident memory, resets the
kernel's high-water mark (``/proc/self/clear_refs``), runs ``--repeats`` turns and reads the mark
again. **Peak memory** is that high-water mark minus the resident memory before the turns: the
process's RSS, which counts torch's tensors and the decoder's buffers alike (tracemalloc would
see neither); the process's whole high-water mark (model and warm-up included) is printed too.
Times are medians over the repeats.

Figures are printed as ratios against the first frame count (8), measured in the same run.
``--unchunked`` adds rows for the same encoder without chunking (``frame_chunk_size=None``,
interpolated context embeddings): every frame's tokens attend to every other's.

    PYTHONPATH=tests .venv/bin/python bench/long_video.py                 # 8 32 128 512, 3 repeats
    PYTHONPATH=tests .venv/bin/python bench/long_video.py --frames 8 32 --repeats 1   # a quick check
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

CLIP_SECONDS = 20.48  # 512 frames at 25 fps: every frame count up to 512 samples distinct frames
CLIP_FPS = 25
CLIP_SIZE = (320, 240)
QUESTION = "What happens in this clip?"


def rss_bytes(field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (its high-water mark) of this process, from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak_rss() -> None:
    """Set the high-water mark to the current resident memory (Linux >= 4.0, one's own process)."""
    Path("/proc/self/clear_refs").write_text("5")


def build_chat(frames: int, unchunked: bool):
    """The tiny long-video ChatModel sampling ``frames`` frames per video (audio track off)."""
    from helpers.tiny import LONG_VIDEO_CONNECTORS, LONG_VIDEO_ENCODER, tiny_model  # PYTHONPATH=tests

    from mico_chat.api import ChatModel, GenerationSettings

    encoder = dict(LONG_VIDEO_ENCODER)
    if unchunked:
        encoder.update(frame_chunk_size=None, context_index="interpolate")
    model, processor = tiny_model(encoder=encoder, connectors=LONG_VIDEO_CONNECTORS, num_frames=frames, video_audio=False)
    return ChatModel(model, processor, name="tiny-long-video", defaults=GenerationSettings())


def turn(chat, messages, max_new_tokens: int) -> dict[str, float]:
    """One chat turn, timed by phase (seconds), with its prompt and media token counts."""
    from mico_chat.api import GenerationSettings

    start = time.perf_counter()
    inputs = chat._inputs([messages])  # decode, preprocess, tokenize
    prepared = time.perf_counter()
    with torch.no_grad():
        embeds = chat.model.embed_inputs(inputs["input_ids"], inputs["media"])  # encoder + connector
    encoded = time.perf_counter()
    kwargs = chat._generate_kwargs(GenerationSettings(max_new_tokens=max_new_tokens))
    kwargs.update(eos_token_id=None, stop_strings=None, min_new_tokens=max_new_tokens)  # fixed length
    kwargs.pop("tokenizer", None)
    chat.model.language_model.generate(inputs_embeds=embeds, attention_mask=inputs["attention_mask"], **kwargs)
    done = time.perf_counter()
    video_id = chat.model.config.media_token_ids["video"]
    return {
        "prepare_s": prepared - start,
        "encode_s": encoded - prepared,
        "generate_s": done - encoded,
        "turn_s": done - start,
        "prompt_tokens": inputs["input_ids"].shape[1],
        "media_tokens": int((inputs["input_ids"] == video_id).sum()),
        "frames_encoded": inputs["media"]["video"].shape[1],
    }


def child(args: argparse.Namespace) -> None:
    """Measure one frame count in this process; print one JSON line."""
    torch.set_num_threads(args.threads)
    chat = build_chat(args.child, args.unchunked)
    messages = [{"role": "user", "content": [{"type": "video", "video": args.clip}, {"type": "text", "text": QUESTION}]}]
    settings = chat.processor.settings
    chat.processor.settings = type(settings)(**{**settings.to_dict(), "num_frames": 1})
    turn(chat, messages, args.max_new_tokens)  # warm-up on 1 frame: lazy initialisation of every stage
    chat.processor.settings = settings
    before = rss_bytes("VmRSS")
    reset_peak_rss()
    runs = [turn(chat, messages, args.max_new_tokens) for _ in range(args.repeats)]
    peak = rss_bytes("VmHWM")
    result = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    result.update(frames=args.child, unchunked=args.unchunked, rss_before_mib=before / 2**20,
                  peak_mib=peak / 2**20, peak_above_mib=(peak - before) / 2**20)  # fmt: skip
    print(json.dumps(result))


def measure(frames: int, unchunked: bool, clip: Path, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", str(frames), "--clip", str(clip), "--repeats", str(args.repeats),
               "--threads", str(args.threads), "--max-new-tokens", str(args.max_new_tokens)]  # fmt: skip
    if unchunked:
        command.append("--unchunked")
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{frames} frames{' (unchunked)' if unchunked else ''} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 32, 128, 512], help="the first is the baseline")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--unchunked", action="store_true", help="also measure the encoder without chunking")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--clip", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args)
        return

    from mico_chat.media.samples import make_demo_clip

    clip = make_demo_clip(Path(tempfile.mkdtemp()) / "long.mp4", seconds=CLIP_SECONDS, fps=CLIP_FPS, size=CLIP_SIZE)
    variants = [False, True] if args.unchunked else [False]
    rows = [measure(frames, unchunked, clip, args) for unchunked in variants for frames in args.frames]
    base = rows[0]
    print(f"threads={args.threads} repeats={args.repeats} (medians) new tokens={args.max_new_tokens}; "
          f"peak = RSS high-water mark above RSS before the turns; ratios vs {base['frames']} frames chunked")  # fmt: skip
    print("| frames | encoder | LLM prompt tokens | media tokens | prepare ms | encode ms | generate ms | turn ms | "
          "turn x | peak MiB | peak x | process peak MiB | tokens x |")  # fmt: skip
    print("|" + "---|" * 13)
    for r in rows:
        print(
            f"| {r['frames']} | {'unchunked' if r['unchunked'] else 'chunked'} | {r['prompt_tokens']} | {r['media_tokens']} | "
            f"{r['prepare_s'] * 1e3:.0f} | {r['encode_s'] * 1e3:.0f} | {r['generate_s'] * 1e3:.0f} | {r['turn_s'] * 1e3:.0f} | "
            f"{r['turn_s'] / base['turn_s']:.2f} | {r['peak_above_mib']:.1f} | "
            f"{r['peak_above_mib'] / max(base['peak_above_mib'], 1e-3):.2f} | {r['peak_mib']:.0f} | "
            f"{r['prompt_tokens'] / base['prompt_tokens']:.2f} |"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
