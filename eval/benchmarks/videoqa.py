"""Zero-shot open-ended video QA judged by an LLM: MSVD-QA, MSRVTT-QA, ActivityNet-QA.

Data layout as used by the Video-ChatGPT / Video-LLaVA zero-shot protocol: ``test_q.json``
(``[{"video_name", "question_id", "question"}]``) and ``test_a.json`` (``[{"answer", "type",
"question_id"}]``, the same order) next to the videos (``<video_name>.mp4/.avi/...`` in
``videos/``, ``all_test/``, ``Test_Videos/`` or the same folder). ActivityNet-QA's official files
(MILVLG/activitynet-qa) have exactly this shape.

Outputs: ``<name>_pred.json`` (``[{"video_name", "Q", "A", "pred", "question_id"}]``, the input of
Video-ChatGPT's ``evaluate_activitynet_qa.py``) and, with a judge, ``qa_results.json`` (its
judge-result JSON). Accuracy and score as the official script computes them
(:mod:`mico_chat.eval.benchmarks.gpt_judge`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ..benchmark import Benchmark, BenchmarkConfig
from ..items import EvalItem, ItemError, MediaInput, Prediction
from ..judges import Judge
from ..minimedia import MiniItem, MiniMedia, copy_file, write_json
from ..scores import ScoreReport
from .gpt_judge import QA, find_video, judge_entries, official_keys, read_json_list, score_results_file, write_predictions

VIDEO_DIRS = ("videos", "all_test", "Test_Videos", "video", ".")


class VideoQA(Benchmark):
    """Open-ended video QA with GPT-judge accuracy (yes/no) and score (0-5)."""

    config = BenchmarkConfig(
        name="video_qa", title="Video QA", max_new_tokens=64, needs_judge=True, options={"judge_attempts": 3}
    )
    rules = {"qa": QA.rule}
    score_input = "a run folder, or a judge-result JSON (qa_results.json)"

    @property
    def pred_file(self) -> str:
        return f"{self.config.name}_pred.json"

    def annotation_files(self, data: Path) -> list[Path]:
        return [data / "test_q.json", data / "test_a.json"]

    def load(self, data: Path) -> list[EvalItem]:
        if not data.is_dir():
            raise ItemError(f"{data}: no such {self.config.title} data folder")
        questions = read_json_list(data / "test_q.json", ["video_name", "question"])
        answers = read_json_list(data / "test_a.json", ["answer"])
        if len(questions) != len(answers):
            raise ItemError(f"{data}: test_q.json has {len(questions)} questions but test_a.json {len(answers)} answers")
        video_dirs = [data / d for d in VIDEO_DIRS if (data / d).is_dir()]
        items = []
        for n, (q, a) in enumerate(zip(questions, answers)):
            qid = q.get("question_id", n)
            if "question_id" in a and a["question_id"] != qid:
                raise ItemError(
                    f"{data}/test_a.json: entry {n} answers question {a['question_id']!r}, test_q.json has {qid!r} there"
                )
            items.append(
                EvalItem(
                    id=str(qid),
                    prompt=str(q["question"]) + self.config.prompt_suffix,
                    media=(MediaInput("video", find_video(video_dirs, str(q["video_name"]))),),
                    reference=a["answer"],
                    meta={
                        "video_name": str(q["video_name"]),
                        "question": q["question"],
                        "question_id": qid,
                        "type": a.get("type"),
                    },
                )
            )
        return items

    def write_outputs(
        self, items: Sequence[EvalItem], predictions: Mapping[str, Prediction], out_dir: Path, *, judge: Judge | None = None
    ) -> Path:
        entries = [
            {
                "video_name": item.meta["video_name"],
                "Q": item.meta["question"],
                "A": item.reference,
                "pred": predictions[item.id].text,
                "question_id": item.meta["question_id"],
            }
            for item in items
        ]
        write_predictions(out_dir / self.pred_file, entries, [QA])
        if judge is not None:
            self._judge(out_dir, judge)
        return out_dir

    def _judge(self, directory: Path, judge: Judge) -> Path:
        entries = read_json_list(directory / self.pred_file, ["video_name", "Q", "A", "pred"])
        keys = official_keys([e["video_name"] for e in entries])
        qa_sets = [(k, {"q": e["Q"], "a": e["A"], "pred": e["pred"]}) for k, e in zip(keys, entries)]
        return judge_entries(judge, QA, qa_sets, directory, attempts=self.options["judge_attempts"])

    def score(self, path: Path, *, judge: Judge | None = None) -> ScoreReport:
        path = Path(path)
        if path.is_dir():
            if not (path / QA.results_file).is_file():
                if judge is None or not (path / self.pred_file).is_file():
                    report = ScoreReport(rules=dict(self.rules))
                    reason = "no judge results (run with --judge)"
                    report.unavailable.update(accuracy=reason, score=reason)
                    return report
                self._judge(path, judge)
            path = path / QA.results_file
        return score_results_file(path, QA)

    # ------------------------------------------------------------------ mini suite
    @classmethod
    def mini_items(cls, media: MiniMedia) -> list[MiniItem]:
        """One-word questions about the generated clips (the same for the three suites)."""
        clips = media.clips
        return [
            MiniItem(clips[0], "what moves across the screen?", "square"),
            MiniItem(clips[1], "what colour is the background?", "blue"),
            MiniItem(clips[2], "how many squares are there?", "one"),
        ]

    @classmethod
    def build_mini(cls, items: Sequence[MiniItem], out: Path) -> Path:
        """``test_q.json`` + ``test_a.json`` + ``videos/`` (MSVD-QA, MSRVTT-QA, ActivityNet-QA)."""
        questions, answers = [], []
        for n, item in enumerate(items):
            video = copy_file(item.media, out / "videos" / item.media.name)
            qid = f"{video.stem}_{n}"
            questions.append({"video_name": video.stem, "question_id": qid, "question": item.question})
            answers.append({"answer": item.answer, "type": item.meta.get("type", 0), "question_id": qid})
        write_json(out / "test_q.json", questions)
        write_json(out / "test_a.json", answers)
        return out


class MSVDQA(VideoQA):
    config = BenchmarkConfig(name="msvd_qa", title="MSVD-QA", max_new_tokens=64, needs_judge=True, options={"judge_attempts": 3})


class MSRVTTQA(VideoQA):
    config = BenchmarkConfig(
        name="msrvtt_qa", title="MSRVTT-QA", max_new_tokens=64, needs_judge=True, options={"judge_attempts": 3}
    )


class ActivityNetQA(VideoQA):
    config = BenchmarkConfig(
        name="activitynet_qa", title="ActivityNet-QA", max_new_tokens=64, needs_judge=True, options={"judge_attempts": 3}
    )
