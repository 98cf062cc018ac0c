"""Converters, each on a small fixture written in the dataset's published format, malformed rows included."""

from __future__ import annotations

import json

import pytest

from mico_chat.cli import main
from mico_chat.instruct_data import read_records
from mico_chat.instruct_data.convert import CONVERTERS, ConvertError, ConvertOptions, convert


def run(tmp_path, fmt, name, content, **options):
    source = tmp_path / name
    source.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    result = convert(fmt, source, tmp_path / f"{fmt}.jsonl", ConvertOptions(**options))
    records = list(read_records(result.out))
    rejects = [json.loads(line) for line in result.rejects_path.read_text().splitlines()] if result.rejects_path else []
    return result, records, rejects


def test_llava_instruct(tmp_path):
    data = [
        {"id": "000000033471", "image": "coco/train2017/000000033471.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat are the colors of the bus in the image?"},
            {"from": "gpt", "value": "The bus in the image is white and red."},
            {"from": "human", "value": "What feature can be seen on the back of the bus?"},
            {"from": "gpt", "value": "The back of the bus features an advertisement."}]},
        {"id": "i6IyJda_0", "conversations": [{"from": "human", "value": "Write a haiku."}, {"from": "gpt", "value": "Autumn moon..."}]},
        {"id": "broken", "image": "x.jpg"},
        {"id": "no-placeholder", "image": "y.jpg", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hi"}]},
    ]  # fmt: skip
    result, records, rejects = run(tmp_path, "llava", "llava_v1_5_mix665k.json", data)
    assert [r.id for r in records] == ["000000033471", "i6IyJda_0"]
    assert records[0].media[0].path == "coco/train2017/000000033471.jpg" and len(records[0].messages) == 4
    assert records[1].media == ()
    assert [(r["line"], r["id"]) for r in rejects] == [(3, None), (4, "no-placeholder")]
    assert (
        "placeholders [none] do not match media [image]" in rejects[1]["reason"]
        and rejects[1]["raw"]["id"] == "no-placeholder"
    )


def test_llava_pretrain_keeps_the_caption(tmp_path):
    data = [
        {"id": "004539375", "image": "00453/004539375.jpg", "conversations": [
            {"from": "human", "value": "Render a clear and concise summary of the photo.\n<image>"},
            {"from": "gpt", "value": "select luxury furniture 3 - inch gel memory foam mattress topper"}]},
        {"id": "2", "image": "00000/2.jpg", "conversations": [{"from": "human", "value": "<image>"}]},
    ]  # fmt: skip
    result, records, rejects = run(
        tmp_path, "llava-pretrain", "blip_laion_cc_sbu_558k.json", data, path_template="images/{image}"
    )
    assert records[0].captions == {"vision": "select luxury furniture 3 - inch gel memory foam mattress topper"}
    assert records[0].media[0].path == "images/00453/004539375.jpg"
    assert rejects[0]["line"] == 2 and "one 'gpt' reply" in rejects[0]["reason"]


def test_videoinstruct(tmp_path):
    data = [
        {"q": "What is the man doing in the video?", "a": "The man is playing the drums.", "video_id": "v_k_ZXmr8pmrs"},
        {"q": "Describe the video in detail.", "a": "A man plays drums on a stage.", "video_id": "v_k_ZXmr8pmrs"},
        {"q": "Who is speaking?", "video_id": "v_2"},
    ]
    result, records, rejects = run(tmp_path, "videoinstruct", "VideoInstruct100K.json", data)
    assert [r.id for r in records] == ["v_k_ZXmr8pmrs#0", "v_k_ZXmr8pmrs#1"]
    assert records[0].media[0].path == "v_k_ZXmr8pmrs.mp4"
    assert records[0].messages[0]["content"] == "<video>\nWhat is the man doing in the video?"
    assert rejects[0]["line"] == 3
    _, with_audio, _ = run(tmp_path, "videoinstruct", "VideoInstruct100K.json", data, with_audio=True)
    assert [m.modality.value for m in with_audio[0].media] == ["video", "audio"]
    assert with_audio[0].messages[0]["content"].startswith("<video>\n<audio>\n")


CLOTHO = """file_name,caption_1,caption_2,caption_3,caption_4,caption_5
Distorted AM Radio noise.wav,A muddled noise of broken channel of the TV,A television blares the rhythm of a static TV.,Loud television static dips in and out of focus,The loud buzz of static constantly changes pitch and volume.,heavy static and the beginnings of a signal on a transistor radio
"Footsteps, gravel.wav","Someone walks on gravel, slowly.",Feet crunch on stones,,A person walks on a gravel path.,Slow steps on gravel
broken.wav,only,three,fields
"""


def test_clotho_one_record_per_caption(tmp_path):
    result, records, rejects = run(
        tmp_path, "clotho", "clotho_captions_development.csv", CLOTHO, path_template="development/{file_name}"
    )
    assert len(records) == 9 and result.records == 9
    assert (
        records[0].id == "Distorted AM Radio noise.wav#1"
        and records[0].media[0].path == "development/Distorted AM Radio noise.wav"
    )
    assert records[5].captions == {"audio": "Someone walks on gravel, slowly."}
    assert [r.meta["caption_index"] for r in records[5:]] == [1, 2, 4, 5]  # the empty caption_3 is skipped
    assert rejects[0]["line"] == 4 and "4 fields, the header has 6" in rejects[0]["reason"]
    _, first, _ = run(tmp_path, "clotho", "clotho_captions_development.csv", CLOTHO, captions="first")
    assert [r.id for r in first] == ["Distorted AM Radio noise.wav#1", "Footsteps, gravel.wav#1"]


AUDIOCAPS = """audiocap_id,youtube_id,start_time,caption
91139,r1nicOVtvkQ,130,A woman talks nearby as water pours
58146,UDGBjjwyaqE,20,Multiple clanging and clanking sounds
11111,xyz,soon,A dog barks
"""


def test_audiocaps(tmp_path):
    result, records, rejects = run(tmp_path, "audiocaps", "train.csv", AUDIOCAPS)
    assert [r.id for r in records] == ["91139", "58146"]
    assert records[0].media[0].path == "r1nicOVtvkQ.wav" and records[0].meta["start_time"] == 130.0
    assert records[0].captions == {"audio": "A woman talks nearby as water pours"}
    assert rejects[0]["line"] == 4 and "start_time 'soon' is not a number" in rejects[0]["reason"]


MSRVTT = {
    "info": {"contributor": "Microsoft MSM group", "data_created": "2016-04-14 14:30:20", "version": "1.0",
             "description": "This is 1.0 version of the 2016 MSR-VTT dataset.", "year": "2016"},
    "videos": [
        {"category": 9, "url": "https://www.youtube.com/watch?v=9lZi22qLlEo", "video_id": "video0", "start time": 137.72, "end time": 149.44, "split": "train", "id": 0},
        {"category": 16, "url": "https://www.youtube.com/watch?v=w4JM08PDEng", "video_id": "video7010", "start time": 184.33, "end time": 206.89, "split": "test", "id": 7010},
    ],
    "sentences": [
        {"caption": "a car is shown", "video_id": "video0", "sen_id": 0},
        {"caption": "a man drives a vintage car", "video_id": "video0", "sen_id": 1},
        {"caption": "a woman is talking", "video_id": "video7010", "sen_id": 180000},
        {"caption": "nobody knows this video", "video_id": "video99999", "sen_id": 7},
    ],
}  # fmt: skip


def test_msrvtt_with_split_filter(tmp_path):
    result, records, rejects = run(
        tmp_path,
        "msrvtt",
        "train_val_videodatainfo.json",
        MSRVTT,
        split="train",
        path_template="TrainValVideo/{video_id}.mp4",
    )
    assert [r.id for r in records] == ["video0#0", "video0#1"]
    assert records[0].media[0].path == "TrainValVideo/video0.mp4" and records[0].captions == {
        "vision": "a car is shown"
    }
    assert records[0].meta["start_s"] == 137.72 and records[0].meta["category"] == 9
    assert rejects[0]["line"] == 4 and "'video99999', which is not in 'videos'" in rejects[0]["reason"]
    _, everything, _ = run(tmp_path, "msrvtt", "all.json", MSRVTT)
    assert len(everything) == 3
    with pytest.raises(ConvertError, match="'videos' and 'sentences'"):
        run(tmp_path, "msrvtt", "wrong.json", [{"video_id": "video0"}])


def test_valor(tmp_path):
    data = [
        {"video_id": "-0DbsN6Y2Z0_30.000_40.000", "desc": "A man plays a guitar while a crowd cheers loudly."},
        {"video_id": "abc", "desc": "   "},
        {"video": "missing-key"},
    ]
    result, records, rejects = run(tmp_path, "valor", "desc_test.json", data)
    (r,) = records
    assert r.captions == {"omni": "A man plays a guitar while a crowd cheers loudly."}
    assert [m.modality.value for m in r.media] == ["video", "audio"] and r.media[
        0
    ].path == "-0DbsN6Y2Z0_30.000_40.000.mp4"
    assert (r.meta["youtube_id"], r.meta["start_s"], r.meta["end_s"]) == ("-0DbsN6Y2Z0", 30.0, 40.0)
    assert [x["line"] for x in rejects] == [2, 3]


WEBVID = """videoid,contentUrl,duration,page_dir,name
21179416,https://ak.picdn.net/shutterstock/videos/21179416/preview/stock-footage-aerial.mp4,PT00H00M11S,006001_006050,"Aerial shot winter forest, snowy trees"
5629781,https://ak.picdn.net/shutterstock/videos/5629781/preview/stock-footage-a.mp4,soon,007001_007050,Sunset over the sea
"""


def test_webvid(tmp_path):
    result, records, rejects = run(tmp_path, "webvid", "results_2M_val.csv", WEBVID)
    (r,) = records
    assert r.id == "21179416" and r.media[0].path == "006001_006050/21179416.mp4"
    assert r.captions == {"vision": "Aerial shot winter forest, snowy trees"} and r.meta["duration_s"] == 11.0
    assert rejects[0]["line"] == 3 and "ISO 8601" in rejects[0]["reason"]


def test_cc3m_tsv_without_header(tmp_path):
    tsv = ("a very typical bus station\thttp://lh6.ggpht.com/-IvRtNLNcG8o/TpFyrudaT6I/AAAAAAAAM6o/_11MuAAKalQ/IMG_3422.JPG\n"
           "no url here\n"
           "sierra looked stunning in this top and this skirt\thttp://78.media.tumblr.com/x/tumblr_o2.jpg\n")  # fmt: skip
    result, records, rejects = run(tmp_path, "cc3m", "Train_GCC-training.tsv", tsv, path_template="{shard}/{key}.jpg")
    assert [r.id for r in records] == ["cc3m-000000000", "cc3m-000000002"]
    assert records[1].media[0].path == "00000/000000002.jpg" and records[1].captions["vision"].startswith("sierra")
    assert rejects[0]["line"] == 2 and "caption<TAB>url" in rejects[0]["reason"]


def test_generic_caption_csv_and_bad_templates(tmp_path):
    csv_text = "clip,text,uid\nsounds/a.flac,Rain on a roof,u1\n,Nothing,u2\n"
    result, records, rejects = run(tmp_path, "caption-csv", "mine.csv", csv_text, path_column="clip", caption_column="text",
                                   id_column="uid", modality="audio", caption_kind="audio")  # fmt: skip
    assert (
        records[0].id == "u1"
        and records[0].media[0].modality.value == "audio"
        and records[0].captions == {"audio": "Rain on a roof"}
    )
    assert rejects[0]["line"] == 3
    with pytest.raises(ConvertError, match="lacks column"):
        run(tmp_path, "caption-csv", "mine.csv", csv_text)
    with pytest.raises(ConvertError, match=r"cannot be filled .*fields: audiocap_id, caption"):
        run(tmp_path, "audiocaps", "train.csv", AUDIOCAPS, path_template="{ytid}.wav")
    with pytest.raises(ConvertError, match="unknown format"):
        convert("kinetics", tmp_path / "mine.csv", tmp_path / "o.jsonl")


def test_cli_convert(tmp_path, capsys):
    source = tmp_path / "train.csv"
    source.write_text(AUDIOCAPS)
    out = tmp_path / "ac.jsonl"
    assert (
        main(
            [
                "data",
                "convert",
                "audiocaps",
                str(source),
                str(out),
                "--path-template",
                "audio/{youtube_id}_{start_time}.wav",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "2 records written, 1 rows rejected" in printed and f"{source}:4: start_time" in printed
    assert next(read_records(out)).media[0].path == "audio/r1nicOVtvkQ_130.wav"
    assert main(["data", "convert", "audiocaps", str(source), str(out), "--strict"]) == 1
    assert main(["data", "convert", "clotho", str(source), str(out)]) == 2
    assert "lacks column(s)" in capsys.readouterr().err
    assert set(CONVERTERS) >= {
        "llava",
        "llava-pretrain",
        "videoinstruct",
        "clotho",
        "audiocaps",
        "msrvtt",
        "valor",
        "webvid",
        "cc3m",
    }
