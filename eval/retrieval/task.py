"""Retrieval as a task of the benchmark registry: ``mico-chat eval retrieval`` and ``eval score retrieval``.

The work is done by :mod:`mico_chat.eval.retrieval.cli`; this class only plugs it into the
registry, so retrieval is listed, run and re-scored like every other benchmark.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..benchmark import CommandTask
from . import cli


class Retrieval(CommandTask):
    cli_options = cli.OPTIONS

    @classmethod
    def help_text(cls) -> str:
        return "text <-> video/audio/image retrieval (R@1/5/10, median/mean rank; dual softmax, matching rerank)"

    @classmethod
    def run_cli(cls, args: argparse.Namespace) -> int:
        return int(cli.run(args) or 0)

    @classmethod
    def score_cli(cls, path: Path, args: argparse.Namespace) -> int:
        """Re-score a saved ``--out`` folder: every ``scores.npy`` beside a ``gt.json`` under ``path``."""
        matrices = sorted(path.rglob("scores.npy")) if path.is_dir() else [path]
        pairs = [(m, m.with_name("gt.json")) for m in matrices if m.with_name("gt.json").is_file()]
        if not pairs:
            print(f"mico-chat eval score retrieval: error: {path}: no scores.npy with a gt.json beside it")
            return 2
        code = 0
        for scores, gt in pairs:
            sub = argparse.Namespace(
                scores=scores, gt=gt, ties=getattr(args, "ties", "pessimistic"), dual_softmax=False,
                temperature=0.05, out=None,
            )  # fmt: skip
            code = max(code, cli.run(sub))
        return code
