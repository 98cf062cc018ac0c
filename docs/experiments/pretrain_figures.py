"""The figures of the pretraining experiment in docs/pretraining.md, from the runs' eval.jsonl.

    python docs/experiments/pretrain_figures.py runs/ --out docs/figures

Runs are named as the experiment's commands name them: ``lit-full`` / ``lit-con`` for seed 0,
``lit-full-sN`` / ``lit-con-sN`` for seed N. Writes ``pretrain_retrieval_r1.png`` and
``pretrain_retrieval.png`` (held-out text-to-item R@1 / R@5 over steps, mean over seeds) and
``pretrain_seeds.png`` (final text-to-video R@1 and R@5 of each seed, the two objectives paired).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from mico_chat.pretraining.plots import plot_retrieval

KINDS = {"full": "MiCo objectives", "con": "contrastive only"}


def eval_rows(runs: Path, kind: str, seed: int) -> list[dict]:
    path = runs / (f"lit-{kind}" if seed == 0 else f"lit-{kind}-s{seed}") / "eval.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, default=Path("docs/figures"))
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(args.seeds)
    with tempfile.TemporaryDirectory() as tmp:
        means = {}
        for kind, label in KINDS.items():
            per_seed = [eval_rows(args.runs, kind, s) for s in args.seeds]
            rows = []
            for i, first in enumerate(per_seed[0]):
                row = {"step": first["step"]}
                for group in ("video", "audio"):
                    row[group] = {
                        "text_to_item": {
                            m: statistics.mean(rows_[i][group]["text_to_item"][m] for rows_ in per_seed)
                            for m in ("R@1", "R@5")
                        }
                    }
                rows.append(row)
            path = Path(tmp) / f"{kind}.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
            means[f"{label} (mean of {n} seeds)"] = path
        plot_retrieval(means, args.out / "pretrain_retrieval.png", metric="R@5")
        plot_retrieval(means, args.out / "pretrain_retrieval_r1.png", metric="R@1")

    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.2))
    for ax, metric in zip(axes, ("R@1", "R@5")):
        for seed in args.seeds:
            con, full = (eval_rows(args.runs, k, seed)[-1]["video"]["text_to_item"][metric] for k in ("con", "full"))
            ax.plot([0, 1], [con, full], marker="o", color="tab:green" if full > con else "tab:red")
            ax.annotate(f"seed {seed}", (1.02, full), fontsize=7, va="center")
        ax.set_xticks([0, 1], [KINDS["con"], KINDS["full"]])
        ax.set_xlim(-0.2, 1.35)
        ax.set_title(f"held-out text -> video {metric} (%), final step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out / "pretrain_seeds.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
