"""``mico-chat pretrain CONFIG.yaml [key=value ...]``: MiCo pretraining of the omni-modal encoder.

    mico-chat pretrain configs/pretrain/tiny_synth.yaml train.output_dir=runs/mico train.max_steps=20

Trains (resuming from the newest checkpoint of ``train.output_dir`` when there is one), then writes
``model/`` (for ``mico-chat eval retrieval --model``) and ``encoder/`` (for the chat model). With
an ``eval.records`` file, held-out retrieval is measured every ``eval.every`` steps.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="pretraining YAML (see configs/pretrain/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.max_steps=20")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def make_evaluator(config, progress: bool):
    """The held-out retrieval evaluation of ``config.eval`` (media preprocessed once, cached)."""
    from mico_chat.eval.retrieval.evaluator import evaluate_retrieval
    from mico_chat.pretraining.data import build_media_table
    from mico_chat.preprocess import MediaSettings

    spec = config.eval
    settings = MediaSettings.from_dict(config.data.media)
    tables: dict[str, object] = {}

    def evaluate(model, tokenizer, step: int) -> dict:
        out = {}
        for group in spec.groups:
            if group not in tables:
                tables[group] = build_media_table(
                    spec.records, group.split("+"), settings, model.config.encoder_config, media_root=spec.media_root,
                    cache_dir=config.data.cache_dir or f"{config.train.output_dir}/cache", limit=spec.limit, progress=progress,
                )  # fmt: skip
            kinds = spec.captions.get(group)
            result = evaluate_retrieval(
                model, tokenizer, tables[group], group, caption_kinds=[kinds] if isinstance(kinds, str) else kinds,
                progress=False,
            )  # fmt: skip
            out[result.group] = result.metrics["contrastive"]
        return out

    return evaluate


def run(args: argparse.Namespace) -> int:
    from mico_chat.pretraining import PretrainRecipe, load_config

    config = load_config(args.config, args.overrides)
    if args.print_config:
        print(config.to_yaml())
        return 0
    evaluator = make_evaluator(config, not args.no_progress) if config.eval.records else None
    recipe = PretrainRecipe(config, evaluator=evaluator, progress=not args.no_progress)
    recipe.setup()
    final = recipe.train()
    model_dir, encoder_dir = recipe.export()
    print(json.dumps({"step": recipe.step, "last_losses": final, "model": str(model_dir), "encoder": str(encoder_dir)}))
    return 0
