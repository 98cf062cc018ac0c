# ruff: noqa: E501  (the official prompts are kept line for line, as in the official scripts)
"""The judge prompts and verdict parsing of Video-ChatGPT's quantitative evaluation, shared by the
Video-ChatGPT benchmark and the zero-shot video QA benchmarks (MSVD-QA, MSRVTT-QA, ActivityNet-QA).

The prompts are those of mbzuai-oryx/Video-ChatGPT at commit
659e04b2ce4bb518b663eb06f7db27b4971e8bde, ``quantitative_evaluation/evaluate_benchmark_{1..5}_*.py``
and ``evaluate_activitynet_qa.py`` (Video-LLaVA's ``eval_video_qa.py`` uses the same QA prompt),
byte for byte; a test compares them with the requests the official scripts send.

Judge-result JSON (what the official scripts write with ``--output_json``, and what
``mico-chat eval score`` reads): ``{key: [verdict, qa_set]}`` where ``key`` is
``<video_name>_<n>`` (n counts that video's earlier questions), ``verdict`` the judge's reply read
with ``ast.literal_eval`` (``{'score': 4}`` or ``{'pred': 'yes', 'score': 4}``) and ``qa_set`` the
question(s), answer and prediction(s). Scores follow the official scripts: the mean of
``int(verdict['score'])`` over all entries; QA accuracy = yes / (yes + no), where a verdict ``pred``
containing "yes" counts yes, else one containing "no" counts no (case-insensitive).

Differences from the official scripts, all about failure handling: the judge is asked at
temperature 0 (the scripts leave OpenAI's default); a reply that is not such a dictionary is
re-asked a bounded number of times and then reported in ``<criterion>_unparseable.json`` and in
the ``unparseable`` count, where the scripts would retry forever.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..items import ItemError
from ..judges import Judge, ask_and_parse
from ..scores import ScoreReport, write_json

VIDEO_CHATGPT_COMMIT = "659e04b2ce4bb518b663eb06f7db27b4971e8bde"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def _evaluation_request(question: str, answer: str, pred: str, what: str, tail: str) -> str:
    return (
        "Please evaluate the following video-based question-answer pair:\n\n"
        f"Question: {question}\n"
        f"Correct Answer: {answer}\n"
        f"Predicted Answer: {pred}\n\n"
        f"{what}"
        f"{tail}"
        "DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only provide the Python dictionary string. "
        "For example, your response should look like this: {''score': 4.8}."
    )


@dataclass(frozen=True)
class Criterion:
    """One judged quality: its system prompt, its user message, and where its results go."""

    name: str
    results_file: str
    questions: str  # which question set: generic, temporal, consistency, qa
    system: str
    user: Callable[[Mapping[str, str]], str]
    script: str

    def messages(self, qa_set: Mapping[str, str]) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user(qa_set)}]

    @property
    def rule(self) -> str:
        return f"Video-ChatGPT {self.script} @ {VIDEO_CHATGPT_COMMIT}"


CORRECTNESS = Criterion(
    name="correctness",
    results_file="correctness_results.json",
    questions="generic",
    script="quantitative_evaluation/evaluate_benchmark_1_correctness.py",
    system=(
        "You are an intelligent chatbot designed for evaluating the factual accuracy of generative outputs for video-based question-answer pairs. "
        "Your task is to compare the predicted answer with the correct answer and determine if they are factually consistent. Here's how you can accomplish the task:"
        "------"
        "##INSTRUCTIONS: "
        "- Focus on the factual consistency between the predicted answer and the correct answer. The predicted answer should not contain any misinterpretations or misinformation.\n"
        "- The predicted answer must be factually accurate and align with the video content.\n"
        "- Consider synonyms or paraphrases as valid matches.\n"
        "- Evaluate the factual accuracy of the prediction compared to the answer."
    ),
    user=lambda qa: _evaluation_request(
        qa["q"],
        qa["a"],
        qa["pred"],
        "Provide your evaluation only as a factual accuracy score where the factual accuracy score is an integer value between 0 and 5, with 5 indicating the highest level of factual consistency. ",
        "Please generate the response in the form of a Python dictionary string with keys 'score', where its value is the factual accuracy score in INTEGER, not STRING.",
    ),
)

DETAIL = Criterion(
    name="detail_orientation",
    results_file="detailed_orientation_results.json",
    questions="generic",
    script="quantitative_evaluation/evaluate_benchmark_2_detailed_orientation.py",
    system=(
        "You are an intelligent chatbot designed for evaluating the detail orientation of generative outputs for video-based question-answer pairs. "
        "Your task is to compare the predicted answer with the correct answer and determine its level of detail, considering both completeness and specificity. Here's how you can accomplish the task:"
        "------"
        "##INSTRUCTIONS: "
        "- Check if the predicted answer covers all major points from the video. The response should not leave out any key aspects.\n"
        "- Evaluate whether the predicted answer includes specific details rather than just generic points. It should provide comprehensive information that is tied to specific elements of the video.\n"
        "- Consider synonyms or paraphrases as valid matches.\n"
        "- Provide a single evaluation score that reflects the level of detail orientation of the prediction, considering both completeness and specificity."
    ),
    user=lambda qa: _evaluation_request(
        qa["q"],
        qa["a"],
        qa["pred"],
        "Provide your evaluation only as a detail orientation score where the detail orientation score is an integer value between 0 and 5, with 5 indicating the highest level of detail orientation. ",
        "Please generate the response in the form of a Python dictionary string with keys 'score', where its value is the detail orientation score in INTEGER, not STRING.",
    ),
)

CONTEXT = Criterion(
    name="contextual_understanding",
    results_file="contextual_understanding_results.json",
    questions="generic",
    script="quantitative_evaluation/evaluate_benchmark_3_context.py",
    system=(
        "You are an intelligent chatbot designed for evaluating the contextual understanding of generative outputs for video-based question-answer pairs. "
        "Your task is to compare the predicted answer with the correct answer and determine if the generated response aligns with the overall context of the video content. Here's how you can accomplish the task:"
        "------"
        "##INSTRUCTIONS: "
        "- Evaluate whether the predicted answer aligns with the overall context of the video content. It should not provide information that is out of context or misaligned.\n"
        "- The predicted answer must capture the main themes and sentiments of the video.\n"
        "- Consider synonyms or paraphrases as valid matches.\n"
        "- Provide your evaluation of the contextual understanding of the prediction compared to the answer."
    ),
    user=lambda qa: _evaluation_request(
        qa["q"],
        qa["a"],
        qa["pred"],
        "Provide your evaluation only as a contextual understanding score where the contextual understanding score is an integer value between 0 and 5, with 5 indicating the highest level of contextual understanding. ",
        "Please generate the response in the form of a Python dictionary string with keys 'score', where its value is contextual understanding score in INTEGER, not STRING.",
    ),
)

TEMPORAL = Criterion(
    name="temporal_understanding",
    results_file="temporal_understanding_results.json",
    questions="temporal",
    script="quantitative_evaluation/evaluate_benchmark_4_temporal.py",
    system=(
        "You are an intelligent chatbot designed for evaluating the temporal understanding of generative outputs for video-based question-answer pairs. "
        "Your task is to compare the predicted answer with the correct answer and determine if they correctly reflect the temporal sequence of events in the video content. Here's how you can accomplish the task:"
        "------"
        "##INSTRUCTIONS: "
        "- Focus on the temporal consistency between the predicted answer and the correct answer. The predicted answer should correctly reflect the sequence of events or details as they are presented in the video content.\n"
        "- Consider synonyms or paraphrases as valid matches, but only if the temporal order is maintained.\n"
        "- Evaluate the temporal accuracy of the prediction compared to the answer."
    ),
    user=lambda qa: _evaluation_request(
        qa["q"],
        qa["a"],
        qa["pred"],
        "Provide your evaluation only as a temporal accuracy score where the temporal accuracy score is an integer value between 0 and 5, with 5 indicating the highest level of temporal consistency. ",
        "Please generate the response in the form of a Python dictionary string with keys 'score', where its value is the temporal accuracy score in INTEGER, not STRING.",
    ),
)


def _consistency_request(qa: Mapping[str, str]) -> str:
    return (
        "Please evaluate the following video-based question-answer pair:\n\n"
        f"Question 1: {qa['q1']}\n"
        f"Question 2: {qa['q2']}\n"
        f"Correct Answer: {qa['a']}\n"
        f"Predicted Answer to Question 1: {qa['pred1']}\n"
        f"Predicted Answer to Question 2: {qa['pred2']}\n\n"
        "Provide your evaluation only as a consistency score where the consistency score is an integer value between 0 and 5, with 5 indicating the highest level of consistency. "
        "Please generate the response in the form of a Python dictionary string with keys 'score', where its value is the consistency score in INTEGER, not STRING."
        "DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only provide the Python dictionary string. "
        "For example, your response should look like this: {''score': 4.8}."
    )


CONSISTENCY = Criterion(
    name="consistency",
    results_file="consistency_results.json",
    questions="consistency",
    script="quantitative_evaluation/evaluate_benchmark_5_consistency.py",
    system=(
        "You are an intelligent chatbot designed for evaluating the consistency of generative outputs for similar video-based question-answer pairs. "
        "You will be given two very similar questions, a common answer common to both the questions and predicted answers for the two questions ."
        "Your task is to compare the predicted answers for two very similar question, with a common correct answer and determine if they are consistent. Here's how you can accomplish the task:"
        "------"
        "##INSTRUCTIONS: "
        "- Focus on the consistency between the two predicted answers and the correct answer. Both predicted answers should correspond to the correct answer and to each other, and should not contain any contradictions or significant differences in the conveyed information.\n"
        "- Both predicted answers must be consistent with each other and the correct answer, in terms of the information they provide about the video content.\n"
        "- Consider synonyms or paraphrases as valid matches, but only if they maintain the consistency in the conveyed information.\n"
        "- Evaluate the consistency of the two predicted answers compared to the correct answer."
    ),
    user=_consistency_request,
)


def _qa_request(qa: Mapping[str, str]) -> str:
    return (
        "Please evaluate the following video-based question-answer pair:\n\n"
        f"Question: {qa['q']}\n"
        f"Correct Answer: {qa['a']}\n"
        f"Predicted Answer: {qa['pred']}\n\n"
        "Provide your evaluation only as a yes/no and score where the score is an integer value between 0 and 5, with 5 indicating the highest meaningful match. "
        "Please generate the response in the form of a Python dictionary string with keys 'pred' and 'score', where value of 'pred' is  a string of 'yes' or 'no' and value of 'score' is in INTEGER, not STRING."
        "DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only provide the Python dictionary string. "
        "For example, your response should look like this: {'pred': 'yes', 'score': 4.8}."
    )


QA = Criterion(
    name="qa",
    results_file="qa_results.json",
    questions="qa",
    script="quantitative_evaluation/evaluate_activitynet_qa.py",
    system=(
        "You are an intelligent chatbot designed for evaluating the correctness of generative outputs for question-answer pairs. "
        "Your task is to compare the predicted answer with the correct answer and determine if they match meaningfully. Here's how you can accomplish the task:"
        "------"
        "##INSTRUCTIONS: "
        "- Focus on the meaningful match between the predicted answer and the correct answer.\n"
        "- Consider synonyms or paraphrases as valid matches.\n"
        "- Evaluate the correctness of the prediction compared to the answer."
    ),
    user=_qa_request,
)

BENCHMARK_CRITERIA: tuple[Criterion, ...] = (CORRECTNESS, DETAIL, CONTEXT, TEMPORAL, CONSISTENCY)


# ---------------------------------------------------------------------------- verdicts
def parse_verdict(reply: str, *, needs_pred: bool = False) -> dict[str, Any] | None:
    """The judge's reply as the official scripts read it (``ast.literal_eval``), or ``None``.

    Accepted only when the official scoring can use it: a dictionary whose ``score`` ``int()``
    accepts, with a string ``pred`` for QA, and JSON-serialisable (the scripts ``json.dump`` it).
    """
    try:
        verdict = ast.literal_eval(reply)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(verdict, dict) or "score" not in verdict:
        return None
    try:
        int(verdict["score"])
        json.dumps(verdict)
    except (TypeError, ValueError, OverflowError):
        return None
    if needs_pred and not isinstance(verdict.get("pred"), str):
        return None
    return verdict


def official_keys(video_names: Sequence[str]) -> list[str]:
    """``<video_name>_<n>`` keys, n counting each video's earlier entries (the scripts' naming)."""
    counts: dict[str, int] = {}
    keys = []
    for name in video_names:
        counts[name] = counts.get(name, -1) + 1
        keys.append(f"{name}_{counts[name]}")
    return keys


def judge_entries(
    judge: Judge,
    criterion: Criterion,
    entries: Sequence[tuple[str, dict[str, str]]],
    out_dir: Path,
    *,
    attempts: int = 3,
) -> Path:
    """Judge ``(key, qa_set)`` entries; write ``<results_file>`` (official) and the unparseable ones."""
    needs_pred = criterion.questions == "qa"
    verdicts = ask_and_parse(
        judge,
        [criterion.messages(qa) for _, qa in entries],
        lambda reply: parse_verdict(reply, needs_pred=needs_pred),
        attempts=attempts,
        progress=f"judge {criterion.name}",
    )
    results = {key: [v.value, qa] for (key, qa), v in zip(entries, verdicts) if v.parsed}
    unparseable = {key: {"qa_set": qa, "replies": v.replies} for (key, qa), v in zip(entries, verdicts) if not v.parsed}
    path = write_json(out_dir / criterion.results_file, results)
    write_json(out_dir / unparseable_file(criterion), unparseable)
    return path


def write_predictions(path: Path, entries: list[dict[str, Any]], criteria: Sequence[Criterion]) -> None:
    """Write an official prediction file; if its content changed, drop the now stale judge results."""
    text = json.dumps(entries, indent=2, ensure_ascii=False) + "\n"
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    for criterion in criteria:
        for name in (criterion.results_file, unparseable_file(criterion)):
            (path.parent / name).unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def unparseable_file(criterion: Criterion) -> str:
    return criterion.results_file.replace("_results.json", "_unparseable.json")


def score_results_file(path: Path, criterion: Criterion) -> ScoreReport:
    """Score an official judge-result JSON as the official script's last step does."""
    try:
        combined = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ItemError(f"{path}: no such judge-result file") from None
    except json.JSONDecodeError as err:
        raise ItemError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(combined, dict):
        raise ItemError(f"{path}: expected a JSON object {{key: [verdict, qa_set]}}")
    report = ScoreReport(rules={criterion.name: criterion.rule})
    score_sum = 0
    yes = no = 0
    for key, entry in combined.items():
        try:
            verdict = entry[0]
            score_sum += int(verdict["score"])
            if criterion.questions == "qa":
                pred = verdict["pred"]
                if "yes" in pred.lower():
                    yes += 1
                elif "no" in pred.lower():
                    no += 1
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as err:
            raise ItemError(f"{path}: entry {key!r} is not [{{'score': int, ...}}, qa_set] ({type(err).__name__})") from None
    count = len(combined)
    unparseable_path = path.with_name(unparseable_file(criterion)) if path.name == criterion.results_file else None
    unparseable = 0
    if unparseable_path is not None and unparseable_path.is_file():
        unparseable = len(json.loads(unparseable_path.read_text(encoding="utf-8")))
    if criterion.questions == "qa":
        report.metrics["accuracy"] = yes / (yes + no) if yes + no else float("nan")
        report.metrics["score"] = score_sum / count if count else float("nan")
        report.counts = {"judged": count, "yes": yes, "no": no, "unparseable": unparseable}
    else:
        report.metrics[criterion.name] = score_sum / count if count else float("nan")
        report.counts = {criterion.name + "_judged": count, criterion.name + "_unparseable": unparseable}
    if unparseable:
        report.notes.append(
            f"{criterion.name}: {unparseable} unparseable judge verdict(s) excluded (listed in {unparseable_file(criterion)})"
        )
    return report


def find_video(video_dirs: Sequence[Path], name: str) -> Path:
    """The file of video ``name`` (with or without an extension) in the first folder holding it."""
    for directory in video_dirs:
        direct = directory / name
        if direct.is_file():
            return direct
        for suffix in VIDEO_SUFFIXES:
            candidate = directory / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
    raise ItemError(f"video {name!r} not found (.mp4/.avi/.mov/.mkv/.webm) in {', '.join(map(str, video_dirs))}")


def read_json_list(path: Path, keys: Sequence[str]) -> list[dict[str, Any]]:
    """A JSON list of objects each holding ``keys`` (ItemError naming the file and entry otherwise)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ItemError(f"{path}: no such file") from None
    except json.JSONDecodeError as err:
        raise ItemError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, list):
        raise ItemError(f"{path}: expected a JSON list")
    for n, entry in enumerate(data):
        if not isinstance(entry, dict) or any(k not in entry for k in keys):
            raise ItemError(f"{path}: entry {n} lacks {[k for k in keys if not isinstance(entry, dict) or k not in entry]}")
    return data
