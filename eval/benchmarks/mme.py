"""MME (Fu et al., 2023): 14 yes/no subtasks, perception (10) and cognition (4).

Data layout as distributed (``MME_Benchmark_release_version/``): one folder per subtask; five of
them (artwork, celebrity, landmark, posters, scene) hold ``images/`` and
``questions_answers_YN/``, the others hold each image next to its ``.txt`` file. A question file
has two lines ``question<TAB>Yes|No`` about the image with the same name.

Results format (the official ``eval_tool``): one ``<subtask>.txt`` per subtask with lines
``image<TAB>question<TAB>ground truth<TAB>response``, the two questions of an image adjacent.

Scoring reproduces ``eval_tool/calculation.py`` of BradyFU/Awesome-Multimodal-Large-Language-Models
(branch ``Evaluation``, ``tools/eval_tool.zip``): the response is lower-cased; exactly ``yes`` /
``no``, else ``yes`` or ``no`` found in its first four characters (``yes`` first), else ``other``;
acc = share of questions right; acc+ = share of images with both questions right; a subtask scores
``100 * (acc + acc+)``; perception and cognition are sums over their subtasks. The official
example results of LaVIN score Perception 963.61 and Cognition 249.64 here, as with the tool.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ..benchmark import Benchmark, BenchmarkConfig, sanitize_line
from ..items import EvalItem, ItemError, MediaInput, Prediction
from ..judges import Judge
from ..minimedia import MiniItem, MiniMedia, copy_file
from ..scores import ScoreReport

EVAL_TYPES: dict[str, tuple[str, ...]] = {
    "perception": ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR"),
    "cognition": ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning"),
}
SUBTASKS: tuple[str, ...] = EVAL_TYPES["perception"] + EVAL_TYPES["cognition"]
IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg", ".JPG", ".PNG", ".JPEG")
RESULTS_DIR = "mme_results"
# The subtasks whose folder holds images/ and questions_answers_YN/ (the others: image beside its .txt).
IMAGE_FOLDER_TASKS = ("artwork", "celebrity", "landmark", "posters", "scene")
RULE = "MME eval_tool/calculation.py (BradyFU/Awesome-Multimodal-Large-Language-Models, branch Evaluation, tools/eval_tool.zip)"


def parse_pred_ans(pred_ans: str) -> str:
    """The official answer parsing: ``yes``, ``no`` or ``other`` from a lower-cased response field.

    The field is taken as the official tool reads it, i.e. with the line's trailing newline.
    """
    if pred_ans in ("yes", "no"):
        return pred_ans
    prefix = pred_ans[:4]
    if "yes" in prefix:
        return "yes"
    if "no" in prefix:
        return "no"
    return "other"


def score_subtask(path: Path) -> dict[str, float]:
    """One subtask file -> ``score``, ``acc``, ``acc_plus`` (both in %), ``other`` and ``questions``."""
    with path.open("r", encoding="utf-8") as f:
        lines = f.readlines()
    if not lines:
        raise ItemError(f"{path}: empty results file")
    if len(lines) % 2:
        raise ItemError(f"{path}: {len(lines)} lines; each image needs its two questions on adjacent lines")
    correct = other = plus = 0
    for start in range(0, len(lines), 2):
        image_correct = 0
        for n in (start, start + 1):
            fields = lines[n].split("\t")
            if len(fields) != 4:
                raise ItemError(
                    f"{path}:{n + 1}: expected 4 tab-separated fields (image, question, ground truth, response), "
                    f"got {len(fields)}"
                )
            gt, pred = fields[2].lower(), parse_pred_ans(fields[3].lower())
            if gt not in ("yes", "no"):
                raise ItemError(f"{path}:{n + 1}: ground truth must be Yes or No, got {fields[2]!r}")
            if gt == pred:
                correct += 1
                image_correct += 1
            if pred == "other":
                other += 1
        if image_correct == 2:
            plus += 1
    acc = correct / len(lines)
    acc_plus = plus / (len(lines) // 2)
    score = 0
    score += acc * 100  # the official order of additions, so totals match to the last digit
    score += acc_plus * 100
    return {"score": score, "acc": acc * 100, "acc_plus": acc_plus * 100, "other": float(other), "questions": float(len(lines))}


def score_results_dir(directory: Path) -> ScoreReport:
    """Score a folder of official MME results files (missing subtasks are reported, not invented)."""
    if not directory.is_dir():
        raise ItemError(f"{directory}: not a folder of MME results files")
    report = ScoreReport(rules={"mme": RULE})
    missing: list[str] = []
    for eval_type, tasks in EVAL_TYPES.items():
        total = 0
        present = 0
        for task in tasks:
            path = directory / f"{task}.txt"
            if not path.is_file():
                missing.append(task)
                continue
            result = score_subtask(path)
            report.breakdown[task] = result
            total += result["score"]
            present += 1
        if present:
            report.metrics[eval_type] = total
            if present < len(tasks):
                report.notes.append(f"{eval_type} sums {present} of {len(tasks)} subtasks (partial; not comparable)")
    if not report.breakdown:
        raise ItemError(f"{directory}: no MME results files ({', '.join(t + '.txt' for t in SUBTASKS[:3])}, ...)")
    report.counts = {
        "questions": int(sum(r["questions"] for r in report.breakdown.values())),
        "other_answers": int(sum(r["other"] for r in report.breakdown.values())),
        "subtasks": len(report.breakdown),
    }
    if missing:
        report.counts["missing_subtasks"] = len(missing)
    return report


class MME(Benchmark):
    """MME perception and cognition: yes/no questions about images."""

    config = BenchmarkConfig(name="mme", title="MME", max_new_tokens=32)
    rules = {"mme": RULE}
    score_input = "a run folder, or a folder of official results files (<subtask>.txt)"

    def _root(self, data: Path) -> Path:
        nested = data / "MME_Benchmark_release_version"
        return nested if nested.is_dir() else data

    def annotation_files(self, data: Path) -> list[Path]:
        root = self._root(data)
        return sorted(p for task in SUBTASKS if (root / task).is_dir() for p in (root / task).rglob("*.txt"))

    def load(self, data: Path) -> list[EvalItem]:
        root = self._root(data)
        if not root.is_dir():
            raise ItemError(f"{data}: no such MME data folder")
        items: list[EvalItem] = []
        for task in SUBTASKS:
            task_dir = root / task
            if not task_dir.is_dir():
                continue
            if (task_dir / "images").is_dir():
                image_dir, qa_dir = task_dir / "images", task_dir / "questions_answers_YN"
                if not qa_dir.is_dir():
                    raise ItemError(f"{task_dir}: has images/ but no questions_answers_YN/")
            else:
                image_dir = qa_dir = task_dir
            for qa_file in sorted(qa_dir.glob("*.txt")):
                image = next(
                    (image_dir / (qa_file.stem + s) for s in IMAGE_SUFFIXES if (image_dir / (qa_file.stem + s)).is_file()), None
                )
                if image is None:
                    raise ItemError(f"{qa_file}: no image {qa_file.stem}.jpg/.png beside it in {image_dir}")
                lines = [line for line in qa_file.read_text(encoding="utf-8").splitlines() if line.strip()]
                if len(lines) != 2:
                    raise ItemError(f"{qa_file}: expected 2 question lines, got {len(lines)}")
                for k, line in enumerate(lines):
                    question, sep, answer = line.rstrip().rpartition("\t")
                    if not sep or answer.strip() not in ("Yes", "No"):
                        raise ItemError(f"{qa_file}:{k + 1}: expected 'question<TAB>Yes|No', got {line!r}")
                    items.append(
                        EvalItem(
                            id=f"{task}/{image.name}/{k}",
                            prompt=question + self.config.prompt_suffix,
                            media=(MediaInput("image", image),),
                            reference=answer.strip(),
                            meta={"subtask": task, "image": image.name, "question": question},
                        )
                    )
        if not items:
            raise ItemError(f"{root}: no MME subtask folders ({', '.join(SUBTASKS[:4])}, ...)")
        return items

    def select(self, items: Sequence[EvalItem], limit: int | None) -> list[EvalItem]:
        """The first ``limit`` questions, extended so every image keeps both of its questions."""
        if limit is None or limit >= len(items):
            return list(items)
        chosen = list(items[:limit])
        while (
            len(chosen) < len(items)
            and chosen
            and items[len(chosen)].meta["image"] == chosen[-1].meta["image"]
            and items[len(chosen)].meta["subtask"] == chosen[-1].meta["subtask"]
        ):
            chosen.append(items[len(chosen)])
        return chosen

    def write_outputs(
        self, items: Sequence[EvalItem], predictions: Mapping[str, Prediction], out_dir: Path, *, judge: Judge | None = None
    ) -> Path:
        results = out_dir / RESULTS_DIR
        results.mkdir(parents=True, exist_ok=True)
        by_task: dict[str, list[str]] = {}
        for item in items:
            meta = item.meta
            line = "\t".join((meta["image"], meta["question"], item.reference, sanitize_line(predictions[item.id].text)))
            by_task.setdefault(meta["subtask"], []).append(line + "\n")
        for stale in results.glob("*.txt"):
            if stale.stem not in by_task:
                stale.unlink()
        for task, lines in by_task.items():
            (results / f"{task}.txt").write_text("".join(lines), encoding="utf-8")
        return results

    def score(self, path: Path, *, judge: Judge | None = None) -> ScoreReport:
        path = Path(path)
        if (path / RESULTS_DIR).is_dir():
            path = path / RESULTS_DIR
        return score_results_dir(path)

    # ------------------------------------------------------------------ mini suite
    @classmethod
    def mini_items(cls, media: MiniMedia) -> list[MiniItem]:
        """Two questions (one Yes, one No) about a shape image per subtask."""
        items = []
        for n, task in enumerate(SUBTASKS):
            shape, colour = list(media.images)[n % len(media.images)]
            image = media.images[shape, colour]
            other = "green" if colour != "green" else "red"
            items.append(MiniItem(image, f"Is there a {colour} {shape} in the image? Please answer yes or no.", "Yes", category=task))
            items.append(MiniItem(image, f"Is there a {other} {shape} in the image? Please answer yes or no.", "No", category=task))
        return items

    @classmethod
    def build_mini(cls, items: Sequence[MiniItem], out: Path) -> Path:
        """MME_Benchmark_release_version layout; items come in pairs (two questions per image)."""
        by_image: dict[tuple[str, Path], list[MiniItem]] = {}
        for item in items:
            if item.category not in SUBTASKS:
                raise ValueError(f"MME item category must be a subtask ({', '.join(SUBTASKS)}), got {item.category!r}")
            if item.answer not in ("Yes", "No"):
                raise ValueError(f"MME answers are Yes or No, got {item.answer!r}")
            by_image.setdefault((item.category, item.media), []).append(item)
        root = out / "MME_Benchmark_release_version"
        for (task, image), pair in by_image.items():
            if len(pair) != 2:
                raise ValueError(f"MME needs exactly two questions per image; {image} has {len(pair)} in {task}")
            if task in IMAGE_FOLDER_TASKS:
                target, qa = root / task / "images" / image.name, root / task / "questions_answers_YN" / f"{image.stem}.txt"
            else:
                target, qa = root / task / image.name, root / task / f"{image.stem}.txt"
            copy_file(image, target)
            qa.parent.mkdir(parents=True, exist_ok=True)
            qa.write_text("".join(f"{i.question}\t{i.answer}\n" for i in pair), encoding="utf-8")
        return root
