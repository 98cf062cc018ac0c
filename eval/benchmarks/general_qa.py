"""General text chat drift check: short factual questions with no media, exact-answer accuracy.

    mico-chat eval general_qa --model default                 # the 60 questions shipped in eval/data
    mico-chat eval general_qa --model runs/default-model/stage2/model --out runs/eval/general_qa-trained

Training the connectors and LoRA on a synthetic world must not break the LLM's plain chat. The
check asks each question of ``eval/data/general_qa.jsonl`` (``{"id", "question", "answers"}``)
with the suffix " Answer in a few words.", greedy, at most 24 new tokens, and counts a reply
correct when one of the accepted answers occurs in it as whole words, case ignored. Base
SmolLM2-135M-Instruct answers 41 of the 60 this way (batch 8).

Output: ``general_qa_predictions.jsonl`` (question, answers, reply, verdict); :meth:`score`
re-judges it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..benchmark import Benchmark, BenchmarkConfig
from ..items import EvalItem, ItemError, Prediction
from ..judges import Judge
from ..minimedia import MiniItem, MiniMedia
from ..scores import ScoreReport, read_jsonl, write_jsonl

DEFAULT_DATA = Path(__file__).resolve().parent.parent / "data" / "general_qa.jsonl"
PREDICTIONS = "general_qa_predictions.jsonl"
RULE = "any accepted answer as whole words, case-insensitive"


def answer_found(reply: str, answers: Sequence[str]) -> bool:
    """Whether one of ``answers`` occurs in ``reply`` as whole words, case ignored.

    ``"Paris."`` and ``"It is Paris"`` match ``Paris``; ``"Parisian"`` does not.
    """
    return any(re.search(rf"(?<!\w){re.escape(a.strip())}(?!\w)", reply, re.IGNORECASE) for a in answers if a.strip())


def _data_file(data: Path) -> Path:
    return data / "general_qa.jsonl" if data.is_dir() else data


class GeneralQA(Benchmark):
    """Plain short-answer questions (no media): is general text chat still intact?"""

    config = BenchmarkConfig(
        name="general_qa", title="General QA (text drift check)", max_new_tokens=24, prompt_suffix=" Answer in a few words."
    )
    rules = {"match": RULE}
    score_input = f"a run folder, or its {PREDICTIONS}"

    def annotation_files(self, data: Path) -> list[Path]:
        return [_data_file(Path(data))]

    def load(self, data: Path) -> list[EvalItem]:
        path = _data_file(Path(data))
        items = []
        for n, row in enumerate(read_jsonl(path, ["id", "question", "answers"], what="questions"), start=1):
            if not isinstance(row["answers"], list) or not row["answers"]:
                raise ItemError(f"{path}: question {n} ({row['id']}): answers must be a non-empty list")
            items.append(
                EvalItem(
                    id=str(row["id"]),
                    prompt=str(row["question"]) + self.config.prompt_suffix,
                    reference=[str(a) for a in row["answers"]],
                    meta={"question": row["question"]},
                )
            )
        if not items:
            raise ItemError(f"{path}: no questions")
        return items

    def write_outputs(
        self, items: Sequence[EvalItem], predictions: Mapping[str, Prediction], out_dir: Path, *, judge: Judge | None = None
    ) -> Path:
        rows = (
            {"id": item.id, "question": item.meta["question"], "answers": item.reference, "pred": predictions[item.id].text,
             "correct": answer_found(predictions[item.id].text, item.reference)}
            for item in items
        )  # fmt: skip
        write_jsonl(out_dir / PREDICTIONS, rows)
        return out_dir

    def score(self, path: Path, *, judge: Judge | None = None) -> ScoreReport:
        path = Path(path)
        if path.is_dir():
            path = path / PREDICTIONS
        verdicts = [answer_found(str(row["pred"]), row["answers"]) for row in read_jsonl(path, ["pred", "answers"])]
        report = ScoreReport(rules=dict(self.rules))
        report.metrics["accuracy"] = sum(verdicts) / len(verdicts) if verdicts else float("nan")
        report.counts = {"items": len(verdicts), "correct": sum(verdicts)}
        return report

    # ------------------------------------------------------------------ data: the shipped questions by default
    data_required = False

    @classmethod
    def resolve_data(cls, data: Path | None, *, out: Path, values: Mapping[str, Any]) -> tuple[Path, str | None]:
        """``--data``, or the questions shipped in ``eval/data``."""
        return (DEFAULT_DATA if data is None else Path(data)), None

    # ------------------------------------------------------------------ mini suite: its own data
    @classmethod
    def mini_items(cls, media: MiniMedia) -> list[MiniItem]:
        return []

    @classmethod
    def build_mini(cls, items: Sequence[MiniItem], out: Path, *, n: int = 6) -> Path:
        """The first ``n`` shipped general questions (text only; ``items`` are not used)."""
        out.mkdir(parents=True, exist_ok=True)
        lines = DEFAULT_DATA.read_text(encoding="utf-8").splitlines()[:n]
        (out / "general_qa.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return out
