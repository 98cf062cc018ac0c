import numpy as np
import pytest
import torch

from mico_chat.processing import IGNORE_INDEX, MediaItem, MiCoChatProcessor, ProcessorError


def frames(n=6, seed=0):
    return np.random.default_rng(seed).integers(0, 255, size=(n, 40, 48, 3), dtype=np.uint8)


def video_msg(text="What moves?", source=None):
    return {"role": "user", "content": [{"type": "video", "video": frames() if source is None else source}, {"type": "text", "text": text}]}


def test_placeholders_expand_to_connector_token_counts(tiny):
    model, proc = tiny
    waveform = np.zeros(16000, np.float32)
    conv = [
        {
            "role": "user",
            "content": [
                {"type": "video", "video": frames()},
                {"type": "audio", "audio": waveform},
                {"type": "text", "text": "Describe."},
            ],
        }
    ]
    batch = proc(conv)
    ids = batch["input_ids"][0]
    cfg = model.config
    assert int((ids == cfg.media_token_ids["video"]).sum()) == cfg.num_media_tokens("video", 4) == 4 * 5
    assert int((ids == cfg.media_token_ids["audio"]).sum()) == cfg.num_media_tokens("audio", 1) == 1
    assert batch["media"]["video"].shape == (1, 4, 3, 32, 32)
    assert batch["media"]["audio"].shape == (1, 1, 64, 32)
    # the model accepts exactly these inputs
    model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], media=batch["media"])


def test_placeholder_and_media_mismatches_raise(tiny):
    _, proc = tiny
    with pytest.raises(ProcessorError, match=r"text has \[none\], media are \[video\]"):
        proc([{"role": "user", "content": "What moves?"}], media=[("video", frames())])
    with pytest.raises(ProcessorError, match=r"text has \[<audio>, <video>\], media are \[video, audio\]"):
        proc([{"role": "user", "content": "<audio><video>"}], media=[("video", frames()), ("audio", np.zeros(800, np.float32))])
    with pytest.raises(ProcessorError, match="only user messages"):
        proc([{"role": "assistant", "content": [{"type": "video", "video": frames()}]}])
    with pytest.raises(ProcessorError, match="unknown content part"):
        proc([{"role": "user", "content": [{"type": "smell", "smell": 1}]}])


def test_typed_placeholders_in_user_text_are_text_in_parts_and_in_strings(tiny):
    model, proc = tiny
    question = "what is <video> and <audio>?"
    for content in ([{"type": "text", "text": question}], question):
        batch = proc([{"role": "user", "content": content}])
        ids = batch["input_ids"][0]
        assert not any(int((ids == t).sum()) for t in model.config.media_token_ids.values())
    # Only with a separate media list (the record format) do placeholders in strings place media.
    with pytest.raises(ProcessorError, match=r"text has \[<video>, <audio>\], media are \[video\]"):
        proc([{"role": "user", "content": question}], media=[("video", frames())])


def test_record_style_media_list_matches_structured_parts(tiny):
    _, proc = tiny
    structured = proc([video_msg("What moves?")])
    record = proc([{"role": "user", "content": "<video>\nWhat moves?"}], media=[MediaItem(__import__("mico_chat").Modality("video"), frames())])
    assert torch.equal(structured["input_ids"], record["input_ids"])
    assert torch.equal(structured["media"]["video"], record["media"]["video"])


def test_labels_train_only_assistant_tokens(tiny):
    model, proc = tiny
    conv = [video_msg(), {"role": "assistant", "content": "A red square."}, {"role": "user", "content": "Where?"}, {"role": "assistant", "content": "Left."}]
    batch = proc(conv, add_generation_prompt=False, with_labels=True, padding_side="right")
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    trained = proc.tokenizer.decode(ids[labels != IGNORE_INDEX])
    assert trained == "A red square.<|im_end|>\nLeft.<|im_end|>\n"
    assert (labels[ids == model.config.media_token_ids["video"]] == IGNORE_INDEX).all()
    assert labels.shape == ids.shape


def test_padding_sides_and_batched_media_stack(tiny):
    _, proc = tiny
    short = [video_msg("Hi")]
    long = [video_msg("What is moving across the screen from left to right?")]
    left = proc([short, long], padding_side="left")
    right = proc([short, long], padding_side="right")
    n_short = int(left["attention_mask"][0].sum())
    assert left["attention_mask"][0, -1] == 1 and left["attention_mask"][0, 0] == 0
    assert right["attention_mask"][0, 0] == 1 and right["attention_mask"][0, -1] == 0
    assert torch.equal(left["input_ids"][0, -n_short:], right["input_ids"][0, :n_short])
    assert left["media"]["video"].shape[0] == 2


def test_prompt_over_the_limit_raises(tiny):
    _, proc = tiny
    with pytest.raises(ProcessorError, match="limit is 10"):
        proc([video_msg()], max_length=10)


def test_processor_save_and_load(tiny, tmp_path):
    model, proc = tiny
    model.config.save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    again = MiCoChatProcessor.from_pretrained(tmp_path)
    assert again.settings == proc.settings
    conv = [video_msg()]
    assert torch.equal(again(conv)["input_ids"], proc(conv)["input_ids"])
    with pytest.raises(FileNotFoundError, match="processor config"):
        MiCoChatProcessor.from_pretrained(tmp_path / "nothing")
