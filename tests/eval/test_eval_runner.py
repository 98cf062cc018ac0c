"""The runner end to end on every mini suite with the tiny model: official outputs, results files,
offline re-scoring parity, prediction cache and resume, batching, command line."""

import json

import pytest
from helpers.fake_judge import FakeJudgeServer
from mico_chat.eval.cache import PredictionCache
from mico_chat.eval.items import ItemError
from mico_chat.eval.judges import JudgeConfig, build_judge
from mico_chat.eval.registry import benchmark_names, get_task
from mico_chat.eval.runner import PREDICTIONS_FILE, evaluate


@pytest.fixture(scope="module")
def judge_server():
    with FakeJudgeServer(lambda messages: "{'pred': 'yes', 'score': 3}") as server:
        yield server


@pytest.mark.parametrize("name", benchmark_names())
def test_benchmark_end_to_end(name, tiny_chat, mini_data, judge_server, tmp_path):
    bench = get_task(name)()
    judge = None
    if bench.config.needs_judge:
        judge = build_judge(JudgeConfig(model="gpt-test", base_url=judge_server.base_url, cache=tmp_path / "v.jsonl"))
    result = evaluate(bench, tiny_chat, data=mini_data[name], out=tmp_path / "run", batch_size=4, judge=judge, progress=False)
    payload = json.loads(result.results.read_text())
    assert payload["benchmark"] == name
    assert payload["generation"]["temperature"] == 0 and payload["generation"]["max_new_tokens"] == bench.config.max_new_tokens
    assert payload["model"]["name"] == "tiny" and len(payload["data"]["checksum_sha256"]) == 64
    assert payload["scores"]["rules"] and payload["scores"]["metrics"]
    assert (tmp_path / "run" / "results.md").read_text().startswith(f"# {bench.config.title}")
    assert (tmp_path / "run" / "results.png").stat().st_size > 1000
    assert result.generated == len(result.predictions) > 0
    # Re-scoring the written files offline gives exactly the run's numbers.
    rescored = get_task(name)().score(result.outputs)
    assert rescored.metrics == result.report.metrics and rescored.counts == result.report.counts
    if bench.config.needs_judge:
        assert all(v == 3.0 for k, v in result.report.metrics.items() if k != "accuracy")


def test_resume_after_crash(tiny_chat, mini_data, tmp_path):
    bench = get_task("mme")()

    class Crashing:
        """The real model, until the third generate call."""

        def __init__(self, chat):
            self.chat, self.calls = chat, 0

        def describe(self):
            return self.chat.describe()

        def generate(self, conversations, settings):
            self.calls += 1
            if self.calls == 3:
                raise KeyboardInterrupt
            return self.chat.generate(conversations, settings)

    with pytest.raises(KeyboardInterrupt):
        evaluate(bench, Crashing(tiny_chat), data=mini_data["mme"], out=tmp_path / "run", batch_size=4, progress=False)
    lines = (tmp_path / "run" / PREDICTIONS_FILE).read_text().splitlines()
    assert len(lines) == 1 + 8  # header + two batches, written as they finished
    resumed = evaluate(bench, tiny_chat, data=mini_data["mme"], out=tmp_path / "run", batch_size=4, progress=False)
    assert (resumed.resumed, resumed.generated) == (8, 20)
    fresh = evaluate(bench, tiny_chat, data=mini_data["mme"], out=tmp_path / "fresh", batch_size=4, progress=False)
    assert {k: p.text for k, p in resumed.predictions.items()} == {k: p.text for k, p in fresh.predictions.items()}
    again = evaluate(bench, tiny_chat, data=mini_data["mme"], out=tmp_path / "run", batch_size=4, progress=False)
    assert again.generated == 0 and again.report.metrics == fresh.report.metrics


def test_torn_cache_line_is_redone(tmp_path):
    from mico_chat.eval.items import Prediction

    cache = PredictionCache(tmp_path / "p.jsonl", {"model": "m"})
    cache.add([Prediction("a", "yes"), Prediction("b", "no")])
    with (tmp_path / "p.jsonl").open("a") as f:
        f.write('{"id": "c", "te')  # a crash mid-write
    reopened = PredictionCache(tmp_path / "p.jsonl", {"model": "m"})
    assert sorted(reopened.predictions) == ["a", "b"]
    with pytest.raises(ItemError, match="different model"):
        PredictionCache(tmp_path / "p.jsonl", {"model": "other"})
    assert len(PredictionCache(tmp_path / "p.jsonl", {"model": "other"}, overwrite=True)) == 0


def test_changed_settings_are_refused(tiny_chat, mini_data, tmp_path):
    from mico_chat.api import GenerationSettings

    bench = get_task("clotho_aqa")()
    evaluate(bench, tiny_chat, data=mini_data["clotho_aqa"], out=tmp_path, progress=False)
    with pytest.raises(ItemError, match="different generation"):
        evaluate(
            bench,
            tiny_chat,
            data=mini_data["clotho_aqa"],
            out=tmp_path,
            settings=GenerationSettings(max_new_tokens=3),
            progress=False,
        )
    run = evaluate(
        bench,
        tiny_chat,
        data=mini_data["clotho_aqa"],
        out=tmp_path,
        settings=GenerationSettings(max_new_tokens=3),
        overwrite=True,
        progress=False,
    )
    assert run.generated == 3


def test_batched_equals_one_by_one(tiny_chat, mini_data, tmp_path):
    bench = get_task("mmbench")()
    one = evaluate(bench, tiny_chat, data=mini_data["mmbench"], out=tmp_path / "b1", batch_size=1, progress=False)
    many = evaluate(bench, tiny_chat, data=mini_data["mmbench"], out=tmp_path / "b8", batch_size=8, progress=False)
    assert {k: p.text for k, p in one.predictions.items()} == {k: p.text for k, p in many.predictions.items()}


def test_limit_and_checksum(tiny_chat, mini_data, tmp_path):
    bench = get_task("mme")()
    run = evaluate(bench, tiny_chat, data=mini_data["mme"], out=tmp_path / "a", limit=3, progress=False)
    assert len(run.predictions) == 4  # whole image pairs
    payload = json.loads(run.results.read_text())
    assert payload["data"]["limit"] == 3 and any("partial" in n for n in payload["scores"]["notes"])


def test_command_line(tiny_chat, mini_data, tmp_path, capsys):
    from mico_chat.cli import main

    model_dir = tmp_path / "tiny-model"
    tiny_chat.save_pretrained(model_dir)
    assert main(["eval", "list"]) == 0
    assert "mmbench" in capsys.readouterr().out
    out = tmp_path / "run"
    code = main(
        ["eval", "mme", "--model", str(model_dir), "--data", str(mini_data["mme"]), "--out", str(out), "--batch-size", "4"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "perception:" in printed and "28 generated" in printed
    assert main(["eval", "score", "mme", str(out), "--json", str(tmp_path / "s.json")]) == 0
    rescored = capsys.readouterr().out
    line = lambda text, key: next(row for row in text.splitlines() if row.startswith(key))  # noqa: E731
    assert line(rescored, "perception:") == line(printed, "perception:")
    assert line(rescored, "cognition:") == line(printed, "cognition:")
    saved = json.loads((tmp_path / "s.json").read_text())["scores"]["metrics"]
    assert saved == json.loads((out / "results.json").read_text())["scores"]["metrics"]
    # bad input: one line, exit code 2
    assert main(["eval", "score", "mmbench", str(tmp_path / "nowhere.tsv")]) == 2
    assert "nowhere.tsv: no such MMBench TSV" in capsys.readouterr().err
    assert main(["eval", "mmbench", "--model", str(model_dir), "--data", str(mini_data["mmbench"]), "--option", "bogus=1"]) == 2
    assert "unknown option" in capsys.readouterr().err


def test_mini_command(tmp_path, capsys):
    from mico_chat.cli import main

    assert main(["eval", "mini", str(tmp_path), "--only", "mme,clotho_aqa"]) == 0
    assert (tmp_path / "mme" / "MME_Benchmark_release_version" / "artwork" / "questions_answers_YN").is_dir()
    assert (tmp_path / "clotho_aqa" / "clotho_aqa_test.csv").is_file()
