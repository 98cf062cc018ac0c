"""Connector ablation on the synthetic world at an equal LLM media-token budget (issue 23).

    python docs/experiments/connectors/ablation.py --run runs/default-model-8 --out runs/ablation
    python docs/experiments/connectors/ablation.py --run runs/default-model-8 --out runs/ablation \
        --only mlp,resampler --steps 300 --eval-limit 300
    python docs/experiments/connectors/ablation.py --report runs/ablation   # table + plot only

Every variant trains the same stage 2 (``configs/default/stage2_lora.yaml``: LoRA, the encoder
frozen) from the same pretrained encoder (``RUN/pretrain/encoder``) on the same clips
(``RUN/data/train/records.jsonl``, the first ``--records``), for the same number of steps, with
fresh connectors, and is scored on the same first ``--eval-limit`` items of ``RUN/data/heldout``
(``mico-chat eval synth``). No stage 1: the lexical stage needs media tokens, which the gated
cross-attention adapters do not have, so no variant gets one. The gated variants' adapters, like
every connector, train at the connectors' rate.

The budget: 21 LLM tokens per clip with sound. 16 for the video (8 frames), 5 for its audio track
(``tokens: all, pool: 2``: CLS + 2x2 pooled patches), except where the connector decides:

| variant | video | audio track |
|---|---|---|
| ``mlp`` | ``mlp2x_gelu``, per frame CLS + one average-pooled patch token (8 x 2) | 5 |
| ``resampler`` | 16 learned queries over all frames' tokens, frame time embeddings | 5 |
| ``vidla`` | [CLS] + 3 levels x 5 [MST] tokens | 5 |
| ``combiner`` | video and its track fused by timestamp: 3 snippets x 7 tokens | (in the 21) |
| ``gated_xattn`` | one marker token per item: adapters before LLM layers 0, 10, 20, tanh(1) gates | 1 marker |
| ``gated_xattn_zero`` | the same with tanh(0) gates (the model starts as the plain LLM) | 1 marker |

Each variant is one folder under ``--out`` (``model/``, ``eval/``, logs) and is skipped when its
results exist, so a killed run resumes. ``--report`` writes ``results.md`` (accuracy per family)
and ``results.png`` (grouped bars) from whatever has finished.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from mico_chat.eval.benchmarks.synth import FAMILIES

AUDIO = "{type: mlp2x_gelu, tokens: all, pool: 2, out_norm: true}"  # 5 tokens: CLS + 2x2 pooled patches
VARIANTS: dict[str, list[str]] = {
    "mlp": [
        "model.connectors={video: {type: mlp2x_gelu, tokens: all, pool: 1, out_norm: true}, audio: %s}" % AUDIO,
    ],
    "resampler": [
        "model.connectors={video: {type: resampler, num_queries: 16, time_embed: true, out_norm: true}, audio: %s}"
        % AUDIO,
    ],
    "vidla": [
        "model.connectors={video: {type: vidla, levels: 3, mst_per_level: 5, out_norm: true}, audio: %s}" % AUDIO,
    ],
    "combiner": [
        "model.connectors={video: {type: combiner, num_snippets: 3, snippet_tokens: 7, out_norm: true}, audio: %s}"
        % AUDIO,
        "data.cache_encoder_features=false",  # the Combiner reads the track inside the model
    ],
    "gated_xattn": [  # the adapters read the clip and its audio track together
        "model.gated_xattn={layers: [0, 10, 20], gate_init: one}",
    ],
    "gated_xattn_zero": [  # the same, gates at tanh(0): training starts from the plain LLM
        "model.gated_xattn={layers: [0, 10, 20], gate_init: zero}",
    ],
}


def run(cmd: list[str], log: Path) -> None:
    print(" ".join(cmd), f"> {log}", flush=True)
    with log.open("w") as out:
        code = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT)
    if code:
        sys.exit(f"failed ({code}): see {log}")


def train_and_eval(name: str, args: argparse.Namespace) -> None:
    folder = args.out / name
    results = folder / "eval" / "results.json"
    if results.is_file():
        print(f"{name}: done ({results})")
        return
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "model" / "config.json").is_file():
        train = [
            "mico-chat", "train", "configs/default/stage2_lora.yaml",
            "model.preset=untrained", "model.init_from=null",
            f"model.encoder={{pretrained: {args.run / 'pretrain' / 'encoder'}}}",
            f"data.train=[{args.run / 'data' / 'train' / 'records.jsonl'}]", f"data.limit={args.records}",
            f"train.max_steps={args.steps}", f"train.output_dir={folder}", "train.save_steps=100",
            *VARIANTS[name], *args.override,
        ]  # fmt: skip
        run(train, folder / "train.log")
    evaluate = [
        "mico-chat", "eval", "synth", "--model", str(folder / "model"), "--data", str(args.run / "data" / "heldout"),
        "--out", str(folder / "eval"), "--batch-size", "8", "--limit", str(args.eval_limit),
    ]  # fmt: skip
    run(evaluate, folder / "eval.log")


def report(out: Path) -> None:
    rows = {}
    for name in VARIANTS:
        path = out / name / "eval" / "results.json"
        if path.is_file():
            rows[name] = json.loads(path.read_text())["scores"]["metrics"]
    if not rows:
        sys.exit(f"no finished variant under {out}")
    families = [f for f in (*FAMILIES, "overall") if any(f in m for m in rows.values())]
    lines = ["| variant | " + " | ".join(families) + " |", "|---|" + "---:|" * len(families)]
    for name, metrics in rows.items():
        cells = [f"{metrics[f]:.2f}" if f in metrics else "" for f in families]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(rows)
    for k, (name, metrics) in enumerate(rows.items()):
        xs = [i + k * width for i in range(len(families))]
        ax.bar(xs, [metrics.get(f, 0.0) for f in families], width, label=name)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(families))], families, rotation=20)
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1)
    ax.legend(ncol=len(rows), fontsize=8)
    ax.set_title("Connectors at an equal media-token budget (synthetic world, held out)")
    fig.tight_layout()
    fig.savefig(out / "results.png", dpi=120)
    print(f"wrote {out / 'results.md'} and {out / 'results.png'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a default-pipeline run folder (its data/ and pretrain/encoder)")
    parser.add_argument("--out", type=Path, required=True, help="one folder per variant goes here")
    parser.add_argument("--only", default=",".join(VARIANTS), help="comma-separated variants (default: all)")
    parser.add_argument("--steps", type=int, default=300, help="stage-2 steps per variant (default: 300)")
    parser.add_argument("--records", type=int, default=6000, help="training records read (default: 6000)")
    parser.add_argument("--eval-limit", type=int, default=300, help="held-out items scored (default: 300)")
    parser.add_argument("--override", action="append", default=[], help="extra key=value for every variant")
    parser.add_argument("--report", action="store_true", help="only write the table and plot from --out")
    args = parser.parse_args(argv)
    if not args.report:
        if args.run is None:
            parser.error("--run is required unless --report")
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(names) - set(VARIANTS))
        if unknown:
            parser.error(f"unknown variants {unknown}; known: {sorted(VARIANTS)}")
        for name in names:
            train_and_eval(name, args)
    report(args.out)


if __name__ == "__main__":
    main()
