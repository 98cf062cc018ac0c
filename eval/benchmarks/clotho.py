"""Clotho audio captioning (CIDEr-D, SPICE, SPIDEr) and ClothoAQA audio question answering.

**Clotho captioning.** Data layout as distributed (Clotho v2, Zenodo): ``clotho_captions_evaluation.csv``
(``file_name, caption_1 .. caption_5``; the DCASE 2020 files name them ``caption_reference_01 ..``)
and the audio in ``evaluation/``. Output: ``clotho_captions_predicted.csv`` (``file_name,
caption_predicted``: the DCASE submission format) beside a copy of the references used.
Scoring as the DCASE caption-evaluation-tools / coco-caption do it: captions of all files scored
together, sorted by file name, PTB-tokenised (Stanford CoreNLP 3.4.1, Java) by pycocoevalcap;
CIDEr is pycocoevalcap's ``Cider`` (the CIDEr-D variant: sigma 6, clipped counts, length penalty);
SPICE needs Stanford CoreNLP 3.6.0 jars that pycocoevalcap downloads on first use: where they are
absent SPICE and SPIDEr = (CIDEr-D + SPICE) / 2 are reported as unavailable, never estimated.

**ClothoAQA.** Data layout as distributed (Zenodo): ``clotho_aqa_test.csv`` (``file_name,
QuestionText, answer, confidence``; three annotators' answers, one row each) and the audio files.
One reply per question, stripped of surrounding whitespace (as lmms-eval's model wrappers strip the
generated text); every row scores it against that row's answer by exact match after
lower-casing and removing ASCII punctuation (lmms-eval's ``clotho_aqa`` task: ``exact_match`` with
``ignore_case`` and ``ignore_punctuation``, i.e. lm-eval 0.4.13's ``exact_match_hf_evaluate``; the
prompt suffix is that task's). Output: the CSV with a ``prediction`` column.
"""

from __future__ import annotations

import csv
import logging
import shutil
import string
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..benchmark import Benchmark, BenchmarkConfig
from ..items import EvalItem, ItemError, MediaInput, Prediction
from ..judges import Judge
from ..minimedia import MiniItem, MiniMedia, copy_file
from ..scores import ScoreReport

AUDIO_DIRS = ("evaluation", "audio_files", "audio", "test", ".")
AUDIO_SUFFIXES = ("", ".wav", ".flac", ".mp3", ".ogg")
PREDICTIONS_CSV = "clotho_captions_predicted.csv"
REFERENCES_CSV = "clotho_captions_references.csv"
AQA_PREDICTIONS_CSV = "clotho_aqa_predictions.csv"
logger = logging.getLogger(__name__)
CIDER_RULE = (
    "pycocoevalcap 1.2 PTBTokenizer + Cider (CIDEr-D), all files together, sorted by file name (DCASE caption-evaluation-tools)"
)
AQA_RULE = (
    "exact match, ignore_case + ignore_punctuation, per answer row (lmms-eval clotho_aqa; lm-eval 0.4.13 exact_match_hf_evaluate)"
)
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise ItemError(f"{path}: no such file") from None
    except (csv.Error, UnicodeDecodeError) as err:
        raise ItemError(f"{path}: not a readable CSV ({err})") from None
    if not rows:
        raise ItemError(f"{path}: no rows")
    missing = [c for c in required if c not in rows[0]]
    if missing:
        raise ItemError(f"{path}: missing column(s) {missing}; has {list(rows[0])}")
    return rows


def _find_audio(dirs: Sequence[Path], name: str) -> Path:
    for directory in dirs:
        for suffix in AUDIO_SUFFIXES:
            candidate = directory / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
    raise ItemError(f"audio {name!r} not found in {', '.join(map(str, dirs))}")


def reference_captions(row: Mapping[str, str]) -> list[str]:
    """The five references of a row (``caption_1..5`` or ``caption_reference_01..05``)."""
    for names in ([f"caption_{i}" for i in range(1, 6)], [f"caption_reference_{i:02d}" for i in range(1, 6)]):
        if all(n in row for n in names):
            return [row[n] for n in names]
    raise ItemError(f"row {row.get('file_name')!r}: no caption_1..caption_5 (or caption_reference_01..05) columns")


def spice_unavailable_reason() -> str | None:
    """Why SPICE cannot run here, or ``None`` when Java and the CoreNLP 3.6.0 jars are present."""
    import importlib.util

    if shutil.which("java") is None:
        return "needs Java"
    spec = importlib.util.find_spec("pycocoevalcap.spice.spice")
    if spec is None or spec.origin is None:
        return "needs pycocoevalcap"
    lib = Path(spec.origin).parent / "lib"
    needed = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
    absent = [n for n in needed if not (lib / n).is_file()]
    if absent:
        return (
            f"SPICE needs Stanford CoreNLP 3.6.0 ({', '.join(absent)} in {lib}), which pycocoevalcap downloads; not present here"
        )
    return None


def caption_scores(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> ScoreReport:
    """Corpus CIDEr-D (and SPICE, SPIDEr when available) of predictions keyed by file name."""
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    missing = sorted(set(predictions) - set(references))
    if missing:
        raise ItemError(f"predictions for files without references: {missing[:5]}")
    names = sorted(predictions)
    gts = {i: [{"caption": c} for c in references[n]] for i, n in enumerate(names)}
    res = {i: [{"caption": predictions[n]}] for i, n in enumerate(names)}
    tokenizer = PTBTokenizer()
    gts_tok, res_tok = tokenizer.tokenize(gts), tokenizer.tokenize(res)
    cider, per_file = Cider().compute_score(gts_tok, res_tok)
    report = ScoreReport(rules={"cider_d": CIDER_RULE}, counts={"files": len(names)})
    report.metrics["cider_d"] = float(cider)
    reason = spice_unavailable_reason()
    if reason is None:
        from pycocoevalcap.spice.spice import Spice

        spice, _ = Spice().compute_score(gts_tok, res_tok)
        report.metrics["spice"] = float(spice)
        report.metrics["spider"] = (float(cider) + float(spice)) / 2
        report.rules["spice"] = "pycocoevalcap 1.2 Spice; SPIDEr = (CIDEr-D + SPICE) / 2"
    else:
        report.unavailable["spice"] = reason
        report.unavailable["spider"] = "needs SPICE"
    worst = sorted(zip(per_file, names))[: min(5, len(names))]
    report.breakdown = {name: {"cider_d": float(score)} for score, name in worst}
    return report


class ClothoCaption(Benchmark):
    """Clotho audio captioning, zero-shot: CIDEr-D (SPICE/SPIDEr where CoreNLP 3.6.0 is present)."""

    config = BenchmarkConfig(
        name="clotho_caption",
        title="Clotho captioning",
        max_new_tokens=48,
        prompt_suffix="Provide a one-sentence caption for the provided audio.",
        options={"references": None, "allow_partial": False},
    )
    rules = {"cider_d": CIDER_RULE}
    score_input = "a run folder, or a predictions CSV (file_name, caption_predicted) with --option references=CSV"

    def _captions_csv(self, data: Path) -> Path:
        if data.is_file():
            return data
        found = sorted(data.glob("clotho_captions_*.csv")) if data.is_dir() else []
        found = [f for f in found if f.name not in (PREDICTIONS_CSV, REFERENCES_CSV)]
        preferred = [f for f in found if f.name == "clotho_captions_evaluation.csv"] or found
        if not preferred:
            raise ItemError(f"{data}: no clotho_captions_evaluation.csv")
        return preferred[0]

    def annotation_files(self, data: Path) -> list[Path]:
        return [self._captions_csv(data)]

    def load(self, data: Path) -> list[EvalItem]:
        path = self._captions_csv(data)
        rows = _read_csv(path, ["file_name"])
        dirs = [path.parent / d for d in AUDIO_DIRS if (path.parent / d).is_dir()]
        items = []
        for row in rows:
            items.append(
                EvalItem(
                    id=row["file_name"],
                    prompt=self.config.prompt_suffix,
                    media=(MediaInput("audio", _find_audio(dirs, row["file_name"])),),
                    reference=reference_captions(row),
                    meta={"file_name": row["file_name"]},
                )
            )
        return items

    def write_outputs(
        self, items: Sequence[EvalItem], predictions: Mapping[str, Prediction], out_dir: Path, *, judge: Judge | None = None
    ) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        with (out_dir / PREDICTIONS_CSV).open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["file_name", "caption_predicted"])
            for item in items:
                writer.writerow([item.id, predictions[item.id].text])
        with (out_dir / REFERENCES_CSV).open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["file_name"] + [f"caption_{i}" for i in range(1, 6)])
            for item in items:
                writer.writerow([item.id, *item.reference])
        return out_dir

    def score(self, path: Path, *, judge: Judge | None = None) -> ScoreReport:
        path = Path(path)
        predictions_csv, references_csv = (path / PREDICTIONS_CSV, path / REFERENCES_CSV) if path.is_dir() else (path, None)
        if self.options.get("references"):
            references_csv = Path(self.options["references"])
        if references_csv is None:
            raise ItemError(
                f"{path}: scoring a predictions CSV needs its references: --option references=clotho_captions_evaluation.csv"
            )
        predictions = {
            r["file_name"]: r["caption_predicted"] for r in _read_csv(predictions_csv, ["file_name", "caption_predicted"])
        }
        references = {r["file_name"]: reference_captions(r) for r in _read_csv(references_csv, ["file_name"])}
        missing = sorted(set(references) - set(predictions))
        note = None
        if missing:
            # CIDEr-D's IDF weights come from the scored corpus: a subset is a different metric, not a sample.
            note = (f"{predictions_csv} covers {len(predictions)} of {len(references)} reference files "
                    f"({len(missing)} missing, e.g. {missing[0]}); CIDEr-D of a partial corpus is not the benchmark's")  # fmt: skip
            if not self.options.get("allow_partial"):
                raise ItemError(f"{note}; pass --option allow_partial=true to score the covered files anyway")
            logger.warning(note)
        report = caption_scores(predictions, references)
        if note:
            report.notes.append(note)
        return report

    # ------------------------------------------------------------------ mini suite
    @classmethod
    def mini_items(cls, media: MiniMedia) -> list[MiniItem]:
        """The three generated tones, five reference captions each."""
        tones = media.tones
        captions = {
            440: ("A single tone beeps once.", "A short beep sounds.", "One electronic beep is heard.",
                  "A high tone plays briefly.", "A beep sounds once."),
            880: ("A tone beeps twice.", "Two short beeps sound.", "An electronic beep repeats two times.",
                  "Two high tones play.", "A device beeps twice."),
            220: ("A low tone beeps three times.", "Three low beeps sound.", "A deep beep repeats three times.",
                  "Three short low tones play.", "A machine beeps three times."),
        }  # fmt: skip
        return [MiniItem(tones[hz], "", "", references=refs) for hz, refs in captions.items()]

    @classmethod
    def build_mini(cls, items: Sequence[MiniItem], out: Path) -> Path:
        """``clotho_captions_evaluation.csv`` (five captions per file) + ``evaluation/``."""
        path = out / "clotho_captions_evaluation.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["file_name"] + [f"caption_{i}" for i in range(1, 6)])
            for item in items:
                if len(item.references) != 5:
                    raise ValueError(f"Clotho items need five reference captions, {item.media.name} has {len(item.references)}")
                audio = copy_file(item.media, out / "evaluation" / item.media.name)
                writer.writerow([audio.name, *item.references])
        return out


def aqa_exact_match(prediction: str, answer: str) -> bool:
    """lm-eval's ``exact_match_hf_evaluate`` with ``ignore_case`` and ``ignore_punctuation``, for one pair."""
    return prediction.lower().translate(_PUNCTUATION) == answer.lower().translate(_PUNCTUATION)


class ClothoAQA(Benchmark):
    """ClothoAQA: one-word answers about audio, exact match per annotator answer."""

    config = BenchmarkConfig(
        name="clotho_aqa",
        title="ClothoAQA",
        max_new_tokens=8,
        prompt_suffix="\nAnswer the question using a single word only. ",
    )
    rules = {"clotho_aqa": AQA_RULE}
    score_input = "a run folder, or a ClothoAQA CSV with a prediction column"

    def _csv(self, data: Path) -> Path:
        if data.is_file():
            return data
        found = [f for f in sorted(data.glob("clotho_aqa_*.csv")) if f.name != AQA_PREDICTIONS_CSV] if data.is_dir() else []
        preferred = [f for f in found if f.name == "clotho_aqa_test.csv"] or found
        if not preferred:
            raise ItemError(f"{data}: no clotho_aqa_test.csv")
        return preferred[0]

    def annotation_files(self, data: Path) -> list[Path]:
        return [self._csv(data)]

    def load(self, data: Path) -> list[EvalItem]:
        path = self._csv(data)
        rows = _read_csv(path, ["file_name", "QuestionText", "answer"])
        dirs = [path.parent / d for d in AUDIO_DIRS if (path.parent / d).is_dir()]
        questions: dict[tuple[str, str], list[dict[str, str]]] = {}
        for row in rows:
            questions.setdefault((row["file_name"], row["QuestionText"]), []).append(row)
        return [
            EvalItem(
                id=f"q{n:05d}",
                prompt=question + self.config.prompt_suffix,
                media=(MediaInput("audio", _find_audio(dirs, file_name)),),
                reference=[r["answer"] for r in group],
                meta={"file_name": file_name, "question": question, "rows": group},
            )
            for n, ((file_name, question), group) in enumerate(questions.items())
        ]

    def write_outputs(
        self, items: Sequence[EvalItem], predictions: Mapping[str, Prediction], out_dir: Path, *, judge: Judge | None = None
    ) -> Path:
        rows = [{**row, "prediction": predictions[item.id].text} for item in items for row in item.meta["rows"]]
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / AQA_PREDICTIONS_CSV
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return path

    def score(self, path: Path, *, judge: Judge | None = None) -> ScoreReport:
        path = Path(path)
        if path.is_dir():
            path = path / AQA_PREDICTIONS_CSV
        rows = _read_csv(path, ["file_name", "QuestionText", "answer", "prediction"])
        # The models of the reference implementations (lmms-eval's wrappers) strip the generated text
        # before lm-eval's metric sees it; the metric itself does not strip (aqa_exact_match).
        hits = [aqa_exact_match(r["prediction"].strip(), r["answer"]) for r in rows]
        yes_no = [h for h, r in zip(hits, rows) if aqa_exact_match(r["answer"], "yes") or aqa_exact_match(r["answer"], "no")]
        other = [h for h, r in zip(hits, rows) if not (aqa_exact_match(r["answer"], "yes") or aqa_exact_match(r["answer"], "no"))]
        report = ScoreReport(rules=dict(self.rules))
        report.metrics["accuracy"] = sum(hits) / len(hits)
        report.breakdown = {
            "yes/no": {"accuracy": sum(yes_no) / len(yes_no) if yes_no else float("nan")},
            "single word": {"accuracy": sum(other) / len(other) if other else float("nan")},
        }
        report.counts = {"rows": len(rows), "questions": len({(r["file_name"], r["QuestionText"]) for r in rows})}
        return report

    # ------------------------------------------------------------------ mini suite
    @classmethod
    def mini_items(cls, media: MiniMedia) -> list[MiniItem]:
        """Questions about the generated tones (one with three annotators' answers)."""
        tones = media.tones
        return [
            MiniItem(tones[440], "Is there a beep?", "yes"),
            MiniItem(tones[880], "How many beeps are there?", "two", references=("two", "two", "2")),
            MiniItem(tones[220], "Is someone speaking?", "no"),
        ]

    @classmethod
    def build_mini(cls, items: Sequence[MiniItem], out: Path) -> Path:
        """``clotho_aqa_test.csv`` (one row per annotator answer) + ``audio_files/``."""
        path = out / "clotho_aqa_test.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["file_name", "QuestionText", "answer", "confidence"])
            for item in items:
                audio = copy_file(item.media, out / "audio_files" / item.media.name)
                for answer in item.references or (item.answer,) * 3:
                    writer.writerow([audio.name, item.question, answer, "yes"])
        return out
