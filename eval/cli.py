"""``mico-chat eval``: run a benchmark, re-score saved files, build mini suites, run lm-eval.

    mico-chat eval list
    mico-chat eval mme --model default --data MME_Benchmark_release_version [--limit N] [--batch-size B]
    mico-chat eval synth --model M                    # held-out synthetic world, per-family accuracy
    mico-chat eval msvd_qa --data MSVD_Zero_Shot_QA --judge openai:gpt-3.5-turbo --judge-base-url URL
    mico-chat eval score mme runs/eval/mme            # same scores as the run, from its files
    mico-chat eval mini data/mini                     # small local copies of every benchmark
    mico-chat eval lm-eval --tasks my_mmlu --include-path tasks/
    mico-chat eval mme --data D --num-processes 2     # data-parallel: 2 local processes
    accelerate launch --num_processes 8 -m mico_chat.cli eval mme --data D   # one per GPU, or nodes

Benchmarks come from :data:`mico_chat.eval.registry.REGISTRY`. This is the one module that builds
argparse parsers: every generative benchmark gets the run options below (:func:`run_options`),
plus the options its class declares as data (``cli_options``,
:class:`~mico_chat.eval.benchmark.CliOption`); other tasks
(:class:`~mico_chat.eval.benchmark.CommandTask`) get their declared options only. Every task
also gets ``--num-processes``: since all options are data, the command line is rebuilt from the
parsed values (:func:`to_argv`) and relaunched as that many processes
(:func:`mico_chat.eval.distributed.launch_local`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from mico_chat.errors import ConfigError

from .benchmark import Benchmark, CliOption, CommandTask, EvalTask
from .distributed import DataParallel, in_launched_group, launch_local
from .items import ItemError
from .judges import JudgeError
from .registry import RESERVED, get_task, task_names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="eval_command", metavar="BENCHMARK")
    for name in task_names():
        if name in RESERVED:
            raise ValueError(f"benchmark name {name!r} is reserved for a `mico-chat eval` sub-command")
        task = get_task(name)
        sp = sub.add_parser(name, help=task.help_text(), description=task.help_text())
        add_task_arguments(sp, task)
    sp = sub.add_parser("score", help="re-score saved result files offline (same numbers as the run)")
    sp.add_argument("benchmark", choices=task_names())
    sp.add_argument("path", type=Path, help="a run folder, or the benchmark's official results file(s)")
    sp.add_argument("--json", type=Path, help="also write the scores as JSON here")
    add_declared_options(sp, (OPTION, *JUDGE_OPTIONS))
    sub.add_parser("list", help="list the registered benchmarks")
    sp = sub.add_parser("mini", help="write small local copies of every benchmark (official layouts, generated media)")
    sp.add_argument("out", type=Path)
    sp.add_argument("--only", help="comma-separated benchmark names (default: all)")
    sp = sub.add_parser("lm-eval", help="run lm-eval tasks (e.g. a local MMLU) with a MiCo-Chat model, offline")
    sp.add_argument("--model", default="default", help="preset name or saved model folder")
    sp.add_argument("--llm", help="for presets: use this local LLM folder")
    sp.add_argument("--tasks", required=True, help="comma-separated task names")
    sp.add_argument("--include-path", type=Path, required=True, help="folder of task YAMLs (data_files absolute)")
    sp.add_argument("--limit", type=float)
    sp.add_argument("--batch-size", type=int, default=8)
    sp.add_argument("--num-fewshot", type=int)
    sp.add_argument("--apply-chat-template", action="store_true", help="render prompts with the model's chat template")
    sp.add_argument("--out", type=Path, help="write lm-eval's results JSON here")
    sp.add_argument("--device")


OPTION = CliOption(
    "--option", repeat=True, metavar="KEY=VALUE",
    help="benchmark option, e.g. prompt_style=llava, circular=false, references=PATH (repeatable)",
)  # fmt: skip

_JUDGE = "judge (benchmarks scored by an LLM)"
JUDGE_OPTIONS: tuple[CliOption, ...] = (
    CliOption("--judge", help="openai:MODEL (any OpenAI-compatible endpoint) or local:PRESET_OR_FOLDER", group=_JUDGE),
    CliOption("--judge-base-url", help="endpoint URL, e.g. http://127.0.0.1:8000/v1 (default: OpenAI)", group=_JUDGE),
    CliOption("--judge-api-key-env", default="OPENAI_API_KEY", help="environment variable with the API key", group=_JUDGE),
    CliOption("--judge-max-tokens", type=int, group=_JUDGE),
    CliOption("--judge-retries", type=int, default=3, help="transport attempts per request", group=_JUDGE),
    CliOption("--judge-workers", type=int, default=4, help="concurrent requests", group=_JUDGE),
    CliOption("--judge-cache", type=Path, group=_JUDGE,
              help="verdict cache (JSONL; default: judge_cache.jsonl in the run folder)"),
)  # fmt: skip

NUM_PROCESSES = CliOption(
    "--num-processes", type=int, default=1, metavar="N", group="data parallel",
    help="evaluate with N local processes (torchrun; one per GPU when there are GPUs, gloo on CPU); "
    "leave at 1 under accelerate launch or torchrun, which start the processes themselves",
)  # fmt: skip


def run_options(task: type[Benchmark]) -> tuple[CliOption, ...]:
    """The options every generative benchmark's ``mico-chat eval BENCH`` has."""
    data_help = "the benchmark's data, in its official layout"
    if not task.data_required:
        data_help += " (optional here: without it the benchmark finds or makes its data)"
    return (
        CliOption("--data", type=Path, required=task.data_required, help=data_help),
        CliOption("--model", default="default", help="preset name or saved model folder"),
        CliOption("--llm", help="for presets: use this local LLM folder"),
        CliOption("--out", type=Path, help="run folder (default: runs/eval/BENCH); holds the prediction cache"),
        CliOption("--limit", type=int, help="only the first N items (whole groups where scoring needs them)"),
        CliOption("--batch-size", type=int, default=8),
        CliOption("--max-new-tokens", type=int, help=f"default: {task.config.max_new_tokens}"),
        CliOption("--media-contrast", type=float, default=0.0,
                  help="alpha of media-contrastive decoding (mico_chat.contrast, VCD; 0: off, VCD's default 1)"),
        CliOption("--device", help="cpu, cuda, cuda:1 (default: auto; with several processes cuda:LOCAL_RANK)"),
        CliOption("--dtype", help="float32, bfloat16 (default: auto)"),
        CliOption("--overwrite", switch=True, help="discard a prediction cache made differently"),
        OPTION,
        *JUDGE_OPTIONS,
    )


def task_options(task: type[EvalTask]) -> tuple[CliOption, ...]:
    """All options of ``mico-chat eval NAME``: a benchmark's run options, then the task's own, then ``--num-processes``."""
    run = run_options(task) if issubclass(task, Benchmark) else ()
    return (*run, *task.cli_options, NUM_PROCESSES)


def add_task_arguments(parser: argparse.ArgumentParser, task: type[EvalTask]) -> None:
    """The options of ``mico-chat eval NAME`` (:func:`task_options`)."""
    add_declared_options(parser, task_options(task))


def add_declared_options(parser: argparse.ArgumentParser, options: tuple[CliOption, ...]) -> None:
    """One argparse argument per :class:`CliOption`, in their ``--help`` groups."""
    groups: dict[str, Any] = {}
    for option in options:
        target: Any = parser
        if option.group is not None:
            if option.group not in groups:
                groups[option.group] = parser.add_argument_group(option.group)
            target = groups[option.group]
        kwargs: dict[str, Any] = {"help": option.help or None, "default": option.default}
        if option.switch:
            kwargs.update(action="store_true", default=bool(option.default))
        else:
            kwargs.update(type=option.type, required=option.required, choices=option.choices, metavar=option.metavar)
            if option.repeat:
                kwargs["action"] = "append"
        target.add_argument(option.flag, **kwargs)


def to_argv(options: tuple[CliOption, ...], args: argparse.Namespace) -> list[str]:
    """The command-line words that parse back to ``args``'s values of ``options`` (unset ones left out)."""
    argv: list[str] = []
    for option in options:
        value = getattr(args, option.dest, None)
        if option.switch:
            argv += [option.flag] if value else []
        elif option.repeat:
            for each in value or ():
                argv += [option.flag, str(each)]
        elif value is not None:
            argv += [option.flag, str(value)]
    return argv


def relaunch(name: str, task: type[EvalTask], args: argparse.Namespace) -> int:
    """Run ``mico-chat eval NAME`` with the same options as ``args.num_processes`` local processes."""
    options = tuple(o for o in task_options(task) if o is not NUM_PROCESSES)
    return launch_local(["eval", name, *to_argv(options, args)], args.num_processes)


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """``["circular=false", "prompt_style=llava"]`` -> ``{"circular": False, "prompt_style": "llava"}``."""
    options: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option needs KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def make_judge(args: argparse.Namespace, out: Path | None):
    if not getattr(args, "judge", None):
        return None
    from .judges import build_judge

    cache = args.judge_cache or (out / "judge_cache.jsonl" if out is not None else None)
    return build_judge(
        args.judge,
        base_url=args.judge_base_url,
        api_key_env=args.judge_api_key_env,
        max_tokens=args.judge_max_tokens,
        max_retries=args.judge_retries,
        workers=args.judge_workers,
        cache=cache,
    )


def run_benchmark_cli(task: type[Benchmark], args: argparse.Namespace) -> int:
    """``mico-chat eval BENCH``: one process, or one of several a launcher started (rank 0 reports)."""
    with DataParallel.from_environment() as parallel:
        return _run_benchmark(task, args, parallel)


def _run_benchmark(task: type[Benchmark], args: argparse.Namespace, parallel: DataParallel) -> int:
    from mico_chat.api import ChatModel

    from .runner import evaluate, resolve_settings, with_max_new_tokens

    bench = task(**parse_options(args.option))
    out = args.out or Path("runs") / "eval" / bench.name
    values = {option.dest: getattr(args, option.dest) for option in task.cli_options}
    # Rank 0 finds or makes the data (a generated world has a random seed), the others use its answer.
    resolved = task.resolve_data(args.data, out=out, values=values) if parallel.is_main else None
    data, note = parallel.broadcast(resolved)
    if note and parallel.is_main:
        print(note)
    judge = make_judge(args, out) if parallel.is_main else None  # judged once per item, on rank 0
    if bench.config.needs_judge and judge is None and parallel.is_main:
        print(
            f"note: {bench.config.title} is scored by an LLM judge; without --judge only the predictions are written",
            file=sys.stderr,
        )
    chat = ChatModel.load(args.model, llm=args.llm, device=parallel.device(args.device), dtype=args.dtype)
    settings = with_max_new_tokens(resolve_settings(bench, None), args.max_new_tokens)
    settings = replace(settings, media_contrast=args.media_contrast)
    result = evaluate(
        bench,
        chat,
        data=data,
        out=out,
        limit=args.limit,
        batch_size=args.batch_size,
        settings=settings,
        judge=judge,
        overwrite=args.overwrite,
        parallel=parallel,
    )
    if result is None:
        return 0
    processes = f", {result.processes} processes" if result.processes > 1 else ""
    print(f"== {bench.config.title} ({result.generated} generated, {result.resumed} from the cache{processes})")
    print(result.report.summary())
    print(f"results: {result.results}  outputs: {result.outputs}")
    return 0


def score_benchmark_cli(task: type[Benchmark], path: Path, args: argparse.Namespace) -> int:
    from .scores import write_json

    bench = task(**parse_options(args.option))
    judge = make_judge(args, path if path.is_dir() else path.parent)
    report = bench.score(path, judge=judge)
    print(f"== {bench.config.title}: {path}")
    print(report.summary())
    if args.json:
        write_json(args.json, {"benchmark": bench.name, "path": str(path), "scores": report.to_dict()})
    return 0


def run(args: argparse.Namespace) -> int:
    command = args.eval_command
    try:
        if command is None or command == "list":
            for name in task_names():
                print(f"{name:16s} {get_task(name).help_text()}")
            return 0 if command == "list" else 2
        if command == "score":
            task = get_task(args.benchmark)
            if issubclass(task, Benchmark):
                return score_benchmark_cli(task, args.path, args)
            return _command_task(task).score_cli(args.path, args)
        if command == "mini":
            from .minisuite import build_all

            only = args.only.split(",") if args.only else None
            for name, path in build_all(args.out, only=only).items():
                print(f"{name:16s} {path}")
            return 0
        if command == "lm-eval":
            from .lm_eval_adapter import run_lm_eval

            results = run_lm_eval(
                model=args.model,
                llm=args.llm,
                tasks=args.tasks.split(","),
                include_path=args.include_path,
                limit=args.limit,
                batch_size=args.batch_size,
                num_fewshot=args.num_fewshot,
                apply_chat_template=args.apply_chat_template,
                device=args.device,
            )
            for task_name, metrics in results["results"].items():
                shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and "stderr" not in k}
                print(f"{task_name}: {shown}")
            if args.out:
                from .scores import write_json

                write_json(args.out, results)
            return 0
        task = get_task(command)
        if args.num_processes > 1:
            if in_launched_group():
                raise ConfigError(
                    "--num-processes starts processes itself; under accelerate launch or torchrun leave it out"
                )
            return relaunch(command, task, args)
        if args.num_processes < 1:
            raise ConfigError(f"--num-processes must be >= 1, got {args.num_processes}")
        if issubclass(task, Benchmark):
            return run_benchmark_cli(task, args)
        return _command_task(task).run_cli(args)
    except (ItemError, JudgeError) as err:
        print(f"mico-chat eval: error: {err}", file=sys.stderr)
        return 2


def _command_task(task: type[EvalTask]) -> type[CommandTask]:
    if not issubclass(task, CommandTask):
        raise TypeError(f"{task.__qualname__} is neither a Benchmark nor a CommandTask")
    return task
