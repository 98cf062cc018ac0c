"""The benchmark base class: data (a :class:`BenchmarkConfig`) plus a little code.

A benchmark reads its official data layout into :class:`~mico_chat.eval.items.EvalItem` s,
writes the model's replies in its official results/submission format, and scores such files.
Scoring always goes through the written files, so ``mico-chat eval score BENCH PATH`` on the
files of a run prints exactly the numbers the run printed.

To add one: subclass :class:`Benchmark` in a file of ``benchmarks/``, set ``config`` and
``rules``, implement ``load``, ``write_outputs``, ``score`` and the mini suite (``mini_items``,
``build_mini``), and add one line to :data:`mico_chat.eval.registry.REGISTRY`. Tasks that are not
text generation (retrieval) subclass :class:`CommandTask` and implement ``run_cli`` / ``score_cli``
with their own machinery.

Command-line options are data (:class:`CliOption`, in ``cli_options``); only
:mod:`mico_chat.eval.cli` builds argparse parsers from them, so nothing here imports the CLI.
"""

from __future__ import annotations

import argparse
import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mico_chat.errors import ConfigError

from .items import EvalItem, Prediction
from .minimedia import MiniItem, MiniMedia
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


@dataclass(frozen=True)
class CliOption:
    """One command-line option of a task, as data; :mod:`mico_chat.eval.cli` makes the argument.

    Args:
        flag: the option string, e.g. ``--n``; the parsed value is ``args.<dest>`` (``--batch-size``
            -> ``batch_size``).
        help: the ``--help`` line.
        type: converts the text given (``int``, ``float``, ``Path``; ``None`` keeps the string).
        default: the value when the option is not given.
        required: the option must be given.
        choices: the accepted values.
        switch: a flag without a value (present: ``True``).
        repeat: may be given several times; the value is the list of them (``None`` when absent).
        metavar: the value's name in ``--help``.
        group: the ``--help`` section it is listed under (``None``: the task's own list).
    """

    flag: str
    help: str = ""
    type: Callable[[str], Any] | None = None
    default: Any = None
    required: bool = False
    choices: tuple[str, ...] | None = None
    switch: bool = False
    repeat: bool = False
    metavar: str | None = None
    group: str | None = None

    def __post_init__(self) -> None:
        if not self.flag.startswith("--"):
            raise ValueError(f"option flags start with '--', got {self.flag!r}")
        if self.switch and (self.type is not None or self.repeat or self.choices):
            raise ValueError(f"{self.flag}: a switch takes no value (type, repeat and choices do not apply)")

    @property
    def dest(self) -> str:
        """The attribute name of the parsed value."""
        return self.flag[2:].replace("-", "_")


class EvalTask(ABC):
    """Anything ``mico-chat eval NAME`` can run; its own options are data in ``cli_options``.

    Generative benchmarks subclass :class:`Benchmark` (the CLI runs them through the runner);
    other tasks subclass :class:`CommandTask` and run themselves.
    """

    # Options of `mico-chat eval NAME` beyond those every task of its kind has.
    cli_options: ClassVar[tuple[CliOption, ...]] = ()

    @classmethod
    @abstractmethod
    def help_text(cls) -> str:
        """One line for ``mico-chat eval --help``."""


class CommandTask(EvalTask):
    """A task that is not answered by a chat model (e.g. retrieval): it runs and re-scores itself.

    ``cli_options`` are all its options; ``args`` holds their values under each option's ``dest``.
    """

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
    # Whether `--data` must be given; benchmarks that can find or make their data override
    # `resolve_data` and set this to False.
    data_required: ClassVar[bool] = True

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
        """Read the official data layout under ``data`` into items (raises ItemError naming the file)."""

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

    @classmethod
    def resolve_data(cls, data: Path | None, *, out: Path, values: Mapping[str, Any]) -> tuple[Path, str | None]:
        """The data a run reads, and a line worth printing about it (``None``: nothing to say).

        ``data`` is ``--data`` (``None`` when not given), ``out`` the run folder, ``values`` the
        parsed values of ``cli_options`` by ``dest``.
        """
        if data is None:
            raise ConfigError(f"{cls.config.name}: --data is required")
        return Path(data), None

    # ------------------------------------------------------------------ mini suite
    @classmethod
    @abstractmethod
    def mini_items(cls, media: MiniMedia) -> list[MiniItem]:
        """Items about generated media for :meth:`build_mini` (empty when it makes its own data)."""

    @classmethod
    @abstractmethod
    def build_mini(cls, items: Sequence[MiniItem], out: Path) -> Path:
        """Write ``items`` under ``out`` in this benchmark's official layout; returns the ``--data`` path."""


def sanitize_line(text: str) -> str:
    """One line, no tabs: official TSV-like result files cannot hold newlines or tabs in a field."""
    return " ".join(text.replace("\t", " ").splitlines()) if text else ""
