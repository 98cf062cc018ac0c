"""The table and figures of the pretraining experiment in docs/pretraining.md, from the runs' eval.jsonl.

    python docs/experiments/pretrain_figures.py runs/ --out docs/figures

Runs are named as the experiment's commands name them: ``lit-ARM`` for seed 0 and ``lit-ARM-sN``
for seed N, where ARM is ``con`` (contrastive only), ``full`` (the config as is) or ``mf`` (the
matching objective made learnable); an arm without runs is left out. Prints the markdown table
of the final held-out figures (per seed and the mean) and the paired text-to-video differences of
each arm against ``con``; writes ``pretrain_retrieval_r1.png`` and ``pretrain_retrieval.png``
(held-out text-to-item R@1 / R@5 over steps, mean over seeds) and ``pretrain_seeds.png`` (final
text-to-video R@1 and R@5 of each seed, the arms side by side).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
from pathlib import Path

from scipy import stats  # installed with the project (scikit-learn needs it)

from mico_chat.pretraining.plots import plot_retrieval

ARMS = {
    "con": "contrastive only",
    "full": "MiCo objectives",
    "mf": "MiCo objectives, learnable matching",
}
# (query group, direction, metric) of the table's columns, and their headers.
COLUMNS = [
    ("video", "text_to_item", "R@1", "t2v R@1"),
    ("video", "text_to_item", "R@5", "t2v R@5"),
    ("video", "text_to_item", "R@10", "t2v R@10"),
    ("video", "text_to_item", "median_rank", "t2v MdR"),
    ("audio", "text_to_item", "R@1", "t2a R@1"),
    ("audio", "text_to_item", "R@5", "t2a R@5"),
    ("audio", "text_to_item", "R@10", "t2a R@10"),
    ("audio", "text_to_item", "median_rank", "t2a MdR"),
    ("video", "item_to_text", "R@1", "v2t R@1"),
]


def run_dir(runs: Path, arm: str, seed: int) -> Path:
    return runs / (f"lit-{arm}" if seed == 0 else f"lit-{arm}-s{seed}")


def eval_rows(runs: Path, arm: str, seed: int) -> list[dict]:
    path = run_dir(runs, arm, seed) / "eval.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def final(rows: list[dict]) -> list[float]:
    """The table's columns at a run's last evaluation."""
    return [rows[-1][group][direction][metric] for group, direction, metric, _ in COLUMNS]


def print_table(runs: dict[tuple[str, int], list[dict]], arms: list[str], seeds: list[int]) -> None:
    """``runs`` maps ``(arm, seed)`` to the run's eval.jsonl rows."""
    def cells(values: list[float], ranks_whole: bool = True) -> str:
        return " | ".join(f"{v:.0f}" if ranks_whole and "MdR" in c[3] else f"{v:.1f}" for v, c in zip(values, COLUMNS))

    print(f"| run (600 steps) | {' | '.join(c[3] for c in COLUMNS)} |")
    print("|---|" + "---:|" * len(COLUMNS))
    values = {key: final(rows) for key, rows in runs.items()}
    for s in seeds:
        for arm in arms:
            print(f"| {ARMS[arm]}, seed {s} | {cells(values[(arm, s)])} |")
    for arm in arms:
        mean = [statistics.mean(values[(arm, s)][i] for s in seeds) for i in range(len(COLUMNS))]
        print(f"| {ARMS[arm]}, mean of {len(seeds)} seeds | {cells(mean, ranks_whole=False)} |")
    print()
    for arm in arms:
        if arm == "con":
            continue
        for i, name in ((0, "t2v R@1"), (1, "t2v R@5"), (4, "t2a R@1"), (5, "t2a R@5")):
            diff = [values[(arm, s)][i] - values[("con", s)][i] for s in seeds]
            mean, wins = statistics.mean(diff), sum(d > 0 for d in diff)
            line = f"{ARMS[arm]} - contrastive only, {name}: {' '.join(f'{d:+.1f}' for d in diff)}; mean {mean:+.2f}"
            if len(seeds) > 1 and statistics.stdev(diff) > 0:
                se = statistics.stdev(diff) / math.sqrt(len(diff))
                t = mean / se
                line += f", SE {se:.2f}, t = {t:.2f}, two-sided p = {2 * stats.t.sf(abs(t), len(diff) - 1):.3f}"
            print(line + f"; ahead in {wins} of {len(diff)} seeds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=None, help="default: every arm with runs")
    parser.add_argument("--out", type=Path, default=Path("docs/figures"))
    args = parser.parse_args()
    arms = args.arms or [a for a in ARMS if all((run_dir(args.runs, a, s) / "eval.jsonl").exists() for s in args.seeds)]
    if "con" not in arms:
        parser.error(f"no complete contrastive-only runs under {args.runs} for seeds {args.seeds}")
    runs = {(arm, s): eval_rows(args.runs, arm, s) for arm in arms for s in args.seeds}
    print_table(runs, arms, args.seeds)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(args.seeds)
    with tempfile.TemporaryDirectory() as tmp:
        means = {}
        for arm in arms:
            per_seed = [runs[(arm, s)] for s in args.seeds]
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
            path = Path(tmp) / f"{arm}.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
            means[f"{ARMS[arm]} (mean of {n} seeds)"] = path
        plot_retrieval(means, args.out / "pretrain_retrieval.png", metric="R@5")
        plot_retrieval(means, args.out / "pretrain_retrieval_r1.png", metric="R@1")

    fig, axes = plt.subplots(1, 2, figsize=(4.2 * max(2, len(arms)), 3.4))
    for ax, metric in zip(axes, ("R@1", "R@5")):
        for seed in args.seeds:
            ys = [runs[(arm, seed)][-1]["video"]["text_to_item"][metric] for arm in arms]
            ax.plot(range(len(arms)), ys, marker="o", color=f"C{seed % 10}", alpha=0.6, label=f"seed {seed}")
        for x, arm in enumerate(arms):
            mean = statistics.mean(runs[(arm, s)][-1]["video"]["text_to_item"][metric] for s in args.seeds)
            ax.plot([x - 0.15, x + 0.15], [mean, mean], color="black", linewidth=2.5)
        ax.set_xticks(range(len(arms)), [ARMS[a].replace(", ", ",\n") for a in arms], fontsize=8)
        ax.set_xlim(-0.3, len(arms) - 0.7)
        ax.set_title(f"held-out text -> video {metric} (%), final step\n(a line per seed; black: mean)", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out / "pretrain_seeds.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
