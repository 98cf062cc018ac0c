"""Stage-2 training throughput: sequence packing vs padding, in real (non-padding) tokens per second.

CPU (default): a small LLaMA (hidden 256, 4 layers) with the tiny MiCo encoder (frozen, features
cached as the shipped default configs do) trains on generated image conversations whose lengths
follow an instruction-mix shape (many short Q&A, some multi-turn, a tail of long descriptions).
Every mode trains the same samples with the same seed, so "padding" and "packing" see the very same
batches; the modes run interleaved and the median over repeats is reported.

    PYTHONPATH=tests .venv/bin/python bench/bench_train.py [--steps 12] [--batch 8] [--repeats 3] [--samples 192]

(``PYTHONPATH=tests``: the tiny tokenizer and encoder come from the test helpers, tests/helpers/.)

GPU (``--gpu``; needs CUDA): a 7B-shaped LLaMA (random weights) with a ViT-L-shaped encoder runs
the shipped ``configs/vicuna7b`` stage-2 recipes (full tuning under ZeRO-2, LoRA, QLoRA) for a few
steps at sequence length 2048 and reports tokens/s, MFU and peak memory. ``--gpu-shape tiny``
runs the same code path with tiny shapes (a smoke test that works on a CPU too).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WORDS = (
    "the a red green blue yellow square circle moves left right beep tone loud quiet video audio picture "
    "what where how many colour shape sound person dog car street room table light dark fast slow three two one "
    "is are there in on at with and or but then while after before describe detail scene background"
).split()


def load_average() -> float:
    return os.getloadavg()[0]


def make_records(folder: Path, n: int, seed: int) -> Path:
    """Image conversations with an instruction-mix length profile; returns the JSONL path."""
    import numpy as np
    from helpers.train_fixtures import colour_images

    rng = np.random.default_rng(seed)
    images = colour_images(folder / "images", 8, seed=seed)

    def words(k: int) -> str:
        return " ".join(rng.choice(WORDS, size=max(1, k)))

    rows = []
    for i in range(n):
        kind = rng.choice(["short", "multi", "long"], p=[0.45, 0.35, 0.20])
        turns = []
        if kind == "short":  # VQA-style: one question, a one-to-three-word answer
            turns = [(words(rng.integers(5, 13)), words(rng.integers(1, 4)))]
        elif kind == "multi":  # a conversation of 2-4 exchanges
            turns = [(words(rng.integers(6, 16)), words(rng.integers(10, 60))) for _ in range(rng.integers(2, 5))]
        else:  # a detailed description
            turns = [(words(rng.integers(6, 14)), words(rng.integers(80, 250)))]
        conv = []
        for k, (q, a) in enumerate(turns):
            conv.append({"from": "human", "value": ("<image>\n" if k == 0 else "") + q})
            conv.append({"from": "gpt", "value": a})
        rows.append(
            {
                "id": f"b{i}",
                "media": [{"modality": "image", "path": f"images/{images[i % 8][0]}"}],
                "conversations": conv,
            }
        )
    path = folder / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def small_model_folder(folder: Path) -> Path:
    """A MiCo-Chat folder: LLaMA hidden 256 x 4 layers around the tiny encoder (random weights)."""
    import torch
    from helpers.tiny import TINY_CONNECTORS, TINY_ENCODER, tiny_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    from mico_chat.api import ChatModel
    from mico_chat.builder import build_model
    from mico_chat.preprocess import MediaSettings

    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=704,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=3,
        pad_token_id=3,
    )
    torch.manual_seed(0)
    llm = LlamaForCausalLM._from_config(config, attn_implementation="sdpa")
    model, processor = build_model(
        llm, tokenizer=tokenizer, encoder=TINY_ENCODER, connectors=TINY_CONNECTORS, settings=MediaSettings(num_frames=4)
    )
    ChatModel(model, processor).save_pretrained(folder)
    return folder


def run_mode(model_dir: Path, records: Path, out: Path, args, *, packing: bool, grouped: bool, pack_length: int | None):
    from mico_chat.training import TrainRecipe, config_from_dict

    config = {
        "stage": "stage2_instruct",
        "model": {"preset": None, "init_from": str(model_dir)},
        "data": {
            "train": [str(records)],
            "packing": packing,
            "pack_length": pack_length,
            "max_length": 1024,
            "cache_encoder_features": True,
        },
        "train": {
            "output_dir": str(out),
            "max_steps": args.steps,
            "per_device_train_batch_size": args.batch,
            "learning_rate": 1e-4,
            "warmup_ratio": 0.0,
            "logging_steps": 1000,
            "save_steps": 100000,
            "group_by_length": grouped,
            "export": False,
            "resume": False,
            "seed": 0,
        },
    }
    recipe = TrainRecipe(config_from_dict(config), progress=False)
    recipe.setup()
    start = time.perf_counter()
    recipe.train()
    seconds = time.perf_counter() - start
    trainer = recipe.trainer
    return {
        "tokens": trainer.session_tokens,
        "seconds": seconds,
        "tokens_per_s": trainer.session_tokens / seconds,
        "lengths": recipe.trainer.train_dataset.lengths,
    }


def cpu_bench(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    modes = {
        "padding (random batches)": dict(packing=False, grouped=False, pack_length=None),
        "padding (length-grouped)": dict(packing=False, grouped=True, pack_length=None),
        "packing (one row per batch)": dict(packing=True, grouped=False, pack_length=None),
        "packing (rows <= 1024 tokens)": dict(packing=True, grouped=False, pack_length=1024),
        "packing (length-grouped, rows <= 1024)": dict(packing=True, grouped=True, pack_length=1024),
    }
    results: dict[str, list[dict]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = small_model_folder(root / "model")
        records = make_records(root / "data", args.samples, seed=0)
        for repeat in range(args.repeats):
            for name, mode in modes.items():
                results[name].append(run_mode(model_dir, records, root / f"run{repeat}{hash(name)}", args, **mode))
    lengths = results["padding (random batches)"][0]["lengths"]
    base = statistics.median(r["tokens_per_s"] for r in results["padding (random batches)"])
    table = {}
    for name, runs in results.items():
        tps = statistics.median(r["tokens_per_s"] for r in runs)
        table[name] = {
            "tokens_per_s": round(tps, 1),
            "vs_padding_random": round(tps / base, 2),
            "tokens_per_run": runs[0]["tokens"],
            "runs_tokens_per_s": [round(r["tokens_per_s"], 1) for r in runs],
        }
    return {
        "device": "cpu",
        "threads": args.threads,
        "steps": args.steps,
        "batch": args.batch,
        "repeats": args.repeats,
        "samples": args.samples,
        "sample_length": {
            "min": min(lengths),
            "median": int(statistics.median(lengths)),
            "mean": round(statistics.mean(lengths), 1),
            "max": max(lengths),
        },
        "results": table,
    }


# ----------------------------------------------------------------------------------------------- GPU

SHAPES = {
    # LLaMA-2-7B / Vicuna-7B-v1.5 and a ViT-L/14 encoder at 224 px
    "7b": dict(
        llm=dict(
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
            vocab_size=32000,
        ),
        encoder={"preset": "large", "image_size": 224, "patch_size": 14},
    ),
    "tiny": dict(
        llm=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            vocab_size=1024,
        ),
        encoder={
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 64,
            "image_size": 32,
            "patch_size": 8,
        },
    ),
}
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16 tensor-core peaks


def stage1_stand_in(folder: Path, shape: str) -> Path:
    """A random-weight "stage 1 output" of the given shape (LLM folder padded to its vocabulary)."""
    import torch
    from helpers.tiny import tiny_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    from mico_chat.api import ChatModel
    from mico_chat.builder import build_model

    spec = SHAPES[shape]
    tokenizer = tiny_tokenizer()
    vocab = spec["llm"]["vocab_size"]
    tokenizer.add_tokens([f"<pad_{i}>" for i in range(vocab - len(tokenizer) - 5)])  # 5 placeholders follow
    config = LlamaConfig(
        **{**spec["llm"], "vocab_size": len(tokenizer)},
        max_position_embeddings=4096,
        bos_token_id=1,
        eos_token_id=3,
        pad_token_id=3,
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        llm = LlamaForCausalLM._from_config(config, attn_implementation="sdpa", dtype=torch.bfloat16)
    encoder = {
        "audio_num_mel_bins": 64,
        "audio_target_length": 256,
        "audio_patch_size": 16,
        "max_segments": 16,
        **spec["encoder"],
    }
    connectors = {"image": {"type": "mlp2x_gelu", "tokens": "all", "pool": None}}
    model, processor = build_model(
        llm.cpu(),
        tokenizer=tokenizer,
        encoder=encoder,
        connectors=connectors,
        chat_template="vicuna_v1",
        dtype=torch.bfloat16,
    )
    ChatModel(model, processor).save_pretrained(folder)
    return folder


def gpu_bench(args) -> dict:
    import torch

    from mico_chat.training import TrainRecipe, load_config

    cuda = torch.cuda.is_available()
    name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    out = {"device": name, "shape": args.gpu_shape, "seq_len": args.seq_len, "results": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = stage1_stand_in(root / "stage1", args.gpu_shape)
        records = make_records(root / "data", args.samples, seed=0)
        runs = {
            "full, ZeRO-2": (
                "stage2_instruct",
                [f"train.deepspeed={REPO}/configs/deepspeed/zero2.json"] if cuda else ["train.deepspeed=null"],
            ),
            "LoRA r=128": ("stage2_lora", ["train.deepspeed=null"]),
            "QLoRA 4-bit r=128": ("stage2_qlora", []),
        }
        for label, (stage, extra) in runs.items():
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            overrides = [
                f"data.train={records}",
                f"model.init_from={model_dir}",
                f"train.output_dir={root / stage}",
                f"train.max_steps={args.steps}",
                f"train.per_device_train_batch_size={args.batch}",
                "train.export=false",
                "train.save_steps=100000",
                f"data.pack_length={args.seq_len}",
                f"data.max_length={args.seq_len}",
                "data.cache_encoder_features=false",
                "train.dataloader_num_workers=2",
                *extra,
            ]
            if not cuda:
                overrides += [
                    "train.bf16=false",
                    "model.dtype=float32",
                    "train.dataloader_num_workers=0",
                    "train.gradient_checkpointing=false",
                ]
            recipe = TrainRecipe(load_config(REPO / f"configs/vicuna7b/{stage}.yaml", overrides), progress=False)
            recipe.setup()
            start = time.perf_counter()
            recipe.train()
            seconds = time.perf_counter() - start
            tokens = recipe.trainer.session_tokens
            llm = recipe._unwrapped().language_model.config
            n_params = sum(
                p.numel() for n, p in recipe._unwrapped().language_model.named_parameters() if "lora" not in n
            )
            # PaLM's model FLOPs per token: 6N + 12 * layers * hidden * context (dense attention)
            flops_per_token = 6 * n_params + 12 * llm.num_hidden_layers * llm.hidden_size * args.seq_len
            tps = tokens / seconds
            summary = recipe.cleanup()
            out["results"][label] = {
                "tokens_per_s": round(tps, 1),
                "mfu": round(tps * flops_per_token / (peak * 1e12), 3) if peak else None,
                "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
                "peak_rss_gib": round(summary["peak_memory"]["cpu_max_rss_bytes"] / 2**30, 2),
            }
            from accelerate.state import AcceleratorState

            AcceleratorState._reset_state(reset_partial_state=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=192)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gpu", action="store_true", help="the 7B-shaped GPU benchmark (full/LoRA/QLoRA)")
    parser.add_argument("--gpu-shape", choices=sorted(SHAPES), default="7b")
    parser.add_argument("--seq-len", type=int, default=2048)
    args = parser.parse_args()
    load_before = load_average()
    result = gpu_bench(args) if args.gpu else cpu_bench(args)
    result.update(load_average_before=round(load_before, 2), load_average_after=round(load_average(), 2))
    print(json.dumps(result, indent=2))
    if not args.gpu:
        print("\n| mode | tokens/s | vs padding (random) |\n|---|---|---|")
        for name, row in result["results"].items():
            print(f"| {name} | {row['tokens_per_s']} | {row['vs_padding_random']}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
