"""The table and figures of the pretraining experiment in docs/pretraining.md, from the runs' eval.jsonl.

    python docs/experiments/pretrain_figures.py runs/ --out docs/figures [--folds runs/eval-folds] [--seeds 0-7]

Runs are named as the experiment's commands name them: ``lit-ARM`` for seed 0 and ``lit-ARM-sN`` for
seed N, where ARM is ``con`` (contrastive only), ``full`` (the config as is) or ``mf`` (the matching
objective made learnable); an arm uses the seeds it has complete runs for and is left out if it has
none (``--seeds`` picks seeds, e.g. ``0-7`` or ``8-22``; by default every finished one). Prints the
markdown table of the final held-out figures (per seed and the mean) and the paired text-to-video
differences of each arm against ``con`` over the seeds both ran; writes
``pretrain_retrieval_r1.png`` and ``pretrain_retrieval.png`` (held-out text-to-item R@1 / R@5 over
steps, mean over seeds) and ``pretrain_seeds.png`` (final text-to-video R@1 and R@5 of each seed,
the arms side by side).

With ``--folds DIR`` the final models are also scored on further held-out worlds, COCO-1K style:
``DIR/foldK/RUN/metrics.json`` (``mico-chat eval retrieval ... --dual-softmax --out``) for each fold
K, each its own 1,000-item gallery; the run's own eval.jsonl (the ``runs/data/heldout`` world) is
fold 1. Prints each run's figures averaged over the folds, for contrastive scores and dual softmax,
the same paired statistics on them, and the paired difference per fold; writes
``pretrain_folds.png``.
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


def seed_list(text: str) -> list[int]:
    """``3`` or an inclusive range ``8-22``, as ``--seeds`` takes them."""
    first, _, last = text.partition("-")
    try:
        seeds = list(range(int(first), int(last or first) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a seed or a range like 8-22") from None
    if not seeds:
        raise argparse.ArgumentTypeError(f"{text!r} is an empty range")
    return seeds


def found_seeds(runs: Path, arm: str) -> list[int]:
    """Every seed of ``arm`` with a run folder under ``runs`` (finished or not), in order."""
    seeds = [0] if (runs / f"lit-{arm}").is_dir() else []
    for path in runs.glob(f"lit-{arm}-s*"):
        if path.is_dir() and path.name.removeprefix(f"lit-{arm}-s").isdigit():
            seeds.append(int(path.name.removeprefix(f"lit-{arm}-s")))
    return sorted(seeds)


def finished(run: Path) -> bool:
    """A run that wrote its final model (a run still training has an eval.jsonl but no model/)."""
    return (run / "eval.jsonl").exists() and (run / "model" / "config.json").exists()


def eval_rows(runs: Path, arm: str, seed: int) -> list[dict]:
    path = run_dir(runs, arm, seed) / "eval.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def final(rows: list[dict]) -> list[float]:
    """The table's columns at a run's last evaluation."""
    return [rows[-1][group][direction][metric] for group, direction, metric, _ in COLUMNS]


def fold_figures(path: Path, method: str) -> list[float]:
    """The table's columns from a ``mico-chat eval retrieval --out`` metrics.json, for one scoring method."""
    results = {r["group"]: r["metrics"][method] for r in json.loads(path.read_text())["results"]}
    return [results[group][direction][metric] for group, direction, metric, _ in COLUMNS]


def cells(values: list[float], ranks_whole: bool = True) -> str:
    return " | ".join(f"{v:.0f}" if ranks_whole and "MdR" in c[3] else f"{v:.1f}" for v, c in zip(values, COLUMNS))


def print_table(
    values: dict[tuple[str, int], list[float]], seeds: dict[str, list[int]], title: str, ranks_whole: bool = True
) -> None:
    """``values`` maps ``(arm, seed)`` to the table's columns; ``seeds`` each arm's seeds."""
    print(f"| {title} | {' | '.join(c[3] for c in COLUMNS)} |")
    print("|---|" + "---:|" * len(COLUMNS))
    for s in sorted({s for arm_seeds in seeds.values() for s in arm_seeds}):
        for arm, arm_seeds in seeds.items():
            if s in arm_seeds:
                print(f"| {ARMS[arm]}, seed {s} | {cells(values[(arm, s)], ranks_whole)} |")
    for arm, arm_seeds in seeds.items():
        mean = [statistics.mean(values[(arm, s)][i] for s in arm_seeds) for i in range(len(COLUMNS))]
        print(f"| {ARMS[arm]}, mean of {len(arm_seeds)} seeds | {cells(mean, ranks_whole=False)} |")
    print()


def paired(diff: list[float]) -> str:
    """Mean, standard error, t and two-sided p of paired differences (one per seed), and the wins."""
    mean, wins = statistics.mean(diff), sum(d > 0 for d in diff)
    line = f"mean {mean:+.2f}"
    if len(diff) > 1 and statistics.stdev(diff) > 0:
        se = statistics.stdev(diff) / math.sqrt(len(diff))
        t = mean / se
        line += f", SE {se:.2f}, t = {t:.2f}, two-sided p = {2 * stats.t.sf(abs(t), len(diff) - 1):.3f}"
    return line + f"; ahead in {wins} of {len(diff)} seeds"


def print_differences(values: dict[tuple[str, int], list[float]], seeds: dict[str, list[int]]) -> None:
    """Each arm against contrastive-only, paired by seed over the seeds both ran."""
    for arm, arm_seeds in seeds.items():
        if arm == "con":
            continue
        common = [s for s in arm_seeds if s in seeds["con"]]
        for i, name in ((0, "t2v R@1"), (1, "t2v R@5"), (4, "t2a R@1"), (5, "t2a R@5")):
            diff = [values[(arm, s)][i] - values[("con", s)][i] for s in common]
            print(f"{ARMS[arm]} - contrastive only, {name}: {' '.join(f'{d:+.1f}' for d in diff)}; {paired(diff)}")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument(
        "--seeds",
        type=seed_list,
        nargs="+",
        default=None,
        help="seeds (N or N-M) to use where they finished; default: every finished seed",
    )
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=list(ARMS))
    parser.add_argument("--folds", type=Path, default=None, help="folder of foldK/RUN/metrics.json (see above)")
    parser.add_argument("--out", type=Path, default=Path("docs/figures"))
    args = parser.parse_args()
    wanted = sorted({s for group in args.seeds for s in group}) if args.seeds else None
    seeds = {
        arm: [s for s in (wanted or found_seeds(args.runs, arm)) if finished(run_dir(args.runs, arm, s))]
        for arm in args.arms
    }
    seeds = {arm: arm_seeds for arm, arm_seeds in seeds.items() if arm_seeds}
    if "con" not in seeds:
        parser.error(f"no finished contrastive-only runs under {args.runs} for seeds {wanted or 'any'}")
    runs = {(arm, s): eval_rows(args.runs, arm, s) for arm, arm_seeds in seeds.items() for s in arm_seeds}
    values = {key: final(rows) for key, rows in runs.items()}
    print_table(values, seeds, "run (600 steps)")
    print_differences(values, seeds)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    args.out.mkdir(parents=True, exist_ok=True)
    if args.folds is not None:
        plot_folds(args.folds, args.runs, seeds, values, args.out / "pretrain_folds.png", plt)

    with tempfile.TemporaryDirectory() as tmp:
        means = {}
        for arm, arm_seeds in seeds.items():
            per_seed = [runs[(arm, s)] for s in arm_seeds]
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
            means[f"{ARMS[arm]} (mean of {len(arm_seeds)} seeds)"] = path
        plot_retrieval(means, args.out / "pretrain_retrieval.png", metric="R@5")
        plot_retrieval(means, args.out / "pretrain_retrieval_r1.png", metric="R@1")

    arms = list(seeds)
    fig, axes = plt.subplots(1, 2, figsize=(4.2 * max(2, len(arms)), 3.4))
    for ax, (index, metric) in zip(axes, ((0, "R@1"), (1, "R@5"))):
        for seed in sorted({s for arm_seeds in seeds.values() for s in arm_seeds}):
            xs = [x for x, arm in enumerate(arms) if seed in seeds[arm]]
            ys = [values[(arms[x], seed)][index] for x in xs]
            ax.plot(xs, ys, marker="o", color=seed_colour(plt, seed), alpha=0.6, label=f"seed {seed}")
        for x, arm in enumerate(arms):
            mean = statistics.mean(values[(arm, s)][index] for s in seeds[arm])
            ax.plot([x - 0.15, x + 0.15], [mean, mean], color="black", linewidth=2.5)
        ax.set_xticks(range(len(arms)), [ARMS[a].replace(", ", ",\n") for a in arms], fontsize=8)
        ax.set_xlim(-0.3, len(arms) - 0.7)
        ax.set_title(f"held-out text -> video {metric} (%), final step\n(a line per seed; black: mean)", fontsize=9)
        ax.grid(alpha=0.3)
    legend_right(fig, axes[0])
    fig.savefig(args.out / "pretrain_seeds.png", dpi=110)
    plt.close(fig)


def seed_colour(plt, seed: int):
    """A colour per seed, distinct for 20 seeds in a row (the replication plots 15)."""
    return plt.get_cmap("tab20")(seed % 20)


def legend_right(fig, ax) -> None:
    """The seed legend in a column right of the panels, where it hides no line."""
    handles, labels = ax.get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0, 0.89, 1))
    fig.legend(handles, labels, fontsize=6, loc="center right")


def plot_folds(folds: Path, runs: Path, seeds: dict[str, list[int]], fold1: dict, out: Path, plt) -> None:
    """Print the fold-averaged tables and paired statistics, and plot the t2v R@1 difference per fold."""
    fold_ids = sorted(int(d.name.removeprefix("fold")) for d in folds.glob("fold*") if d.is_dir())
    # Only runs scored on every fold count; fold 1 (the run's own eval.jsonl) has no dual-softmax
    # figures there, so it is read from DIR/fold1 when present (runs/eval-ds holds them) and the
    # contrastive figures fall back to eval.jsonl.
    seeds = {
        arm: [
            s
            for s in arm_seeds
            if all(
                (folds / f"fold{k}" / run_dir(runs, arm, s).name / "metrics.json").exists() for k in fold_ids if k != 1
            )
        ]
        for arm, arm_seeds in seeds.items()
    }
    seeds = {arm: arm_seeds for arm, arm_seeds in seeds.items() if arm_seeds}
    if "con" not in seeds:
        raise SystemExit(f"no contrastive-only run is scored on every fold under {folds}")
    all_folds = sorted({1, *fold_ids})
    per_fold = {}  # method -> (arm, seed) -> [columns of each fold]
    for method in ("contrastive", "dual_softmax"):
        per_fold[method] = {}
        for arm, arm_seeds in seeds.items():
            for s in arm_seeds:
                rows = []
                for k in all_folds:
                    path = folds / f"fold{k}" / run_dir(runs, arm, s).name / "metrics.json"
                    if k == 1 and not path.exists():
                        if method != "contrastive":
                            break
                        rows.append(fold1[(arm, s)])
                    else:
                        rows.append(fold_figures(path, method))
                if len(rows) == len(all_folds):
                    per_fold[method][(arm, s)] = rows
    for method, label in (("contrastive", "contrastive scores"), ("dual_softmax", "dual softmax")):
        table = per_fold[method]
        if not all((arm, s) in table for arm, arm_seeds in seeds.items() for s in arm_seeds):
            print(f"({label}: not every run has fold 1 figures for this method; skipped)\n")
            continue
        mean_over_folds = {key: [statistics.mean(col) for col in zip(*rows)] for key, rows in table.items()}
        print(f"**{label}, mean over {len(all_folds)} held-out folds of 1,000 clips** (folds {all_folds})\n")
        print_table(mean_over_folds, seeds, f"run, {label}, {len(all_folds)}-fold mean", ranks_whole=False)
        print_differences(mean_over_folds, seeds)
        for arm, arm_seeds in seeds.items():
            if arm == "con":
                continue
            common = [s for s in arm_seeds if s in seeds["con"]]
            per_k = [
                statistics.mean(table[(arm, s)][f][0] - table[("con", s)][f][0] for s in common)
                for f in range(len(all_folds))
            ]
            print(
                f"{ARMS[arm]} - contrastive only, t2v R@1 per fold (mean over seeds): "
                + " ".join(f"fold {k}: {d:+.2f}" for k, d in zip(all_folds, per_k))
            )
        print()

    table = per_fold["contrastive"]
    arms = list(seeds)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    fold_mean = {key: statistics.mean(row[0] for row in rows) for key, rows in table.items()}
    for seed in sorted({s for arm_seeds in seeds.values() for s in arm_seeds}):
        xs = [x for x, arm in enumerate(arms) if seed in seeds[arm]]
        ys = [fold_mean[(arms[x], seed)] for x in xs]
        axes[0].plot(xs, ys, marker="o", color=seed_colour(plt, seed), alpha=0.6, label=f"seed {seed}")
    for x, arm in enumerate(arms):
        grand = statistics.mean(fold_mean[(arm, s)] for s in seeds[arm])
        axes[0].plot([x - 0.15, x + 0.15], [grand, grand], color="black", linewidth=2.5)
    axes[0].set_xticks(range(len(arms)), [ARMS[a].replace(", ", ",\n") for a in arms], fontsize=8)
    axes[0].set_title(
        f"t2v R@1 (%), mean of {len(all_folds)} held-out folds\n(a line per seed; black: mean)", fontsize=9
    )
    axes[0].grid(alpha=0.3)
    for arm in arms:
        if arm == "con":
            continue
        common = [s for s in seeds[arm] if s in seeds["con"]]
        for f, k in enumerate(all_folds):
            diffs = [table[(arm, s)][f][0] - table[("con", s)][f][0] for s in common]
            axes[1].scatter(
                [k + (0.1 if arm == "mf" else -0.1)] * len(diffs),
                diffs,
                alpha=0.35,
                color="C1" if arm == "full" else "C2",
                s=12,
            )
            axes[1].plot(
                [k - 0.25, k + 0.25],
                [statistics.mean(diffs)] * 2,
                linewidth=2.5,
                color="C1" if arm == "full" else "C2",
                label=ARMS[arm] if f == 0 else None,
            )
    axes[1].axhline(0, color="black", linewidth=0.8)
    axes[1].set_xticks(all_folds, [f"fold {k}" for k in all_folds])
    axes[1].set_title(
        "t2v R@1 minus contrastive only, same seed (points)\nper held-out fold (bars: mean over seeds)", fontsize=9
    )
    if len(arms) > 1:
        axes[1].legend(fontsize=7)
    axes[1].grid(alpha=0.3)
    legend_right(fig, axes[0])
    fig.savefig(out, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
