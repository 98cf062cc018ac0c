"""Records -> samples: conversions, the scan (skip and count, strict), the loss-mask check, the sampler."""

import json

import pytest
import torch
from mico_chat.instruct_data.records import parse_record

from mico_chat.processing import IGNORE_INDEX
from mico_chat.training import DataError, LabelMaskError
from mico_chat.training.data import LengthGroupedSampler, SampleDataset, check_label_mask, record_messages, scan_records


@pytest.fixture(scope="module")
def processor(tiny):
    return tiny[1]


def test_a_caption_pair_becomes_one_exchange():
    record = parse_record(
        {
            "id": 1,
            "media": [{"modality": "video", "path": "a.mp4"}, {"modality": "audio", "path": "a.mp4"}],
            "captions": {"vision": "a red ball", "omni": "a red ball bounces with a thud"},
        }
    )
    assert record_messages(record, ["omni", "vision"], None) == [
        {"role": "user", "content": "<video>\n<audio>"},
        {"role": "assistant", "content": "a red ball bounces with a thud"},
    ]
    assert record_messages(record, ["vision"], "Describe it.")[0]["content"] == "<video>\n<audio>\nDescribe it."
    with pytest.raises(ValueError, match=r"no caption of kinds \['subtitle'\]"):
        record_messages(record, ["subtitle"], None)


def write_records(path, rows):
    path.write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in rows))
    return path


def qa(i, image, question="What colour is this picture?", answer="red"):
    return {
        "id": f"r{i}",
        "media": [{"modality": "image", "path": image}],
        "conversations": [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}],
    }


def bad_data(tmp_path):
    from helpers.train_fixtures import colour_images

    images = colour_images(tmp_path, 2)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    rows = [
        qa(0, images[0][0]),
        "{not json\n",
        qa(2, "missing.png"),
        {"id": "r3", "media": [{"modality": "image", "path": images[1][0]}], "captions": {"audio": "a beep"}},
        {"id": "r4", "conversations": [{"from": "human", "value": "<image>\nHi"}, {"from": "gpt", "value": "x"}]},
        qa(5, images[1][0], question="word " * 200),
        qa(6, "broken.png"),
        qa(7, images[1][0], answer="blue"),
    ]
    return write_records(tmp_path / "mixed.jsonl", rows)


def test_scan_skips_and_counts_bad_records_with_reasons(processor, tmp_path):
    path = bad_data(tmp_path)
    report = scan_records([path], processor, caption_kinds=["vision"], max_length=120, progress=False)
    assert [s.record_id for s in report.samples] == ["r0", "r7"]
    reasons = {bad.id: bad.reason for bad in report.skipped}
    assert len(report.skipped) == 6 and report.num_records == 8
    assert "not valid JSON" in [b.reason for b in report.skipped if b.id is None][0]
    assert "missing.png is missing" in reasons["r2"]
    assert "no caption of kinds ['vision']" in reasons["r3"]
    assert "do not match media" in reasons["r4"]
    assert "the limit is 120" in reasons["r5"]
    assert "broken.png" in reasons["r6"]
    assert report.summary()["skipped"] == 6
    # every sample is measured without decoding media: the length is what the dataset yields
    dataset = SampleDataset(report.samples, processor)
    item = dataset[0]
    assert len(item["input_ids"]) == report.samples[0].length == len(item["labels"])
    image_id = processor.config.media_token_ids["image"]
    labels = torch.tensor(item["labels"])
    assert (labels[torch.tensor(item["input_ids"]) == image_id] == IGNORE_INDEX).all()
    assert processor.tokenizer.decode([t for t in item["labels"] if t != IGNORE_INDEX]) == "red<|im_end|>\n"


def test_strict_mode_stops_at_the_first_bad_record(processor, tmp_path):
    path = bad_data(tmp_path)
    with pytest.raises(DataError, match=r"mixed.jsonl:2: not valid JSON .*strict mode"):
        scan_records([path], processor, caption_kinds=["vision"], strict=True, progress=False)


def test_the_loss_mask_must_cover_each_assistant_message(processor):
    messages = [
        {"role": "user", "content": "Name a colour please, any colour"},
        {"role": "assistant", "content": "green"},
    ]
    from mico_chat.processing import PreparedConversation

    enc = processor.encode_text(PreparedConversation(messages, []), [], add_generation_prompt=False, with_labels=True)
    ids, labels = enc["input_ids"], enc["labels"]
    check_label_mask(processor, messages, ids, labels)  # consistent: no error
    cut = list(labels)
    first = next(i for i, x in enumerate(cut) if x != IGNORE_INDEX)
    cut[first] = IGNORE_INDEX  # the first assistant token is no longer trained
    with pytest.raises(LabelMaskError, match="assistant message 1"):
        check_label_mask(processor, messages, ids, cut)
    leaky = [t for t in ids]  # every token trained, user text included
    with pytest.raises(LabelMaskError, match="user text"):
        check_label_mask(processor, messages, ids, leaky)
    with pytest.raises(LabelMaskError, match="differ from the input ids"):
        check_label_mask(processor, messages, ids, [x if x == IGNORE_INDEX else x + 1 for x in labels])


def test_length_grouped_sampler_is_a_seeded_function_of_the_epoch():
    lengths = [int(x) for x in torch.randint(5, 500, (300,), generator=torch.Generator().manual_seed(0))]
    sampler = LengthGroupedSampler(lengths, group_size=4, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(300)) and list(sampler) == first
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first and sorted(second) == list(range(300))
    assert list(LengthGroupedSampler(lengths, 4, seed=3)) == first  # a fresh process replays epoch 0
    again = LengthGroupedSampler(lengths, 4, seed=3)
    again.set_epoch(1)
    assert list(again) == second
    assert lengths[first[0]] == max(lengths)  # the longest group comes first
    spread = [
        max(lengths[i] for i in first[k : k + 4]) - min(lengths[i] for i in first[k : k + 4]) for k in range(0, 300, 4)
    ]
    assert sum(spread) / len(spread) < 60  # groups hold similar lengths (random groups: ~290)


# ------------------------------------------------------------------ merge_turns
def _conversation(rid, media, question, answer, system=None, facts=None):
    from mico_chat.instruct_data.records import Record

    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": "".join(f"<{m.modality.value}>\n" for m in media) + question},
        {"role": "assistant", "content": answer},
    ]
    return Record(id=rid, media=tuple(media), messages=tuple(messages), meta={"facts": facts} if facts else {})


def test_merge_turns_joins_a_clips_questions_and_keeps_placeholders_first():
    from mico_chat.instruct_data.records import BadRecord, MediaRef, Record
    from mico_chat.modality import Modality
    from mico_chat.training.data import merge_turns

    clip = (MediaRef(Modality.VIDEO, "a.mp4"), MediaRef(Modality.AUDIO, "a.mp4"))
    still = (MediaRef(Modality.IMAGE, "a.png"),)
    items = [
        (1, _conversation("q1", clip, "What colour?", "red")),
        (2, _conversation("q2", clip, "How many?", "2")),
        (3, _conversation("q3", still, "What shape?", "circle")),  # other media: its own conversation
        (4, _conversation("q4", clip, "Moving?", "yes")),  # joins q1's: the clip's run is still open
        (5, BadRecord("f.jsonl", 5, "not JSON")),  # passes through and closes the open runs
        (6, _conversation("q6", clip, "Sound?", "beeps")),
        (7, _conversation("q7", clip, "Pitch?", "low")),
        (8, _conversation("q8", clip, "Onset?", "late")),
        (9, _conversation("q9", clip, "Count?", "3")),  # a fourth turn: over max_turns=3, a new one
        (10, _conversation("q10", clip, "Other system", "x", system="Be brief.")),
        (11, Record(id="cap", media=clip, captions={"omni": "a caption"})),
    ]
    out = list(merge_turns(items, 3))
    assert [(line, getattr(r, "id", None)) for line, r in out] == [
        (1, "q1+3"), (3, "q3"), (5, None), (6, "q6+3"), (9, "q9"), (10, "q10"), (11, "cap"),
    ]
    merged = out[0][1]
    assert merged.media == clip and merged.meta == {"merged": ["q1", "q2", "q4"]}
    assert [m["content"] for m in merged.messages] == ["<video>\n<audio>\nWhat colour?", "red", "How many?", "2", "Moving?", "yes"]
    assert [m["role"] for m in out[3][1].messages] == ["user", "assistant"] * 3
    assert list(merge_turns(items, 1)) == items  # off: unchanged


def test_merge_turns_never_lets_one_turn_give_away_another():
    """The synthetic world's records of one clip: a turn that states a fact (in its answer or in its
    question's wording) never shares a conversation with a turn that asks for it, and the long
    description goes last, where it gives nothing away."""
    from mico_chat.instruct_data.records import MediaRef
    from mico_chat.modality import Modality
    from mico_chat.training.data import merge_turns

    clip = (MediaRef(Modality.VIDEO, "a.mp4"),)
    records = [
        _conversation("bg", clip, "What colour is the background?", "black", facts={"background": "black"}),
        _conversation("count", clip, "How many crosses are there?", "1", facts={"count": "1"}),
        _conversation("count2", clip, "How many crosses are there?", "1", facts={"count": "1"}),  # same question
        _conversation("describe", clip, "Describe the clip.", "On a black background, a large blue cross moves left, with beeps.",
                      facts={"shape": "cross", "colour": "blue", "direction": "left", "sound": "beeps"}),  # fmt: skip
        _conversation("pitch", clip, "Are the beeps high or low?", "high", facts={"pitch": "high"}),  # names the sound
        _conversation("colour+count", clip, "What colour is the cross, and how many beeps?", "blue, 3",
                      facts={"colour": "blue", "count": "3"}),  # fmt: skip
        _conversation("shape", clip, "What shape is the blue object?", "cross", facts={"shape": "cross"}),
        _conversation("yesno", clip, "Is there any sound?", "yes", facts={"answer": "yes"}),  # not a fact
    ]
    out = [r for _, r in merge_turns(list(enumerate(records, 1)), 16)]
    groups = [r.meta.get("merged", [r.id]) for r in out]
    # "crosses" in the count questions names the shape: "shape" and "describe" cannot join them.
    assert groups == [["bg", "count", "pitch", "yesno"], ["count2"], ["describe"], ["colour+count"], ["shape"]]
    # Each conversation keeps file order, except that a long answer goes last:
    onset = _conversation("onset", clip, "Does the sound start late?", "after a pause", facts={"onset": "late"})
    first = next(r for _, r in merge_turns([(1, records[3]), (2, onset)], 16))  # describe, then onset
    assert first.meta["merged"] == ["onset", "describe"]
    assert first.messages[0]["content"].startswith("<video>\n")  # placeholders stay in the first turn


def test_scan_with_merge_trains_every_answer_once(tiny, tmp_path):
    import json

    from mico_chat.training.data import scan_records

    _, processor = tiny
    (tmp_path / "a.png").write_bytes(b"")  # existence is enough without probing
    rows = [
        {"id": f"q{i}", "media": [{"modality": "image", "path": "a.png"}],
         "messages": [{"role": "user", "content": f"<image>\nQuestion {i}?"}, {"role": "assistant", "content": f"answer {i}"}]}
        for i in range(5)
    ]  # fmt: skip
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    single = scan_records([path], processor, probe_media=False, progress=False)
    merged = scan_records([path], processor, probe_media=False, progress=False, merge=4)
    assert [s.record_id for s in merged.samples] == ["q0+4", "q4"]
    assert merged.num_records == single.num_records == 5  # records read, not samples made
    assert sum(s.num_labels for s in merged.samples) == sum(s.num_labels for s in single.samples)
    assert sum(s.length for s in merged.samples) < sum(s.length for s in single.samples)
    image_tokens = processor.config.num_media_tokens("image", 1)
    assert merged.samples[0].length < 4 * single.samples[0].length - 3 * image_tokens + 1
