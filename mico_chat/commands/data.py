"""``mico-chat data``: validate, convert, generate and caption training data.

mico-chat data validate records.jsonl --media-root DIR          # report bad records (exit 1 if any)
mico-chat data convert msrvtt train_val_videodatainfo.json msrvtt.jsonl --split train
mico-chat data synth --out world/ --n 10000 --seed 0 --split train
mico-chat data omni-caption captions.jsonl omni.jsonl --model default
mico-chat data pseudolabel videos/ labels.jsonl --model default
mico-chat data instruct captions.jsonl instruct.jsonl --per-record 2
mico-chat data omni-caption captions.jsonl omni.jsonl --model default --ray --ray-workers 2   # Ray Data shards
mico-chat data encode-features records.jsonl features/ --model default [--ray]   # encoder-feature store
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

SUBCOMMANDS = {
    "validate": "check records files: format, placeholders, lengths, media (in parallel)",
    "convert": "convert a public dataset's annotation file into records",
    "synth": "generate the synthetic audio-visual world (clips, stills, depth, captions, questions)",
    "omni-caption": "write omni captions from vision/audio captions and subtitles with an LLM (VAST)",
    "pseudolabel": "label videos without text by captioning their frames (Lialin et al.)",
    "instruct": "make instruction conversations from caption records (templates, optional LLM rewriting)",
    "encode-features": "store the frozen encoder's features of every media item (sharded safetensors) for training",
}


def _llm_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("LLM (the project's ChatModel, or any OpenAI-compatible endpoint)")
    group.add_argument(
        "--model", default="default", help="preset or saved MiCo-Chat folder for ChatModel (default: default)"
    )
    group.add_argument("--llm", help="with a preset: use this local HF causal-LM folder as its LLM")
    group.add_argument("--device", default="auto")
    group.add_argument(
        "--openai-base-url", help="use this OpenAI-compatible endpoint instead, e.g. http://127.0.0.1:8000/v1"
    )
    group.add_argument("--openai-model", help="model name at the endpoint")
    group.add_argument("--openai-api-key", default=None, help="API key (default: $OPENAI_API_KEY, else 'EMPTY')")
    group.add_argument("--max-new-tokens", type=int, default=96)
    group.add_argument("--batch-size", type=int, default=8)
    group.add_argument("--max-retries", type=int, default=2, help="retries of a rejected output (sampled)")
    group.add_argument("--log", type=Path, help="where rejected outputs are logged (default: OUT.log.jsonl)")
    group.add_argument("--no-progress", action="store_true")
    _ray_arguments(parser)


def _ray_arguments(parser: argparse.ArgumentParser, shard_default: str = "32 batches") -> None:
    ray = parser.add_argument_group("Ray Data (pip install 'mico-chat[scale]'): batch inference over a cluster")
    ray.add_argument(
        "--ray", nargs="?", const="local", metavar="ADDRESS",
        help="shard the records over Ray actors that each hold the model; ADDRESS of a running cluster "
        "(auto, ray://HOST:10001), or none to start a local one (give it after the files, or as --ray=ADDRESS). "
        "Outputs are sharded in OUT.shards/: a rerun redoes only unfinished shards",
    )  # fmt: skip
    ray.add_argument("--ray-workers", type=int, help="model actors (default: one per GPU, else 1)")
    ray.add_argument("--ray-cpus-per-worker", type=float, default=1.0, help="CPUs per actor (default 1)")
    ray.add_argument(
        "--ray-shard-size", type=int, help=f"records per shard, a multiple of --batch-size (default {shard_default})"
    )
    ray.add_argument(
        "--ray-object-store-mb", type=int, default=256, help="a local cluster's object store (default 256 MiB)"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    p = sub.add_parser("validate", help=SUBCOMMANDS["validate"], description=SUBCOMMANDS["validate"])
    p.add_argument("files", nargs="+", type=Path, help=".jsonl or .json records files")
    p.add_argument("--media-root", type=Path, help="folder media paths are relative to (default: each file's folder)")
    p.add_argument(
        "--check",
        default="decode",
        choices=("none", "exists", "probe", "decode"),
        help="media check level (default: decode)",
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--strict", action="store_true", help="stop at the first bad record")
    p.add_argument("--allow-outside-root", action="store_true",
                   help="accept media paths outside the media root (absolute, or '../' leading out)")  # fmt: skip
    p.add_argument("--json", type=Path, help="also write the full report as JSON")
    p.add_argument("--max-listed", type=int, default=200, help="bad records printed (all go to --json)")
    p.add_argument("--no-progress", action="store_true")

    from mico_chat.instruct_data.convert import CONVERTERS

    p = sub.add_parser("convert", help=SUBCOMMANDS["convert"], description=SUBCOMMANDS["convert"])
    p.add_argument(
        "format", choices=sorted(CONVERTERS), help="; ".join(f"{c.name}: {c.help}" for c in CONVERTERS.values())
    )
    p.add_argument("input", type=Path)
    p.add_argument("output", type=Path, help="records .jsonl to write")
    p.add_argument(
        "--path-template", help="media path from a row's fields, e.g. '{page_dir}/{videoid}.mp4' (default: per format)"
    )
    p.add_argument("--split", help="keep one split (MSR-VTT: train, validate, test)")
    p.add_argument(
        "--captions", default="all", choices=("all", "first"), help="one record per caption (all) or per item"
    )
    p.add_argument("--with-audio", action="store_true", help="video datasets: also pair the video's audio track")
    p.add_argument("--path-column", default="path", help="caption-csv: media path column")
    p.add_argument("--caption-column", default="caption", help="caption-csv: caption column")
    p.add_argument("--id-column", help="caption-csv: id column (default: FILE-LINE)")
    p.add_argument(
        "--modality", default="video", choices=("video", "audio", "image", "depth", "normal"), help="caption-csv"
    )
    p.add_argument(
        "--caption-kind", default="vision", choices=("vision", "audio", "omni", "subtitle"), help="caption-csv"
    )
    p.add_argument("--strict", action="store_true", help="exit 1 when any row was rejected")

    p = sub.add_parser("synth", help=SUBCOMMANDS["synth"], description=SUBCOMMANDS["synth"])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--n", type=int, required=True, help="number of clips")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="train", choices=("train", "heldout"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--size", type=int, default=128, help="frame side in pixels (128-224)")
    p.add_argument(
        "--speech", default="auto", choices=("auto", "on", "off"), help="espeak-ng speech (auto: when installed)"
    )
    p.add_argument("--qa-per-family", type=int, default=1,
                   help="single-turn questions per family per clip (temporal: only clips with timing to ask about)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("omni-caption", help=SUBCOMMANDS["omni-caption"], description=SUBCOMMANDS["omni-caption"])
    p.add_argument("input", type=Path, help="caption records (.jsonl)")
    p.add_argument("output", type=Path, help="records with captions.omni (.jsonl; a rerun resumes)")
    p.add_argument(
        "--fallback",
        default="none",
        choices=("none", "concat"),
        help="after all retries: leave for a rerun, or concatenate",
    )
    p.add_argument(
        "--pseudolabel", action="store_true", help="first pseudo-label records without a vision caption (needs --model)"
    )
    p.add_argument("--media-root", type=Path, help="for --pseudolabel: media root (default: the input's folder)")
    _llm_arguments(p)

    p = sub.add_parser("pseudolabel", help=SUBCOMMANDS["pseudolabel"], description=SUBCOMMANDS["pseudolabel"])
    p.add_argument("input", type=Path, help="records (.jsonl) with a video or image each, or a folder of videos")
    p.add_argument("output", type=Path, help="records with captions.vision (.jsonl; a rerun resumes)")
    p.add_argument("--media-root", type=Path, help="media root (default: the input's folder, or the input folder)")
    p.add_argument(
        "--chunk-s", type=float, default=8.0, help="one frame per chunk of this many seconds (default 8, as the paper)"
    )
    p.add_argument("--max-frames", type=int, default=4)
    p.add_argument(
        "--combine", default="auto", choices=("auto", "join", "llm"), help="how frame captions become one label"
    )
    _llm_arguments(p)

    p = sub.add_parser("instruct", help=SUBCOMMANDS["instruct"], description=SUBCOMMANDS["instruct"])
    p.add_argument("input", type=Path, help="caption records (.jsonl)")
    p.add_argument("output", type=Path, help="instruction records (.jsonl)")
    p.add_argument("--kinds", default="description,open,yesno,mc", help="comma-separated template kinds")
    p.add_argument("--per-record", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--rewrite", action="store_true", help="instead: an LLM writes a conversation per record (LLaVA-style)"
    )
    p.add_argument("--turns", type=int, default=3, help="with --rewrite: questions per conversation")
    _llm_arguments(p)

    p = sub.add_parser("encode-features", help=SUBCOMMANDS["encode-features"],
                       description=SUBCOMMANDS["encode-features"] + ". Layout and manifest: docs/scaling.md, \"Encoder-feature stores\"")  # fmt: skip
    p.add_argument("input", type=Path, help="records (.jsonl / .json)")
    p.add_argument("output", type=Path, help="store folder (a rerun resumes per shard)")
    p.add_argument("--model", default="default", help="preset or saved MiCo-Chat folder whose encoder runs")
    p.add_argument("--llm", help="with a preset: its LLM (loaded with the model; the encoder is the preset's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", help="dtype the model runs in (default: float32 on CPU, bfloat16 on CUDA)")
    p.add_argument("--media-root", type=Path, help="folder media paths are relative to (default: the input's folder)")
    p.add_argument(
        "--batch-size", type=int, default=1,
        help="items of one modality and shape per encoder call (default 1: as the training cache; more is faster "
        "on a GPU, equal up to float rounding)",
    )  # fmt: skip
    p.add_argument("--store-dtype", default="float16", choices=("float16", "bfloat16", "float32", "model"),
                   help="dtype of the stored features (default float16; model: the dtype the encoder ran in)")  # fmt: skip
    p.add_argument(
        "--shard-size", type=int, help="records per shard file (default: --ray-shard-size, else 32 batches)"
    )
    p.add_argument("--threads", type=int,
                   help="torch CPU threads while encoding, in this process or each Ray actor (default: as set up); "
                   "on a CPU, one process and Ray write bit-identical stores only with the same count")  # fmt: skip
    p.add_argument("--log", type=Path, help="records that failed, with reasons (default: OUT_DIR/failed.jsonl)")
    p.add_argument("--no-progress", action="store_true", help="no Ray Data progress bars")
    _ray_arguments(p)


def _generator(args: argparse.Namespace, chat=None):
    """The LLM the options name: an OpenAI-compatible endpoint, or ``chat`` / the ``--model`` ChatModel."""
    import os

    from mico_chat.instruct_data.llm import ChatModelGenerator, OpenAIGenerator, SamplingSettings

    settings = SamplingSettings(max_new_tokens=args.max_new_tokens)
    if args.openai_base_url:
        if not args.openai_model:
            raise ValueError("--openai-base-url needs --openai-model")
        key = args.openai_api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        return OpenAIGenerator(args.openai_base_url, args.openai_model, api_key=key, settings=settings)
    return ChatModelGenerator(chat if chat is not None else _chat_model(args), settings)


def _chat_model(args: argparse.Namespace):
    from mico_chat.api import ChatModel

    return ChatModel.load(args.model, llm=args.llm, device=args.device)


def _validate(args: argparse.Namespace) -> int:
    from mico_chat.instruct_data.validate import validate_records, write_report

    report = validate_records(args.files, args.media_root, check=args.check, workers=args.workers, strict=args.strict,
                              progress=not args.no_progress, allow_outside_root=args.allow_outside_root)  # fmt: skip
    print(report.format(args.max_listed))
    if args.json:
        write_report(args.json, report)
        print(f"report: {args.json}")
    return 0 if report.ok else 1


def _convert(args: argparse.Namespace) -> int:
    from mico_chat.instruct_data.convert import ConvertOptions, convert

    options = ConvertOptions(
        path_template=args.path_template, split=args.split, captions=args.captions, with_audio=args.with_audio,
        path_column=args.path_column, caption_column=args.caption_column, id_column=args.id_column,
        modality=args.modality, caption_kind=args.caption_kind,
    )  # fmt: skip
    result = convert(args.format, args.input, args.output, options)
    print(result.format())
    return 1 if args.strict and result.rejected else 0


def _synth(args: argparse.Namespace) -> int:
    from mico_chat.instruct_data.synth import WorldConfig, generate_world
    from mico_chat.instruct_data.synth.scene import SceneConfig

    config = WorldConfig(scene=SceneConfig(size=args.size), speech=args.speech, qa_per_family=args.qa_per_family)
    summary = generate_world(args.out, args.n, seed=args.seed, split=args.split, workers=args.workers, config=config,
                             progress=not args.no_progress)  # fmt: skip
    speech = summary.speech.engine if summary.speech.enabled else f"off ({summary.speech.reason})"
    print(f"{summary.out_dir}: {summary.n} {summary.split} clips, {summary.num_records} instruction records, "
          f"{summary.num_captions} caption records in {summary.seconds:.1f} s ({summary.clips_per_second:.1f} clips/s, "
          f"{summary.workers} workers); speech: {speech}")  # fmt: skip
    print(json.dumps(summary.families))
    return 0


@dataclass
class _Job:
    """A model-driven subcommand as a :class:`~mico_chat.instruct_data.shards.ShardJob`.

    The options travel (pickled) to each Ray worker, which calls ``setup`` once to load the model;
    the single-process path calls the same ``setup`` and ``run``, so both write the same records.
    """

    args: argparse.Namespace
    progress: bool = True

    def key(self, record) -> str:
        return record.id

    def setup(self) -> None:
        raise NotImplementedError

    def run(self, records: list, out: Path, log: Path | None):
        raise NotImplementedError


@dataclass
class _OmniJob(_Job):
    def setup(self) -> None:
        args = self.args
        # Loaded once, used twice (pseudo-labels and omni captions).
        self.chat = _chat_model(args) if args.pseudolabel or not args.openai_base_url else None
        self.generator = _generator(args, self.chat)

    def run(self, records: list, out: Path, log: Path | None):
        from mico_chat.instruct_data.omni_caption import OmniCaptionConfig, generate_omni_captions

        args = self.args
        if args.pseudolabel:
            records = _pseudolabel_missing(args, records, self.chat, out, self.progress)
        config = OmniCaptionConfig(batch_size=args.batch_size, max_retries=args.max_retries, fallback=args.fallback)
        return generate_omni_captions(records, out, self.generator, config, log=log, progress=self.progress)


def _omni(args: argparse.Namespace) -> int:
    from mico_chat.instruct_data.omni_caption import read_caption_records

    records, bad = read_caption_records(args.input)
    for b in bad:
        print(f"skipped: {b}", file=sys.stderr)
    report = _execute(args, records, _OmniJob(args, progress=not args.no_progress))
    if report.failed:
        print(f"{len(report.failed)} clips without an accepted omni caption; rerun to retry them", file=sys.stderr)
    return 0


def _pseudolabel_missing(args: argparse.Namespace, records: list, chat, out: Path, progress: bool) -> list:
    """Records without a vision caption get a pseudo-label first (written to OUT.pseudolabel.jsonl, resumable)."""
    from mico_chat.instruct_data.pseudolabel import ChatModelCaptioner, PseudoLabelConfig, pseudolabel
    from mico_chat.instruct_data.records import Record, read_records

    missing = [r for r in records if not r.captions.get("vision")]
    if not missing:
        return records
    labelled = out.with_name(out.name + ".pseudolabel.jsonl")
    config = PseudoLabelConfig(batch_size=args.batch_size, max_retries=args.max_retries)
    report = pseudolabel(missing, labelled, ChatModelCaptioner(chat), media_root=args.media_root or args.input.parent,
                         config=config, progress=progress)  # fmt: skip
    print(report.format())
    by_id = {r.id: r for r in read_records(labelled) if isinstance(r, Record)}
    return [by_id.get(r.id, r) for r in records]


@dataclass
class _PseudolabelJob(_Job):
    media_root: Path | None = None

    def setup(self) -> None:
        from mico_chat.instruct_data.pseudolabel import ChatModelCaptioner

        args = self.args
        chat = _chat_model(args)
        self.combiner = None
        if args.combine == "llm" or (args.combine == "auto" and args.openai_base_url):
            self.combiner = _generator(args, chat)
        self.captioner = ChatModelCaptioner(chat)

    def run(self, records: list, out: Path, log: Path | None):
        from mico_chat.instruct_data.pseudolabel import PseudoLabelConfig, pseudolabel

        args = self.args
        config = PseudoLabelConfig(chunk_s=args.chunk_s, max_frames=args.max_frames, combine=args.combine,
                                   batch_size=args.batch_size, max_retries=args.max_retries)  # fmt: skip
        return pseudolabel(records, out, self.captioner, combiner=self.combiner, media_root=self.media_root,
                           config=config, log=log, progress=self.progress)  # fmt: skip


def _pseudolabel(args: argparse.Namespace) -> int:
    from mico_chat.instruct_data.omni_caption import read_caption_records
    from mico_chat.instruct_data.pseudolabel import records_from_folder

    if args.input.is_dir():
        records, root = records_from_folder(args.input), args.media_root or args.input
    else:
        records, bad = read_caption_records(args.input)
        for b in bad:
            print(f"skipped: {b}", file=sys.stderr)
        root = args.media_root or args.input.parent
    _execute(args, records, _PseudolabelJob(args, progress=not args.no_progress, media_root=root))
    return 0


@dataclass
class _RewriteJob(_Job):
    def key(self, record) -> str:
        return f"{record.id}-llm"  # the id rewrite() gives a record's conversation

    def setup(self) -> None:
        self.generator = _generator(self.args)

    def run(self, records: list, out: Path, log: Path | None):
        from mico_chat.instruct_data.instruct import rewrite

        args = self.args
        return rewrite(records, out, self.generator, turns=args.turns, batch_size=args.batch_size,
                       max_retries=args.max_retries, log=log, progress=self.progress)  # fmt: skip


def _ray_options(args: argparse.Namespace, shard_size: int):
    from mico_chat.instruct_data.ray_runner import RayOptions

    return RayOptions(
        address=None if args.ray == "local" else args.ray, workers=args.ray_workers,
        cpus_per_worker=args.ray_cpus_per_worker, use_gpus=args.device != "cpu",
        shard_size=shard_size, object_store_mb=args.ray_object_store_mb, progress=not args.no_progress,
    )  # fmt: skip


def _execute(args: argparse.Namespace, records: list, job: _Job):
    """Run ``job`` over ``records`` into ``args.output``: in this process, or sharded over Ray with ``--ray``."""
    if args.ray is None:
        job.setup()
        report = job.run(records, args.output, args.log)
    else:
        from mico_chat.instruct_data.ray_runner import run_with_ray

        options = _ray_options(args, args.ray_shard_size or 32 * args.batch_size)
        job.progress = False  # the workers' bars would interleave; Ray Data shows one per run
        report = run_with_ray(records, args.output, job, options, batch_size=args.batch_size, log=args.log)
    print(report.format())
    return report


def _encode_features(args: argparse.Namespace) -> int:
    """The encoder-feature store: the same shards (files) in one process or over Ray."""
    import os

    from mico_chat.instruct_data import feature_store as fs
    from mico_chat.instruct_data.records import BadRecord, read_records
    from mico_chat.instruct_data.shards import ShardPlan, run_in_process, shard_folder

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    records = []
    for item in read_records(args.input):
        if isinstance(item, BadRecord):
            print(f"skipped: {item}", file=sys.stderr)
        else:
            records.append(item)
    # Absolute: Ray actors may run in another working directory.
    store = Path(os.path.abspath(args.output))
    store.mkdir(parents=True, exist_ok=True)
    media_root = Path(os.path.abspath(args.media_root or args.input.parent))
    model = os.path.abspath(args.model) if Path(args.model).exists() else args.model  # a folder, or a preset name
    job = fs.EncodeFeaturesJob(store=store, model=model, media_root=media_root, batch_size=args.batch_size,
                               store_dtype=args.store_dtype, device=args.device, dtype=args.dtype, llm=args.llm,
                               threads=args.threads)  # fmt: skip
    shard_size = args.shard_size or args.ray_shard_size or 32 * args.batch_size
    index, log = store / fs.INDEX, args.log or store / fs.FAILED
    if args.ray is None:
        import torch

        threads = torch.get_num_threads()
        try:
            report = run_in_process(records, index, job, shard_size=shard_size, batch_size=args.batch_size, log=log)
        finally:
            torch.set_num_threads(threads)  # --threads is for this run only (the CLI may run in-process)
    else:
        from mico_chat.instruct_data.ray_runner import run_with_ray

        report = run_with_ray(records, index, job, _ray_options(args, shard_size), batch_size=args.batch_size, log=log)
    if not any(shard_folder(index).glob("*.log.jsonl")) and log.exists():
        log.unlink()  # every failure of an earlier run has been redone
    plan = ShardPlan(shard_folder(index), shard_size, tuple(r.id for r in records))
    manifest = fs.write_manifest(store, plan, records_file=args.input, media_root=media_root)
    print(report.format())
    print(f"{store}: {manifest['num_items']} media items of {report.gathered} records in {len(manifest['files'])} "
          f"shard files ({args.store_dtype}); manifest: {store / fs.MANIFEST}")  # fmt: skip
    if report.failed:
        print(f"{len(report.failed)} records failed (reasons in {log}); rerun to retry their shards", file=sys.stderr)
    return 0


def _instruct(args: argparse.Namespace) -> int:
    from mico_chat.instruct_data.instruct import InstructConfig, make_instructions
    from mico_chat.instruct_data.omni_caption import read_caption_records
    from mico_chat.instruct_data.records import parse_record, write_records

    records, bad = read_caption_records(args.input)
    for b in bad:
        print(f"skipped: {b}", file=sys.stderr)
    if args.rewrite:
        _execute(args, records, _RewriteJob(args, progress=not args.no_progress))
        return 0
    if args.ray is not None:
        raise ValueError("--ray runs a model: it applies to --rewrite (template instructions need none)")
    config = InstructConfig(
        kinds=tuple(k.strip() for k in args.kinds.split(",") if k.strip()), per_record=args.per_record, seed=args.seed
    )
    made = [parse_record(raw) for raw in make_instructions(records, config)]
    count = write_records(args.output, made)
    print(f"{args.output}: {count} instruction records from {len(records)} caption records")
    return 0


def run(args: argparse.Namespace) -> int:
    handlers = {"validate": _validate, "convert": _convert, "synth": _synth, "omni-caption": _omni,
                "pseudolabel": _pseudolabel, "instruct": _instruct, "encode-features": _encode_features}  # fmt: skip
    from mico_chat.instruct_data.ray_runner import RayNotInstalled

    try:
        return handlers[args.data_command](args)
    except (ValueError, RayNotInstalled) as err:  # ConvertError, RecordError, bad options, a missing extra
        print(f"mico-chat data {args.data_command}: error: {err}", file=sys.stderr)
        return 2
