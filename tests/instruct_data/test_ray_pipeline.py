"""Sharded runs and Ray Data batch inference: the same records as the single-process path, resumed per shard.

The Ray tests start one local 2-CPU cluster for the module (skipped without ``mico-chat[scale]``;
marked slow: starting the cluster and its actors takes about a minute on a 2-core machine); the
shard bookkeeping, gathering and the missing-extra message are tested without Ray.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from mico_chat.cli import main
from mico_chat.instruct_data import read_records
from mico_chat.instruct_data.ray_runner import RayOptions, ShardActor, run_with_ray, shard_rows
from mico_chat.instruct_data.shards import gather, plan_shards
from mico_chat.instruct_data.synth import generate_world

from helpers.shard_jobs import Crash, EchoOmniJob, answered



@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """12 caption records of the synthetic world (media not needed: omni captions read text)."""
    out = tmp_path_factory.mktemp("world")
    generate_world(out, 12, seed=11, workers=1, progress=False)
    return out, [r for r in read_records(out / "captions.jsonl")]


def single_process(job: EchoOmniJob, records, out: Path) -> list[str]:
    job.setup()
    job.run(records, out, None)
    return out.read_text(encoding="utf-8").splitlines()


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_without_ray_the_option_names_the_extra(world, tmp_path, monkeypatch, capsys):
    root, _ = world
    monkeypatch.setitem(sys.modules, "ray", None)  # importing ray now fails, as where it is not installed
    out = tmp_path / "omni.jsonl"
    argv = ["data", "omni-caption", str(root / "captions.jsonl"), str(out), "--ray", "--openai-base-url",
            "http://127.0.0.1:9/v1", "--openai-model", "m", "--no-progress"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "mico-chat data omni-caption: error: --ray needs Ray Data" in err
    assert "pip install 'mico-chat[scale]'" in err
    assert not out.exists() and not (tmp_path / "omni.jsonl.shards").exists()


def test_a_shard_plan_is_tied_to_its_input_and_size(tmp_path):
    out = tmp_path / "o.jsonl"
    plan = plan_shards(out, [f"r{i}" for i in range(10)], shard_size=4, batch_size=2)
    assert plan.num_shards == 3 and plan.bounds(2) == (8, 10) and plan.pending() == [0, 1, 2]
    assert plan_shards(out, [f"r{i}" for i in range(10)], 4, 2) == plan  # reopened
    with pytest.raises(ValueError, match="o.jsonl.shards was made for another input or shard size"):
        plan_shards(out, [f"r{i}" for i in range(10)], 6, 2)
    with pytest.raises(ValueError, match="o.jsonl.shards was made for another input"):
        plan_shards(out, [f"r{i}" for i in range(11)], 4, 2)
    with pytest.raises(ValueError, match="multiple of the batch size"):
        plan_shards(tmp_path / "p.jsonl", ["a", "b"], 3, 2)
    with pytest.raises(ValueError, match="ids repeat"):
        plan_shards(tmp_path / "q.jsonl", ["a", "a"], 2, 2)


def test_shards_gathered_in_input_order_with_side_files(world, tmp_path):
    """Without Ray: the actor class run in-process; gather sorts each shard by input position."""
    _, records = world
    calls = tmp_path / "calls"
    calls.mkdir()
    job = EchoOmniJob(calls, reject_every=3)
    expected = single_process(EchoOmniJob(calls, reject_every=3), records, tmp_path / "single.jsonl")
    out = tmp_path / "omni.jsonl"
    plan = plan_shards(out, [r.id for r in records], 4, 2)
    actor = ShardActor(job, str(plan.folder), 4)
    for row in reversed(shard_rows(records, plan, plan.pending())):  # any order: gathering restores it
        actor({k: [v] for k, v in row.items()})
    assert plan.pending() == []
    assert gather(plan, out, tmp_path / "omni.log.jsonl") == len(records)
    position = {r.id: i for i, r in enumerate(records)}
    got = lines(out)
    assert [json.loads(line)["id"] for line in got] == [r.id for r in records]
    # The same records; the single-process file appends the retried ones after its first pass.
    assert got == sorted(expected, key=lambda line: position[json.loads(line)["id"]])
    assert got != expected  # some were retried (reject_every=3): the orders do differ
    assert sorted(lines(tmp_path / "omni.log.jsonl")) == sorted(lines(tmp_path / "single.jsonl.log.jsonl"))


@pytest.mark.slow
def test_ray_gives_the_single_process_records(world, tmp_path, ray_cluster):
    _, records = world
    calls = tmp_path / "calls"
    calls.mkdir()
    expected = single_process(EchoOmniJob(calls), records, tmp_path / "single.jsonl")
    for f in calls.glob("*.txt"):
        f.unlink()
    out = tmp_path / "omni.jsonl"
    report = run_with_ray(records, out, EchoOmniJob(calls), RayOptions(workers=2, shard_size=4), batch_size=2)
    assert lines(out) == expected  # same content, same order
    assert (report.shards, report.done, report.gathered, report.failed) == (3, 12, 12, [])
    pids = {int(f.stem) for f in calls.glob("*.txt")}
    assert 1 <= len(pids) <= 2 and os.getpid() not in pids  # the model ran in the actors
    assert sorted(answered(calls)) == sorted(r.captions["vision"] for r in records)  # each item once


@pytest.mark.slow
def test_a_killed_run_redoes_only_unfinished_shards(world, tmp_path, ray_cluster):
    _, records = world
    calls, flag = tmp_path / "calls", tmp_path / "crash"
    calls.mkdir()
    flag.touch()
    expected = single_process(EchoOmniJob(calls), records, tmp_path / "single.jsonl")
    for f in calls.glob("*.txt"):
        f.unlink()
    out = tmp_path / "omni.jsonl"
    crashing = EchoOmniJob(calls, crash_on=records[10].captions["vision"], crash_flag=flag)
    plan = plan_shards(out, [r.id for r in records], 4, 2)
    actor = ShardActor(crashing, str(plan.folder), 4)
    rows = shard_rows(records, plan, plan.pending())
    actor({k: [v] for k, v in rows[0].items()})
    with pytest.raises(Crash):  # shard 2 dies in its second batch: records 8 and 9 are written
        actor({k: [v] for k, v in rows[2].items()})
    assert plan.pending() == [1, 2]
    flag.unlink()
    for f in calls.glob("*.txt"):
        f.unlink()

    report = run_with_ray(records, out, crashing, RayOptions(workers=2, shard_size=4), batch_size=2)
    redone = [r.captions["vision"] for r in records[4:8] + records[10:12]]
    assert sorted(answered(calls)) == sorted(redone)  # shard 0 skipped, shard 2 resumed at record 10
    assert (report.shards_already_done, report.done, report.skipped) == (1, 6, 2)
    assert lines(out) == expected

    again = run_with_ray(records, out, crashing, RayOptions(workers=2, shard_size=4), batch_size=2)
    assert (again.shards_already_done, again.done) == (3, 0) and lines(out) == expected


@pytest.mark.slow
def test_cli_with_ray_matches_without(world, tmp_path, ray_cluster, openai_stub, capsys):
    """omni-caption and instruct --rewrite through the CLI, the endpoint's client held by each actor."""
    root, records = world

    def reply(body):
        user = body["messages"][-1]["content"]
        if "Facts about" in user:
            return 200, "Q: What moves?\nA: " + user.split("- vision: ")[1].split("\n")[0]
        return 200, user.split("What can be seen:\n- ")[1].split("\n")[0]

    stub = openai_stub(reply)
    common = ["--openai-base-url", stub.base_url, "--openai-model", "m", "--batch-size", "2", "--no-progress"]
    for command, name in (("omni-caption", "omni"), ("instruct", "chat")):
        extra = ["--rewrite"] if command == "instruct" else []
        single, sharded = tmp_path / f"{name}.jsonl", tmp_path / f"{name}-ray.jsonl"
        assert main(["data", command, str(root / "captions.jsonl"), str(single), *extra, *common]) == 0
        argv = ["data", command, str(root / "captions.jsonl"), str(sharded), *extra, *common]
        assert main([*argv, "--ray", "--ray-workers", "2", "--ray-shard-size", "4"]) == 0
        assert "records gathered from 3 shards" in capsys.readouterr().out
        assert lines(sharded) == lines(single) and len(lines(single)) == len(records)


@pytest.mark.slow
def test_cli_pseudolabel_with_a_local_model_on_ray_actors(tmp_path, ray_cluster, tiny, capsys):
    """Each actor loads the saved model once; frames, captions, rejections: as in one process."""
    from mico_chat.api import ChatModel

    model, processor = tiny
    folder = tmp_path / "tiny-model"
    ChatModel(model, processor).save_pretrained(folder)
    world = tmp_path / "w"
    generate_world(world, 4, seed=3, workers=1, progress=False)
    common = ["--model", str(folder), "--device", "cpu", "--max-retries", "0", "--max-new-tokens", "6",
              "--batch-size", "1", "--no-progress"]  # fmt: skip
    single, sharded = tmp_path / "pl.jsonl", tmp_path / "pl-ray.jsonl"
    assert main(["data", "pseudolabel", str(world / "media"), str(single), *common]) == 0
    assert main(["data", "pseudolabel", str(world / "media"), str(sharded), *common, "--ray", "--ray-workers", "2",
                 "--ray-shard-size", "2"]) == 0  # fmt: skip
    assert "records gathered from 2 shards" in capsys.readouterr().out

    def text(path: Path) -> list[str]:
        return lines(path) if path.exists() else []

    assert text(sharded) == text(single)
    assert sorted(text(Path(f"{sharded}.log.jsonl"))) == sorted(text(Path(f"{single}.log.jsonl")))
    assert len(text(single)) + len(text(Path(f"{single}.log.jsonl"))) == 4  # every clip: a label or a logged reason
