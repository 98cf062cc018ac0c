# ruff: noqa: E501  (task YAML lines)
"""MiCo-Chat as an lm-eval model: a local MMLU-format task and a generation task run offline
through lm-eval's own runner, and the adapter's numbers equal a direct computation."""

import json

import pytest
import torch

pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402
from mico_chat.eval.lm_eval_adapter import MiCoChatLM, run_lm_eval  # noqa: E402

MMLU_YAML = """task: tiny_mmlu
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question.strip()}}}}\\nA. {{{{choices[0]}}}}\\nB. {{{{choices[1]}}}}\\nC. {{{{choices[2]}}}}\\nD. {{{{choices[3]}}}}\\nAnswer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

GEN_YAML = """task: tiny_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "Q: {{{{question}}}}\\nA:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 6
  do_sample: false
filter_list:
  - name: strip
    filter:
      - function: remove_whitespace
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

QUESTIONS = [
    {"question": "What is the capital of France?", "choices": ["Paris", "Rome", "Berlin", "Madrid"], "answer": 0},
    {"question": "How many beeps do you hear?", "choices": ["one", "two", "three", "four"], "answer": 2},
    {"question": "What colour is the circle?", "choices": ["red", "green", "blue", "white"], "answer": 1},
    {"question": "Which shape moves?", "choices": ["circle", "star", "triangle", "square"], "answer": 3},
]


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm_eval_tasks")
    (root / "mmlu.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    (root / "gen.jsonl").write_text(
        "".join(json.dumps({"question": q["question"], "answer": q["choices"][q["answer"]]}) + "\n" for q in QUESTIONS)
    )
    (root / "tiny_mmlu.yaml").write_text(MMLU_YAML.format(data=root / "mmlu.jsonl"))
    (root / "tiny_gen.yaml").write_text(GEN_YAML.format(data=root / "gen.jsonl"))
    return root


def direct_logprob(chat, context: str, continuation: str) -> float:
    """Sum log p(continuation | context) straight from the LLM, tokenising as lm-eval does."""
    tok = chat.processor.tokenizer
    whole, ctx = tok.encode(context + continuation), tok.encode(context)
    with torch.no_grad():
        logits = chat.model.language_model(input_ids=torch.tensor([whole])).logits[0]
    logprobs = torch.log_softmax(logits.float(), -1)
    return float(sum(logprobs[i - 1, whole[i]] for i in range(len(ctx), len(whole))))


def test_mmlu_format_task_runs_offline_and_matches_direct_scoring(tiny_chat, tasks_dir):
    results = run_lm_eval(tasks=["tiny_mmlu"], include_path=tasks_dir, chat=tiny_chat, batch_size=3)
    acc = results["results"]["tiny_mmlu"]["acc,none"]
    expected = []
    for q in QUESTIONS:
        prompt = (
            f"{q['question']}\nA. {q['choices'][0]}\nB. {q['choices'][1]}\nC. {q['choices'][2]}\nD. {q['choices'][3]}\nAnswer:"
        )
        scores = [direct_logprob(tiny_chat, prompt, f" {letter}") for letter in "ABCD"]
        expected.append(scores.index(max(scores)) == q["answer"])
    assert acc == pytest.approx(sum(expected) / len(expected))


def test_generation_task_with_whitespace_filter(tiny_chat, tasks_dir):
    results = run_lm_eval(tasks=["tiny_gen"], include_path=tasks_dir, chat=tiny_chat)
    assert 0.0 <= results["results"]["tiny_gen"]["exact_match,strip"] <= 1.0


def test_adapter_methods(tiny_chat):
    lm = MiCoChatLM(chat=tiny_chat, batch_size=2)
    requests = [
        Instance("loglikelihood", {}, ("The capital of France is", " Paris"), 0),
        Instance("loglikelihood", {}, ("", "hello world"), 1),
    ]
    (ll, greedy), (ll_empty, _) = lm.loglikelihood(requests, disable_tqdm=True)
    assert ll == pytest.approx(direct_logprob(tiny_chat, "The capital of France is", " Paris"), abs=1e-4)
    assert isinstance(greedy, bool) and ll_empty < 0
    text = "What is the capital of France? The capital of France is Paris."
    rolling = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)], disable_tqdm=True)[0]
    bos = tiny_chat.processor.tokenizer.bos_token
    assert rolling == pytest.approx(direct_logprob(tiny_chat, bos, text) if bos else rolling, abs=1e-3)
    lm_short = MiCoChatLM(chat=tiny_chat, max_length=8)  # forces several windows: every token still scored once
    assert lm_short.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)], disable_tqdm=True)[0] < 0
    outs = lm.generate_until(
        [
            Instance("generate_until", {}, ("Q: What is the capital of France?\nA:", {"until": ["\n"], "max_gen_toks": 5}), i)
            for i in range(3)
        ],
        disable_tqdm=True,
    )
    assert len(set(outs)) == 1 and "\n" not in outs[0]  # greedy, batched, cut at the stop string
    assert lm.apply_chat_template([{"role": "user", "content": "hi"}]).endswith("<|im_start|>assistant\n")


def test_unknown_task_is_a_clear_error(tiny_chat, tasks_dir):
    with pytest.raises(FileNotFoundError, match="no task"):
        run_lm_eval(tasks=["nope"], include_path=tasks_dir, chat=tiny_chat)
