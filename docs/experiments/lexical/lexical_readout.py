"""Which words do a chat model's video tokens sit next to? A readout of lexical alignment.

For each clip of a synthetic world, the video goes through the model's encoder and connector
(no LLM). For every factor of the scene (shape, colour, direction, count, size, background) the
readout picks the word of that factor's vocabulary with the highest cosine to any media token,
against the LLM's input embeddings, and scores it against the scene. Chance is one over the
vocabulary size (shape 25%, colour 17%, direction 20%, count 25%, size 50%, background 33%).

It measures what stage 1 (``stage1_lexical``) is for: media tokens the frozen LLM can read as
words. docs/default_model.md ("Stage 1 was a tenth of what it needed") has the figures.

    python docs/experiments/lexical/lexical_readout.py runs/default-model-13/stage1/model \
        runs/default-model-13/data/heldout --clips 100 --out readout.json
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from mico_chat.api import ChatModel

# Each factor's values as the captions word them (the scene's value -> the caption's word).
VOCABULARY = {
    "shape": {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"},
    "colour": {c: c for c in ("red", "green", "blue", "yellow", "purple", "orange")},
    "motion": {"left": "left", "right": "right", "up": "upward", "down": "downward", "still": "still"},
    "count": {1: "one", 2: "two", 3: "three", 4: "four"},
    "size": {"small": "small", "large": "large"},
    "background": {"white": "white", "black": "black", "gray": "gray"},
}


def word_ids(tokenizer, value, word) -> list[int]:
    """First token of the word as a caption spells it (" crosses") and of the value (" cross")."""
    spellings = {word, value} if isinstance(value, str) else {word}
    return [tokenizer.encode(" " + s, add_special_tokens=False)[0] for s in spellings]


def readout(model_dir: str, world: Path, clips: int) -> dict:
    chat = ChatModel.load(model_dir)
    tokenizer = chat.processor.tokenizer
    embeddings = F.normalize(chat.model.get_input_embeddings().weight.detach().float(), dim=-1)
    ids = {f: {v: word_ids(tokenizer, v, w) for v, w in vocab.items()} for f, vocab in VOCABULARY.items()}
    rows = [json.loads(line) for line in (world / "world.jsonl").read_text().splitlines()][:clips]
    hits, totals = collections.Counter(), collections.Counter()
    confusion: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for row in rows:
        scene = row["scene"]
        content = [{"type": "video", "video": str(world / row["media"]["video"])}, {"type": "text", "text": "."}]
        batch = chat._inputs([[{"role": "user", "content": content}]])
        with torch.no_grad():
            tokens = chat.model.encode_media({"video": batch["media"]["video"]})["video"][0]
        nearest = (F.normalize(tokens.float(), dim=-1) @ embeddings.T).max(dim=0).values  # per word: best token
        for factor, options in ids.items():
            truth = scene.get(factor)
            if truth not in options:
                continue
            guess = max(options, key=lambda v: nearest[options[v]].max().item())
            totals[factor] += 1
            hits[factor] += guess == truth
            confusion[factor][f"{truth}->{guess}"] += 1
    return {
        "model": model_dir,
        "world": str(world),
        "clips": len(rows),
        "accuracy": {f: round(hits[f] / totals[f], 3) for f in totals},
        "confusion": {f: dict(c.most_common()) for f, c in confusion.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a MiCo-Chat model folder (e.g. a stage-1 export)")
    parser.add_argument("world", type=Path, help="a synthetic world folder (mico-chat data synth)")
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the result here as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = readout(args.model, args.world, args.clips)
    print(json.dumps({k: result[k] for k in ("model", "world", "clips", "accuracy")}))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
