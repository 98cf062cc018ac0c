"""``mico-chat eval retrieval``: text <-> video/audio/image retrieval of a pretrained MiCo model.

mico-chat eval retrieval --model runs/mico/model --data heldout/captions.jsonl --modality video
mico-chat eval retrieval --model M --data D --modality audio --rerank 50 --dual-softmax --out results/
mico-chat eval retrieval --scores results/video/scores.npy --gt results/video/gt.json
mico-chat eval retrieval --model M --data D --cache-dir cache/ --num-processes 2   # encoding split over 2 processes

The options are data (:data:`OPTIONS`); :mod:`mico_chat.eval.cli` builds the parser.
"""

from __future__ import annotations

import argparse
import json
from contextlib import nullcontext
from pathlib import Path

from ..benchmark import CliOption


# The options of `mico-chat eval retrieval` (eval/cli.py builds the parser from them).
OPTIONS: tuple[CliOption, ...] = (
    CliOption("--model", help="a pretraining run's model/ folder (MiCoForPretraining + tokenizer)"),
    CliOption("--data", help="caption records (.jsonl/.json)"),
    CliOption("--media-root", help="folder the records' media paths are relative to (default: the file's)"),
    CliOption("--modality", repeat=True,
              help="query group: video, audio, image or e.g. audio+video (repeat for several; default video)"),
    CliOption("--captions", help="caption kind(s) used as texts, comma-separated (default: vision/audio/omni by group)"),
    CliOption("--dual-softmax", switch=True, help="also report dual-softmax inference"),
    CliOption("--rerank", type=int, default=0, metavar="K", help="also re-rank the top K with the matching head (MiCo: 50)"),
    CliOption("--rerank-queries", choices=("text", "item", "both"), default="both",
              help="which query direction to re-rank (each costs queries x K matching passes)"),
    CliOption("--ties", choices=("pessimistic", "optimistic"), default="pessimistic"),
    CliOption("--batch-size", type=int, default=64),
    CliOption("--limit", type=int, help="evaluate on the first N items only"),
    CliOption("--cache-dir", help="cache of preprocessed media (default: none)"),
    CliOption("--device", default="cpu"),
    CliOption("--out", type=Path, help="folder for metrics.json, and per group scores.npy + gt.json"),
    CliOption("--scores", type=Path, help="a saved (texts x items) score matrix (.npy) to score instead of a model"),
    CliOption("--gt", type=Path, help="with --scores: the item of each text row (JSON, see docs)"),
    CliOption("--rerank-scores", type=Path,
              help="with --scores and --rerank K: the matching head's pair scores a model run saved (rerank_scores.npy)"),
    CliOption("--temperature", type=float, default=0.05, help="with --scores --dual-softmax: the softmax temperature"),
    CliOption("--no-progress", switch=True),
)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    if args.scores is not None:
        from .ground_truth import GroundTruthError

        try:
            return _score_file(args)
        except GroundTruthError as err:
            print(f"mico-chat eval retrieval: error: {err}")
            return 2
    return _score_model(args)


def _score_file(args: argparse.Namespace) -> int:
    import numpy as np

    from .evaluator import format_table
    from .ground_truth import GroundTruthError, load_ground_truth
    from .metrics import dual_softmax, retrieval_metrics

    if args.gt is None:
        raise FileNotFoundError("--scores needs --gt (the item of each text row)")
    if not args.scores.is_file():
        raise FileNotFoundError(f"{args.scores}: no such score matrix")
    scores = np.load(args.scores, allow_pickle=False)
    if scores.ndim != 2:
        raise GroundTruthError(f"{args.scores}: expected a (texts, items) matrix, got shape {scores.shape}")
    gt = load_ground_truth(args.gt, scores.shape[0], scores.shape[1])
    metrics = {"scores": retrieval_metrics(scores, gt, ties=args.ties)}
    if args.dual_softmax:
        metrics["dual_softmax"] = {
            "text_to_item": retrieval_metrics(dual_softmax(scores, args.temperature, query="text"), gt, ties=args.ties)[
                "text_to_item"
            ],
            "item_to_text": retrieval_metrics(dual_softmax(scores, args.temperature, query="item"), gt, ties=args.ties)[
                "item_to_text"
            ],
        }
    if getattr(args, "rerank_scores", None) is not None:
        metrics[f"rerank@{args.rerank}"] = _rerank_from_file(args, scores, gt)
    elif getattr(args, "rerank", 0):
        raise GroundTruthError("--rerank with --scores needs --rerank-scores (the matching head's saved pair scores)")
    result = {"group": args.scores.parent.name or "scores", "metrics": metrics}
    print(format_table([result]))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "metrics.json").write_text(json.dumps(result, indent=2))
    return 0


def _rerank_from_file(args: argparse.Namespace, scores, gt) -> dict:
    """Re-rank the top K of ``scores`` with the saved pair scores, as the model run did."""
    import numpy as np
    import torch

    from .ground_truth import GroundTruthError
    from .metrics import rerank_top_k, retrieval_metrics

    if args.rerank < 1:
        raise GroundTruthError("--rerank-scores needs --rerank K (the K the model run re-ranked)")
    if not args.rerank_scores.is_file():
        raise FileNotFoundError(f"{args.rerank_scores}: no such score matrix")
    pairs = np.load(args.rerank_scores, allow_pickle=False)
    if pairs.shape != scores.shape:
        raise GroundTruthError(f"{args.rerank_scores}: shape {pairs.shape}, but --scores is {scores.shape}")

    def pair_scorer(text_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        values = torch.from_numpy(pairs[text_idx.numpy(), item_idx.numpy()])
        if torch.isnan(values).any():
            raise GroundTruthError(
                f"{args.rerank_scores} has no score for some top-{args.rerank} pairs: it was saved with a smaller "
                "K or for the other query direction"
            )
        return values

    out = {}
    for query in ("text", "item") if args.rerank_queries == "both" else (args.rerank_queries,):
        direction = "text_to_item" if query == "text" else "item_to_text"
        matrix = rerank_top_k(scores, args.rerank, pair_scorer, query=query)
        out[direction] = retrieval_metrics(matrix, gt, ties=args.ties)[direction]
    return out


def _score_model(args: argparse.Namespace) -> int:
    from ..distributed import DataParallel

    with DataParallel.from_environment() as parallel:
        return _score_model_in(args, parallel)


def _score_model_in(args: argparse.Namespace, parallel) -> int:
    """Encode and score on this process; with several, each encodes its shard and rank 0 reports."""
    from mico_chat.pretraining.data import build_media_table

    from .evaluator import evaluate_retrieval, format_table, load_retrieval_model

    if not args.model or not args.data:
        raise FileNotFoundError("give --model and --data (or --scores and --gt)")
    device = parallel.device(args.device)
    model, tokenizer, settings = load_retrieval_model(args.model, device or "cpu")
    groups = args.modality or ["video"]
    results = []
    for group in groups:
        # With --cache-dir, rank 0 preprocesses and writes the table, then the others read it.
        with parallel.main_first() if args.cache_dir else nullcontext():
            table = build_media_table(
                args.data, group.split("+"), settings, model.config.encoder_config, media_root=args.media_root,
                cache_dir=args.cache_dir, limit=args.limit, progress=not args.no_progress and parallel.is_main,
            )  # fmt: skip
        if table.skipped and parallel.is_main:
            print(
                f"{args.data}: skipped {len(table.skipped)} records, e.g. {table.skipped[0][0]}: {table.skipped[0][1]}"
            )
        kinds = args.captions.split(",") if args.captions else None
        result = evaluate_retrieval(
            model, tokenizer, table, group, caption_kinds=kinds, batch_size=args.batch_size, dual=args.dual_softmax,
            rerank_k=args.rerank, rerank_queries=("text", "item") if args.rerank_queries == "both" else (args.rerank_queries,),
            ties=args.ties, progress=not args.no_progress, parallel=parallel,
        )  # fmt: skip
        if result is None:
            continue
        results.append(result)
        if args.out:
            result.save(args.out / result.group)
    if not parallel.is_main:
        return 0
    print(format_table(results))
    if args.out:
        summary = {"model": str(args.model), "data": str(args.data), "results": [r.to_json() for r in results]}
        (args.out / "metrics.json").write_text(json.dumps(summary, indent=2))
    return 0
