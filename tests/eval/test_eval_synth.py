"""``eval synth``: items from a generated held-out world, exact judging per family, the command line
(fresh world, printed ``family: accuracy`` lines, plot), and re-score parity; ``eval general_qa``."""

import json

import pytest
from mico_chat.cli import main
from mico_chat.eval.benchmarks.general_qa import DEFAULT_DATA, GeneralQA, answer_found
from mico_chat.eval.benchmarks.synth import FAMILIES, Synth, heldout_world, score_rows
from mico_chat.eval.items import ItemError

COUNT3 = {"form": "open", "answer": "3", "facts": {"count": "3"}}
MC_B = {"form": "mc", "answer": "B", "options": ["red", "blue", "green"], "facts": {"colour": "blue"}}
YES = {"form": "yesno", "answer": "yes", "facts": {"answer": "yes"}}
LEFT_HIGH = {"form": "open", "answer": "left, high", "facts": {"direction": "left", "pitch": "high"}}


def row(family, qa, pred):
    return {"id": f"{family}-{pred}", "family": family, "qa": qa, "pred": pred}


def test_hand_written_predictions_give_known_accuracies():
    rows = [
        row("counting", COUNT3, "3"),                       # right
        row("counting", COUNT3, "There are three crosses."),  # paraphrased, right per the judge
        row("counting", COUNT3, "2"),                       # wrong
        row("counting", COUNT3, "three or four"),           # names another value: wrong
        row("appearance", MC_B, "(B) blue"),                # right (letter)
        row("appearance", MC_B, "blue"),                    # right (the one option named)
        row("appearance", MC_B, "A"),                       # wrong
        row("sound", YES, "Yes, it does."),                 # right
        row("sound", YES, "No."),                           # wrong
        row("audio-visual", LEFT_HIGH, "They move leftwards and the sound is high pitched."),  # right
        row("audio-visual", LEFT_HIGH, "left"),             # one fact missing: wrong
    ]  # fmt: skip
    report = score_rows(rows)
    assert report.metrics["counting"] == 0.5
    assert report.metrics["appearance"] == pytest.approx(2 / 3)
    assert report.metrics["sound"] == 0.5 and report.metrics["audio-visual"] == 0.5
    assert report.metrics["overall"] == pytest.approx(6 / 11)
    assert list(report.metrics)[:4] == ["appearance", "counting", "sound", "audio-visual"]  # FAMILIES order
    assert report.counts["mc_items"] == 3 and report.counts["mc_correct"] == 2
    assert report.counts["open_items"] == 6 and report.counts["open_correct"] == 3
    assert report.breakdown["counting"] == {"accuracy": 0.5, "items": 4.0}


def test_the_temporal_family_is_scored_and_listed_after_audio_visual():
    before = {"form": "open", "answer": "before", "facts": {"order": "before"}}
    top = {"form": "open", "answer": "the top square", "facts": {"place": "top"}}
    rows = [
        row("temporal", before, "The sound starts before the square appears."),  # right
        row("temporal", before, "after"),                                       # wrong
        row("temporal", top, "The upper square moves first."),                  # right
        row("temporal", top, "the top or the bottom one"),                      # names both: wrong
        row("audio-visual", YES, "yes"),
        row("description", YES, "yes"),
    ]  # fmt: skip
    report = score_rows(rows)
    assert list(report.metrics) == ["audio-visual", "temporal", "description", "overall"]
    assert report.metrics["temporal"] == 0.5 and report.breakdown["temporal"]["items"] == 4.0


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return heldout_world(tmp_path_factory.mktemp("synth"), n=2, seed=7, progress=False)


def test_items_cover_every_family_and_multi_turn_history(world):
    items = Synth().load(world)
    families = {item.meta["family"] for item in items}
    assert families == set(FAMILIES)
    records = [json.loads(line) for line in (world / "records.jsonl").read_text().splitlines()]
    multi = next(r for r in records if r["meta"]["family"] == "multi-turn")
    turns = [item for item in items if item.meta["record"] == multi["id"]]
    assert len(turns) == len(multi["meta"]["turns"]) == 3
    last = turns[-1].messages()
    # Earlier turns are asked with their ground-truth answers; the media come once, first.
    assert [m["role"] for m in last] == ["user", "assistant", "user", "assistant", "user"]
    assert last[1]["content"] == multi["messages"][1]["content"]
    assert last[0]["content"][0]["type"] == "video" and all(p["type"] == "text" for p in last[2]["content"])
    # A video with its own track is one video part (the processor adds the audio), never "<video>" text.
    single = next(item for item in items if item.meta["family"] == "motion")
    assert [m.kind for m in single.media] == ["video"] and "<" not in single.prompt.split("\n")[0]
    # The judge accepts each record's own ground-truth answer, and every item is judged from its facts.
    truth = {r["id"]: r["messages"][1]["content"] for r in records}
    rows = [row(i.meta["family"], i.reference, truth[i.id]) for i in items if i.id in truth]
    assert len(rows) == len(records) - 2 and score_rows(rows).metrics["overall"] == 1.0


def test_a_world_from_an_older_generator_is_generated_again(tmp_path):
    world = heldout_world(tmp_path, n=1, seed=3, progress=False)
    summary = json.loads((world / "summary.json").read_text())
    (world / "summary.json").write_text(json.dumps({**summary, "generator_version": 1}))
    (world / "records.jsonl").write_text("")  # what a reuse would keep
    assert heldout_world(tmp_path, n=1, seed=3, progress=False) == world
    assert json.loads((world / "summary.json").read_text()) == summary
    families = {json.loads(line)["meta"]["family"] for line in (world / "records.jsonl").read_text().splitlines()}
    assert "temporal" in families


def test_missing_world_names_the_file(tmp_path):
    with pytest.raises(ItemError, match="records.jsonl: missing"):
        Synth().load(tmp_path)


def test_command_line_fresh_world_and_rescore(tmp_path, capsys):
    from helpers.train_fixtures import save_tiny_model

    model = save_tiny_model(tmp_path / "model")
    out = tmp_path / "run"
    args = ["eval", "synth", "--model", str(model), "--n", "1", "--seed", "3", "--out", str(out), "--batch-size", "4"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"held-out world: {out / 'heldout-s3-n1'}" in printed
    lines = {line.split(": ")[0]: line for line in printed.splitlines() if ": " in line}
    assert all(family in lines for family in FAMILIES) and "overall" in lines
    payload = json.loads((out / "results.json").read_text())
    assert payload["data"]["items"] == 6 + 1 + 3 and (out / "results.png").stat().st_size > 1000
    # Re-scoring the run's file prints the same lines; a second run reuses world and predictions.
    assert main(["eval", "score", "synth", str(out)]) == 0
    rescored = capsys.readouterr().out
    assert all(lines[f] in rescored for f in (*FAMILIES, "overall"))
    assert main(args) == 0 and "(0 generated, 10 from the cache)" in capsys.readouterr().out


def test_general_qa_matching_and_items(tmp_path):
    assert answer_found("It is Paris.", ["Paris"]) and answer_found("PARIS", ["paris"])
    assert not answer_found("Parisian food", ["Paris"]) and answer_found("about 100 degrees", ["100", "one hundred"])
    items = GeneralQA().load(DEFAULT_DATA)
    assert len(items) >= 50 and all(i.prompt.endswith(" Answer in a few words.") for i in items)
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"id": 1, "question": "x"}\n')
    with pytest.raises(ItemError, match=r"q.jsonl: line 1 lacks \['answers'\]"):
        GeneralQA().load(bad)
    bad.write_text('{"id": 1, "question": "x", "answers": []}\n')
    with pytest.raises(ItemError, match=r"q.jsonl: question 1 \(1\): answers must be a non-empty list"):
        GeneralQA().load(bad)
    with pytest.raises(ItemError, match="no such questions file"):
        GeneralQA().load(tmp_path / "missing.jsonl")
