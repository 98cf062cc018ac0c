"""The Video-ChatGPT quantitative benchmark (Maaz et al., 2023): five judged qualities of free-form
answers about ActivityNet videos: correctness, detail orientation, contextual understanding
(on the generic questions), temporal understanding (temporal questions), consistency (pairs of
similar questions).

Data layout as distributed: the videos (``Test_Videos/``) and the question files
``generic_qa.json`` and ``temporal_qa.json`` (lists of ``{"video_name", "Q", "A"}``) and
``consistency_qa.json`` (``{"video_name", "Q1", "Q2", "A"}``), at the top of the data folder or
in ``Benchmarking_QA/``. A missing question file skips its criteria (reported).

Outputs, in the official formats: ``generic_pred.json``, ``temporal_pred.json``,
``consistency_pred.json`` (what ``video_chatgpt/eval/run_inference_benchmark_*.py`` write: each
entry plus ``pred`` / ``pred1``, ``pred2``), and with a judge the five judge-result JSONs named
as in ``quantitative_evaluation/evaluate_benchmark.sh`` (``correctness_results.json``, ...).
Prompts and scoring: :mod:`mico_chat.eval.benchmarks.gpt_judge`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ..benchmark import Benchmark, BenchmarkConfig
from ..items import EvalItem, ItemError, MediaInput, Prediction
from ..judges import Judge
from ..minimedia import MiniItem, MiniMedia, copy_file, write_json
from ..scores import ScoreReport
from . import gpt_judge
from .gpt_judge import (
    BENCHMARK_CRITERIA,
    Criterion,
    find_video,
    judge_entries,
    official_keys,
    read_json_list,
    write_predictions,
)

QUESTION_FILES = {"generic": "generic_qa.json", "temporal": "temporal_qa.json", "consistency": "consistency_qa.json"}
PRED_FILES = {"generic": "generic_pred.json", "temporal": "temporal_pred.json", "consistency": "consistency_pred.json"}
VIDEO_DIRS = ("Test_Videos", "videos", "Videos", ".")


def _qa_set(entry: Mapping[str, str], questions: str) -> dict[str, str]:
    if questions == "consistency":
        return {"q1": entry["Q1"], "q2": entry["Q2"], "a": entry["A"], "pred1": entry["pred1"], "pred2": entry["pred2"]}
    return {"q": entry["Q"], "a": entry["A"], "pred": entry["pred"]}


def judge_prediction_files(
    directory: Path, judge: Judge, criteria: Sequence[Criterion] = BENCHMARK_CRITERIA, attempts: int = 3
) -> list[Path]:
    """Judge the official prediction files in ``directory``; returns the judge-result files written."""
    written = []
    for criterion in criteria:
        pred_path = directory / PRED_FILES[criterion.questions]
        if not pred_path.is_file():
            continue
        keys = ["Q1", "Q2", "A", "pred1", "pred2"] if criterion.questions == "consistency" else ["Q", "A", "pred"]
        entries = read_json_list(pred_path, ["video_name", *keys])
        names = official_keys([e["video_name"] for e in entries])
        written.append(
            judge_entries(
                judge,
                criterion,
                [(k, _qa_set(e, criterion.questions)) for k, e in zip(names, entries)],
                directory,
                attempts=attempts,
            )
        )
    return written


def score_judge_results(path: Path, criteria: Sequence[Criterion] = BENCHMARK_CRITERIA) -> ScoreReport:
    """Scores from judge-result JSON: a folder holding them, or one file (criterion from its name)."""
    report = ScoreReport()
    if path.is_file():
        matches = [c for c in criteria if c.results_file == path.name] or [
            c for c in criteria if c.name.split("_")[0][:6] in path.name.lower()
        ]
        if len(matches) != 1:
            raise ItemError(f"{path}: cannot tell the criterion from the file name; name it like {criteria[0].results_file}")
        report.merge(gpt_judge.score_results_file(path, matches[0]))
        return report
    found = [c for c in criteria if (path / c.results_file).is_file()]
    for criterion in found:
        report.merge(gpt_judge.score_results_file(path / criterion.results_file, criterion))
    missing = [c.name for c in criteria if c not in found]
    if missing:
        report.unavailable.update({name: "no judge results (run with --judge)" for name in missing})
    return report


class VideoChatGPTBench(Benchmark):
    """Video-ChatGPT's generative performance benchmark (five GPT-judged qualities, 0-5)."""

    config = BenchmarkConfig(
        name="videochatgpt",
        title="Video-ChatGPT benchmark",
        max_new_tokens=256,
        needs_judge=True,
        options={"judge_attempts": 3},
    )
    rules = {c.name: c.rule for c in BENCHMARK_CRITERIA}
    score_input = "a run folder (prediction files, judge-result JSONs), or one judge-result JSON"

    def _question_file(self, data: Path, kind: str) -> Path | None:
        for candidate in (data / QUESTION_FILES[kind], data / "Benchmarking_QA" / QUESTION_FILES[kind]):
            if candidate.is_file():
                return candidate
        return None

    def annotation_files(self, data: Path) -> list[Path]:
        return [p for kind in QUESTION_FILES if (p := self._question_file(data, kind)) is not None]

    def load(self, data: Path) -> list[EvalItem]:
        if not data.is_dir():
            raise ItemError(f"{data}: no such Video-ChatGPT data folder")
        video_dirs = [data / d for d in VIDEO_DIRS if (data / d).is_dir()]
        items: list[EvalItem] = []
        for kind in QUESTION_FILES:
            path = self._question_file(data, kind)
            if path is None:
                continue
            keys = ["video_name", "Q1", "Q2", "A"] if kind == "consistency" else ["video_name", "Q", "A"]
            for n, entry in enumerate(read_json_list(path, keys)):
                video = (MediaInput("video", find_video(video_dirs, str(entry["video_name"]))),)
                questions = [("1", entry["Q1"]), ("2", entry["Q2"])] if kind == "consistency" else [("", entry["Q"])]
                for suffix, question in questions:
                    items.append(
                        EvalItem(
                            id=f"{kind}/{n}" + (f"/{suffix}" if suffix else ""),
                            prompt=str(question) + self.config.prompt_suffix,
                            media=video,
                            reference=entry["A"],
                            meta={"questions": kind, "entry": n, "sample": dict(entry)},
                        )
                    )
        if not items:
            raise ItemError(f"{data}: none of {', '.join(QUESTION_FILES.values())} found (top level or Benchmarking_QA/)")
        return items

    def select(self, items: Sequence[EvalItem], limit: int | None) -> list[EvalItem]:
        """The first ``limit`` items, keeping both questions of a consistency pair."""
        if limit is None or limit >= len(items):
            return list(items)
        chosen = list(items[:limit])
        if chosen[-1].id.endswith("/1"):
            chosen.append(items[limit])
        return chosen

    def write_outputs(
        self, items: Sequence[EvalItem], predictions: Mapping[str, Prediction], out_dir: Path, *, judge: Judge | None = None
    ) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        files: dict[str, list[dict]] = {}
        pairs: dict[int, dict] = {}
        for item in items:
            kind = item.meta["questions"]
            text = predictions[item.id].text
            if kind == "consistency":
                entry = pairs.setdefault(item.meta["entry"], dict(item.meta["sample"]))
                entry["pred1" if item.id.endswith("/1") else "pred2"] = text
                if "pred1" in entry and "pred2" in entry:
                    files.setdefault(kind, []).append(entry)
            else:
                files.setdefault(kind, []).append({**item.meta["sample"], "pred": text})
        for kind, entries in files.items():
            write_predictions(out_dir / PRED_FILES[kind], entries, [c for c in BENCHMARK_CRITERIA if c.questions == kind])
        if judge is not None:
            judge_prediction_files(out_dir, judge, attempts=self.options["judge_attempts"])
        return out_dir

    def score(self, path: Path, *, judge: Judge | None = None) -> ScoreReport:
        path = Path(path)
        if judge is not None and path.is_dir() and not any((path / c.results_file).is_file() for c in BENCHMARK_CRITERIA):
            judge_prediction_files(path, judge, attempts=self.options["judge_attempts"])
        report = score_judge_results(path)
        report.rules.update(self.rules)
        return report

    # ------------------------------------------------------------------ mini suite
    @classmethod
    def mini_items(cls, media: MiniMedia) -> list[MiniItem]:
        """Generic, temporal and consistency questions about the generated clips."""
        clips = media.clips
        return [
            MiniItem(clips[0], "What happens in the video?", "A red square moves from left to right on a blue background while a tone beeps."),
            MiniItem(clips[1], "What colour is the background?", "The background is blue."),
            MiniItem(clips[2], "What does the square do first, and what after?", "It starts on the left and then moves to the right.", category="temporal"),
            MiniItem(clips[0], "Which object moves?", "A red square.", question2="What is the object that travels across the frame?"),
        ]  # fmt: skip

    @classmethod
    def build_mini(cls, items: Sequence[MiniItem], out: Path) -> Path:
        """``Test_Videos/`` + ``Benchmarking_QA/{generic,temporal,consistency}_qa.json``."""
        files: dict[str, list[dict]] = {name: [] for name in QUESTION_FILES.values()}
        for item in items:
            name = copy_file(item.media, out / "Test_Videos" / item.media.name).stem
            if item.question2:
                files[QUESTION_FILES["consistency"]].append({"video_name": name, "Q1": item.question, "Q2": item.question2, "A": item.answer})
            elif item.category == "temporal":
                files[QUESTION_FILES["temporal"]].append({"video_name": name, "Q": item.question, "A": item.answer})
            else:
                files[QUESTION_FILES["generic"]].append({"video_name": name, "Q": item.question, "A": item.answer})
        for filename, entries in files.items():
            if entries:
                write_json(out / "Benchmarking_QA" / filename, entries)
        return out
