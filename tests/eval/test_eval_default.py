"""The real embedded default through the whole path on mini suites of each media kind: image
(MME), video with its audio track (MSVD-QA, judged), audio (ClothoAQA); official files written and
re-scored offline. Short replies keep it to seconds of generation."""

import json

import pytest
from helpers.fake_judge import FakeJudgeServer
from mico_chat.eval.judges import JudgeConfig, build_judge
from mico_chat.eval.registry import get_task
from mico_chat.eval.runner import evaluate

TORCH_THREADS = 0  # keep the machine's thread count: the 135M LLM gains from it

pytestmark = pytest.mark.slow


def test_default_model_mini_suites(mini_data, tmp_path):
    from mico_chat.api import ChatModel, GenerationSettings

    chat = ChatModel.load("default")
    settings = GenerationSettings(max_new_tokens=8)
    with FakeJudgeServer(lambda messages: "{'pred': 'no', 'score': 1}") as server:
        judge = build_judge(JudgeConfig(model="gpt-test", base_url=server.base_url))
        for name, limit in (("mme", 2), ("msvd_qa", 1), ("clotho_aqa", 1)):
            bench = get_task(name)()
            out = tmp_path / name
            result = evaluate(
                bench,
                chat,
                data=mini_data[name],
                out=out,
                limit=limit,
                batch_size=2,
                settings=settings,
                judge=judge,
                progress=False,
            )
            payload = json.loads(result.results.read_text())
            assert payload["model"]["llm"] == "smollm2-135m-instruct" and payload["generation"]["max_new_tokens"] == 8
            assert all(p.prompt_tokens > 0 for p in result.predictions.values())
            assert get_task(name)().score(result.outputs).metrics == result.report.metrics, name
        assert len(server.requests) == 1
    lines = (tmp_path / "mme" / "mme_results" / "existence.txt").read_text().splitlines()
    assert len(lines) == 2 and all(len(line.split("\t")) == 4 for line in lines)
    assert json.loads((tmp_path / "msvd_qa" / "results.json").read_text())["scores"]["metrics"] == {"accuracy": 0.0, "score": 1.0}
