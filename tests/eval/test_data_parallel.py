"""Data-parallel evaluation: shards, per-shard caches and resume, and 2 gloo processes (torchrun)
giving exactly the 1-process results for every mini suite and for retrieval encoding."""

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.fake_judge import FakeJudgeServer
from mico_chat.eval.cache import PredictionCache, read_matching, write_cache
from mico_chat.eval.distributed import DataParallel, DistributedError, Shard, local_launch_command
from mico_chat.eval.items import Prediction
from mico_chat.eval.registry import benchmark_names, get_task, task_names
from mico_chat.eval.runner import PREDICTIONS_FILE, cache_file, evaluate

TESTS = Path(__file__).resolve().parents[1]
WORKER = TESTS / "helpers" / "dp_worker.py"
RUN_ONLY = {"timing", "created", "environment"}  # the results.json fields that describe the run, not the scores


# ---------------------------------------------------------------- fast: shards, launch, options
def test_shards_cover_every_item_once():
    items = list(range(11))
    shards = [Shard(r, 3).take(items) for r in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    assert list(Shard(2, 3).indices(11)) == shards[2] and Shard(1, 4).suffix() == "rank1-of-4"
    with pytest.raises(DistributedError, match="rank 2 is not in a world of 2"):
        Shard(2, 2)


def test_environment_and_launch_command():
    assert DataParallel.from_environment({}).world_size == 1
    assert DataParallel.from_environment({"WORLD_SIZE": "1", "RANK": "0"}).is_main
    with pytest.raises(DistributedError, match="RANK is unset"):
        DataParallel.from_environment({"WORLD_SIZE": "2"})
    with pytest.raises(DistributedError, match="MASTER_ADDR, MASTER_PORT unset"):
        DataParallel.from_environment({"WORLD_SIZE": "2", "RANK": "1"})
    cmd = local_launch_command(["eval", "synth", "--n", "4"], 3)
    assert cmd[1:] == ["-m", "mico_chat.eval.distributed", "3", "eval", "synth", "--n", "4"]
    with pytest.raises(ValueError):
        local_launch_command([], 1)


@pytest.mark.parametrize("name", task_names())
def test_relaunch_command_line_parses_back_to_the_same_options(name, tmp_path):
    """``--num-processes`` rebuilds the command line from the parsed options: nothing may be lost."""
    from mico_chat.eval.cli import NUM_PROCESSES, add_task_arguments, task_options, to_argv

    task = get_task(name)
    parser = argparse.ArgumentParser()
    add_task_arguments(parser, task)
    argv = ["--data", str(tmp_path / "d"), "--num-processes", "2"]
    for option in task_options(task):
        if option is NUM_PROCESSES or option.flag == "--data":
            continue
        if option.switch:
            argv.append(option.flag)
        elif option.choices:
            argv += [option.flag, option.choices[-1]]
        elif option.repeat:
            argv += [option.flag, "a=1", option.flag, "b=2"]
        elif option.type in (int, float):
            argv += [option.flag, "7"]
        else:
            argv += [option.flag, str(tmp_path / option.dest)]
    args = parser.parse_args(argv)
    options = tuple(o for o in task_options(task) if o is not NUM_PROCESSES)
    again = parser.parse_args(to_argv(options, args))
    assert {k: v for k, v in vars(again).items() if k != "num_processes"} == {
        k: v for k, v in vars(args).items() if k != "num_processes"
    }
    assert again.num_processes == 1


def test_num_processes_under_a_launcher_is_refused(monkeypatch, capsys):
    from mico_chat.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["eval", "mme", "--data", "nowhere", "--num-processes", "2"]) == 2
    assert "leave it out" in capsys.readouterr().err


class Counting:
    def __init__(self, chat):
        self.chat, self.calls = chat, 0

    def describe(self):
        return self.chat.describe()

    def generate(self, conversations, settings):
        self.calls += 1
        return self.chat.generate(conversations, settings)


def test_one_process_resumes_from_the_shards_of_a_two_process_run(tiny_chat, mini_data, tmp_path):
    """Shard files of a killed 2-process run (one complete, one half done) are used by a 1-process rerun."""
    bench = get_task("mme")()
    fresh = evaluate(bench, tiny_chat, data=mini_data["mme"], out=tmp_path / "fresh", batch_size=4, progress=False)
    identity = json.loads((tmp_path / "fresh" / PREDICTIONS_FILE).read_text().splitlines()[0])["header"]["identity"]
    ids = list(fresh.predictions)
    run = tmp_path / "run"
    run.mkdir()
    write_cache(run / cache_file("rank0-of-2"), identity, [fresh.predictions[i] for i in ids[0::2]])
    write_cache(run / cache_file("rank1-of-2"), identity, [fresh.predictions[i] for i in ids[1::2][:5]])
    write_cache(run / cache_file("rank0-of-3"), {**identity, "model": "other"}, [Prediction(ids[-1], "stale")])
    chat = Counting(tiny_chat)
    resumed = evaluate(bench, chat, data=mini_data["mme"], out=run, batch_size=4, progress=False)
    remaining = len(ids) - len(ids[0::2]) - 5
    assert (resumed.resumed, resumed.generated, chat.calls) == (len(ids) - remaining, remaining, math.ceil(remaining / 4))
    assert [p.text for p in resumed.predictions.values()] == [p.text for p in fresh.predictions.values()]
    assert resumed.report.metrics == fresh.report.metrics
    assert len(PredictionCache(run / PREDICTIONS_FILE, identity)) == len(ids)


# ---------------------------------------------------------------- slow: 2 gloo processes (torchrun)
def _torchrun(job: dict, tmp_path: Path, processes: int = 2) -> subprocess.CompletedProcess:
    path = tmp_path / f"job-{len(list(tmp_path.glob('job-*')))}.json"
    path.write_text(json.dumps(job))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", str(WORKER), str(path)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _comparable(run: Path) -> dict:
    payload = json.loads((run / "results.json").read_text())
    return {k: v for k, v in payload.items() if k not in RUN_ONLY}


def _predictions(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / PREDICTIONS_FILE).read_text().splitlines()]


@pytest.fixture(scope="module")
def saved_model(tiny_chat, tmp_path_factory):
    folder = tmp_path_factory.mktemp("dp") / "tiny-model"
    tiny_chat.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def judge_server():
    with FakeJudgeServer(lambda messages: "{'pred': 'yes', 'score': 3}") as server:
        yield server


@pytest.mark.slow
def test_two_processes_equal_one_on_every_mini_suite(saved_model, mini_data, judge_server, tmp_path):
    from mico_chat.api import ChatModel
    from mico_chat.eval.judges import JudgeConfig, build_judge

    names = benchmark_names()
    data = {name: str(mini_data[name]) for name in names}
    job = {"mode": "suite", "out": str(tmp_path / "two"), "model": str(saved_model), "data": data, "batch_size": 3,
           "judge_url": judge_server.base_url}  # fmt: skip
    done = _torchrun(job, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    chat = ChatModel.load(saved_model, device="cpu")
    for name in names:
        bench = get_task(name)()
        judge = None
        if bench.config.needs_judge:
            judge = build_judge(JudgeConfig(model="gpt-test", base_url=judge_server.base_url, cache=tmp_path / f"{name}.v.jsonl"))
        one = evaluate(bench, chat, data=mini_data[name], out=tmp_path / "one" / name, batch_size=3, judge=judge, progress=False)
        two = tmp_path / "two" / name
        assert _comparable(two) == _comparable(tmp_path / "one" / name), name
        timing = json.loads((two / "results.json").read_text())["timing"]
        assert (timing["processes"], timing["generated"], timing["resumed"]) == (2, len(one.predictions), 0), name
        assert _predictions(two) == _predictions(tmp_path / "one" / name), name  # same predictions, same order
        assert (two / "results.md").read_text() == (tmp_path / "one" / name / "results.md").read_text()
        assert sorted(p.name for p in two.glob("predictions.rank*")) == [cache_file("rank0-of-2"), cache_file("rank1-of-2")]
    # Both ranks answered: the batches of their shards, benchmark by benchmark.
    calls = [json.loads((tmp_path / "two" / f"calls.rank{r}.json").read_text()) for r in (0, 1)]
    assert min(calls) > 0


@pytest.mark.slow
def test_killed_two_process_run_resumes_without_redoing_items(saved_model, mini_data, tmp_path):
    data = {"mme": str(mini_data["mme"])}
    out = tmp_path / "run"
    crashed = _torchrun({"mode": "suite", "out": str(out), "model": str(saved_model), "data": data, "batch_size": 2,
                         "crash_at": 3}, tmp_path)  # fmt: skip
    assert crashed.returncode != 0 and "crash at generate call 3" in crashed.stderr
    shards = [out / "mme" / cache_file(f"rank{r}-of-2") for r in (0, 1)]
    saved = [len(read_matching([shard], _identity(shard))) for shard in shards]
    assert max(saved) == 4 and not (out / "mme" / "results.json").exists()  # the first to crash kept 2 batches
    total = 28  # the mini MME's items
    resumed = _torchrun({"mode": "suite", "out": str(out), "model": str(saved_model), "data": data, "batch_size": 2}, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    calls = [json.loads((out / f"calls.rank{r}.json").read_text()) for r in (0, 1)]
    assert calls == [math.ceil((total // 2 - saved[r]) / 2) for r in (0, 1)]
    timing = json.loads((out / "mme" / "results.json").read_text())["timing"]
    assert (timing["resumed"], timing["generated"]) == (sum(saved), total - sum(saved))


def _identity(cache: Path) -> dict:
    return json.loads(cache.read_text().splitlines()[0])["header"]["identity"]


@pytest.mark.slow
def test_num_processes_option_runs_two_ranks(saved_model, mini_data, tmp_path):
    from mico_chat.cli import main

    out = tmp_path / "run"
    argv = ["eval", "clotho_aqa", "--model", str(saved_model), "--data", str(mini_data["clotho_aqa"]), "--out", str(out),
            "--device", "cpu", "--num-processes", "2"]  # fmt: skip
    assert main(argv) == 0
    assert json.loads((out / "results.json").read_text())["timing"]["processes"] == 2
    one = tmp_path / "one"
    assert main(argv[:6] + ["--out", str(one), "--device", "cpu"]) == 0
    assert _comparable(out) == _comparable(one) and _predictions(out) == _predictions(one)


@pytest.mark.slow
def test_retrieval_encoding_over_two_processes_equals_one(tmp_path):
    from helpers.dp_worker import retrieval_job
    from helpers.tiny_pretraining import tiny_pretraining_model
    from mico_chat.eval.retrieval.evaluator import evaluate_retrieval
    from mico_chat.eval.retrieval.metrics import retrieval_metrics

    model, tokenizer = tiny_pretraining_model(seed=0)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    done = _torchrun({"mode": "retrieval", "model": str(tmp_path / "model"), "out": str(tmp_path / "two")}, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    # The workers run one torch thread each; another thread count sums in another order, and the
    # last bits that changes can flip a near tie among this random tiny model's scores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, tokenizer, table = retrieval_job(tmp_path / "model")
        one = evaluate_retrieval(model, tokenizer, table, "video", batch_size=2, rerank_k=2, progress=False)
    finally:
        torch.set_num_threads(threads)
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())["metrics"]
    assert set(two) == set(one.to_json()["metrics"]) and any(k.startswith("rerank@") for k in two)
    # Encoding over two processes gives the same scores up to the last bits (another thread count
    # sums in another order)...
    two_scores = np.load(tmp_path / "two" / "scores.npy")
    np.testing.assert_allclose(two_scores, one.scores, rtol=1e-5, atol=1e-6)
    # ...and the two-process run scores what it gathered the way one process does. The metrics of
    # the two runs are not compared with each other: this random tiny model has near ties that the
    # last bits can flip, which changes a rank and so R@1 (its re-ranking's top-2 candidates too).
    expected = retrieval_metrics(torch.from_numpy(two_scores).float(), one.texts.text_item, ties="pessimistic")
    assert two["contrastive"] == json.loads(json.dumps(expected))
    two_rerank = np.load(tmp_path / "two" / "rerank_scores.npy")
    both = np.isfinite(two_rerank) & np.isfinite(one.rerank_scores)
    assert both.sum() >= 0.5 * np.isfinite(one.rerank_scores).sum()
    np.testing.assert_allclose(two_rerank[both], one.rerank_scores[both], rtol=1e-4, atol=1e-5)
    assert json.loads((tmp_path / "two" / "gt.json").read_text())["items"] == one.texts.item_ids
