"""``mico-chat data encode-features``: the encoder's features per media item in sharded safetensors.

The store's tensors equal what the training recipe's in-memory cache computes; training reads
them back through ``data.feature_store`` and refuses a store made by another encoder or with
other media settings; a killed run redoes only unfinished shards; a 2-actor Ray run writes the
same files as one process (slow: starts a local cluster).
"""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from mico_chat.cli import main
from mico_chat.instruct_data import feature_store as fs
from mico_chat.instruct_data.records import Record, read_records
from mico_chat.instruct_data.shards import run_in_process
from mico_chat.instruct_data.synth import generate_world
from mico_chat.instruct_data.synth.world import WorldConfig
from mico_chat.training.data import DataError, SampleDataset, cache_encoder_features, scan_records
from mico_chat.training.data import stored_encoder_features

THREADS = torch.get_num_threads()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Six caption records, clips (video + its audio) and images interleaved, media relative to the file."""
    from helpers.train_fixtures import colour_images

    root = tmp_path_factory.mktemp("corpus")
    generate_world(root / "world", 3, seed=5, workers=1, config=WorldConfig(speech="off"), progress=False)
    videos = []
    for item in read_records(root / "world" / "captions.jsonl"):
        for ref in getattr(item, "media", ()):
            if ref.modality.value == "video" and ref.path not in videos:
                videos.append(ref.path)
    images = colour_images(root / "images", 3)
    rows = []
    for i in range(3):
        video = os.path.relpath(root / "world" / videos[i], root)
        rows.append({"id": f"clip{i}", "media": [{"modality": "video", "path": video},
                                                 {"modality": "audio", "path": video}],
                     "captions": {"vision": f"clip number {i}"}})  # fmt: skip
        rows.append({"id": f"img{i}", "media": [{"modality": "image", "path": f"images/{images[i][0]}"}],
                     "captions": {"vision": f"a {images[i][1]} picture"}})  # fmt: skip
    path = root / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def saved(tiny, tmp_path_factory):
    from mico_chat.api import ChatModel

    model, processor = tiny
    folder = tmp_path_factory.mktemp("model") / "tiny"
    ChatModel(model, processor).save_pretrained(folder)
    return folder


def encode(records: Path, store: Path, model: Path, *extra: str) -> int:
    argv = ["data", "encode-features", str(records), str(store), "--model", str(model), "--device", "cpu",
            "--store-dtype", "float32", "--shard-size", "2", "--no-progress", *extra]  # fmt: skip
    return main(argv)


def store_tensors(store: Path) -> dict[str, dict[str, torch.Tensor]]:
    out = {}
    for path in sorted(store.glob("features-*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            out[path.name] = {k: handle.get_tensor(k) for k in handle.keys()}
    return out


@pytest.fixture(scope="module")
def store(corpus, saved, tmp_path_factory):
    out = tmp_path_factory.mktemp("stores") / "features"
    assert encode(corpus, out, saved) == 0
    return out


def frozen(tiny):
    model, processor = tiny
    model.encoder.requires_grad_(False)
    return model.encoder, processor


def test_the_store_holds_the_training_caches_features(tiny, corpus, store):
    encoder, processor = frozen(tiny)
    try:
        scan = scan_records([corpus], processor, progress=False)
        assert len(scan.samples) == 6
        computed = cache_encoder_features(SampleDataset(scan.samples, processor), encoder, progress=False)
        read = stored_encoder_features(store, scan.samples, encoder, processor)
    finally:
        encoder.requires_grad_(True)
    assert [[m for m, _ in f] for f in read] == [[m for m, _ in f] for f in computed]
    for mine, theirs in zip(read, computed):
        for (_, a), (_, b) in zip(mine, theirs):
            assert a.dtype == torch.float32 and torch.equal(a, b)  # float32 store: bit for bit

    tensors = store_tensors(store)
    assert sorted(tensors) == [f"features-{k:05d}.safetensors" for k in range(3)]
    assert sorted(tensors["features-00000.safetensors"]) == ["clip0/0", "clip0/1", "img0/0"]
    index = [json.loads(line) for line in (store / "index.jsonl").read_text().splitlines()]
    assert [r["id"] for r in index] == ["clip0", "img0", "clip1", "img1", "clip2", "img2"]
    assert index[1]["media"][0]["key"] == "img0/0" and index[1]["file"] == "features-00000.safetensors"
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["complete"] and manifest["num_items"] == 9 and manifest["store_dtype"] == "float32"
    assert manifest["records"] == os.path.abspath(corpus) and len(manifest["records_sha256"]) == 64 and manifest["encoder"]["source"].endswith("tiny")
    assert manifest["media_settings"]["num_frames"] == processor.settings.num_frames
    assert len(manifest["encoder"]["weights_sha256"]) == 64 and not (store / "failed.jsonl").exists()


def test_float16_is_the_default_store_dtype(tiny, corpus, saved, store, tmp_path):
    out = tmp_path / "half"
    argv = ["data", "encode-features", str(corpus), str(out), "--model", str(saved), "--device", "cpu",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    (half,) = store_tensors(out).values()  # 6 records: one shard of the default 32
    full = {k: v for shard in store_tensors(store).values() for k, v in shard.items()}
    assert sorted(half) == sorted(full)
    for key, value in half.items():
        assert value.dtype == torch.float16 and torch.equal(value, full[key].to(torch.float16))
    assert json.loads((out / "manifest.json").read_text())["store_dtype"] == "float16"


def test_a_store_of_another_encoder_or_settings_is_refused(tiny, corpus, store):
    model, processor = tiny
    scan = scan_records([corpus], processor, progress=False)
    other = copy.deepcopy(model.encoder).requires_grad_(False)
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    with pytest.raises(DataError, match=re.escape(f"feature store {store} was made by another encoder") + ".*weights differ"):
        stored_encoder_features(store, scan.samples, other, processor)

    encoder = copy.deepcopy(model.encoder).requires_grad_(False)
    changed = copy.copy(processor)
    changed.settings = replace(processor.settings, num_frames=processor.settings.num_frames - 1)
    with pytest.raises(DataError, match=r"another encoder.*media settings differ \(num_frames\)"):
        stored_encoder_features(store, scan.samples, encoder, changed)
    with pytest.raises(DataError, match="is not a feature store"):
        stored_encoder_features(store.parent, scan.samples, encoder, processor)


def test_a_sample_the_store_lacks_is_named(tiny, corpus, store, tmp_path):
    """Items are found by modality, path and options: clip0's video serves another record; a new image is missing."""
    from helpers.train_fixtures import colour_images

    _, processor = tiny
    encoder = copy.deepcopy(tiny[0].encoder).requires_grad_(False)
    (name, _), = colour_images(tmp_path / "new", 1, seed=9)
    first = json.loads(corpus.read_text().splitlines()[0])
    media = first["media"][:1] + [{"modality": "image", "path": str(tmp_path / "new" / name)}]
    extra = tmp_path / "more.jsonl"
    extra.write_text(json.dumps({**first, "id": "new", "media": media}) + "\n", encoding="utf-8")
    scan = scan_records([extra], processor, media_root=corpus.parent, progress=False)
    assert len(scan.samples) == 1
    with pytest.raises(DataError, match=r"no features for .*\(id new\)'s image item 1"):
        stored_encoder_features(store, scan.samples, encoder, processor)


class Crash(RuntimeError):
    pass


def test_a_killed_run_redoes_only_unfinished_shards(tiny, corpus, store, tmp_path):
    encoder = copy.deepcopy(tiny[0].encoder).requires_grad_(False)
    records = [r for r in read_records(corpus) if isinstance(r, Record)]
    out = tmp_path / "resumed"
    out.mkdir()
    ran: list[int] = []

    class Job(fs.EncodeFeaturesJob):
        crash_on: int | None = None

        def run(self, records, shard_out, log):
            ran.append(fs.shard_number(shard_out))
            if ran[-1] == self.crash_on:
                raise Crash(f"killed in shard {ran[-1]}")
            return super().run(records, shard_out, log)

    job = Job(store=out, model="tiny", media_root=corpus.parent, store_dtype="float32",
              loaded=(encoder, tiny[1]))  # fmt: skip
    job.crash_on = 1
    with pytest.raises(Crash):
        run_in_process(records, out / fs.INDEX, job, shard_size=2, batch_size=1)
    assert ran == [0, 1] and sorted(p.name for p in out.glob("features-*")) == ["features-00000.safetensors"]
    job.crash_on = None
    report = run_in_process(records, out / fs.INDEX, job, shard_size=2, batch_size=1)
    assert ran == [0, 1, 1, 2] and (report.shards_already_done, report.done, report.gathered) == (1, 4, 6)
    again = run_in_process(records, out / fs.INDEX, job, shard_size=2, batch_size=1)
    assert ran == [0, 1, 1, 2] and again.shards_already_done == 3

    # The resumed shards equal those of the uninterrupted run.
    expected = store_tensors(store)
    got = store_tensors(out)
    assert sorted(got) == sorted(expected)
    for name in expected:
        assert sorted(got[name]) == sorted(expected[name])
        assert all(torch.equal(got[name][k], expected[name][k]) for k in expected[name])
    assert (out / fs.INDEX).read_text() == (store / fs.INDEX).read_text()


def test_a_missing_media_file_fails_its_record_and_its_shard_is_redone(corpus, saved, tmp_path, capsys):
    rows = [json.loads(line) for line in corpus.read_text().splitlines()]
    rows[3]["media"][0]["path"] = "images/gone.png"
    records = corpus.parent / "with-missing.jsonl"
    records.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "store"
    assert encode(records, out, saved) == 0
    assert "1 records failed" in capsys.readouterr().err
    failed = [json.loads(line) for line in (out / "failed.jsonl").read_text().splitlines()]
    assert [f["id"] for f in failed] == ["img1"] and "gone.png" in failed[0]["error"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest["complete"] and manifest["num_items"] == 8
    assert sorted(p.name for p in (out / "index.jsonl.shards").glob("*.done")) == ["shard-00000.done",
                                                                                    "shard-00002.done"]  # fmt: skip


def test_shards_of_two_encoders_are_refused(corpus, saved, store, tmp_path, tiny, capsys):
    import shutil

    out = tmp_path / "mixed"
    shutil.copytree(store, out)
    (out / "index.jsonl.shards" / "shard-00001.done").unlink()
    model, processor = tiny
    other = copy.deepcopy(model)
    with torch.no_grad():
        next(other.encoder.parameters()).add_(0.01)
    from mico_chat.api import ChatModel

    ChatModel(other, processor).save_pretrained(tmp_path / "other")
    assert encode(corpus, out, tmp_path / "other") == 2
    err = capsys.readouterr().err
    assert f"feature store {out} holds shards made by different encoders" in err


def test_training_reads_the_store_instead_of_running_the_encoder(saved, corpus, store, tmp_path, monkeypatch):
    import mico_chat.training.recipe as recipe_module
    from helpers.train_fixtures import tiny_config
    from mico_chat.training import TrainRecipe, config_from_dict
    from mico_chat.training.errors import TrainConfigError

    def setup(name, **data):
        config = tiny_config(saved, corpus, tmp_path / name, "stage1_align", data={"cache_encoder_features": True, **data})
        recipe = TrainRecipe(config_from_dict(config), progress=False)
        recipe.setup()
        return recipe.trainer.train_dataset.features

    computed = setup("computed")
    monkeypatch.setattr(recipe_module, "cache_encoder_features", lambda *a, **k: pytest.fail("the encoder ran"))
    read = setup("read", feature_store=str(store))
    assert len(read) == len(computed) == 6
    for mine, theirs in zip(read, computed):
        assert [m for m, _ in mine] == [m for m, _ in theirs]
        assert all(torch.equal(a, b) for (_, a), (_, b) in zip(mine, theirs))
    with pytest.raises(TrainConfigError, match="data.feature_store is read only with data.cache_encoder_features"):
        config_from_dict(tiny_config(saved, corpus, tmp_path / "x", "stage1_align", data={"feature_store": "s"}))


@pytest.mark.slow
def test_ray_writes_the_single_process_store(corpus, saved, tmp_path, ray_cluster, capsys):
    """Bit for bit: a CPU's sums depend on its thread count, and a 1-CPU actor runs one thread."""
    single, out = tmp_path / "single", tmp_path / "ray-store"
    assert encode(corpus, single, saved, "--threads", "1") == 0
    assert torch.get_num_threads() == THREADS  # restored after the run
    assert encode(corpus, out, saved, "--threads", "1", "--ray", "--ray-workers", "2") == 0
    assert "records gathered from 3 shards" in capsys.readouterr().out
    expected, got = store_tensors(single), store_tensors(out)
    assert sorted(got) == sorted(expected) and len(got) == 3
    for name in expected:
        assert sorted(got[name]) == sorted(expected[name])
        assert all(torch.equal(got[name][k], expected[name][k]) for k in expected[name])
    assert (out / fs.INDEX).read_text() == (single / fs.INDEX).read_text()
    mine, theirs = (json.loads((s / fs.MANIFEST).read_text()) for s in (out, single))
    assert mine == theirs
