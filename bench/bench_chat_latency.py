"""Chat latency of the embedded default on this machine: time to first token and tokens/s.

Three cases in one run, medians over repeats:

- *media*: a one-line question about a 10 s clip (8 frames + its audio track): decode, preprocess,
  encoder + connectors, LLM prefill, first token;
- *LLM only, same prompt*: the very same token sequence with every media placeholder replaced by a
  plain text token, so the LLM prefills exactly as many tokens but no media work happens;
- *text question*: the question alone, without the clip.

The goal (media path adds <= 50% to the LLM-only time to first token) is judged against the second
case; the third is printed too.

    .venv/bin/python bench/bench_chat_latency.py [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers.generation.streamers import BaseStreamer

from mico_chat.api import ChatModel, GenerationSettings
from mico_chat.media.samples import make_demo_clip

QUESTION = "What happens in this clip?"


class TokenClock(BaseStreamer):
    """Records the time of every generated token (the first ``put`` is the prompt: skipped)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.seen_prompt = False

    def put(self, value) -> None:
        if not self.seen_prompt:
            self.seen_prompt = True
            return
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def timed(chat: ChatModel, messages, settings: GenerationSettings, *, llm_only: bool = False) -> dict[str, float]:
    """Process + encode + generate once; returns stage timings in seconds.

    ``llm_only``: time the same token sequence with placeholders swapped for a text token (the
    media are tokenized once beforehand and not timed).
    """
    clock = TokenClock()
    if llm_only:
        inputs = chat._inputs([messages])
        ids = inputs["input_ids"].clone()
        filler = chat.processor.tokenizer.convert_tokens_to_ids("a")
        for token_id in chat.model.config.media_token_ids.values():
            ids[ids == token_id] = filler
        inputs = {"input_ids": ids, "attention_mask": inputs["attention_mask"], "media": {}}
    start = time.perf_counter()
    if not llm_only:
        inputs = chat._inputs([messages])  # decode media, preprocess, tokenize
    prepared = time.perf_counter()
    with torch.no_grad():
        embeds = chat.model.embed_inputs(inputs["input_ids"], inputs["media"])  # encoder + connectors
    encoded = time.perf_counter()
    kwargs = chat._generate_kwargs(settings)
    chat.model.language_model.generate(
        inputs_embeds=embeds, attention_mask=inputs["attention_mask"], streamer=clock, **kwargs
    )
    first = clock.times[0]
    decode_tokens = len(clock.times) - 1
    return {
        "prepare_s": prepared - start,
        "encode_s": encoded - prepared,
        "ttft_s": first - start,
        "prompt_tokens": float(inputs["input_ids"].shape[1]),
        "tokens_per_s": decode_tokens / (clock.times[-1] - first) if decode_tokens > 0 else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    chat = ChatModel.load("default")
    clip = make_demo_clip(Path(tempfile.mkdtemp()) / "clip10s.mp4", seconds=10.0, size=(320, 240))
    # Fixed length replies, so tokens/s compare like with like.
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens)
    media_messages = [
        {"role": "user", "content": [{"type": "video", "video": str(clip)}, {"type": "text", "text": QUESTION}]}
    ]
    cases = {
        "10 s clip, 8 frames + audio": (media_messages, False),
        "LLM only, same prompt": (media_messages, True),
        "text question only": ([{"role": "user", "content": QUESTION}], False),
    }
    for messages, llm_only in cases.values():  # warm-up: first calls pay for lazy initialisation
        timed(chat, messages, settings, llm_only=llm_only)
    results = {}
    for name, (messages, llm_only) in cases.items():
        runs = [timed(chat, messages, settings, llm_only=llm_only) for _ in range(args.repeats)]
        results[name] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"threads={args.threads} repeats={args.repeats} (medians)")
    print("| case | prompt tokens | prepare ms | encode ms | TTFT ms | tokens/s |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['prompt_tokens']:.0f} | {r['prepare_s'] * 1e3:.0f} | {r['encode_s'] * 1e3:.0f} | "
            f"{r['ttft_s'] * 1e3:.0f} | {r['tokens_per_s']:.1f} |"
        )
    media = results["10 s clip, 8 frames + audio"]
    same, text = results["LLM only, same prompt"], results["text question only"]
    print(f"media path adds {(media['ttft_s'] / same['ttft_s'] - 1) * 100:.0f}% to the LLM-only time to first "
          f"token of the same prompt (goal <= 50%)")
    print(f"media path TTFT is {media['ttft_s'] / text['ttft_s']:.2f}x the text-question-only TTFT")


if __name__ == "__main__":
    main()
