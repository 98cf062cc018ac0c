"""Video-ChatGPT and video QA judging: official prompts byte for byte, official result files and
scores, and failure handling (invalid replies, transport errors, cache)."""

import json

import pytest
from helpers.fake_judge import FakeJudgeServer
from mico_chat.eval.benchmarks import gpt_judge
from mico_chat.eval.benchmarks.videochatgpt import PRED_FILES, VideoChatGPTBench, judge_prediction_files
from mico_chat.eval.benchmarks.videoqa import MSVDQA
from mico_chat.eval.items import ItemError
from mico_chat.eval.judges import JudgeConfig, JudgeError, build_judge

CRITERIA = {
    "correctness": gpt_judge.CORRECTNESS,
    "detail": gpt_judge.DETAIL,
    "context": gpt_judge.CONTEXT,
    "temporal": gpt_judge.TEMPORAL,
    "consistency": gpt_judge.CONSISTENCY,
}


def scripted(replies):
    """Replies keyed by a marker in the user message; the n-th ask of a marker gets the n-th reply."""
    seen = {}

    def reply(messages):
        user = messages[-1]["content"]
        marker = next(m for m in replies if m in user)
        seen[marker] = seen.get(marker, 0) + 1
        return replies[marker][min(seen[marker], len(replies[marker])) - 1]

    return reply


def judge_for(server, tmp_path, **kw):
    return build_judge(
        JudgeConfig(model="gpt-3.5-turbo", base_url=server.base_url, cache=tmp_path / "verdicts.jsonl", retry_wait_s=0.0, **kw)
    )


@pytest.mark.parametrize("name", list(CRITERIA))
def test_benchmark_criteria_reproduce_official_scripts(name, fixtures, tmp_path):
    fx = json.loads((fixtures / "videochatgpt" / f"{name}.json").read_text())
    criterion = CRITERIA[name]
    (tmp_path / PRED_FILES[criterion.questions]).write_text(json.dumps(fx["predictions"]))
    with FakeJudgeServer(scripted(fx["replies"])) as server:
        judge_prediction_files(tmp_path, judge_for(server, tmp_path), criteria=[criterion])
        sent = [{"model": r["model"], "messages": r["messages"]} for r in server.requests]
    unique = [m for i, m in enumerate(sent) if m not in sent[:i]]
    assert sorted(map(json.dumps, unique)) == sorted(map(json.dumps, fx["requests"]))  # prompts byte for byte
    written = json.loads((tmp_path / criterion.results_file).read_text())
    assert written == fx["results"]  # the official judge-result JSON
    report = VideoChatGPTBench().score(tmp_path / criterion.results_file)
    assert report.metrics[criterion.name] == next(iter(fx["printed"].values()))


def test_video_qa_reproduces_official_accuracy_and_score(fixtures, tmp_path):
    fx = json.loads((fixtures / "videochatgpt" / "qa.json").read_text())
    (tmp_path / "msvd_qa_pred.json").write_text(json.dumps(fx["predictions"]))
    with FakeJudgeServer(scripted(fx["replies"])) as server:
        report = MSVDQA().score(tmp_path, judge=judge_for(server, tmp_path))
        unique = {json.dumps(r["messages"]) for r in server.requests}
    assert unique == {json.dumps(r["messages"]) for r in fx["requests"]}
    assert json.loads((tmp_path / "qa_results.json").read_text()) == fx["results"]
    assert report.metrics["accuracy"] == fx["printed"]["Accuracy"]
    assert report.metrics["score"] == fx["printed"]["Average score"]
    assert (report.counts["yes"], report.counts["no"]) == (2, 3)
    # re-scoring the saved judge-result JSON alone gives the same numbers
    again = MSVDQA().score(tmp_path / "qa_results.json")
    assert again.metrics == report.metrics


def test_unparseable_verdicts_are_bounded_counted_and_listed(tmp_path):
    preds = [{"video_name": "v", "Q": "q?", "A": "a", "pred": f"P{i}"} for i in range(3)]
    (tmp_path / "msvd_qa_pred.json").write_text(json.dumps(preds))
    replies = {"P0": ["{'pred': 'yes', 'score': 4}"], "P1": ["{pred: yes}"], "P2": ["Sure! {'pred': 'no', 'score': 2}"]}
    with FakeJudgeServer(scripted(replies)) as server:
        report = MSVDQA(judge_attempts=2).score(tmp_path, judge=judge_for(server, tmp_path))
        assert len(server.requests) == 1 + 2 + 2  # two attempts each for the unparseable ones, never more
    assert report.counts == {"judged": 1, "yes": 1, "no": 0, "unparseable": 2}
    assert report.metrics == {"accuracy": 1.0, "score": 4.0}
    listed = json.loads((tmp_path / "qa_unparseable.json").read_text())
    assert sorted(listed) == ["v_1", "v_2"] and listed["v_1"]["replies"] == ["{pred: yes}", "{pred: yes}"]
    assert any("unparseable" in n for n in report.notes)


@pytest.mark.parametrize(
    "reply, parsed",
    [
        ("{'score': 4}", {"score": 4}),
        ("  {'score': 3.8}", {"score": 3.8}),
        ('{"score": "2"}', {"score": "2"}),
        ("{'score': 'four'}", None),
        ("Score: 4", None),
        ("{'score': 4", None),
        ("[4]", None),
        ("", None),
        ("{'score': {1, 2}}", None),
    ],
)
def test_verdict_parsing(reply, parsed):
    assert gpt_judge.parse_verdict(reply) == parsed


def test_qa_verdict_needs_pred():
    assert gpt_judge.parse_verdict("{'score': 3}", needs_pred=True) is None
    assert gpt_judge.parse_verdict("{'pred': 'yes', 'score': 3}", needs_pred=True) == {"pred": "yes", "score": 3}


def test_verdict_cache_makes_reruns_free(tmp_path):
    preds = [{"video_name": "v", "Q": "q?", "A": "a", "pred": "p"}]
    (tmp_path / "msvd_qa_pred.json").write_text(json.dumps(preds))
    with FakeJudgeServer(lambda m: "{'pred': 'yes', 'score': 5}") as server:
        MSVDQA().score(tmp_path, judge=judge_for(server, tmp_path))
        (tmp_path / "qa_results.json").unlink()
        report = MSVDQA().score(tmp_path, judge=judge_for(server, tmp_path))  # a fresh judge, same cache file
        assert len(server.requests) == 1
        (tmp_path / "qa_results.json").unlink()
        other = build_judge(JudgeConfig(model="another-model", base_url=server.base_url, cache=tmp_path / "verdicts.jsonl"))
        MSVDQA().score(tmp_path, judge=other)
        assert len(server.requests) == 2  # the model is part of the request's hash
    assert report.metrics["score"] == 5.0


def test_transport_errors_are_retried_a_bounded_number_of_times(tmp_path):
    calls = {"n": 0}

    def flaky(messages):
        calls["n"] += 1
        return (503, "busy") if calls["n"] <= 2 else "{'score': 3}"

    preds = [{"video_name": "v", "Q": "q", "A": "a", "pred": "p"}]
    (tmp_path / "generic_pred.json").write_text(json.dumps(preds))
    with FakeJudgeServer(flaky) as server:
        judge_prediction_files(tmp_path, judge_for(server, tmp_path, max_retries=3), criteria=[gpt_judge.CORRECTNESS])
    assert calls["n"] == 3 and json.loads((tmp_path / "correctness_results.json").read_text())["v_0"][0] == {"score": 3}

    with FakeJudgeServer(lambda m: (500, "down")) as server:
        with pytest.raises(JudgeError, match="no answer after 2 attempts"):
            judge_prediction_files(tmp_path, judge_for(server, tmp_path / "x", max_retries=2), criteria=[gpt_judge.DETAIL])
        assert len(server.requests) == 2
    with FakeJudgeServer(lambda m: (401, "bad key")) as server:
        with pytest.raises(JudgeError, match="HTTP 401"):
            judge_prediction_files(tmp_path, judge_for(server, tmp_path / "y"), criteria=[gpt_judge.CONTEXT])
        assert len(server.requests) == 1  # not worth retrying


def test_local_chatmodel_judge(tiny_chat, tmp_path):
    preds = [{"video_name": "v", "Q": "q", "A": "a", "pred": "p"}]
    (tmp_path / "generic_pred.json").write_text(json.dumps(preds))
    judge = build_judge(JudgeConfig(kind="local", model="tiny", max_tokens=8, cache=tmp_path / "local.jsonl"))
    judge._chat = tiny_chat  # an already loaded model instead of loading by name
    judge_prediction_files(tmp_path, judge, criteria=[gpt_judge.CORRECTNESS], attempts=2)
    report = VideoChatGPTBench().score(tmp_path)
    # an untrained tiny model writes no Python dictionary: counted, not dropped
    assert report.counts["correctness_judged"] + report.counts["correctness_unparseable"] == 1
    assert len(judge.cache) == 2 if report.counts["correctness_unparseable"] else 1


def test_judge_result_files_are_checked(tmp_path):
    (tmp_path / "correctness_results.json").write_text('{"v_0": [{"scores": 1}, {}]}')
    with pytest.raises(ItemError, match="entry 'v_0'"):
        VideoChatGPTBench().score(tmp_path)
    (tmp_path / "correctness_results.json").write_text("{not json")
    with pytest.raises(ItemError, match="not valid JSON"):
        VideoChatGPTBench().score(tmp_path)


def test_run_folder_without_judge_reports_unavailable(tmp_path):
    report = VideoChatGPTBench().score(tmp_path)
    assert set(report.unavailable) == {c.name for c in gpt_judge.BENCHMARK_CRITERIA} and not report.metrics


def test_official_keys():
    assert gpt_judge.official_keys(["a", "b", "a", "a"]) == ["a_0", "b_0", "a_1", "a_2"]


def test_changed_predictions_drop_stale_judge_results(tmp_path):
    from mico_chat.eval.benchmarks.gpt_judge import QA, write_predictions

    entries = [{"video_name": "v", "Q": "q", "A": "a", "pred": "p"}]
    write_predictions(tmp_path / "msvd_qa_pred.json", entries, [QA])
    (tmp_path / "qa_results.json").write_text('{"v_0": [{"pred": "yes", "score": 5}, {}]}')
    write_predictions(tmp_path / "msvd_qa_pred.json", entries, [QA])  # same predictions: results stay
    assert (tmp_path / "qa_results.json").is_file()
    write_predictions(tmp_path / "msvd_qa_pred.json", [{**entries[0], "pred": "other"}], [QA])
    assert not (tmp_path / "qa_results.json").exists()  # they judged other predictions
