"""The validator: every kind of bad record is found and reported with its file, line and reason."""

from __future__ import annotations

import json
import wave

import numpy as np
import pytest
from PIL import Image

from mico_chat.cli import main
from mico_chat.media.samples import make_demo_clip
from mico_chat.instruct_data import RecordError
from mico_chat.instruct_data.validate import RecordLimits, RecordReader, validate_records

TALK = [{"from": "human", "value": "<video>\n<audio>\nWhat happens?"}, {"from": "gpt", "value": "A square moves."}]


def rec(rid, media, text="<video>\n<audio>\nWhat happens?", **extra):
    return {
        "id": rid,
        "media": media,
        "conversations": [{"from": "human", "value": text}, {"from": "gpt", "value": "Yes."}],
        **extra,
    }


def av(path, **window):
    return [{"modality": "video", "path": path, **window}, {"modality": "audio", "path": path}]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_demo_clip(root / "clip.mp4", seconds=2.0)
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(root / "pic.png")
    with wave.open(str(root / "beep.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes((np.sin(np.arange(16000) / 5) * 8000).astype("<i2").tobytes())
    (root / "garbage.mp4").write_bytes(b"\x00\x01not a video at all" * 50)
    (root / "empty.png").write_bytes(b"")
    png = (root / "pic.png").read_bytes()
    (root / "cut.png").write_bytes(png[: len(png) // 2])  # a valid header, then nothing
    lines = [
        json.dumps(rec("ok-video", av("clip.mp4"))),  # 1
        "{broken json",  # 2
        json.dumps(rec("missing", av("nowhere.mp4"))),  # 3
        json.dumps(rec("placeholder-without-media", [], "<image>\nWhat is it?")),  # 4
        json.dumps(rec("media-without-placeholder", [{"modality": "image", "path": "pic.png"}], "What is it?")),  # 5
        json.dumps(rec("corrupt", av("garbage.mp4"))),  # 6
        json.dumps(rec("audio-as-video", av("beep.wav"))),  # 7
        json.dumps(rec("late-window", av("clip.mp4", start=30.0, end=40.0))),  # 8
        json.dumps(
            {
                "id": "chatty",
                "image": "pic.png",
                "conversations": [{"from": "human", "value": "<image>\nHi"}, {"from": "gpt", "value": "Hi"}]
                + [{"from": "human", "value": "And?"}, {"from": "gpt", "value": "So."}] * 3,
            }
        ),  # 9
        json.dumps(rec("ok-image", [{"modality": "image", "path": "pic.png"}], "<image>\nWhat is it?")),  # 10
        json.dumps(rec("empty-file", [{"modality": "image", "path": "empty.png"}], "<image>\nWhat is it?")),  # 11
        json.dumps(
            {"id": "ok-caption", "media": [{"modality": "audio", "path": "beep.wav"}], "captions": {"audio": "A tone."}}
        ),  # 12
        json.dumps(rec("truncated-png", [{"modality": "image", "path": "cut.png"}], "<image>\nWhat is it?")),  # 13
    ]
    (root / "records.jsonl").write_text("\n".join(lines) + "\n")
    return root


LIMITS = RecordLimits(max_turns=4)


def test_every_bad_record_is_reported_with_file_line_and_reason(dataset):
    report = validate_records(
        dataset / "records.jsonl", dataset, check="decode", limits=LIMITS, workers=1, progress=False
    )
    assert (report.total, report.valid) == (13, 3)
    by_line = {b.line: b for b in report.bad}
    assert sorted(by_line) == [2, 3, 4, 5, 6, 7, 8, 9, 11, 13]
    expect = {
        2: "not valid JSON",
        3: "media[0] (video) nowhere.mp4: no such file",
        4: r"placeholders [<image>] do not match media [none]",
        5: r"placeholders [none] do not match media [image]",
        6: "media[0] (video) garbage.mp4",
        7: "media[0] (video) beep.wav: holds no video stream",
        8: "window starts at 30.0 s but the media lasts 2.",
        9: "8 turns; the limit is 4",
        11: "empty file (0 bytes)",
        13: "media[0] (image) cut.png",
    }
    for line, text in expect.items():
        assert text in by_line[line].reason, (line, by_line[line].reason)
        assert str(by_line[line]).startswith(f"{dataset / 'records.jsonl'}:{line}: ")
    assert by_line[3].id == "missing"
    assert report.reasons() == {"json": 1, "media": 5, "placeholders": 2, "window": 1, "length": 1}
    text = report.format()
    assert "13 records, 3 valid, 10 bad" in text and f"{dataset / 'records.jsonl'}:7:" in text


def test_check_levels_catch_progressively_more(dataset):
    def bad_lines(check):
        report = validate_records(
            dataset / "records.jsonl", dataset, check=check, limits=LIMITS, workers=1, progress=False
        )
        return sorted(b.line for b in report.bad)

    assert bad_lines("none") == [2, 4, 5, 9]
    assert bad_lines("exists") == [2, 3, 4, 5, 9, 11]
    assert bad_lines("probe") == [2, 3, 4, 5, 6, 7, 8, 9, 11]
    assert bad_lines("decode") == [2, 3, 4, 5, 6, 7, 8, 9, 11, 13]  # the cut png only fails to decode


@pytest.mark.slow  # worker processes
def test_parallel_workers_give_the_same_report(dataset, tmp_path):
    many = tmp_path / "many.jsonl"
    lines = (dataset / "records.jsonl").read_text().splitlines()
    many.write_text("\n".join(lines * 4) + "\n")
    one = validate_records(many, dataset, workers=1, limits=LIMITS, progress=False)
    two = validate_records(many, dataset, workers=2, limits=LIMITS, progress=False)
    assert [(b.line, b.reason) for b in one.bad] == [(b.line, b.reason) for b in two.bad]
    assert one.media_files == two.media_files == 11


def test_strict_stops_at_the_first_bad_record(dataset):
    with pytest.raises(RecordError, match=r"records.jsonl:2: not valid JSON"):
        validate_records(dataset / "records.jsonl", dataset, strict=True, progress=False)


def test_record_reader_skips_and_counts_or_stops(dataset):
    reader = RecordReader(dataset / "records.jsonl", dataset, check="probe", limits=LIMITS)
    assert [r.id for r in reader] == ["ok-video", "ok-image", "ok-caption", "truncated-png"]
    assert reader.num_valid == 4 and [b.line for b in reader.skipped] == [2, 3, 4, 5, 6, 7, 8, 9, 11]
    strict = RecordReader(dataset / "records.jsonl", dataset, strict=True)
    with pytest.raises(RecordError, match=":2: "):
        list(strict)


def test_cli_prints_the_report_and_exits_1_on_bad_records(dataset, tmp_path, capsys):
    out = tmp_path / "report.json"
    code = main(["data", "validate", str(dataset / "records.jsonl"), "--media-root", str(dataset), "--no-progress",
                 "--workers", "1", "--json", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert (
        code == 1
        and "13 records, 4 valid, 9 bad" in printed
        and ":3: media[0] (video) nowhere.mp4: no such file" in printed
    )
    report = json.loads(out.read_text())
    assert report["bad_count"] == 9
    assert report["bad"][0] == {"file": str(dataset / "records.jsonl"), "line": 2, "id": None, "kind": "json",
                                "reason": report["bad"][0]["reason"]}  # fmt: skip
    good = tmp_path / "good.jsonl"
    good.write_text((dataset / "records.jsonl").read_text().splitlines()[0] + "\n")
    assert main(["data", "validate", str(good), "--media-root", str(dataset), "--no-progress"]) == 0


# ------------------------------------------------------------------ hostile records (issue 21, items 7-10)
def _image_rec(rid, path):
    return rec(rid, [{"modality": "image", "path": path}], "<image>\nWhat is it?")


@pytest.fixture
def hostile(dataset, tmp_path):
    """A records file beside the dataset's media: good lines around lines that used to abort the run."""
    (tmp_path / "outside.png").write_bytes((dataset / "pic.png").read_bytes())
    root = tmp_path / "root"
    root.mkdir()
    (root / "pic.png").write_bytes((dataset / "pic.png").read_bytes())
    lines = [
        json.dumps(_image_rec("ok", "pic.png")),  # 1
        json.dumps(_image_rec("long", "x" * 300 + ".png")),  # 2: a component over 255 characters
        json.dumps(_image_rec("up", "../outside.png")),  # 3
        json.dumps(_image_rec("absolute", str(tmp_path / "outside.png"))),  # 4
        '{"id": "speaker", "conversations": [{"from": ["human"], "value": "q"}, {"from": "gpt", "value": "a"}]}',  # 5
        '{"id": "deep", "meta": ' + "[" * 100_000 + "]" * 100_000 + "}",  # 6
        '{"id": ' + "7" * 5000 + "}",  # 7
        '{"id": "\\udc80", "image": "pic.png", "conversations": []}',  # 8
        json.dumps(rec("nan", [{"modality": "video", "path": "v.mp4", "start": 1.0}])).replace("1.0", "NaN"),  # 9
        json.dumps(_image_rec("ok2", "./pic.png")),  # 10
    ]
    (root / "records.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def test_hostile_lines_are_reported_one_by_one_and_the_rest_still_validates(hostile, capsys):
    report = validate_records(hostile / "records.jsonl", check="decode", workers=1, progress=False)
    assert (report.total, report.valid) == (10, 2)
    by_line = {b.line: b.reason for b in report.bad}
    assert sorted(by_line) == [2, 3, 4, 5, 6, 7, 8, 9]
    assert "cannot be read" in by_line[2] and "name too long" in by_line[2].lower()
    assert "outside the media root" in by_line[3] and "outside the media root" in by_line[4]
    assert "unknown speaker" in by_line[5] and "nested too deeply" in by_line[6]
    assert "digits" in by_line[7] and "lone surrogate" in by_line[8] and "non-finite number NaN" in by_line[9]
    print(report.format())  # printing the report never fails (no lone surrogate reaches it)
    assert "10 records, 2 valid, 8 bad" in capsys.readouterr().out
    allowed = validate_records(hostile / "records.jsonl", check="decode", workers=1, progress=False, allow_outside_root=True)
    assert allowed.valid == 4  # ../outside.png and the absolute path are real files


def test_record_reader_skips_hostile_lines_or_stops_at_the_first(hostile):
    reader = RecordReader(hostile / "records.jsonl", check="probe")
    assert [r.id for r in reader] == ["ok", "ok2"]
    assert [b.line for b in reader.skipped] == [2, 3, 4, 5, 6, 7, 8, 9]
    with pytest.raises(RecordError, match=r"records.jsonl:2: .*cannot be read"):
        list(RecordReader(hostile / "records.jsonl", strict=True))


def test_cli_refuses_paths_outside_the_root_unless_allowed(hostile, capsys):
    assert main(["data", "validate", str(hostile / "records.jsonl"), "--check", "exists", "--no-progress"]) == 1
    assert "outside the media root" in capsys.readouterr().out
    assert main(["data", "validate", str(hostile / "records.jsonl"), "--check", "exists", "--no-progress",
                 "--allow-outside-root"]) == 1  # fmt: skip  (the other hostile lines stay bad)
    assert "outside the media root" not in capsys.readouterr().out
