"""MMBench: VLMEvalKit's exact matching and circular evaluation, reproduced on official outputs."""

import json

import pytest
from helpers.fake_judge import FakeJudgeServer
from mico_chat.eval.benchmarks.mmbench import (
    CIRCULAR_OFFSET,
    MMBench,
    build_choices,
    build_option_str,
    can_infer,
    judge_prompt,
    score_predictions,
)
from mico_chat.eval.items import ItemError
from mico_chat.eval.judges import JudgeConfig, build_judge


def test_can_infer_matches_vlmevalkit(fixtures):
    cases = json.loads((fixtures / "mmbench" / "can_infer_cases.json").read_text())
    assert len(cases) == 176
    got = [can_infer(c["answer"], c["choices"]) or False for c in cases]
    assert got == [c["result"] for c in cases]


@pytest.mark.parametrize(
    "answer, expected",
    [("(B)", "B"), ("The answer is C", "C"), ("B.", "B"), ("Yes.", None), ("", None), ("A and B", None), ("dog", "B")],
)
def test_edge_answers(answer, expected):
    assert can_infer(answer, {"A": "cat", "B": "dog", "C": "teddy bear", "D": "rabbit"}) == expected


def test_circular_exact_matching_matches_vlmevalkit(fixtures):
    expected = json.loads((fixtures / "mmbench" / "circular_expected.json").read_text())
    report = score_predictions(fixtures / "mmbench" / "circular_predictions.tsv")
    assert report.metrics["overall"] == expected["report_acc"]["Overall"][0]
    for name, values in expected["report_acc"].items():
        if name != "Overall":
            assert report.breakdown[name]["accuracy"] == values[0], name
    assert report.counts["questions"] == 8 and report.counts["rows"] == 26


def test_circular_judge_extraction_matches_vlmevalkit(fixtures, tmp_path):
    expected = json.loads((fixtures / "mmbench" / "circular_expected.json").read_text())["judge"]
    calls = {"n": 0}

    def reply(messages):  # the scripted judge the fixture was made with
        prompt = messages[0]["content"]
        if "I am not sure about this one at all" in prompt:
            return "C"
        if "It looks" in prompt:
            return "The output is A"
        if "circle and square" in prompt:
            calls["n"] += 1
            return "not valid" if calls["n"] == 1 else "B"
        return "Z"

    with FakeJudgeServer(reply) as server:
        judge = build_judge(JudgeConfig(model="gpt-test", base_url=server.base_url, cache=tmp_path / "v.jsonl"))
        report = score_predictions(fixtures / "mmbench" / "circular_predictions.tsv", judge=judge)
        sent = [r["messages"][0]["content"] for r in server.requests]
    assert report.metrics["overall"] == expected["report_acc"]["Overall"][0]
    assert sent == expected["prompts"]  # VLMEvalKit's matching prompt, byte for byte, same calls in the same order
    assert all(r["temperature"] == 0 for r in server.requests)
    assert report.counts["judge_unparseable"] == 0


def test_judge_that_never_parses_is_counted_not_random(fixtures, tmp_path):
    with FakeJudgeServer(lambda messages: "I cannot tell") as server:
        judge = build_judge(JudgeConfig(model="gpt-test", base_url=server.base_url))
        report = score_predictions(fixtures / "mmbench" / "circular_predictions.tsv", judge=judge, attempts=3)
        assert len(server.requests) == 3 * report.counts["judge_unparseable"]
    assert report.counts["judge_unparseable"] == 3  # groups 4, 5 (empty reply) and 6
    assert report.metrics["overall"] == 0.5  # the unreadable copies fail their questions, deterministically


def test_judge_prompt_layout():
    choices = build_choices({"A": "left", "B": "right", "C": float("nan")})
    prompt = judge_prompt("Where is it", build_option_str(choices), "on the left side")
    expected = "Question: Where is it?\nOptions: There are several options: \nA. left\nB. right\n\n"
    assert prompt.endswith(expected + "Answer: on the left side\nYour output: ")


def test_loads_tsv_with_copies_and_image_references(mini_data):
    items = MMBench().load(mini_data["mmbench"])
    assert len(items) == 4 + 3 + 2  # one item per rotated copy
    copies = [i for i in items if int(i.id) % CIRCULAR_OFFSET == 0]
    assert [c.reference for c in copies] == ["B", "A", "D", "C"]  # "square" moves one letter back per copy
    assert copies[1].media[0].source == copies[0].media[0].source  # the copy's image is the original's
    assert copies[0].prompt.startswith("Question: What shape is shown?\nOptions:\nA. circle\n")
    hinted = next(i for i in items if i.id == "1")
    assert hinted.prompt.startswith("Hint: Look at the middle of the image.\nQuestion:")


def test_single_pass_tsv_gets_rotated_copies(tmp_path):
    from mico_chat.eval.minimedia import MiniMedia

    base = MMBench.mini_items(MiniMedia(tmp_path / "media"))
    MMBench.build_mini(base, tmp_path / "single", circular_copies=False)
    MMBench.build_mini(base, tmp_path / "copies", circular_copies=True)
    single = MMBench().load(tmp_path / "single")
    copies = MMBench().load(tmp_path / "copies")
    assert [(i.id, i.prompt, i.reference) for i in single] == [(i.id, i.prompt, i.reference) for i in copies]
    vanilla = MMBench(circular=False).load(tmp_path / "single")
    assert [i.id for i in vanilla] == ["0", "1", "2"]
    llava = MMBench(prompt_style="llava").load(tmp_path / "single")[0]
    assert llava.prompt.endswith("\nD. star\nAnswer with the option's letter from the given choices directly.")


def test_limit_keeps_whole_circular_groups(mini_data):
    bench = MMBench()
    assert [i.id for i in bench.select(bench.load(mini_data["mmbench"]), 2)] == ["0", "1000000", "2000000", "3000000"]


def test_bad_tsv_errors_name_the_file(tmp_path):
    bad = tmp_path / "x.tsv"
    bad.write_text("index\tquestion\n0\tq\n")
    with pytest.raises(ItemError, match=r"x.tsv: missing column"):
        MMBench().load(bad)
    (tmp_path / "p.tsv").write_text("index\tquestion\tA\tB\tanswer\n0\tq\ta\tb\tA\n")
    with pytest.raises(ItemError, match="no prediction column"):
        score_predictions(tmp_path / "p.tsv")


def test_test_split_without_answers_is_unavailable(tmp_path):
    (tmp_path / "t.tsv").write_text("index\tquestion\tA\tB\tprediction\n0\tq\ta\tb\tA\n")
    report = score_predictions(tmp_path / "t.tsv")
    assert "overall" in report.unavailable and not report.metrics
