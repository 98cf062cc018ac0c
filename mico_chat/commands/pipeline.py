"""``mico-chat pipeline CONFIG.yaml [--tiny] [key=value ...]``: train, check and export a model end to end.

    mico-chat pipeline configs/default/pipeline.yaml                    # the embedded default
    mico-chat pipeline configs/default/pipeline.yaml --tiny output_dir=runs/default-tiny

Steps, each skipped when its output is complete, so re-running after a kill continues (training
steps resume from their newest checkpoint)::

    worlds     OUT/data/train, OUT/data/heldout        mico-chat data synth
    pretrain   OUT/pretrain/encoder                    mico-chat pretrain  (MiCo encoder)
    stage1     OUT/stage1/model                        mico-chat train     (connectors on captions, lexical)
    stage2     OUT/stage2/model                        mico-chat train     (LoRA on instructions)
    eval       OUT/eval/{synth,general_qa,general_qa_base}/results.json   mico-chat eval
    export     OUT/preset/<name>.{json,safetensors,md}

Each step runs the same code as its own command, on a config resolved into ``OUT/configs/``; the
wall time of every step goes to ``OUT/pipeline.json``. Overrides: pipeline keys
(``worlds.train.n=200``) or a step's config keys behind the step's name
(``pretrain.train.max_steps=50``, ``stage2.lora.r=16``).

Why a command and not a shell script: the steps need the resolved paths of the earlier ones, a
completeness check each, and the same override syntax as ``mico-chat train``; and it runs the same
on every platform the package installs on.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mico_chat.yamlconfig import REQUIRED, YamlConfig, build_config, read_yaml

STEPS_ORDER = ("worlds", "pretrain", "stage1", "stage2", "eval", "export")
STEP_CONFIGS = ("pretrain", "stage1", "stage2")

# A smoke run: a few clips, two optimisation steps per stage, a few questions.
TINY = (
    "worlds.train.n=6",
    "worlds.heldout.n=2",
    "pretrain.train.max_steps=2",
    "pretrain.train.save_steps=1",
    "pretrain.train.warmup_steps=0",
    "pretrain.data.batch_size=4",
    "pretrain.eval.records=null",
    "stage1.train.max_steps=2",
    "stage1.train.save_steps=1",
    "stage1.train.per_device_train_batch_size=2",
    "stage1.train.logging_steps=1",
    "stage2.train.max_steps=2",
    "stage2.train.save_steps=1",
    "stage2.train.per_device_train_batch_size=2",
    "stage2.train.gradient_accumulation_steps=1",
    "stage2.train.logging_steps=1",
    # float32: accelerate keeps one mixed-precision state per process, and the tests run smoke
    # pipelines beside other training in one process.
    "stage2.train.bf16=false",
    "eval.general_qa_limit=8",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="pipeline YAML, e.g. configs/default/pipeline.yaml")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="e.g. worlds.train.n=200 stage1.train.max_steps=50"
    )
    parser.add_argument(
        "--tiny", action="store_true", help="smoke run: a few clips, two steps per stage (before your overrides)"
    )
    parser.add_argument("--only", help="comma-separated steps to run (default: all): " + ", ".join(STEPS_ORDER))
    parser.add_argument("--print-config", action="store_true", help="print the resolved pipeline config and exit")
    parser.add_argument("--no-progress", action="store_true")


# ---------------------------------------------------------------------- config
@dataclass
class WorldSpec:
    """One split's world: ``n`` clips from ``seed``; ``qa_per_family`` questions per family and clip."""

    n: int = REQUIRED
    seed: int = REQUIRED
    qa_per_family: int = 1


@dataclass
class WorldsSection:
    """The training and held-out worlds (``mico-chat data synth``), frames ``size`` pixels square."""

    size: int = 128
    train: WorldSpec = field(default_factory=WorldSpec)
    heldout: WorldSpec = field(default_factory=WorldSpec)


@dataclass
class StepSpec:
    """A training step: its own config file and ``key=value`` overrides of it."""

    config: str = REQUIRED
    overrides: list[str] = field(default_factory=list)


@dataclass
class EvalSection:
    """The held-out and general-text checks (``None`` limits: every item)."""

    batch_size: int = 8
    synth_limit: int | None = None
    general_qa_limit: int | None = None
    baseline: bool = True


@dataclass
class ExportSection:
    """The preset written at the end: ``name``, storage ``dtype``, model-card template, UI ``note``."""

    name: str = "default"
    dtype: str = "float16"
    card_template: str | None = None
    note: str | None = None


@dataclass
class PipelineConfig(YamlConfig):
    """A pipeline YAML (``configs/default/pipeline.yaml``), typed like the stage configs."""

    output_dir: str = REQUIRED
    llm: str | None = None
    worlds: WorldsSection = field(default_factory=WorldsSection)
    pretrain: StepSpec = field(default_factory=StepSpec)
    stage1: StepSpec = field(default_factory=StepSpec)
    stage2: StepSpec = field(default_factory=StepSpec)
    eval: EvalSection = field(default_factory=EvalSection)
    export: ExportSection = field(default_factory=ExportSection)


def load_pipeline_config(path: str | Path, overrides: Sequence[str] = (), *, tiny: bool = False) -> PipelineConfig:
    """The pipeline YAML with ``--tiny`` and ``key=value`` overrides applied (the syntax of
    ``mico-chat train``: unknown keys and wrong types fail naming the key and the file).

    ``pretrain.K=V`` / ``stage1.K=V`` / ``stage2.K=V`` (K not ``config`` or ``overrides``) are appended
    to that step's ``overrides`` list; anything else sets a pipeline key.
    """
    from mico_chat.training.config import parse_override
    from mico_chat.training.errors import TrainConfigError

    raw = read_yaml(path, TrainConfigError)
    mine: list[str] = []
    routed: dict[str, list[str]] = {step: [] for step in STEP_CONFIGS}
    for text in (*(TINY if tiny else ()), *overrides):
        key, _ = parse_override(text)
        step, _, rest = key.partition(".")
        if step in STEP_CONFIGS and rest and rest not in ("config", "overrides"):
            routed[step].append(f"{rest}={text.split('=', 1)[1]}")
        else:
            mine.append(text)
    config = build_config(PipelineConfig, raw, mine, source=str(path), error=TrainConfigError)
    for step, extra in routed.items():
        getattr(config, step).overrides.extend(extra)
    return config


# ---------------------------------------------------------------------- steps
class Pipeline:
    """The steps of one pipeline run over ``config`` (see the module docstring)."""

    def __init__(self, config: PipelineConfig, *, progress: bool = True, log: Callable[[str], None] = print):
        self.config = config
        self.out = Path(config.output_dir)
        self.progress = progress
        self.log = log
        self.record_path = self.out / "pipeline.json"
        self.record: dict[str, Any] = json.loads(self.record_path.read_text()) if self.record_path.is_file() else {}
        self.record.setdefault("steps", {})

    # paths
    def world(self, split: str) -> Path:
        return self.out / "data" / split

    @property
    def encoder_dir(self) -> Path:
        return self.out / "pretrain" / "encoder"

    def stage_model(self, stage: str) -> Path:
        return self.out / stage / "model"

    def eval_dir(self, name: str) -> Path:
        return self.out / "eval" / name

    @property
    def preset_dir(self) -> Path:
        return self.out / "preset"

    def run(self, only: Sequence[str] | None = None) -> dict[str, Any]:
        """Run every step (or ``only`` those), skipping complete ones; returns the run record."""
        unknown = sorted(set(only or ()) - set(STEPS_ORDER))
        if unknown:
            raise ValueError(f"unknown step(s) {unknown}; steps: {', '.join(STEPS_ORDER)}")
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "configs").mkdir(exist_ok=True)
        (self.out / "configs" / "pipeline.yaml").write_text(self.config.to_yaml())
        for name in STEPS_ORDER:
            if only and name not in only:
                continue
            step = getattr(self, f"step_{name}")
            started = time.perf_counter()
            done = step()
            seconds = round(time.perf_counter() - started, 2)
            entry = self.record["steps"].setdefault(name, {})
            if done == "skipped":
                self.log(f"[{name}] complete, skipped")
                entry["last"] = "skipped"
            else:
                self.log(f"[{name}] done in {seconds:.1f} s")
                entry.update(last="ran", seconds=seconds, finished=time.strftime("%Y-%m-%d %H:%M:%S"))
            self._save_record()
        return self.record

    def _save_record(self) -> None:
        from mico_chat.training.reports import write_json

        write_json(self.record_path, self.record)

    def step_worlds(self) -> str:
        from mico_chat.instruct_data.synth import RECORDS_FILE, WorldConfig, generate_world
        from mico_chat.instruct_data.synth.scene import SceneConfig
        from mico_chat.instruct_data.synth.world import GENERATOR_VERSION

        worlds = self.config.worlds
        ran = False
        for split, spec in (("train", worlds.train), ("heldout", worlds.heldout)):
            folder = self.world(split)
            summary = folder / "summary.json"
            qa_per_family = spec.qa_per_family
            wanted = (split, spec.seed, spec.n, worlds.size, qa_per_family, GENERATOR_VERSION)
            if summary.is_file() and (folder / RECORDS_FILE).is_file():
                saved = json.loads(summary.read_text())
                got = (saved["split"], saved["seed"], saved["n"], saved["size"], saved.get("qa_per_family", 1),
                       saved.get("generator_version"))  # an older generator's world lacks newer families
                if got == wanted:
                    continue
            # Speech off: the world must not depend on whether espeak-ng happens to be installed.
            config = WorldConfig(scene=SceneConfig(size=worlds.size), speech="off", qa_per_family=qa_per_family)
            generate_world(folder, spec.n, seed=spec.seed, split=split, config=config, progress=self.progress)
            ran = True
        return "ran" if ran else "skipped"

    def step_pretrain(self) -> str:
        if (self.encoder_dir / "config.json").is_file():
            return "skipped"
        from mico_chat.commands import pretrain
        from mico_chat.instruct_data.synth import CAPTIONS_FILE

        spec = self.config.pretrain
        raw = yaml.safe_load(Path(spec.config).read_text(encoding="utf-8"))
        captions = str(self.world("train") / CAPTIONS_FILE)
        for dataset in raw.get("data", {}).get("datasets", []):
            dataset["records"] = captions  # every dataset of the recipe reads this run's world
        raw.setdefault("eval", {})["records"] = str(self.world("heldout") / CAPTIONS_FILE)
        raw.setdefault("data", {})["cache_dir"] = str(self.out / "cache")
        raw.setdefault("train", {})["output_dir"] = str(self.out / "pretrain")
        resolved = self.out / "configs" / "pretrain.yaml"
        resolved.write_text(
            f"# resolved from {spec.config} by mico-chat pipeline\n" + yaml.safe_dump(raw, sort_keys=False)
        )
        args = argparse.Namespace(config=str(resolved), overrides=list(spec.overrides),
                                  no_progress=not self.progress, print_config=False)  # fmt: skip
        _check(pretrain.run(args), "pretrain")
        return "ran"

    def _train(self, stage: str, overrides: list[str]) -> str:
        if (self.stage_model(stage) / "config.json").is_file():
            return "skipped"
        from mico_chat.commands import train

        spec: StepSpec = getattr(self.config, stage)
        args = argparse.Namespace(config=spec.config, overrides=[*overrides, *spec.overrides],
                                  print_config=False, no_progress=not self.progress)  # fmt: skip
        _check(train.run(args), stage)
        return "ran"

    def step_stage1(self) -> str:
        from mico_chat.instruct_data.synth.world import VIEW_CAPTIONS, write_view_captions

        views = self.world("train") / VIEW_CAPTIONS
        if not views.is_file():  # a world generated before the view captions existed
            write_view_captions(self.world("train"))
        overrides = [
            f"data.train=[{views}]",
            f"train.output_dir={self.out / 'stage1'}",
            f"model.encoder={{pretrained: {self.encoder_dir}}}",
        ]
        if self.config.llm:
            overrides.append(f"model.llm={self.config.llm}")
        return self._train("stage1", overrides)

    def step_stage2(self) -> str:
        from mico_chat.instruct_data.synth import RECORDS_FILE

        overrides = [
            f"data.train=[{self.world('train') / RECORDS_FILE}]",
            f"train.output_dir={self.out / 'stage2'}",
            f"model.init_from={self.stage_model('stage1')}",
        ]
        return self._train("stage2", overrides)

    def step_eval(self) -> str:
        from mico_chat.api import ChatModel
        from mico_chat.eval.benchmarks.general_qa import DEFAULT_DATA, GeneralQA
        from mico_chat.eval.benchmarks.synth import Synth
        from mico_chat.eval.runner import evaluate

        ev = self.config.eval
        runs = [("synth", Synth(), self.world("heldout"), ev.synth_limit, self.stage_model("stage2")),
                ("general_qa", GeneralQA(), DEFAULT_DATA, ev.general_qa_limit, self.stage_model("stage2"))]  # fmt: skip
        if ev.baseline:
            # The untrained preset's text chat is the base LLM's own (its encoder never sees text).
            runs.append(("general_qa_base", GeneralQA(), DEFAULT_DATA, ev.general_qa_limit, "untrained"))
        todo = [r for r in runs if not (self.eval_dir(r[0]) / "results.json").is_file()]
        if not todo:
            return "skipped"
        chats: dict[str, ChatModel] = {}
        for name, bench, data, limit, model in todo:
            if str(model) not in chats:
                chats[str(model)] = ChatModel.load(model, llm=self.config.llm if model == "untrained" else None)
            result = evaluate(bench, chats[str(model)], data=Path(data), out=self.eval_dir(name), limit=limit,
                              batch_size=ev.batch_size, progress=self.progress)  # fmt: skip
            self.log(f"== {name}\n{result.report.summary()}")
        return "ran"

    def step_export(self) -> str:
        from mico_chat.presets.export import export_preset

        exp = self.config.export
        name = exp.name
        if (self.preset_dir / f"{name}.json").is_file() and (self.preset_dir / f"{name}.safetensors").is_file():
            return "skipped"
        results = self.eval_results()
        llm = self.config.llm or "smollm2-135m-instruct"
        summary = export_preset(
            self.stage_model("stage2"), self.preset_dir, name=name, llm=llm, dtype=exp.dtype,
            description=f"MiCo-Chat default trained by `mico-chat pipeline` ({self.out}); see {name}.md",
            extra={"eval": results, **({"note": exp.note} if exp.note else {})},
        )  # fmt: skip
        template = exp.card_template
        if template:
            card = model_card(Path(template).read_text(encoding="utf-8"), self, name, llm, summary.size_bytes, results)
            (self.preset_dir / f"{name}.md").write_text(card, encoding="utf-8")
            spec = json.loads(summary.preset.read_text())
            spec["card"] = f"{name}.md"
            summary.preset.write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
        self.record["export"] = {**summary.to_dict(), "card": str(self.preset_dir / f"{name}.md") if template else None}
        self.log(f"exported {summary.preset} ({summary.size_bytes / 1e6:.1f} MB, {summary.deltas} low-rank deltas, "
                 f"max error {summary.max_abs_error:.2g})")  # fmt: skip
        return "ran"

    def eval_results(self) -> dict[str, Any]:
        """``{run: {metric: value}}`` from the eval step's results files (those that exist)."""
        out = {}
        for name in ("synth", "general_qa", "general_qa_base"):
            path = self.eval_dir(name) / "results.json"
            if path.is_file():
                payload = json.loads(path.read_text())
                out[name] = {**payload["scores"]["metrics"], "items": payload["data"]["items"]}
        return out


def _check(code: int, step: str) -> None:
    if code != 0:
        raise RuntimeError(f"pipeline step {step} failed (exit code {code})")


def model_card(template: str, pipeline: Pipeline, name: str, llm: str, size_bytes: int, results: dict[str, Any]) -> str:
    """The card ``template`` (``str.format`` fields) filled from the run's config, records and results."""
    worlds = pipeline.config.worlds
    train_summary = pipeline.world("train") / "summary.json"
    records = json.loads(train_summary.read_text())["records"] if train_summary.is_file() else "?"
    synth = results.get("synth", {})
    rows = ["| family | accuracy |", "|---|---|"]
    rows += [f"| {k} | {v:.3f} |" for k, v in synth.items() if k != "items" and v is not None]
    steps = []
    for step, entry in pipeline.record["steps"].items():
        seconds = entry.get("seconds")
        steps.append(f"- {step}: {seconds:.0f} s" if seconds is not None else f"- {step}")
    for stage in STEP_CONFIGS:
        spec = getattr(pipeline.config, stage)
        steps.append(f"- {stage} config: `{spec.config}` overrides {spec.overrides}")

    def acc(run: str) -> str:
        r = results.get(run)
        return f"{r['accuracy']:.3f} ({round(r['accuracy'] * r['items'])}/{r['items']})" if r else "not measured"

    return template.format(
        name=name, llm=llm, size_mb=size_bytes / 1e6, size=worlds.size, train_n=worlds.train.n,
        train_seed=worlds.train.seed, heldout_n=worlds.heldout.n, heldout_seed=worlds.heldout.seed,
        train_records=records, steps="\n".join(steps), synth_table="\n".join(rows),
        general_items=results.get("general_qa", {}).get("items", "?"), general_acc=acc("general_qa"),
        baseline_acc=acc("general_qa_base"),
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import logging

    config = load_pipeline_config(args.config, args.overrides, tiny=args.tiny)
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    record = Pipeline(config, progress=not args.no_progress).run(args.only.split(",") if args.only else None)
    print(json.dumps(record["steps"], indent=2))
    return 0
