"""docs/experiments/pretrain_figures.py: the tables and paired statistics docs/pretraining.md publishes.

Hand-made runs with known figures; the expected means, differences, t and p are worked out below.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs the figures script in a subprocess

SCRIPT = Path(__file__).parents[2] / "docs" / "experiments" / "pretrain_figures.py"


def figures(t2v_r1: float, t2a_r5: float = 15.0) -> dict:
    """Both groups' metrics with a given text-to-video R@1 and text-to-audio R@5."""
    one = {"R@1": 3.0, "R@5": 14.0, "R@10": 27.0, "median_rank": 21.0, "mean_rank": 25.0, "num_queries": 1000}
    video = {"text_to_item": {**one, "R@1": t2v_r1}, "item_to_text": dict(one)}
    audio = {"text_to_item": {**one, "R@5": t2a_r5}, "item_to_text": dict(one)}
    return {"video": video, "audio": audio}


def write_run(runs: Path, name: str, t2v_r1: float, finished: bool = True) -> None:
    run = runs / name
    run.mkdir(parents=True)
    rows = [{"step": 100, **figures(1.0)}, {"step": 600, **figures(t2v_r1)}]
    (run / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if finished:
        (run / "model").mkdir()
        (run / "model" / "config.json").write_text("{}")


def write_fold(folds: Path, k: int, name: str, t2v_r1: float, dual_r1: float) -> None:
    path = folds / f"fold{k}" / name / "metrics.json"
    path.parent.mkdir(parents=True)
    scored = {"contrastive": figures(t2v_r1), "dual_softmax": figures(dual_r1)}
    results = [{"group": g, "metrics": {m: scored[m][g] for m in scored}} for g in ("video", "audio")]
    path.write_text(json.dumps({"results": results}))


def run_script(*args) -> str:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], check=False, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_tables_paired_statistics_and_folds(tmp_path):
    runs, folds, out = tmp_path / "runs", tmp_path / "folds", tmp_path / "figures"
    out.mkdir()
    # fold 1 = the runs' own final eval.jsonl row; fold 2 from metrics.json
    for name, fold1, fold2 in (
        ("lit-con", 3.0, 2.0),
        ("lit-con-s1", 4.0, 3.0),
        ("lit-full", 4.0, 4.0),
        ("lit-full-s1", 3.0, 5.0),
    ):
        write_run(runs, name, fold1)
        write_fold(folds, 2, name, fold2, dual_r1=fold2 + 1)
    write_run(runs, "lit-full-s2", 9.0, finished=False)  # still training: left out everywhere
    write_run(runs, "lit-con-s2", 9.0)  # no partner and not scored on fold 2: in the fold-1 mean only

    printed = run_script(runs, "--out", out, "--folds", folds)

    # fold 1 only: contrastive only has seeds 0-2 (mean (3 + 4 + 9) / 3), the MiCo arm seeds 0-1
    assert "| contrastive only, mean of 3 seeds | 5.3 |" in printed
    assert "| MiCo objectives, mean of 2 seeds | 3.5 |" in printed
    assert "lit-full-s2" not in printed and "seed 2 | 9.0" in printed
    # paired over seeds 0-1: +1.0 and -1.0 -> mean 0, ahead in 1 of 2
    assert "MiCo objectives - contrastive only, t2v R@1: +1.0 -1.0; mean +0.00" in printed
    # folds 1-2: contrastive only 2.5, 3.5; MiCo 4.0, 4.0 -> differences +1.5, +0.5: mean 1.0,
    # SE = stdev(1.5, 0.5) / sqrt(2) = 0.5, t = 2.0, two-sided p with 1 degree of freedom = 0.295
    folds_part = printed[printed.index("contrastive scores, mean over 2 held-out folds") :]
    assert "| contrastive only, mean of 2 seeds | 3.0 |" in folds_part
    assert "| MiCo objectives, mean of 2 seeds | 4.0 |" in folds_part
    assert "t2v R@1: +1.5 +0.5; mean +1.00, SE 0.50, t = 2.00, two-sided p = 0.295; ahead in 2 of 2 seeds" in folds_part
    assert "t2v R@1 per fold (mean over seeds): fold 1: +0.00 fold 2: +2.00" in folds_part
    # fold 1 has no dual-softmax figures (no folds/fold1): that table is skipped, not half-filled
    assert "(dual softmax: not every run has fold 1 figures for this method; skipped)" in printed
    for name in ("pretrain_folds.png", "pretrain_seeds.png", "pretrain_retrieval.png", "pretrain_retrieval_r1.png"):
        assert (out / name).stat().st_size > 10_000, name


def test_fold1_dual_softmax_from_its_folder(tmp_path):
    runs, folds = tmp_path / "runs", tmp_path / "folds"
    out = tmp_path / "not" / "made" / "yet"  # the script makes it, the folds figure included
    for name, r1 in (("lit-con", 3.0), ("lit-full", 5.0)):
        write_run(runs, name, r1)
        write_fold(folds, 1, name, r1, dual_r1=r1 + 2)
        write_fold(folds, 2, name, r1, dual_r1=r1 + 4)
    printed = run_script(runs, "--out", out, "--folds", folds)
    dual = printed[printed.index("dual softmax, mean over 2 held-out folds") :]
    assert "| contrastive only, mean of 1 seeds | 6.0 |" in dual  # (5 + 7) / 2
    assert "| MiCo objectives, mean of 1 seeds | 8.0 |" in dual
    assert (out / "pretrain_folds.png").stat().st_size > 10_000


def test_no_contrastive_runs_is_an_error(tmp_path):
    write_run(tmp_path, "lit-full", 3.0)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)], check=False, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and "no finished contrastive-only runs" in done.stderr


def test_seed_selection(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "figures"
    out.mkdir()
    for name, r1 in (("lit-con", 1.0), ("lit-con-s1", 2.0), ("lit-con-s2", 4.0), ("lit-con-s23", 8.0)):
        write_run(runs, name, r1)
    (runs / "lit-con-sx").mkdir()  # not a seed: ignored
    # by default every finished seed, 23 included: (1 + 2 + 4 + 8) / 4
    assert "| contrastive only, mean of 4 seeds | 3.8 |" in run_script(runs, "--out", out)
    # a range and a single seed; seed 22 has no run and is skipped: (2 + 4 + 8) / 3
    assert "| contrastive only, mean of 3 seeds | 4.7 |" in run_script(runs, "--out", out, "--seeds", "1-2", "22", "23")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(runs), "--seeds", "8-x"], check=False, capture_output=True, text=True
    )
    assert done.returncode == 2 and "'8-x' is not a seed or a range like 8-22" in done.stderr
