"""``mico-chat eval`` parsers come from options declared as data (``CliOption``); only eval/cli.py builds them."""

import argparse
from pathlib import Path

import pytest

from mico_chat.eval import cli
from mico_chat.eval.benchmark import Benchmark, BenchmarkConfig, CliOption, CommandTask
from mico_chat.eval.registry import get_task, task_names


class _Toy(Benchmark):
    """A benchmark declared only as data: its options, and data it can find without --data."""

    config = BenchmarkConfig(name="toy", title="Toy")
    data_required = False
    cli_options = (
        CliOption("--k", type=int, default=3, help="how many", group="toy world"),
        CliOption("--tag", repeat=True),
        CliOption("--fast", switch=True),
    )

    @classmethod
    def resolve_data(cls, data, *, out, values):
        return (data or out / f"world-{values['k']}"), f"made {values['k']}"

    def load(self, data):
        return []

    def write_outputs(self, items, predictions, out_dir, *, judge=None):
        return out_dir

    def score(self, path, *, judge=None):
        raise NotImplementedError

    @classmethod
    def mini_items(cls, media):
        return []

    @classmethod
    def build_mini(cls, items, out):
        return out


def _parser(task) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    cli.add_task_arguments(parser, task)
    return parser


def test_declared_options_become_arguments():
    args = _parser(_Toy).parse_args(["--model", "m", "--tag", "a", "--tag", "b"])
    # The run options every benchmark has, then its own: defaults, repeats, switches off.
    assert (args.model, args.batch_size, args.data) == ("m", 8, None)
    assert (args.k, args.tag, args.fast) == (3, ["a", "b"], False)
    assert _parser(_Toy).parse_args(["--fast", "--k", "5"]).fast is True
    values = {o.dest: getattr(args, o.dest) for o in _Toy.cli_options}
    assert _Toy.resolve_data(args.data, out=Path("o"), values=values) == (Path("o/world-3"), "made 3")
    assert "toy world:" in _parser(_Toy).format_help()


def test_data_is_required_unless_the_benchmark_says_otherwise():
    mme = get_task("mme")
    assert mme.data_required and _parser(mme).parse_args(["--data", "d"]).data == Path("d")
    with pytest.raises(SystemExit):
        _parser(mme).parse_args([])
    with pytest.raises(Exception, match="--data is required"):
        mme.resolve_data(None, out=Path("o"), values={})


def test_every_registered_task_gets_its_parser():
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)  # raises on a clash between declared and run options
    for name in task_names():
        task = get_task(name)
        assert issubclass(task, (Benchmark, CommandTask)), name
        assert all(isinstance(o, CliOption) for o in task.cli_options), name
    args = parser.parse_args(["retrieval", "--modality", "video", "--modality", "audio"])
    assert args.modality == ["video", "audio"] and args.no_progress is False and args.rerank_queries == "both"


def test_option_specs_are_checked():
    assert CliOption("--max-items").dest == "max_items"
    with pytest.raises(ValueError, match="start with '--'"):
        CliOption("-k")
    with pytest.raises(ValueError, match="switch takes no value"):
        CliOption("--fast", switch=True, type=int)
