import json

import pytest

from mico_chat.instruct_data import BadRecord, Record, RecordError, parse_record, read_records, write_records
from mico_chat.modality import Modality

GOOD = {
    "id": "a1",
    "media": [{"modality": "video", "path": "v.mp4", "start": 1.0, "end": 3.0}, {"modality": "audio", "path": "v.mp4"}],
    "conversations": [{"from": "human", "value": "<video>\n<audio>\nWhat?"}, {"from": "gpt", "value": "A beep."}],
    "captions": {"omni": "A square beeps."},
}


def test_llava_and_openai_styles_parse_to_the_same_record():
    a = parse_record(GOOD)
    b = parse_record({**{k: v for k, v in GOOD.items() if k != "conversations"}, "messages": [
        {"role": "user", "content": "<video>\n<audio>\nWhat?"}, {"role": "assistant", "content": "A beep."}]})
    assert a == b
    assert a.media[0].modality is Modality.VIDEO and a.media[0].options() == {"start": 1.0, "end": 3.0}
    assert parse_record(a.to_json()) == a


def test_llava_shorthand_media():
    r = parse_record({"id": 3, "image": "x.jpg", "conversations": [{"from": "human", "value": "<image>\nHi"}, {"from": "gpt", "value": "Yo"}]})
    assert r.id == "3" and [m.path for m in r.media] == ["x.jpg"]


@pytest.mark.parametrize(
    "change,message",
    [
        ({"id": ""}, "missing or empty 'id'"),
        ({"media": [{"modality": "smell", "path": "x"}]}, "unknown modality"),
        ({"media": [{"modality": "video"}]}, "needs a non-empty 'path'"),
        ({"media": [{"modality": "video", "path": "v", "start": 3, "end": 1}, {"modality": "audio", "path": "v"}]}, "end 1 <= start 3"),
        ({"media": [{"modality": "video", "path": "v.mp4"}]}, r"do not match media \[video\]"),  # placeholder without media
        ({"conversations": [{"from": "human", "value": "What?"}, {"from": "gpt", "value": "x"}]}, r"placeholders \[none\]"),  # media without placeholder
        ({"conversations": [{"from": "gpt", "value": "<video><audio>"}]}, "alternate"),
        ({"conversations": [{"from": "robot", "value": "x"}]}, "unknown speaker"),
        ({"captions": {"smell": "x"}}, "unknown caption kinds"),
    ],
)
def test_malformed_records_raise_naming_the_problem(change, message):
    with pytest.raises(RecordError, match=message):
        parse_record({**GOOD, **change})


def test_caption_pair_records_need_media():
    assert parse_record({"id": "c", "media": [{"modality": "audio", "path": "a.wav"}], "captions": {"audio": "rain"}}).is_caption_pair
    with pytest.raises(RecordError, match="needs media"):
        parse_record({"id": "c", "captions": {"audio": "rain"}})


def test_read_records_reports_bad_lines_and_keeps_going(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(GOOD) + "\n{broken\n\n" + json.dumps({**GOOD, "id": "b2", "captions": 5}) + "\n" + json.dumps({**GOOD, "id": "c3"}) + "\n")
    out = list(read_records(path))
    assert [type(o) for o in out] == [Record, BadRecord, BadRecord, Record]
    assert out[1].line == 2 and "not valid JSON" in out[1].reason
    assert out[2].line == 4 and out[2].id == "b2" and str(out[2]).startswith(f"{path}:4:")
    written = tmp_path / "w.jsonl"
    assert write_records(written, [o for o in out if isinstance(o, Record)]) == 2
    assert [r.id for r in read_records(written)] == ["a1", "c3"]
    with pytest.raises(FileNotFoundError):
        list(read_records(tmp_path / "missing.jsonl"))
