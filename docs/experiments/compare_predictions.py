"""Two or more `mico-chat eval synth` runs side by side: correct items per family, form and topic.

    python docs/experiments/compare_predictions.py runs/a/eval/synth runs/b/eval/synth [--limit 300] [--by topic]

Each argument is a folder holding ``synth_predictions.jsonl`` (or the file itself), read with the
evaluators' own reader (a missing file or a malformed line is named). Only the items every run answered are counted (the first ``--limit`` of each, matched by item id), so a run that
was stopped early is compared on the same items as the others. Prints ``correct/items`` per group.
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

from mico_chat.eval.benchmarks.synth import FAMILIES, PREDICTIONS
from mico_chat.eval.items import ItemError
from mico_chat.eval.scores import read_jsonl


def load(path: Path, limit: int | None) -> dict[str, dict]:
    """``{item id: row}`` of one run's predictions (the first ``limit`` rows)."""
    file = path / PREDICTIONS if path.is_dir() else path
    rows = read_jsonl(file, ["id", "family", "correct"])[:limit]
    return {row["id"]: row for row in rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--limit", type=int, default=None, help="the first N items of each run")
    parser.add_argument("--names", help="comma-separated column names (default: each path)")
    parser.add_argument("--by", choices=("family", "form", "topic"), default="family",
                        help="group items by this (topic is family/topic)")  # fmt: skip
    args = parser.parse_args(argv)

    try:
        runs = [load(path, args.limit) for path in args.runs]
    except ItemError as error:
        raise SystemExit(str(error)) from None
    shared = set(runs[0]).intersection(*runs[1:])
    if not shared:
        raise SystemExit("the runs share no item ids: are they scored on the same world?")
    groups: dict[str, list[str]] = collections.defaultdict(list)
    for item_id, row in runs[0].items():
        if item_id in shared:
            key = f"{row['family']}/{row.get('topic', '?')}" if args.by == "topic" else str(row.get(args.by, "?"))
            groups[key].append(item_id)

    names = args.names.split(",") if args.names else [str(path) for path in args.runs]
    if len(names) != len(runs):
        raise SystemExit(f"--names gives {len(names)} names for {len(runs)} runs")
    width = max(len(key) for key in [*groups, "overall"])
    cell_width = max(12, *(len(name) for name in names))
    print(f"{'':<{width}}  " + "  ".join(f"{name:>{cell_width}}" for name in names))
    rank = {family: n for n, family in enumerate(FAMILIES)}  # families in the evaluator's order
    for key in sorted(groups, key=lambda k: (rank.get(k.split("/")[0], len(rank)), k)):
        ids = groups[key]
        cells = [f"{sum(bool(run[i]['correct']) for i in ids)}/{len(ids)}" for run in runs]
        print(f"{key:<{width}}  " + "  ".join(f"{cell:>{cell_width}}" for cell in cells))
    cells = [f"{sum(bool(run[i]['correct']) for i in shared)}/{len(shared)}" for run in runs]
    print(f"{'overall':<{width}}  " + "  ".join(f"{cell:>{cell_width}}" for cell in cells))


if __name__ == "__main__":
    main()
