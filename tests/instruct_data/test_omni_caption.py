"""Omni-caption generation: the prompt, output checks, retries, logging, resuming, the two LLM backends."""

from __future__ import annotations

import json

import pytest

from mico_chat.cli import main
from mico_chat.instruct_data import parse_record, read_records
from mico_chat.instruct_data.llm import ChatModelGenerator, OpenAIGenerator, SamplingSettings
from mico_chat.instruct_data.omni_caption import (
    INSTRUCTION,
    OmniCaptionConfig,
    caption_inputs,
    clean_sentence,
    concat_caption,
    generate_omni_captions,
    omni_prompt,
)

from helpers.llm_stubs import ScriptedGenerator


def caption_record(rid, vision, audio, subtitle=None):
    captions = {"vision": vision, "audio": audio, **({"subtitle": subtitle} if subtitle else {})}
    return parse_record({"id": rid, "media": [{"modality": "video", "path": f"{rid}.mp4"}], "captions": captions})


RECORDS = [
    caption_record("a", "A red square moves to the left.", "Three high beeps sound.", "hello there"),
    caption_record("b", "A blue circle stays still.", "A low rumble of noise."),
    caption_record("c", "A green cross moves up.", "Silence."),
]
GOOD = {
    "a": "A red square slides to the left while three high beeps sound and someone says hello there.",
    "b": "A blue circle stays still as a low rumble of noise plays.",
    "c": "A green cross moves up in silence.",
}


def rid_of(prompt: str) -> str:
    return next(r.id for r in RECORDS if r.captions["vision"] in prompt)


def test_prompt_holds_every_caption_subtitle_and_the_instruction():
    record = parse_record({"id": "x", "media": [{"modality": "video", "path": "x.mp4"}], "captions": {"vision": "A dog runs.", "audio": "Barking."},
                           "meta": {"vision_captions": ["A dog runs.", "A puppy sprints.", "A dog on grass.", "fourth"]}})  # fmt: skip
    inputs = caption_inputs(record)
    assert inputs == {
        "vision": ["A dog runs.", "A puppy sprints.", "A dog on grass."],
        "audio": ["Barking."],
        "subtitle": [],
    }
    system, user = omni_prompt({**inputs, "subtitle": ["good boy"]})
    assert system["role"] == "system" and user["role"] == "user"
    for text in ("- A puppy sprints.", "- Barking.", 'What is said: "good boy"', INSTRUCTION):
        assert text in user["content"]


@pytest.mark.parametrize(
    "text,ok",
    [
        ('Caption: "a red square moves left as beeps sound"', "A red square moves left as beeps sound."),
        ("Sure, here is the caption:\nA cat sleeps on a warm mat.\nExtra line.", "A cat sleeps on a warm mat."),
        ("Too short.", None),
        ("I'm sorry, but I cannot describe this video for you today.", None),
        ("The captions say that a dog barks in the yard.", None),
        ("{'x': [1, 2, 3], 'y': [4, 5, 6], 'z': 7}", None),
        ("", None),
    ],
)
def test_clean_sentence(text, ok):
    sentence, reason = clean_sentence(text, min_words=5, max_words=40)
    assert sentence == ok and (reason == "") == (ok is not None)


def test_bad_outputs_are_retried_logged_and_never_fatal(tmp_path):
    def respond(prompt, attempt):
        rid = rid_of(prompt)
        if rid == "b" and attempt == 0:
            return "###"  # rejected, then fine on the retry
        if rid == "c":
            return "I'm sorry, I cannot help with that request today."
        return GOOD[rid]

    gen = ScriptedGenerator(respond)
    out = tmp_path / "omni.jsonl"
    report = generate_omni_captions(RECORDS, out, gen, OmniCaptionConfig(batch_size=2, max_retries=2), progress=False)
    assert (report.done, report.failed, report.rejected_outputs) == (2, ["c"], 4)
    assert [len(p) for _, p in gen.calls] == [2, 1, 2, 1]  # batches of 2 first, then the retries
    written = {r.id: r for r in read_records(out)}
    assert set(written) == {"a", "b"} and written["b"].captions["omni"] == GOOD["b"]
    assert written["a"].captions["subtitle"] == "hello there" and written["a"].meta["omni_caption"] == "scripted"
    log = [json.loads(line) for line in report.log.read_text().splitlines()]
    assert [(e["id"], e["attempt"]) for e in log] == [("b", 0), ("c", 0), ("c", 1), ("c", 2)]
    assert "refusal" in log[-1]["reason"] and log[0]["output"] == "###"

    # A rerun skips finished ids and tries only the failed one.
    gen2 = ScriptedGenerator(lambda prompt, attempt: GOOD[rid_of(prompt)])
    report2 = generate_omni_captions(RECORDS, out, gen2, progress=False)
    assert (report2.skipped, report2.done, report2.failed) == (2, 1, [])
    assert gen2.calls == [(0, [gen2.calls[0][1][0]])] and "green cross" in gen2.calls[0][1][0]
    assert [r.id for r in read_records(out)] == ["a", "b", "c"]


def test_a_line_cut_by_a_crash_is_dropped_before_resuming(tmp_path):
    out = tmp_path / "omni.jsonl"
    finished = {**RECORDS[0].to_json(), "captions": {**RECORDS[0].captions, "omni": GOOD["a"]}}
    out.write_text(json.dumps(finished) + "\n" + '{"id": "b", "captions": {"om')
    gen = ScriptedGenerator(lambda prompt, attempt: GOOD[rid_of(prompt)])
    report = generate_omni_captions(RECORDS, out, gen, progress=False)
    assert report.dropped_partial_lines == 1 and report.skipped == 1 and report.done == 2
    assert [r.id for r in read_records(out)] == ["a", "b", "c"]


def test_invented_content_is_rejected_and_concat_is_the_optional_fallback(tmp_path):
    gen = ScriptedGenerator(
        lambda prompt, attempt: "A famous orchestra performs a symphony inside an opera house tonight."
    )
    report = generate_omni_captions(
        RECORDS[:1], tmp_path / "o.jsonl", gen, OmniCaptionConfig(max_retries=1, fallback="concat"), progress=False
    )
    assert report.done == 1 and report.rejected_outputs == 2
    (record,) = read_records(tmp_path / "o.jsonl")
    assert record.captions["omni"] == concat_caption(caption_inputs(RECORDS[0]))
    assert (
        record.captions["omni"] == 'A red square moves to the left. Three high beeps sound. Someone says "hello there".'
    )
    assert record.meta["omni_caption"].startswith("concat")
    log = [json.loads(line) for line in report.log.read_text().splitlines()]
    assert "content words come from the inputs" in log[0]["reason"]


def test_openai_compatible_endpoint(tmp_path, openai_stub):
    def reply(body):
        prompt = body["messages"][-1]["content"]
        if "green cross" in prompt:
            return 500, "the model crashed"
        return 200, GOOD[rid_of(prompt)]

    stub = openai_stub(reply)
    gen = OpenAIGenerator(
        stub.base_url, "vicuna-13b", api_key="sk-test", settings=SamplingSettings(max_new_tokens=50), concurrency=2
    )
    report = generate_omni_captions(
        RECORDS, tmp_path / "o.jsonl", gen, OmniCaptionConfig(max_retries=1), progress=False
    )
    assert report.done == 2 and report.failed == ["c"]
    assert {r.id: r.captions["omni"] for r in read_records(tmp_path / "o.jsonl")} == {"a": GOOD["a"], "b": GOOD["b"]}
    first = stub.seen[0]
    assert (
        first["path"] == "/v1/chat/completions" and first["model"] == "vicuna-13b" and first["auth"] == "Bearer sk-test"
    )
    assert first["max_tokens"] == 50 and first["temperature"] == 0.0 and first["messages"][0]["role"] == "system"
    retries = [s for s in stub.seen if "green cross" in s["messages"][-1]["content"]]
    assert [s["temperature"] for s in retries] == [0.0, 0.8] and retries[0]["seed"] != retries[1]["seed"]
    log = [json.loads(line) for line in report.log.read_text().splitlines()]
    assert log[0]["id"] == "c" and "InternalServerError" in log[0]["reason"]


def test_cli_with_an_openai_endpoint(tmp_path, openai_stub, capsys):
    stub = openai_stub(lambda body: (200, GOOD[rid_of(body["messages"][-1]["content"])]))
    source = tmp_path / "captions.jsonl"
    source.write_text("".join(json.dumps(r.to_json()) + "\n" for r in RECORDS) + "{not json\n")
    out = tmp_path / "omni.jsonl"
    code = main(
        [
            "data",
            "omni-caption",
            str(source),
            str(out),
            "--openai-base-url",
            stub.base_url,
            "--openai-model",
            "m",
            "--no-progress",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0 and "3 written, 0 already done, 0 failed" in captured.out and ":4: not valid JSON" in captured.err
    assert [r.captions["omni"] for r in read_records(out)] == [GOOD["a"], GOOD["b"], GOOD["c"]]


def test_the_project_chat_model_as_the_llm(tmp_path, tiny):
    from mico_chat.api import ChatModel

    model, processor = tiny
    gen = ChatModelGenerator(ChatModel(model, processor, name="tiny"), SamplingSettings(max_new_tokens=8))
    short = [caption_record(r.id, r.captions["vision"][:20], "Beeps.") for r in RECORDS[:2]]
    report = generate_omni_captions(short, tmp_path / "o.jsonl", gen, OmniCaptionConfig(max_retries=1), progress=False)
    # A random tiny LLM writes nonsense: it must be rejected and logged, never crash the run.
    assert report.done + len(report.failed) == 2 and report.rejected_outputs >= 2 * len(report.failed)
    for entry in map(json.loads, report.log.read_text().splitlines()):
        assert entry["output"] is not None and entry["reason"]
