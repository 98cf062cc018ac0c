"""Pseudo-labelling (frames captioned, labels combined) and instruction generation (templates, LLM rewriting)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from mico_chat.cli import main
from mico_chat.instruct_data import parse_record, read_records
from mico_chat.instruct_data.instruct import InstructConfig, make_instructions, parse_qa, rewrite
from mico_chat.instruct_data.llm import Generated
from mico_chat.instruct_data.pseudolabel import (
    PseudoLabelConfig,
    join_captions,
    num_chunks,
    pseudolabel,
    records_from_folder,
)
from mico_chat.instruct_data.synth import factors as F
from mico_chat.instruct_data.synth import generate_world

from helpers.llm_stubs import ScriptedGenerator


class PixelCaptioner:
    """Captions a frame from its pixels: the most common non-background colour, or an empty scene."""

    name = "pixels"

    def __init__(self):
        self.calls = 0

    def caption(self, images, *, attempt=0):
        self.calls += 1
        out = []
        for image in images:
            flat = image.reshape(-1, 3).astype(int)
            distance = {
                c: np.abs(flat - np.array(rgb)).sum(axis=1) for c, rgb in {**F.COLOURS, **F.BACKGROUNDS}.items()
            }
            names = np.array(list(distance))[np.argmin(np.stack(list(distance.values())), axis=0)]
            counts = Counter(n for n in names if n in F.COLOURS)
            bg = Counter(n for n in names if n in F.BACKGROUNDS).most_common(1)[0][0]
            colour = counts.most_common(1)[0][0] if counts and counts.most_common(1)[0][1] > 30 else None
            out.append(Generated(f"A {colour} shape on a {bg} background." if colour else f"An empty {bg} background."))
        return out


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    out = tmp_path_factory.mktemp("w")
    generate_world(out, 6, seed=11, progress=False)
    return out, list(read_records(out / "captions.jsonl"))


def test_pseudolabels_come_from_the_frames(small_world, tmp_path):
    root, captions = small_world
    unlabelled = [parse_record({**c.to_json(), "captions": {"audio": c.captions["audio"]}}) for c in captions]
    report = pseudolabel(unlabelled, tmp_path / "pl.jsonl", PixelCaptioner(), media_root=root, progress=False)
    assert report.done == 6 and not report.failed
    world = {
        json.loads(line)["id"]: json.loads(line)["scene"] for line in (root / "world.jsonl").read_text().splitlines()
    }
    for record in read_records(tmp_path / "pl.jsonl"):
        scene = world[record.id]
        frames = record.meta["pseudolabel"]["frames"]
        assert (
            len(frames) == 1 and record.meta["pseudolabel"]["combine"] == "single frame"
        )  # clips < 8 s: the centre frame
        assert abs(frames[0]["time_s"] - scene["duration_s"] / 2) <= 0.04
        assert record.captions["vision"] == frames[0]["caption"] and record.captions["audio"]  # other captions kept
        visible = scene["visual_event"] == "none" or (scene["visual_event"] == "appear") == (
            scene["event_time_s"] <= frames[0]["time_s"]
        )
        assert (scene["colour"] in record.captions["vision"]) == visible, (record.id, record.captions["vision"])


def test_several_chunks_are_joined_or_combined_by_an_llm(small_world, tmp_path):
    root, captions = small_world
    records = [captions[0]]
    config = PseudoLabelConfig(chunk_s=1.0, max_frames=3)
    joined = pseudolabel(
        records, tmp_path / "join.jsonl", PixelCaptioner(), media_root=root, config=config, progress=False
    )
    (record,) = read_records(tmp_path / "join.jsonl")
    frames = record.meta["pseudolabel"]["frames"]
    assert joined.done == 1 and len(frames) == 3 and record.meta["pseudolabel"]["combine"] == "join"
    assert record.captions["vision"] == join_captions([f["caption"] for f in frames])
    llm = ScriptedGenerator(
        lambda prompt, attempt: "A shape shows up on the background and then stays there." if "1. " in prompt else None
    )
    pseudolabel(
        records, tmp_path / "llm.jsonl", PixelCaptioner(), combiner=llm, media_root=root, config=config, progress=False
    )
    (record,) = read_records(tmp_path / "llm.jsonl")
    assert record.captions["vision"] == "A shape shows up on the background and then stays there."
    assert record.meta["pseudolabel"]["combine"] == "llm:scripted" and "3. " in llm.calls[0][1][0]


def test_helpers_and_folder_input(tmp_path, small_world):
    config = PseudoLabelConfig()
    assert [num_chunks(d, config) for d in (None, 3.0, 8.0, 8.5, 100.0)] == [1, 1, 1, 2, 4]
    assert join_captions(["A dog sits.", "A dog sits.", "A dog runs."]) == "A dog sits, then a dog runs."
    root, _ = small_world
    records = records_from_folder(root / "media")
    assert len(records) == 6 and records[0].media[0].path.endswith(".mp4") and records[0].id.startswith("000/")
    broken = tmp_path / "videos"
    broken.mkdir()
    (broken / "bad.mp4").write_bytes(b"not a video")
    report = pseudolabel(records_from_folder(broken), tmp_path / "o.jsonl", PixelCaptioner(), media_root=broken,
                         config=PseudoLabelConfig(max_retries=0), progress=False)  # fmt: skip
    assert report.failed == ["bad"] and "cannot read frames" in report.log.read_text()


def test_the_chat_model_captions_images(small_world, tmp_path, tiny):
    from mico_chat.api import ChatModel
    from mico_chat.instruct_data.llm import SamplingSettings
    from mico_chat.instruct_data.pseudolabel import ChatModelCaptioner

    root, captions = small_world
    model, processor = tiny
    captioner = ChatModelCaptioner(
        ChatModel(model, processor, name="tiny"), settings=SamplingSettings(max_new_tokens=6)
    )
    frame = np.zeros((40, 40, 3), np.uint8)
    (out,) = captioner.caption([frame])
    assert out.error is None and isinstance(out.text, str)
    report = pseudolabel(
        captions[:1],
        tmp_path / "o.jsonl",
        captioner,
        media_root=root,
        config=PseudoLabelConfig(max_retries=0),
        progress=False,
    )
    assert report.done + len(report.failed) == 1


# ------------------------------------------------------------------------------------ instructions
def caption_records():
    rows = [
        ("v1", "video", {"vision": "A dog runs on grass.", "audio": "A dog barks."}, "dog"),
        ("v1b", "video", {"vision": "A puppy sprints across a lawn."}, "dog"),
        ("v2", "video", {"vision": "A car drives at night."}, "car"),
        ("v3", "video", {"vision": "Waves hit the shore."}, "sea"),
        ("v4", "video", {"vision": "A man plays the piano."}, "piano"),
        ("a1", "audio", {"audio": "Rain falls on a tin roof."}, "rain"),
    ]
    return [parse_record({"id": rid, "media": [{"modality": m, "path": f"{rid}.bin"}], "captions": c, "meta": {"item": item}})
            for rid, m, c, item in rows]  # fmt: skip


def test_template_instructions_are_valid_deterministic_and_never_use_the_same_item_as_a_negative():
    records = caption_records()
    made = make_instructions(records, InstructConfig(per_record=4, seed=3))
    assert made == make_instructions(records, InstructConfig(per_record=4, seed=3))
    assert made != make_instructions(records, InstructConfig(per_record=4, seed=4))
    parsed = [parse_record(m) for m in made]
    kinds = Counter(p.meta["kind"] for p in parsed)
    assert set(kinds) == {"description", "open", "yesno", "mc"}
    by_id = {r.id: r for r in records}
    for p in parsed:
        source = by_id[p.meta["source_id"]]
        assert p.media == source.media and p.messages[0]["content"].startswith(f"<{source.media[0].modality.value}>\n")
        answer = p.messages[1]["content"]
        if p.meta["kind"] == "mc":
            options = p.meta["options"]
            assert options["ABCD".index(answer)] in source.captions.values()
            if source.meta["item"] == "dog":  # another caption of the same item is never offered as a wrong option
                assert len(set(options) & {"A dog runs on grass.", "A puppy sprints across a lawn."}) == 1
        if p.meta["kind"] == "yesno":
            quoted = p.messages[0]["content"].split('"')[1]
            assert (answer == "yes") == (quoted in source.captions.values())
    audio_only = [p for p in parsed if p.meta["source_id"] == "a1" and p.meta["kind"] == "description"]
    assert all("hear" in p.messages[0]["content"] or "sound" in p.messages[0]["content"] for p in audio_only)


def test_parse_qa():
    pairs, _ = parse_qa("Q: What runs?\nA: A dog.\n2. Question: What does it sound like?\nAnswer: Barking.\nnoise")
    assert pairs == [("What runs?", "A dog."), ("What does it sound like?", "Barking.")]
    assert parse_qa("Just some text.")[0] is None
    assert "not a question" in parse_qa("Q: Tell me\nA: ok")[1]
    assert "sources" in parse_qa("Q: What is it?\nA: The description says a dog.")[1]


def test_llm_rewriting_is_parsed_retried_and_written(tmp_path):
    def respond(prompt, attempt):
        if "A car drives" in prompt and attempt == 0:
            return "Sure! Here is a conversation."
        return "Q: What is happening?\nA: Something moves.\nQ: Is it daytime?\nA: It is hard to say."

    gen = ScriptedGenerator(respond)
    report = rewrite(caption_records()[:3], tmp_path / "llm.jsonl", gen, progress=False)
    assert report.done == 3 and report.rejected_outputs == 1
    written = list(read_records(tmp_path / "llm.jsonl"))
    assert [r.id for r in written] == ["v1-llm", "v1b-llm", "v2-llm"]
    assert len(written[0].messages) == 4 and written[0].messages[0]["content"].startswith("<video>\nWhat is happening?")
    assert "- vision: A dog runs on grass." in gen.calls[0][1][0] and "Q: <question>" in gen.calls[0][1][0]


def test_cli_instruct(tmp_path, capsys):
    source = tmp_path / "captions.jsonl"
    source.write_text("".join(json.dumps(r.to_json()) + "\n" for r in caption_records()))
    out = tmp_path / "instruct.jsonl"
    assert main(["data", "instruct", str(source), str(out), "--kinds", "description,mc", "--per-record", "1"]) == 0
    assert "6 instruction records from 6 caption records" in capsys.readouterr().out
    assert {r.meta["kind"] for r in read_records(out)} <= {"description", "mc"}
    assert main(["data", "instruct", str(source), str(out), "--kinds", "poems"]) == 2


def test_cli_pseudolabel_and_omni_caption_with_a_saved_model(small_world, tmp_path, tiny, capsys):
    from mico_chat.api import ChatModel

    root, captions = small_world
    model, processor = tiny
    folder = tmp_path / "tiny-model"
    ChatModel(model, processor).save_pretrained(folder)
    common = ["--model", str(folder), "--max-retries", "0", "--max-new-tokens", "6", "--no-progress"]
    assert main(["data", "pseudolabel", str(root / "media"), str(tmp_path / "pl.jsonl"), *common]) == 0
    assert "pl.jsonl: " in capsys.readouterr().out
    log = (tmp_path / "pl.jsonl.log.jsonl").read_text().splitlines() if (tmp_path / "pl.jsonl.log.jsonl").exists() else []
    written = list(read_records(tmp_path / "pl.jsonl")) if (tmp_path / "pl.jsonl").exists() else []
    assert len(written) + len(log) == 6  # every video was captioned: accepted, or rejected and logged
    source = tmp_path / "nolabel.jsonl"
    source.write_text(json.dumps({**captions[0].to_json(), "captions": {"audio": captions[0].captions["audio"]}}) + "\n")
    out = tmp_path / "omni.jsonl"
    code = main(["data", "omni-caption", str(source), str(out), "--pseudolabel", "--media-root", str(root), *common])
    assert code == 0 and (tmp_path / "omni.jsonl.pseudolabel.jsonl").exists()
