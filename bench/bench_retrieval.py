"""Retrieval benchmarks: encoding throughput of the tiny MiCo encoder, and ranking time and peak
memory of the retrieval metrics on 1k x 1k and 10k x 10k score matrices.

    .venv/bin/python bench/bench_retrieval.py            # everything, ~2 min on 2 cores
    .venv/bin/python bench/bench_retrieval.py --only rank

Ranking runs each size in a fresh subprocess and reports its peak resident memory above the
process's baseline after imports (``ru_maxrss``), plus the time of the score matrix product and of
the metrics (both directions, pessimistic ties). Encoding reports clips/s for the model of
``configs/pretrain/tiny_synth.yaml`` (random weights: the cost does not depend on them) per query
group, and the media preprocessing rate (decode + resize + fbank) on a generated 4 s clip.
Prints the machine's load first: figures taken at a 1-minute load above ~1.5 on 2 cores are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def rank_child(texts: int, items: int, dim: int, captions_per_item: int) -> dict:
    from mico_chat.eval.retrieval import retrieval_metrics

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    g = torch.Generator().manual_seed(0)
    item_feats = torch.nn.functional.normalize(torch.randn(items, dim, generator=g), dim=-1)
    owner = torch.arange(texts) % items
    text_feats = torch.nn.functional.normalize(item_feats[owner] + 0.8 * torch.randn(texts, dim, generator=g), dim=-1)
    start = time.perf_counter()
    scores = text_feats @ item_feats.T  # (T, I) float32
    matmul_s = time.perf_counter() - start
    start = time.perf_counter()
    metrics = retrieval_metrics(scores, owner)
    rank_s = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "texts": texts, "items": items, "dim": dim, "matmul_s": matmul_s, "rank_s": rank_s,
        "peak_mib_above_baseline": (peak - base) / 1024, "matrix_mib": scores.numel() * 4 / 2**20,
        "t2i_R@1": metrics["text_to_item"]["R@1"],
    }  # fmt: skip


def bench_rank(repeats: int) -> list[dict]:
    rows = []
    for texts, items in ((1000, 1000), (10_000, 10_000), (5000, 1000)):
        runs = []
        for _ in range(repeats):
            out = subprocess.run(
                [sys.executable, __file__, "--child", f"{texts},{items}"],
                capture_output=True,
                text=True,
                check=True,
                cwd=REPO,
            )
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        best = min(runs, key=lambda r: r["rank_s"])
        best["rank_s_all"] = [round(r["rank_s"], 3) for r in runs]
        rows.append(best)
        print(
            f"rank {texts:>6} texts x {items:>6} items: matmul {best['matmul_s'] * 1000:7.1f} ms, "
            f"metrics {best['rank_s']:6.2f} s (runs {best['rank_s_all']}), peak +{best['peak_mib_above_baseline']:.0f} MiB "
            f"(matrix {best['matrix_mib']:.0f} MiB)",
            flush=True,
        )
    return rows


def bench_encode(batch: int, repeats: int) -> list[dict]:
    import yaml

    from mico_chat.encoders import MiCoEncoderConfig, MiCoForPretraining, MiCoPretrainingConfig, MiCoTextConfig

    spec = yaml.safe_load((REPO / "configs/pretrain/tiny_synth.yaml").read_text())["model"]["encoder"]
    encoder = MiCoEncoderConfig(**spec)
    text = MiCoTextConfig(cross_attention_layers=[4, 5])  # all-MiniLM-L6-v2's shape
    torch.manual_seed(0)
    model = MiCoForPretraining(
        MiCoPretrainingConfig(encoder_config=encoder, text_config=text, fusion_groups=["audio+video"])
    ).eval()
    video = torch.randn(batch, 4, 3, encoder.image_size, encoder.image_size)
    audio = torch.randn(batch, 1, encoder.audio_target_length, encoder.audio_num_mel_bins)
    rows = []
    for group, media in (
        (("video",), {"video": video}),
        (("audio",), {"audio": audio}),
        (("audio", "video"), {"video": video, "audio": audio}),
    ):
        model.embed_media(group, media)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model.embed_media(group, media)
            times.append(time.perf_counter() - start)
        best = min(times)
        rows.append(
            {
                "group": "+".join(group),
                "batch": batch,
                "clips_per_s": batch / best,
                "times_s": [round(t, 3) for t in times],
            }
        )
        print(
            f"encode {'+'.join(group):<12} batch {batch}: {batch / best:7.1f} clips/s (best of {repeats}: {best:.3f} s)",
            flush=True,
        )
    return rows


def bench_preprocess(repeats: int) -> dict:
    import yaml

    from mico_chat.media.samples import make_demo_clip
    from mico_chat.encoders import MiCoEncoderConfig
    from mico_chat.modality import Modality
    from mico_chat.preprocess import MediaSettings, preprocess

    spec = yaml.safe_load((REPO / "configs/pretrain/tiny_synth.yaml").read_text())["model"]["encoder"]
    encoder, settings = MiCoEncoderConfig(**spec), MediaSettings(num_frames=4)
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_demo_clip(Path(tmp) / "clip.mp4")
        out = {}
        for modality in (Modality.VIDEO, Modality.AUDIO):
            preprocess(modality, clip, settings, encoder)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                preprocess(modality, clip, settings, encoder)
                times.append(time.perf_counter() - start)
            out[modality.value] = sorted(times)[len(times) // 2]
    print(
        f"preprocess per clip (median of {repeats}): video {out['video'] * 1000:.1f} ms, audio {out['audio'] * 1000:.1f} ms",
        flush=True,
    )
    return {"video_ms": out["video"] * 1000, "audio_ms": out["audio"] * 1000}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["rank", "encode", "preprocess"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable on a shared 2-core machine)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        texts, items = (int(x) for x in args.child.split(","))
        print(json.dumps(rank_child(texts, items, 256, max(1, texts // items))))
        return 0
    load = os.getloadavg()
    print(
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; torch threads {args.threads}; cpus {os.cpu_count()}",
        flush=True,
    )
    results: dict = {"load": load, "threads": args.threads}
    if args.only in (None, "rank"):
        results["rank"] = bench_rank(args.repeats)
    if args.only in (None, "encode"):
        results["encode"] = bench_encode(64, args.repeats)
    if args.only in (None, "preprocess"):
        results["preprocess"] = bench_preprocess(max(5, args.repeats))
    results["load_after"] = os.getloadavg()
    print(f"load average after {results['load_after'][0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
