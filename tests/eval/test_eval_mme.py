"""MME scoring reproduces the official eval_tool (calculation.py) to the last digit."""

import re
import shutil

import pytest
from mico_chat.eval.benchmarks.mme import MME, SUBTASKS, parse_pred_ans, score_results_dir
from mico_chat.eval.items import ItemError


def official_stdout(path):
    """Totals and subtask scores as the official tool printed them."""
    text = path.read_text()
    totals = [float(x) for x in re.findall(r"total score: ([0-9.e+-]+)", text)]
    tasks = {name: float(v) for name, v in re.findall(r"^\t (\S+)  score: ([0-9.e+-]+)$", text, re.M)}
    return totals, tasks


def test_lavin_example_reproduces_official_totals(fixtures):
    report = score_results_dir(fixtures / "mme" / "lavin_results")
    assert round(report.metrics["perception"], 2) == 963.61
    assert round(report.metrics["cognition"], 2) == 249.64
    totals, tasks = official_stdout(fixtures / "mme" / "LaVIN_official_stdout.txt")
    assert [report.metrics["perception"], report.metrics["cognition"]] == totals  # exact floats
    assert {k: v["score"] for k, v in report.breakdown.items()} == tasks
    assert report.counts["subtasks"] == 14 and report.counts["questions"] == 2374


def test_edge_responses_match_official(fixtures):
    report = score_results_dir(fixtures / "mme" / "edge_results")
    totals, tasks = official_stdout(fixtures / "mme" / "edge_official_stdout.txt")
    assert [report.metrics["perception"], report.metrics["cognition"]] == totals
    assert {k: v["score"] for k, v in report.breakdown.items()} == tasks


@pytest.mark.parametrize(
    "response, parsed",
    [
        ("yes", "yes"),
        ("no", "no"),
        ("yes.", "yes"),
        ("  yes", "other"),
        ("", "other"),
        ("\n", "other"),
        ("nope", "no"),
        ("not sure", "no"),
        ("the answer is yes", "other"),
        ("y", "other"),
        ("noo", "no"),
        ("yes, it is\n", "yes"),
        ("absolutely yes", "other"),
        ("no\n", "no"),
        ("yesno", "yes"),
        ("n o", "other"),
    ],
)
def test_official_answer_parsing(response, parsed):
    assert parse_pred_ans(response.lower()) == parsed


def test_partial_results_are_flagged(fixtures, tmp_path):
    shutil.copy(fixtures / "mme" / "lavin_results" / "existence.txt", tmp_path)
    report = score_results_dir(tmp_path)
    assert report.metrics == {"perception": 185.0}
    assert report.counts["missing_subtasks"] == 13
    assert any("partial" in n for n in report.notes)


def test_malformed_results_name_the_file_and_line(tmp_path):
    (tmp_path / "count.txt").write_text("a.jpg\tIs it? Please answer yes or no.\tYes\n")
    with pytest.raises(ItemError, match="count.txt: 1 lines"):
        score_results_dir(tmp_path)
    (tmp_path / "count.txt").write_text("a.jpg\tQ1\tYes\tyes\na.jpg\tQ2 no response\tNo\n")
    with pytest.raises(ItemError, match=r"count.txt:2: expected 4 tab-separated fields"):
        score_results_dir(tmp_path)
    (tmp_path / "count.txt").write_text("a.jpg\tQ1\tMaybe\tyes\na.jpg\tQ2\tNo\tno\n")
    with pytest.raises(ItemError, match=r"count.txt:1: ground truth must be Yes or No"):
        score_results_dir(tmp_path)


def test_loads_official_layout_and_keeps_image_pairs(mini_data):
    bench = MME()
    items = bench.load(mini_data["mme"])
    assert len(items) == 28 and {i.meta["subtask"] for i in items} == set(SUBTASKS)
    art = [i for i in items if i.meta["subtask"] == "artwork"]
    assert art[0].media[0].source.parent.name == "images"  # the images/ + questions_answers_YN/ layout
    assert [i.reference for i in art] == ["Yes", "No"]
    assert len(bench.select(items, 3)) == 4  # an image's two questions stay together


def test_missing_image_is_a_clear_error(mini_data, tmp_path):
    root = tmp_path / "MME"
    shutil.copytree(mini_data["mme"], root)
    next((root / "count").glob("*.png")).unlink()
    with pytest.raises(ItemError, match=r"count/.*\.txt: no image"):
        MME().load(root)
