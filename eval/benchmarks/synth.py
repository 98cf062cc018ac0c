"""Accuracy on a held-out synthetic world (:mod:`mico_chat.instruct_data.synth`), per question family.

    mico-chat eval synth --model default                   # a fresh held-out world of 100 clips
    mico-chat eval synth --model M --data world/ --limit 200
    mico-chat eval score synth runs/eval/synth             # same numbers, from the run's files

Items are the world's instruction records (``records.jsonl``): one question per family per clip
(appearance, counting, motion, sound, audio-visual; temporal for the clips whose timing it can ask
about; multiple-choice, yes/no and open forms), a
detailed description judged by its facts (shape, colour, direction, sound), and every turn of the
multi-turn conversation (asked after the earlier turns with their ground-truth answers). Replies
are judged exactly by :func:`mico_chat.instruct_data.synth.judge.judge` from the facts each record
carries; no LLM judge is involved.

Without ``--data`` a held-out world is generated into ``OUT/heldout-s<SEED>-n<N>`` (speech off,
so the world does not depend on whether espeak-ng is installed); an existing complete world with
the same split, seed, size and generator version is reused.

Output: ``synth_predictions.jsonl`` (one line per item: question, ground truth, judge facts,
reply, verdict). :meth:`Synth.score` re-judges that file, so a re-score repeats the run's numbers.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mico_chat.instruct_data.records import BadRecord, Record, read_records
from mico_chat.instruct_data.synth import RECORDS_FILE
from mico_chat.instruct_data.synth import judge as judge_answer

from ..benchmark import Benchmark, BenchmarkConfig, CliOption
from ..items import EvalItem, ItemError, MediaInput, Prediction
from ..judges import Judge
from ..minimedia import MiniItem, MiniMedia
from ..scores import ScoreReport, read_jsonl, write_jsonl

# The families the generator writes (instruct_data/synth/language.py FAMILIES), then the two
# record kinds built from them; reports list them in this order.
FAMILIES = ("appearance", "counting", "motion", "sound", "audio-visual", "temporal", "description", "multi-turn")
PREDICTIONS = "synth_predictions.jsonl"
JUDGE_RULE = "mico_chat.instruct_data.synth.judge (exact facts; generator v2)"
WORLD_GROUP = "held-out world (without --data)"


@dataclass(frozen=True)
class SynthItem(EvalItem):
    """An item whose conversation may hold earlier turns (multi-turn records, asked turn by turn).

    ``history`` holds ``(question, ground-truth answer)`` pairs before this turn; the media go in
    the first user turn, as in the training records.
    """

    history: tuple[tuple[str, str], ...] = ()

    def messages(self, system: str | None = None) -> list[dict[str, Any]]:
        if not self.history:
            return super().messages(system)
        media = [m.part() for m in self.media]
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
        for k, (question, answer) in enumerate(self.history):
            text = [{"type": "text", "text": question}]
            messages += [{"role": "user", "content": (media if k == 0 else []) + text},
                         {"role": "assistant", "content": answer}]  # fmt: skip
        return messages + [{"role": "user", "content": [{"type": "text", "text": self.prompt}]}]


def strip_placeholders(text: str) -> str:
    """A record's user text without its leading ``<video>\\n<audio>\\n`` lines (the media parts replace them)."""
    lines = text.split("\n")
    while lines and lines[0].strip().startswith("<") and lines[0].strip().endswith(">"):
        lines.pop(0)
    return "\n".join(lines)


def media_inputs(record: Record, root: Path) -> tuple[MediaInput, ...]:
    """The record's media as item inputs. An ``audio`` ref on the file of the ``video`` ref before it
    is the video's own track: a structured video part brings it (``MediaSettings.video_audio``)."""
    out: list[MediaInput] = []
    for k, ref in enumerate(record.media):
        previous = record.media[k - 1] if k else None
        if (
            ref.modality.value == "audio"
            and previous is not None
            and previous.modality.value == "video"
            and previous.path == ref.path
        ):
            continue
        out.append(MediaInput(ref.modality.value, root / ref.path))
    return tuple(out)


def record_items(record: Record, root: Path, source: str) -> list[SynthItem]:
    """The items of one record: one, or one per turn for a multi-turn conversation."""
    meta = dict(record.meta)
    family = meta.get("family")
    if family not in FAMILIES:
        raise ItemError(f"{source}: record {record.id!r} has meta.family {family!r}; known: {', '.join(FAMILIES)}")
    users = [m["content"] for m in record.messages if m["role"] == "user"]
    answers = [m["content"] for m in record.messages if m["role"] == "assistant"]
    media = media_inputs(record, root)
    if family == "multi-turn":
        turns = meta.get("turns")
        if not isinstance(turns, list) or len(turns) != len(users):
            raise ItemError(f"{source}: multi-turn record {record.id!r} needs one meta.turns entry per user turn")
        questions = [strip_placeholders(u) for u in users]
        return [
            SynthItem(
                id=f"{record.id}-t{k}",
                prompt=questions[k],
                media=media,
                reference=_qa(turn, record.id, source),
                meta={"record": record.id, "family": family, "turn": k, "turn_family": turn.get("family")},
                history=tuple(zip(questions[:k], answers[:k])),
            )
            for k, turn in enumerate(turns)
        ]
    return [
        SynthItem(
            id=record.id,
            prompt=strip_placeholders(users[0]),
            media=media,
            reference=_qa(meta, record.id, source),
            meta={"record": record.id, "family": family, "view": meta.get("view")},
        )
    ]


def _qa(meta: Mapping[str, Any], record_id: str, source: str) -> dict[str, Any]:
    """What :func:`judge` reads from a record's meta: form, answer, facts (and options for ``mc``)."""
    missing = [k for k in ("form", "answer", "facts") if k not in meta]
    if meta.get("form") == "mc" and "options" not in meta:
        missing.append("options")
    if missing:
        raise ItemError(f"{source}: record {record_id!r} meta lacks {missing} (needed to judge the answer)")
    return {k: meta[k] for k in ("family", "topic", "form", "answer", "facts", "options") if k in meta}


class Synth(Benchmark):
    """Per-family accuracy on a held-out synthetic world, judged by exact facts."""

    config = BenchmarkConfig(name="synth", title="Synthetic world (held-out)", max_new_tokens=48)
    rules = {"judge": JUDGE_RULE}
    score_input = f"a run folder, or its {PREDICTIONS}"

    def annotation_files(self, data: Path) -> list[Path]:
        return [data / RECORDS_FILE] + ([data / "summary.json"] if (data / "summary.json").is_file() else [])

    def load(self, data: Path) -> list[EvalItem]:
        path = Path(data) / RECORDS_FILE
        if not path.is_file():
            raise ItemError(f"{path}: missing; generate a world with `mico-chat data synth --split heldout --out {data}`")
        items: list[EvalItem] = []
        for n, record in enumerate(read_records(path), start=1):
            if isinstance(record, BadRecord):
                raise ItemError(f"{path}: line {record.line}: {record.reason}")
            items += record_items(record, Path(data), f"{path}: line {n}")
        if not items:
            raise ItemError(f"{path}: no records")
        return items

    def select(self, items: Sequence[EvalItem], limit: int | None) -> list[EvalItem]:
        """The first ``limit`` items, extended to finish a multi-turn record (its turns score together)."""
        if limit is None or limit >= len(items):
            return list(items)
        chosen = list(items[:limit])
        last = chosen[-1].meta["record"] if chosen else None
        chosen += [item for item in items[limit:] if item.meta["record"] == last]
        return chosen

    # ------------------------------------------------------------------ outputs and scores
    def write_outputs(
        self, items: Sequence[EvalItem], predictions: Mapping[str, Prediction], out_dir: Path, *, judge: Judge | None = None
    ) -> Path:
        rows = (
            {"id": item.id, **item.meta, "question": item.prompt, "qa": item.reference, "pred": predictions[item.id].text,
             "correct": judge_answer(predictions[item.id].text, item.reference)}
            for item in items
        )  # fmt: skip
        write_jsonl(out_dir / PREDICTIONS, rows)
        return out_dir

    def score(self, path: Path, *, judge: Judge | None = None) -> ScoreReport:
        path = Path(path)
        if path.is_dir():
            path = path / PREDICTIONS
        return score_rows(read_jsonl(path, ["id", "family", "qa", "pred"]))

    # ------------------------------------------------------------------ data: --data is optional
    data_required = False
    cli_options = (
        CliOption("--n", type=int, default=100, help="clips to generate (default: 100)", group=WORLD_GROUP),
        CliOption("--seed", type=int, help="world seed (default: a random one, printed)", group=WORLD_GROUP),
        CliOption("--size", type=int, default=128, help="frame side in pixels (default: 128)", group=WORLD_GROUP),
    )

    @classmethod
    def resolve_data(cls, data: Path | None, *, out: Path, values: Mapping[str, Any]) -> tuple[Path, str | None]:
        """``--data``, or a held-out world generated (or reused) under ``out`` from ``--n/--seed/--size``."""
        if data is not None:
            return Path(data), None
        seed = values["seed"] if values.get("seed") is not None else secrets.randbelow(2**31)
        world = heldout_world(out, n=values["n"], seed=seed, size=values["size"])
        return world, f"held-out world: {world} ({values['n']} clips, seed {seed})"

    # ------------------------------------------------------------------ mini suite: its own data
    @classmethod
    def mini_items(cls, media: MiniMedia) -> list[MiniItem]:
        return []

    @classmethod
    def build_mini(cls, items: Sequence[MiniItem], out: Path) -> Path:
        """A held-out synthetic world of one clip (its own generated media; ``items`` are not used)."""
        return heldout_world(out, n=1, seed=0, progress=False)


def score_rows(rows: Sequence[Mapping[str, Any]]) -> ScoreReport:
    """Re-judge every row; accuracy per family (in :data:`FAMILIES` order) and overall.

    ``metrics`` holds one accuracy (0-1) per family present plus ``overall``; ``breakdown`` holds
    ``{family: {"accuracy", "items"}}``; ``counts`` items and correct answers overall and per form
    (``mc_items``, ``mc_correct``, ``open_items``, ...).
    """
    report = ScoreReport(rules={"judge": JUDGE_RULE})
    by_family: dict[str, list[bool]] = {}
    by_form: dict[str, list[bool]] = {}
    for row in rows:
        ok = judge_answer(str(row["pred"]), row["qa"])
        by_family.setdefault(str(row["family"]), []).append(ok)
        by_form.setdefault(str(row["qa"].get("form")), []).append(ok)
    order = [f for f in FAMILIES if f in by_family] + sorted(set(by_family) - set(FAMILIES))
    for family in order:
        verdicts = by_family[family]
        report.metrics[family] = sum(verdicts) / len(verdicts)
        report.breakdown[family] = {"accuracy": report.metrics[family], "items": float(len(verdicts))}
    every = [ok for verdicts in by_family.values() for ok in verdicts]
    report.metrics["overall"] = sum(every) / len(every) if every else float("nan")
    report.counts = {"items": len(every), "correct": sum(every)}
    for form in sorted(by_form):  # per answer form: multiple-choice, yes/no and open-ended
        report.counts[f"{form}_items"] = len(by_form[form])
        report.counts[f"{form}_correct"] = sum(by_form[form])
    return report


# ---------------------------------------------------------------------- held-out world
def heldout_world(out: Path, *, n: int, seed: int, size: int = 128, progress: bool = True) -> Path:
    """A held-out world of ``n`` clips at ``out/heldout-s<seed>-n<n>``: generated, or reused when complete."""
    from mico_chat.instruct_data.synth import WorldConfig, generate_world
    from mico_chat.instruct_data.synth.scene import SceneConfig
    from mico_chat.instruct_data.synth.world import GENERATOR_VERSION

    folder = Path(out) / f"heldout-s{seed}-n{n}"
    summary = folder / "summary.json"
    if summary.is_file() and (folder / RECORDS_FILE).is_file():
        saved = json.loads(summary.read_text(encoding="utf-8"))
        got = (saved.get("split"), saved.get("seed"), saved.get("n"), saved.get("size"), saved.get("generator_version"))
        if got == ("heldout", seed, n, size, GENERATOR_VERSION):  # an older generator's world lacks newer families
            return folder
    config = WorldConfig(scene=SceneConfig(size=size), speech="off")
    generate_world(folder, n, seed=seed, split="heldout", config=config, progress=progress)
    return folder
