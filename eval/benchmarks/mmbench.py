"""MMBench (Liu et al., 2023): multiple-choice questions about images, with circular evaluation.

Data layout as distributed: one TSV (``MMBench_DEV_EN.tsv`` from VLMEvalKit, or the original
``mmbench_dev_20230712.tsv``) with columns ``index, question, hint, A, B, C, D, answer, category,
l2-category, image`` (base64), and optionally ``source, split, comment``. A row whose ``image``
field is short (at most 64 characters) names the ``index`` of the row holding the image, as
VLMEvalKit's TSVs do. Circular copies (the same question with its options rotated) carry
``index + k * 1e6``; a TSV without them gets them here, rotating the options one step per copy.

Results format: the TSV without the image column, plus ``prediction`` (VLMEvalKit's prediction
file, and the input of ``mico-chat eval score mmbench PATH``).

Scoring reproduces VLMEvalKit at commit e8e78f05f3080fe28154f2130321f17951c3be94
(``vlmeval/utils/matching_util.py`` ``can_infer``; ``vlmeval/dataset/utils/multiple_choice.py``
``mcq_circular_eval`` and ``report_acc``; VERBOSE unset): a question counts only if every rotated
copy is answered right; answers are extracted by exact matching, and optionally by an LLM judge
with VLMEvalKit's matching prompt for copies exact matching cannot read. One deliberate
difference: where VLMEvalKit picks a *random* option after three unparseable judge replies, this
counts the copy as not matched and reports it (``judge_unparseable``), so scores are reproducible.
"""

from __future__ import annotations

import base64
import csv
import math
import re
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..benchmark import Benchmark, BenchmarkConfig
from ..items import EvalItem, ItemError, MediaInput, Prediction
from ..judges import Judge, ask_and_parse
from ..minimedia import MiniItem, MiniMedia
from ..scores import ScoreReport

VLMEVALKIT_COMMIT = "e8e78f05f3080fe28154f2130321f17951c3be94"
RULE = f"VLMEvalKit can_infer + mcq_circular_eval + report_acc @ {VLMEVALKIT_COMMIT}"
PREDICTIONS_FILE = "mmbench_predictions.tsv"
CIRCULAR_OFFSET = 1_000_000
LETTERS = string.ascii_uppercase

# VLMEvalKit's abbreviations of MMBench's L2 abilities (multiple_choice.MMB_abbrs).
ABBREVIATIONS = {
    "coarse_perception": "CP",
    "finegrained_perception (instance-level)": "FP-S",
    "finegrained_perception (cross-instance)": "FP-C",
    "logic_reasoning": "LR",
    "relation_reasoning": "RR",
    "attribute_reasoning": "AR",
}

# can_infer_option's refusals and separators (matching_util.py).
_REJECTIONS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
_SEPARATORS = ".()[],:;!*#{}"
_VERBOSE_ANSWER = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")


def can_infer_option(answer: str, choices: Mapping[str, Any]) -> str | None:
    """The option letter an answer names (``Z`` for a refusal), or ``None``; VLMEvalKit's rule."""
    if "Failed to obtain answer via API" in answer:
        return None
    if any(refusal in answer for refusal in _REJECTIONS):
        return "Z"
    cleaned = answer
    for ch in _SEPARATORS:
        cleaned = cleaned.replace(ch, " ")
    words = [w.strip() for w in cleaned.split()]
    named = sum(1 for letter in choices if letter in words)
    if named == 1:
        for letter in choices:
            # a letter near the end of the answer (within its last 4 words) is the choice
            if letter in words and words.index(letter) > len(words) - 5:
                return letter
    elif named == 0 and sum(1 for z in ("Z", "") if z in words) == 1:
        return "Z"
    match = _VERBOSE_ANSWER.search(answer or "")
    if match and match.group(1).upper() in choices:
        return match.group(1).upper()
    return None


def can_infer_text(answer: str, choices: Mapping[str, Any]) -> str | None:
    """The option whose text alone appears in the answer (case-insensitive), or ``None``."""
    answer = answer.lower()
    if len(answer) > 2 * sum(len(str(v)) for v in choices.values()):
        return None
    found = [letter for letter, text in choices.items() if str(text).lower() in answer]
    return found[0] if len(found) == 1 else None


def can_infer(answer: Any, choices: Mapping[str, Any]) -> str | None:
    """VLMEvalKit's exact matching: the option letter an answer picks, ``Z`` for none/refusal, else ``None``."""
    answer = str(answer)
    return can_infer_option(answer, choices) or can_infer_text(answer, choices)


def _isna(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def build_choices(row: Mapping[str, Any]) -> dict[str, Any]:
    """Option letter -> option (values as pandas read them; missing options left out)."""
    return {c: row[c] for c in LETTERS if c in row and not _isna(row[c])}


def build_option_str(choices: Mapping[str, Any]) -> str:
    """VLMEvalKit's ``build_option_str`` (used inside the judge prompt)."""
    out = "There are several options: \n"
    for letter, text in choices.items():
        if not _isna(text):
            out += f"{letter}. {text}\n"
    return out


def judge_prompt(question: str, options: str, prediction: str) -> str:
    """VLMEvalKit's answer-matching prompt (``build_prompt``, or ``build_prompt_cn`` for Chinese)."""
    if re.search("[\u4e00-\u9fff]", question):
        template = (
            "你是一个帮助我匹配答案与单选题中多个选项的 AI 助手。"
            "你会被提供：一个问题，多个选项，一个答案。你的任务是找到与答案意义最相近的选项。"
            "如果所有选项的意义都与答案显著不同，则输出 Z。"
            "你应该输出一个单个的大写字母，例如 A, B, C, D（如果它们是有效选项），或 Z。"
            "例 1:"
            "问题: 图中最主要的物体是什么?\n选项: A. 泰迪熊 B. 兔子 C. 猫 D. 狗\n答案: 一只可爱的泰迪熊\n输出: A\n"
            "例 2: \n"
            "问题: 图中最主要的物体是什么?\n选项: A. 泰迪熊 B. 兔子 C. 猫 D. 狗\n答案: 蜘蛛\n输出: Z\n"
            "例 3: \n"
            "问题: {}?\n选项: {}\n答案: {}\n输出: "
        )
    else:
        template = (
            "You are an AI assistant who will help me to match "
            "an answer with several options of a single-choice question. "
            "You are provided with a question, several options, and an answer, "
            "and you need to find which option is most similar to the answer. "
            "If the meaning of all options are significantly different from the answer, output Z. "
            "Your should output a single uppercase character in A, B, C, D (if they are valid options), and Z. \n"
            "Example 1: \n"
            "Question: What is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n"
            "Answer: a cute teddy bear\nYour output: A\n"
            "Example 2: \n"
            "Question: What is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n"
            "Answer: Spider\nYour output: Z\n"
            "Example 3: \n"
            "Question: {}?\nOptions: {}\nAnswer: {}\nYour output: "
        )
    return template.format(question, options, prediction)


def model_prompt(row: Mapping[str, Any], style: str) -> str:
    """The question as the model reads it: VLMEvalKit's default MCQ prompt, or LLaVA-1.5's."""
    choices = build_choices(row)
    hint = None if _isna(row.get("hint")) else row.get("hint")
    if style == "vlmevalkit":
        prompt = f"Hint: {hint}\n" if hint is not None else ""
        prompt += f"Question: {row['question']}\n"
        if choices:
            prompt += "Options:\n" + "".join(f"{k}. {v}\n" for k, v in choices.items())
            prompt += "Please select the correct answer from the options above. \n"
        return prompt
    if style == "llava":
        prompt = f"{hint}\n{row['question']}" if hint is not None else str(row["question"])
        prompt += "".join(f"\n{k}. {v}" for k, v in choices.items())
        return prompt + "\nAnswer with the option's letter from the given choices directly."
    raise ValueError(f"unknown MMBench prompt_style {style!r}; use 'vlmevalkit' or 'llava'")


def read_tsv(path: Path) -> Any:
    """The TSV as VLMEvalKit reads it (pandas, tab separator: the same value types)."""
    import pandas as pd

    if not path.is_file():
        raise ItemError(f"{path}: no such MMBench TSV")
    try:
        frame = pd.read_csv(path, sep="\t")
    except Exception as err:  # pandas raises many parser error types
        raise ItemError(f"{path}: not a readable TSV ({type(err).__name__}: {err})") from None
    missing = [c for c in ("index", "question", "A", "B") if c not in frame.columns]
    if missing:
        raise ItemError(f"{path}: missing column(s) {missing}; MMBench TSVs have index, question, hint, A-D, answer, ...")
    return frame


def expand_circular(frame: Any) -> Any:
    """Add rotated copies (``index + k * 1e6``) of each question unless the TSV already has them."""
    import pandas as pd

    if (frame["index"].astype(int) >= CIRCULAR_OFFSET).any():
        return frame
    rows = []
    for _, row in frame.iterrows():
        row = row.to_dict()
        rows.append(row)
        letters = [c for c in "ABCD" if c in row and not _isna(row[c])]
        options = [row[c] for c in letters]
        answer = row.get("answer")
        for k in range(1, len(options)):
            copy = dict(row)
            copy["index"] = int(row["index"]) + k * CIRCULAR_OFFSET
            rotated = options[k:] + options[:k]
            for letter, option in zip(letters, rotated):
                copy[letter] = option
            if not _isna(answer) and answer in letters:
                copy["answer"] = letters[(letters.index(answer) - k) % len(letters)]
            if "image" in copy and isinstance(copy["image"], str) and len(copy["image"]) > 64:
                copy["image"] = str(int(row["index"]))  # share the image, as VLMEvalKit's TSVs do
            rows.append(copy)
    return pd.DataFrame(rows, columns=frame.columns)


class MMBench(Benchmark):
    """MMBench multiple choice with circular evaluation (exact matching; optional judge)."""

    config = BenchmarkConfig(
        name="mmbench",
        title="MMBench",
        max_new_tokens=32,
        options={"prompt_style": "vlmevalkit", "circular": True, "judge_attempts": 3},
    )
    rules = {"mmbench": RULE}
    score_input = "a run folder, or a TSV with a prediction column"

    def _tsv(self, data: Path) -> Path:
        if data.is_file():
            return data
        tsvs = sorted(data.glob("*.tsv")) if data.is_dir() else []
        tsvs = [t for t in tsvs if t.name != PREDICTIONS_FILE]
        if len(tsvs) != 1:
            raise ItemError(f"{data}: expected one MMBench .tsv file, found {[t.name for t in tsvs] or 'none'}")
        return tsvs[0]

    def annotation_files(self, data: Path) -> list[Path]:
        return [self._tsv(data)]

    def load(self, data: Path) -> list[EvalItem]:
        path = self._tsv(data)
        frame = read_tsv(path)
        if "image" not in frame.columns:
            raise ItemError(f"{path}: no image column (base64 images)")
        if self.options["circular"]:
            frame = expand_circular(frame)
        images = {str(i): ("" if _isna(v) else str(v)) for i, v in zip(frame["index"], frame["image"])}
        decoded: dict[str, bytes] = {}
        items = []
        style = self.options["prompt_style"]
        order = sorted(frame.to_dict("records"), key=lambda r: (int(r["index"]) % CIRCULAR_OFFSET, int(r["index"])))
        for row in order:
            index = int(row["index"])
            ref = images.get(str(index), "")
            if 0 < len(ref) <= 64:  # a reference to the row that holds the image
                if ref not in images or len(images[ref]) <= 64:
                    raise ItemError(f"{path}: row {index} refers to image of index {ref}, which has no image")
                ref_key = ref
            else:
                ref_key = str(index)
            if not images.get(ref_key):
                raise ItemError(f"{path}: row {index} has no image")
            if ref_key not in decoded:
                try:
                    decoded[ref_key] = base64.b64decode(images[ref_key], validate=False)
                except (ValueError, TypeError) as err:
                    raise ItemError(f"{path}: row {ref_key}: image is not base64 ({err})") from None
            meta = {k: (None if _isna(v) else v) for k, v in row.items() if k != "image"}
            items.append(
                EvalItem(
                    id=str(index),
                    prompt=model_prompt(row, style) + self.config.prompt_suffix,
                    media=(MediaInput("image", decoded[ref_key]),),
                    reference=None if _isna(row.get("answer")) else row.get("answer"),
                    meta=meta,
                )
            )
        return items

    def select(self, items: Sequence[EvalItem], limit: int | None) -> list[EvalItem]:
        """The first ``limit`` rows, extended to whole circular groups."""
        if limit is None or limit >= len(items):
            return list(items)
        group = lambda item: int(item.id) % CIRCULAR_OFFSET  # noqa: E731
        chosen = list(items[:limit])
        while len(chosen) < len(items) and chosen and group(items[len(chosen)]) == group(chosen[-1]):
            chosen.append(items[len(chosen)])
        return chosen

    def write_outputs(
        self, items: Sequence[EvalItem], predictions: Mapping[str, Prediction], out_dir: Path, *, judge: Judge | None = None
    ) -> Path:
        import pandas as pd

        rows = [{**item.meta, "prediction": predictions[item.id].text} for item in items]
        frame = pd.DataFrame(rows).sort_values(by="index")
        path = out_dir / PREDICTIONS_FILE
        out_dir.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, sep="\t", index=False)
        return path

    def score(self, path: Path, *, judge: Judge | None = None) -> ScoreReport:
        path = Path(path)
        if path.is_dir():
            path = path / PREDICTIONS_FILE
        return score_predictions(path, judge=judge, attempts=self.options["judge_attempts"])

    # ------------------------------------------------------------------ mini suite
    @classmethod
    def mini_items(cls, media: MiniMedia) -> list[MiniItem]:
        """Three shape questions with 2-4 options (one with a hint and another L2 category)."""
        images = media.images
        return [
            MiniItem(images["square", "red"], "What shape is shown?", "square", ("circle", "square", "triangle", "star"), "image_scene"),
            MiniItem(
                images["circle", "green"],
                "What colour is the shape?",
                "green",
                ("red", "green", "blue"),
                "attribute_recognition",
                meta={"l2-category": "finegrained_perception (instance-level)", "hint": "Look at the middle of the image."},
            ),
            MiniItem(images["triangle", "blue"], "Is the shape a triangle?", "yes", ("yes", "no"), "image_scene"),
        ]

    @classmethod
    def build_mini(cls, items: Sequence[MiniItem], out: Path, *, circular_copies: bool = True) -> Path:
        """An MMBench TSV (base64 images); with ``circular_copies`` the rotated copies are included,
        sharing their image by index, as in VLMEvalKit's ``MMBench_DEV_EN.tsv``."""
        letters = "ABCD"
        header = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source",
                  "l2-category", "comment", "split"]  # fmt: skip
        rows = []
        for g, item in enumerate(items):
            if not 2 <= len(item.options) <= 4 or item.answer not in item.options:
                raise ValueError(f"MMBench items need 2-4 options including the answer: {item.question!r}")
            image = base64.b64encode(item.media.read_bytes()).decode("ascii")
            n = len(item.options)
            for k in range(n if circular_copies else 1):
                rotated = item.options[k:] + item.options[:k]
                rows.append(
                    {
                        "index": g + k * CIRCULAR_OFFSET,
                        "question": item.question,
                        "hint": item.meta.get("hint", ""),
                        **{letters[i]: (rotated[i] if i < n else "") for i in range(4)},
                        "answer": letters[rotated.index(item.answer)],
                        "category": item.category or "image_scene",
                        "image": image if k == 0 else str(g),
                        "source": "mini",
                        "l2-category": item.meta.get("l2-category", "coarse_perception"),
                        "comment": "",
                        "split": "dev",
                    }
                )
        path = out / "MMBench_DEV_EN.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=header, delimiter="\t", lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        return path


def score_predictions(path: Path, *, judge: Judge | None = None, attempts: int = 3) -> ScoreReport:
    """Circular evaluation of a prediction TSV (VLMEvalKit's ``mcq_circular_eval`` + ``report_acc``)."""
    frame = read_tsv(path)
    if "prediction" not in frame.columns:
        raise ItemError(f"{path}: no prediction column")
    report = ScoreReport(
        rules={"mmbench": RULE, "answer_extraction": "exact matching" + (f" + judge {judge.config.model}" if judge else "")}
    )
    if "answer" not in frame.columns or frame["answer"].isna().all():
        report.unavailable["overall"] = "no answers in this TSV (test split): submit the predictions to the MMBench server"
        return report
    frame["index"] = [int(x) for x in frame["index"]]
    frame = frame.sort_values(by="index")
    frame["prediction"] = [str(x) for x in frame["prediction"]]  # as VLMEvalKit does: a missing reply reads 'nan'
    frame.columns = [c if c in LETTERS else c.lower() for c in frame.columns]
    rows = [r for r in frame.to_dict("records") if not _isna(r.get("answer"))]
    group_of = {id(r): int(r["g_index"]) if not _isna(r.get("g_index")) else int(r["index"] % 1e6) for r in rows}
    groups: dict[int, list[dict[str, Any]]] = {}
    for row in rows:  # in index order, as VLMEvalKit sorts them
        groups.setdefault(group_of[id(row)], []).append(row)
    main = [r for r in rows if int(r["index"]) == group_of[id(r)]]
    unmatched = judge_unparseable = judged = 0
    hits: dict[int, int] = {}
    for head in main:
        g = int(head["index"])
        group = groups[g]
        preds = [can_infer(r["prediction"], build_choices(r)) for r in group]
        unmatched += sum(p is None for p in preds)
        if any(p is not None and p != r["answer"] for p, r in zip(preds, group)):
            hits[g] = 0
            continue
        if all(p == r["answer"] for p, r in zip(preds, group)):
            hits[g] = 1
            continue
        if judge is None:
            hits[g] = 0  # VLMEvalKit's exact_matching policy: an unreadable copy fails the question
            continue
        hit = 1
        for pred, row in zip(preds, group):
            if pred is not None:
                continue
            choices = build_choices(row)
            prompt = judge_prompt(str(row["question"]), build_option_str(choices), row["prediction"])
            verdict = ask_and_parse(
                judge,
                [[{"role": "user", "content": prompt}]],
                lambda reply, choices=choices: can_infer(reply, choices),
                attempts=attempts,
            )[0]
            judged += 1
            if verdict.value is None:
                judge_unparseable += 1
            if verdict.value != row["answer"]:
                hit = 0
                break
        hits[g] = hit
    report.counts = {"questions": len(main), "rows": len(rows), "unmatched_rows": unmatched}
    if judge is not None:
        report.counts.update(judged_rows=judged, judge_unparseable=judge_unparseable)
    _report_acc(report, main, hits)
    return report


def _report_acc(report: ScoreReport, main: Sequence[Mapping[str, Any]], hits: Mapping[int, int]) -> None:
    """VLMEvalKit's ``report_acc``: overall, per L2 ability (abbreviated) and per category, per split."""

    def mean(values: list[int]) -> float:
        return sum(values) / len(values) if values else float("nan")

    splits = sorted({str(r["split"]) for r in main}) if main and "split" in main[0] else ["none"]
    split_of = (lambda r: str(r["split"])) if main and "split" in main[0] else (lambda r: "none")
    for split in splits:
        suffix = "" if len(splits) == 1 else f"/{split}"
        report.metrics["overall" + suffix] = mean([hits[int(r["index"])] for r in main if split_of(r) == split])
    for column in ("l2-category", "category"):
        if not main or column not in main[0]:
            continue
        for ability in sorted({str(r[column]) for r in main}):
            name = ABBREVIATIONS.get(ability, ability)
            report.breakdown[name] = {
                ("accuracy" + ("" if len(splits) == 1 else f"/{split}")): mean(
                    [hits[int(r["index"])] for r in main if str(r[column]) == ability and split_of(r) == split]
                )
                for split in splits
            }
