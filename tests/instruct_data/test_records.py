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


# ---------------------------------------------------------------- hostile lines (issue 21, items 7-8)
PLAIN = {"id": "ok", "image": "a.png", "conversations": [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]}


def _deep(n):
    return "[" * n + "]" * n


HOSTILE = [
    ('{"id": "x", "conversations": [{"from": ["human"], "value": "q"}, {"from": "gpt", "value": "a"}]}', "unknown speaker"),
    ('{"id": "x", "messages": [{"role": {"a": 1}, "content": "q"}]}', "unknown speaker"),
    ('{"id": "x", "meta": ' + _deep(100_000) + "}", "nested too deeply"),
    ('{"id": ' + "9" * 5000 + "}", "digits"),
    ('{"id": "\\ud800", "captions": {"vision": "c"}, "image": "a.png"}', "lone surrogate"),
    ('{"id": "x", "media": [{"modality": "video", "path": "v.mp4", "start": NaN}], "captions": {"vision": "c"}}', "non-finite"),
    ('{"id": "x", "media": [{"modality": "video", "path": "v.mp4", "end": Infinity}], "captions": {"vision": "c"}}', "non-finite"),
    ('{"id": "x", "media": [{"modality": ["video"], "path": "v.mp4"}], "captions": {"vision": "c"}}', "unknown modality"),
    ('{"id": "x", "media": [{"modality": "video", "path": "v.mp4", "num_frames": true}], "captions": {"vision": "c"}}', "num_frames"),
]


def test_every_hostile_line_is_a_bad_record_and_the_good_lines_still_read(tmp_path):
    path = tmp_path / "r.jsonl"
    lines = [json.dumps(PLAIN)] + [line for line, _ in HOSTILE] + [json.dumps({**PLAIN, "id": "ok2"})]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = list(read_records(path))
    assert [r.id for r in out if isinstance(r, Record)] == ["ok", "ok2"]
    bad = [r for r in out if isinstance(r, BadRecord)]
    assert [b.line for b in bad] == list(range(2, 2 + len(HOSTILE)))
    for b, (_, fragment) in zip(bad, HOSTILE):
        assert fragment in b.reason, (b.line, b.reason)
        str(b).encode("utf-8")  # printable: no lone surrogate reaches a report


def test_non_finite_times_are_refused_from_python_too():
    raw = {"id": "x", "media": [{"modality": "video", "path": "v.mp4", "start": float("nan")}], "captions": {"vision": "c"}}
    with pytest.raises(RecordError, match="start"):
        parse_record(raw)


def test_a_json_list_file_with_a_bad_constant_names_the_file(tmp_path):
    path = tmp_path / "r.json"
    path.write_text('[{"id": "x", "start": NaN}]')
    with pytest.raises(RecordError, match="r.json: non-finite number NaN"):
        list(read_records(path))


def test_any_json_line_gives_a_record_or_a_bad_record(tmp_path):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
        max_leaves=15,
    )
    keys = st.sampled_from(["id", "media", "image", "video", "conversations", "messages", "captions", "meta", "x"])
    near = st.dictionaries(keys, values | st.just([{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]))
    path = tmp_path / "r.jsonl"

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(near | values, min_size=1, max_size=4))
    def check(rows):
        text = "\n".join(json.dumps(r, allow_nan=True) for r in rows) + "\n"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        out = list(read_records(path))
        assert len(out) == sum(1 for line in text.splitlines() if line.strip())
        for item in out:
            assert isinstance(item, (Record, BadRecord))
            str(item.id if isinstance(item, Record) else item).encode("utf-8")

    check()
