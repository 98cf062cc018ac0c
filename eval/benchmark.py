"""The benchmark base class: data (a :class:`BenchmarkConfig`) plus a little code.

A benchmark reads its official data layout into :class:`~mico_chat.eval.items.EvalItem` s,
writes the model's replies in its official results/submission format, and scores such files.
Scoring always goes through the written files, so ``mico-chat eval score BENCH PATH`` on the
files of a run prints exactly the numbers the run printed.

To add one: subclass :class:`Benchmark`, set ``config`` and ``rules``, implement ``load``,
``write_outputs`` and ``score``, and add one line to :data:`mico_chat.eval.registry.REGISTRY`.
Tasks that are not text generation (retrieval, synthetic-world probes) subclass :class:`EvalTask`
directly and implement ``add_arguments`` / ``run`` / ``score_cli`` with their own machinery.
"""

from __future__ import annotations

import argparse
import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mico_chat.errors import ConfigError

from .items import EvalItem, Prediction
from .scores import ScoreReport

if TYPE_CHECKING:
    from .judges import Judge


@dataclass(frozen=True)
class BenchmarkConfig:
    """What makes one benchmark differ from its siblings; recorded in every results file.

    Args:
        name: registry name (``mme``, ``msvd_qa``, ...).
        title: display name.
        max_new_tokens: reply length limit (greedy decoding is the default).
        prompt_suffix: appended to each question (e.g. a one-word-answer instruction).
        system_prompt: an optional system message before the user turn.
        needs_judge: scores need an LLM judge (``--judge``).
        options: benchmark-specific settings (e.g. MMBench ``prompt_style``, ``circular``).
    """

    name: str
    title: str
    max_new_tokens: int = 64
    prompt_suffix: str = ""
    system_prompt: str | None = None
    needs_judge: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["options"] = dict(self.options)
        return data


class EvalTask(ABC):
    """Anything ``mico-chat eval NAME`` can run: command-line arguments, a run and a re-score."""

    @classmethod
    @abstractmethod
    def help_text(cls) -> str:
        """One line for ``mico-chat eval --help``."""

    @classmethod
    @abstractmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add this task's options to its ``mico-chat eval NAME`` parser."""

    @classmethod
    @abstractmethod
    def run_cli(cls, args: argparse.Namespace) -> int:
        """Run the task from parsed arguments; returns the exit code."""

    @classmethod
    @abstractmethod
    def score_cli(cls, path: Path, args: argparse.Namespace) -> int:
        """``mico-chat eval score NAME PATH``: re-score saved files; returns the exit code."""


class Benchmark(EvalTask):
    """A generative benchmark evaluated through :class:`mico_chat.ChatModel`.

    Subclasses set ``config`` (a :class:`BenchmarkConfig`) and ``rules`` (scoring rule name ->
    version, e.g. the official script and commit it reproduces).
    """

    config: ClassVar[BenchmarkConfig]
    rules: ClassVar[Mapping[str, str]] = {}
    # What `mico-chat eval score NAME PATH` expects PATH to be (shown in --help).
    score_input: ClassVar[str] = "a run's output folder"

    def __init__(self, **options: Any):
        unknown = set(options) - set(self.config.options)
        if unknown:
            raise ConfigError(
                f"{self.config.name}: unknown option(s) {sorted(unknown)}; known: {sorted(self.config.options) or 'none'}"
            )
        self.options: dict[str, Any] = {**self.config.options, **options}

    @property
    def name(self) -> str:
        return self.config.name

    @classmethod
    def help_text(cls) -> str:
        return cls.config.title

    # ------------------------------------------------------------------ data
    @abstractmethod
    def load(self, data: Path) -> list[EvalItem]:
        """Read the official data layout under ``data`` into items (raises DataError naming the file)."""

    def annotation_files(self, data: Path) -> list[Path]:
        """The non-media files the items come from (hashed into the results' data checksum)."""
        return []

    def select(self, items: Sequence[EvalItem], limit: int | None) -> list[EvalItem]:
        """The first ``limit`` items (benchmarks that score groups extend this to whole groups)."""
        return list(items if limit is None else items[:limit])

    def describe(self) -> dict[str, Any]:
        """Config and options as recorded in results."""
        return {**self.config.to_dict(), "options": dict(self.options)}

    # ------------------------------------------------------------------ outputs and scores
    @abstractmethod
    def write_outputs(
        self,
        items: Sequence[EvalItem],
        predictions: Mapping[str, Prediction],
        out_dir: Path,
        *,
        judge: Judge | None = None,
    ) -> Path:
        """Write the official results/submission files; returns what :meth:`score` reads."""

    @abstractmethod
    def score(self, path: Path, *, judge: Judge | None = None) -> ScoreReport:
        """Score official-format files at ``path`` (a run's output folder or the files themselves)."""

    # ------------------------------------------------------------------ command line
    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        from .cli import add_run_arguments

        add_run_arguments(parser, cls)

    @classmethod
    def run_cli(cls, args: argparse.Namespace) -> int:
        from .cli import run_benchmark_cli

        return run_benchmark_cli(cls, args)

    @classmethod
    def score_cli(cls, path: Path, args: argparse.Namespace) -> int:
        from .cli import score_benchmark_cli

        return score_benchmark_cli(cls, path, args)


def sanitize_line(text: str) -> str:
    """One line, no tabs: official TSV-like result files cannot hold newlines or tabs in a field."""
    return " ".join(text.replace("\t", " ").splitlines()) if text else ""
