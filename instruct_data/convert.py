"""Converters from public datasets' own annotation files to the record format.

    result = convert("msrvtt", "train_val_videodatainfo.json", "msrvtt.jsonl", ConvertOptions(split="train"))

Each converter reads the file exactly as the dataset publishes it:

==================  =======================================================================  ===================
format              input (as published)                                                     records
==================  =======================================================================  ===================
``llava``           LLaVA-Instruct-150K / LLaVA-1.5 mix JSON: ``[{"id", "image"?,             conversation
                    "conversations": [{"from", "value"}]}]``
``llava-pretrain``  LLaVA-Pretrain ``blip_laion_cc_sbu_558k.json`` (same shape; the reply is    conversation + vision
                    the caption)                                                              caption
``videoinstruct``   VideoInstruct-100K (Video-ChatGPT) JSON: ``[{"video_id", "q", "a"}]``       conversation
``clotho``          Clotho captions CSV: ``file_name,caption_1,...,caption_5``                 audio caption pairs
``audiocaps``       AudioCaps CSV: ``audiocap_id,youtube_id,start_time,caption``               audio caption pairs
``msrvtt``          MSR-VTT ``*_videodatainfo.json``: ``{"info", "videos": [{"video_id",       vision caption pairs
                    "category", "url", "start time", "end time", "split", "id"}],
                    "sentences": [{"caption", "video_id", "sen_id"}]}``
``valor``           VALOR-32K ``desc_{train,val,test}.json``: ``[{"video_id", "desc"}]``       omni (audio-visual)
                                                                                             caption pairs
``webvid``          WebVid ``results_*.csv``: ``videoid,contentUrl,duration,page_dir,name``     vision caption pairs
``cc3m``            CC3M ``Train_GCC-training.tsv``: ``caption<TAB>url``, no header            vision caption pairs
``caption-csv``     any CSV/TSV with a header: a path column and a caption column (options)    caption pairs
==================  =======================================================================  ===================

Media paths come from a per-format template filled with the row's fields (``--path-template``;
the defaults follow each dataset's usual download layout) and are relative to the media root the
records are later read with. Datasets with several captions per item give one record per caption
(``captions="all"``, id ``ITEM#k``, ``meta.item`` names the item) or one per item (``"first"``).

A malformed row never stops a conversion: it is reported with its file, line and reason, and
written with its raw content to ``OUT.rejects.jsonl``, so nothing is lost.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .records import BadRecord, RecordError, parse_record, write_records


class ConvertError(ValueError):
    """The input cannot be converted at all (wrong format, unreadable file, bad template)."""


@dataclass(frozen=True)
class ConvertOptions:
    """Options shared by the converters.

    Args:
        path_template: how a media path is made from a row's fields (``str.format``); ``None``
            means the format's default.
        split: keep only this split (MSR-VTT: ``train``, ``validate``, ``test``).
        captions: ``all`` (one record per caption) or ``first`` (one per item).
        with_audio: for video datasets, also list the video's audio track as an audio item.
        path_column, caption_column, id_column: ``caption-csv`` columns.
        modality, caption_kind: ``caption-csv``: what the media are and what the captions describe.
    """

    path_template: str | None = None
    split: str | None = None
    captions: str = "all"
    with_audio: bool = False
    path_column: str = "path"
    caption_column: str = "caption"
    id_column: str | None = None
    modality: str = "video"
    caption_kind: str = "vision"

    def __post_init__(self) -> None:
        if self.captions not in ("all", "first"):
            raise ConvertError(f"captions must be 'all' or 'first', got {self.captions!r}")


# A converter yields (line, raw record dict) or (line, BadRecord) per input row.
Rows = Iterator[tuple[int, "dict[str, Any] | BadRecord"]]


@dataclass(frozen=True)
class Converter:
    name: str
    read: Callable[[Path, ConvertOptions, str], Rows]
    default_template: str
    help: str


@dataclass
class ConvertResult:
    """What :func:`convert` wrote: record count, the rejected rows, and where the rejects went."""

    out: Path
    records: int = 0
    rejected: list[BadRecord] = field(default_factory=list)
    rejects_path: Path | None = None

    def format(self, max_listed: int = 50) -> str:
        lines = [f"{self.out}: {self.records} records written, {len(self.rejected)} rows rejected"]
        lines += [f"  {b}" for b in self.rejected[:max_listed]]
        if len(self.rejected) > max_listed:
            lines.append(f"  ... and {len(self.rejected) - max_listed} more")
        if self.rejects_path:
            lines.append(f"rejected rows with their raw content: {self.rejects_path}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------ helpers
def _fill(template: str, fields: Mapping[str, Any]) -> str:
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError) as err:
        raise ConvertError(f"path template {template!r} cannot be filled ({err}); fields: {', '.join(sorted(fields))}") from None


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise ConvertError(f"{path}: cannot read ({err})") from None
    except json.JSONDecodeError as err:
        raise ConvertError(f"{path}: not valid JSON ({err})") from None


def _json_list(path: Path, what: str) -> list[Any]:
    data = _load_json(path)
    if not isinstance(data, list):
        raise ConvertError(f"{path}: {what} is a JSON list; this file holds a {type(data).__name__}")
    return data


def _csv_rows(path: Path, *, delimiter: str = ",", header: list[str] | None = None, required: tuple[str, ...] = ()) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line, row)`` for each data row; line numbers are physical lines of the file (1-based)."""
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as err:
        raise ConvertError(f"{path}: cannot read ({err.strerror or err})") from None
    with handle:
        reader = csv.reader(handle, delimiter=delimiter)
        names = header
        if names is None:
            names = next(reader, None)
            if names is None:
                raise ConvertError(f"{path}: empty file")
            names = [n.strip() for n in names]
            missing = [c for c in required if c not in names]
            if missing:
                raise ConvertError(f"{path}: header {names} lacks column(s) {missing}; is this the right format?")
        line = reader.line_num
        for values in reader:
            start, line = line + 1, reader.line_num
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(names):
                yield start, {"__error__": f"{len(values)} fields, the header has {len(names)}", "__raw__": values}
                continue
            yield start, dict(zip(names, values))


def _bad(path: Path, line: int, reason: str, rid: str | None = None, raw: Any = None) -> tuple[int, BadRecord]:
    return line, _Rejected(str(path), line, reason, rid, raw)


@dataclass(frozen=True)
class _Rejected(BadRecord):
    raw: Any = None


def _caption_pair(rid: str, media: list[dict[str, Any]], kind: str, text: str, meta: dict[str, Any]) -> dict[str, Any]:
    return {"id": rid, "media": media, "captions": {kind: text.strip()}, "meta": meta}


def _video_media(path: str, options: ConvertOptions, **window: Any) -> list[dict[str, Any]]:
    item = {"modality": "video", "path": path, **{k: v for k, v in window.items() if v is not None}}
    media = [item]
    if options.with_audio:
        media.append({**item, "modality": "audio"})
    return media


def _numbered_captions(captions: list[str], options: ConvertOptions) -> list[tuple[int, str]]:
    found = [(k, c) for k, c in enumerate(captions) if isinstance(c, str) and c.strip()]
    return found[:1] if options.captions == "first" else found


# ------------------------------------------------------------------------------------------- LLaVA
def _llava(path: Path, options: ConvertOptions, template: str, *, pretrain: bool = False) -> Rows:
    for i, item in enumerate(_json_list(path, "LLaVA data"), start=1):
        if not isinstance(item, Mapping) or "conversations" not in item or "id" not in item:
            yield _bad(path, i, "an item needs 'id' and 'conversations'", raw=item)
            continue
        raw: dict[str, Any] = {"id": str(item["id"]), "conversations": item["conversations"], "meta": {"source": path.name}}
        images = item.get("image")
        if images is not None:
            images = images if isinstance(images, list) else [images]
            if not all(isinstance(p, str) and p for p in images):
                yield _bad(path, i, "'image' must be a path or a list of paths", str(item["id"]), item)
                continue
            raw["media"] = [{"modality": "image", "path": _fill(template, {"image": p})} for p in images]
        if pretrain:
            replies = [t.get("value") for t in item["conversations"] if isinstance(t, Mapping) and t.get("from") == "gpt"]
            if len(replies) != 1 or not isinstance(replies[0], str):
                yield _bad(path, i, "a LLaVA-Pretrain item has exactly one 'gpt' reply (the caption)", str(item["id"]), item)
                continue
            raw["captions"] = {"vision": replies[0].strip()}
        yield i, raw


def _llava_pretrain(path: Path, options: ConvertOptions, template: str) -> Rows:
    return _llava(path, options, template, pretrain=True)


def _videoinstruct(path: Path, options: ConvertOptions, template: str) -> Rows:
    seen: dict[str, int] = {}
    for i, item in enumerate(_json_list(path, "VideoInstruct-100K"), start=1):
        if not isinstance(item, Mapping) or not all(isinstance(item.get(k), str) and item.get(k) for k in ("video_id", "q", "a")):
            yield _bad(path, i, "an item needs non-empty string 'video_id', 'q' and 'a'", raw=item)
            continue
        vid = item["video_id"]
        k = seen[vid] = seen.get(vid, -1) + 1  # a video has many question-answer pairs
        yield i, {
            "id": f"{vid}#{k}",
            "media": _video_media(_fill(template, {"video_id": vid}), options),
            "conversations": [
                {"from": "human", "value": ("<video>\n<audio>\n" if options.with_audio else "<video>\n") + item["q"].strip()},
                {"from": "gpt", "value": item["a"].strip()},
            ],
            "meta": {"source": "videoinstruct", "item": vid},
        }


# -------------------------------------------------------------------------------------- audio CSVs
def _clotho(path: Path, options: ConvertOptions, template: str) -> Rows:
    columns = tuple(f"caption_{k}" for k in range(1, 6))
    for line, row in _csv_rows(path, required=("file_name", *columns)):
        if "__error__" in row:
            yield _bad(path, line, row["__error__"], raw=row["__raw__"])
            continue
        name = row["file_name"].strip()
        captions = _numbered_captions([row[c] for c in columns], options)
        if not name or not captions:
            yield _bad(path, line, "a row needs a file_name and at least one caption", name or None, row)
            continue
        media = [{"modality": "audio", "path": _fill(template, row)}]
        for k, text in captions:
            yield line, _caption_pair(f"{name}#{k + 1}", media, "audio", text, {"source": "clotho", "item": name, "caption_index": k + 1})


def _audiocaps(path: Path, options: ConvertOptions, template: str) -> Rows:
    for line, row in _csv_rows(path, required=("audiocap_id", "youtube_id", "start_time", "caption")):
        if "__error__" in row:
            yield _bad(path, line, row["__error__"], raw=row["__raw__"])
            continue
        if not row["youtube_id"].strip() or not row["caption"].strip() or not row["audiocap_id"].strip():
            yield _bad(path, line, "empty audiocap_id, youtube_id or caption", row["audiocap_id"] or None, row)
            continue
        try:
            start = float(row["start_time"])
        except ValueError:
            yield _bad(path, line, f"start_time {row['start_time']!r} is not a number", row["audiocap_id"], row)
            continue
        media = [{"modality": "audio", "path": _fill(template, row)}]
        meta = {"source": "audiocaps", "item": f"{row['youtube_id']}_{row['start_time']}", "youtube_id": row["youtube_id"], "start_time": start}
        yield line, _caption_pair(row["audiocap_id"].strip(), media, "audio", row["caption"], meta)


# ------------------------------------------------------------------------------------------- video
def _msrvtt(path: Path, options: ConvertOptions, template: str) -> Rows:
    data = _load_json(path)
    if not isinstance(data, Mapping) or not isinstance(data.get("videos"), list) or not isinstance(data.get("sentences"), list):
        raise ConvertError(f"{path}: an MSR-VTT videodatainfo file is an object with 'videos' and 'sentences' lists")
    videos = {v["video_id"]: v for v in data["videos"] if isinstance(v, Mapping) and isinstance(v.get("video_id"), str)}
    per_video: dict[str, int] = {}
    for i, sentence in enumerate(data["sentences"], start=1):
        where = i  # MSR-VTT files are one line; report the sentence's index in the list
        if not isinstance(sentence, Mapping) or not isinstance(sentence.get("caption"), str) or "video_id" not in sentence:
            yield _bad(path, where, "sentences[] items need 'caption' and 'video_id'", raw=sentence)
            continue
        vid = sentence["video_id"]
        video = videos.get(vid)
        if video is None:
            yield _bad(path, where, f"sentence refers to {vid!r}, which is not in 'videos'", str(vid), sentence)
            continue
        if options.split and video.get("split") != options.split:
            continue
        k = per_video[vid] = per_video.get(vid, 0) + 1
        if options.captions == "first" and k > 1:
            continue
        meta = {"source": "msrvtt", "item": vid, "split": video.get("split"), "category": video.get("category"),
                "url": video.get("url"), "start_s": video.get("start time"), "end_s": video.get("end time")}  # fmt: skip
        rid = f"{vid}#{sentence.get('sen_id', k)}"
        yield where, _caption_pair(rid, _video_media(_fill(template, video), options), "vision", sentence["caption"], meta)


VALOR_ID = re.compile(r"^(?P<youtube_id>.+)_(?P<start>\d+(?:\.\d+)?)_(?P<end>\d+(?:\.\d+)?)$")


def _valor(path: Path, options: ConvertOptions, template: str) -> Rows:
    for i, item in enumerate(_json_list(path, "VALOR annotation"), start=1):
        if not isinstance(item, Mapping) or not isinstance(item.get("video_id"), str) or not isinstance(item.get("desc"), str):
            yield _bad(path, i, "an item needs string 'video_id' and 'desc'", raw=item)
            continue
        vid, desc = item["video_id"], item["desc"]
        if not desc.strip():
            yield _bad(path, i, "empty 'desc'", vid, item)
            continue
        meta: dict[str, Any] = {"source": "valor", "item": vid}
        match = VALOR_ID.match(vid)
        if match:  # ids name the YouTube video and the clip's window in it
            meta.update(youtube_id=match["youtube_id"], start_s=float(match["start"]), end_s=float(match["end"]))
        # VALOR captions describe picture and sound together (audio-visual): an omni caption here,
        # paired with the video and its audio track.
        clip = _fill(template, {"video_id": vid, **{k: v for k, v in meta.items() if k != "source"}})
        media = [{"modality": "video", "path": clip}, {"modality": "audio", "path": clip}]
        yield i, _caption_pair(vid, media, "omni", desc, meta)


def _iso_duration(text: str) -> float | None:
    match = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?", text.strip())
    if not match or not any(match.groups()):
        return None
    h, m, s = (float(g) if g else 0.0 for g in match.groups())
    return h * 3600 + m * 60 + s


def _webvid(path: Path, options: ConvertOptions, template: str) -> Rows:
    for line, row in _csv_rows(path, required=("videoid", "contentUrl", "duration", "page_dir", "name")):
        if "__error__" in row:
            yield _bad(path, line, row["__error__"], raw=row["__raw__"])
            continue
        vid, name = row["videoid"].strip(), row["name"].strip()
        if not vid or not name:
            yield _bad(path, line, "empty videoid or name", vid or None, row)
            continue
        duration = _iso_duration(row["duration"])
        if duration is None:
            yield _bad(path, line, f"duration {row['duration']!r} is not an ISO 8601 duration like PT00H00M11S", vid, row)
            continue
        meta = {"source": "webvid", "item": vid, "url": row["contentUrl"], "duration_s": duration, "page_dir": row["page_dir"]}
        yield line, _caption_pair(vid, _video_media(_fill(template, row), options), "vision", name, meta)


def _cc3m(path: Path, options: ConvertOptions, template: str) -> Rows:
    index = -1
    for line, row in _csv_rows(path, delimiter="\t", header=["caption", "url"]):
        index += 1
        if "__error__" in row:
            yield _bad(path, line, row["__error__"] + " (expected caption<TAB>url)", raw=row["__raw__"])
            continue
        if not row["caption"].strip() or not row["url"].strip():
            yield _bad(path, line, "empty caption or url", raw=row)
            continue
        key = f"{index:09d}"  # img2dataset's key: the row's index, 9 digits
        fields = {"index": index, "key": key, "shard": f"{index // 10000:05d}", **row}
        media = [{"modality": "image", "path": _fill(template, fields)}]
        yield line, _caption_pair(f"cc3m-{key}", media, "vision", row["caption"], {"source": "cc3m", "item": key, "url": row["url"]})


def _caption_csv(path: Path, options: ConvertOptions, template: str) -> Rows:
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    required = tuple(c for c in (options.path_column, options.caption_column, options.id_column) if c)
    for line, row in _csv_rows(path, delimiter=delimiter, required=required):
        if "__error__" in row:
            yield _bad(path, line, row["__error__"], raw=row["__raw__"])
            continue
        media_path, caption = row[options.path_column].strip(), row[options.caption_column].strip()
        if not media_path or not caption:
            yield _bad(path, line, f"empty {options.path_column!r} or {options.caption_column!r}", raw=row)
            continue
        rid = row[options.id_column].strip() if options.id_column else f"{path.stem}-{line}"
        fields = {**row, "path": media_path}
        media = [{"modality": options.modality, "path": _fill(template, fields)}]
        if options.with_audio and options.modality == "video":
            media.append({"modality": "audio", "path": media[0]["path"]})
        yield line, _caption_pair(rid, media, options.caption_kind, caption, {"source": path.name, "item": media_path})


CONVERTERS: dict[str, Converter] = {
    c.name: c
    for c in (
        Converter("llava", _llava, "{image}", "LLaVA-Instruct-150K / LLaVA-1.5 mix JSON"),
        Converter("llava-pretrain", _llava_pretrain, "{image}", "LLaVA-Pretrain (blip_laion_cc_sbu_558k.json)"),
        Converter("videoinstruct", _videoinstruct, "{video_id}.mp4", "VideoInstruct-100K (Video-ChatGPT) JSON"),
        Converter("clotho", _clotho, "{file_name}", "Clotho captions CSV"),
        Converter("audiocaps", _audiocaps, "{youtube_id}.wav", "AudioCaps CSV"),
        Converter("msrvtt", _msrvtt, "{video_id}.mp4", "MSR-VTT videodatainfo JSON"),
        Converter("valor", _valor, "{video_id}.mp4", "VALOR-32K desc_*.json"),
        Converter("webvid", _webvid, "{page_dir}/{videoid}.mp4", "WebVid results_*.csv"),
        Converter("cc3m", _cc3m, "{key}.jpg", "CC3M Train_GCC-training.tsv (caption<TAB>url)"),
        Converter("caption-csv", _caption_csv, "{path}", "any caption CSV/TSV with a header (choose the columns)"),
    )
}


def convert(format: str, source: str | os.PathLike, out: str | os.PathLike, options: ConvertOptions = ConvertOptions()) -> ConvertResult:
    """Convert ``source`` (a ``format`` annotation file) into records written to ``out`` (JSONL).

    Every produced record is checked with :func:`parse_record`; rows that fail (in the input or
    after conversion) are reported in the result and written to ``OUT.rejects.jsonl``.
    Raises :class:`ConvertError` when the file as a whole is not of that format.
    """
    if format not in CONVERTERS:
        raise ConvertError(f"unknown format {format!r}; known: {', '.join(CONVERTERS)}")
    source, out = Path(source), Path(out)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such annotation file")
    converter = CONVERTERS[format]
    template = options.path_template or converter.default_template
    result = ConvertResult(out=out)
    records = []
    for line, item in converter.read(source, options, template):
        if isinstance(item, BadRecord):
            result.rejected.append(item)
            continue
        try:
            records.append(parse_record(item))
        except RecordError as err:
            result.rejected.append(_Rejected(str(source), line, str(err), str(item.get("id")), item))
    result.records = write_records(out, records)
    rejects = out.with_name(out.name + ".rejects.jsonl")
    if result.rejected:
        with rejects.open("w", encoding="utf-8") as handle:
            for bad in result.rejected:
                row = {"file": bad.source, "line": bad.line, "id": bad.id, "reason": bad.reason, "raw": getattr(bad, "raw", None)}
                handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        result.rejects_path = rejects
    elif rejects.exists():
        rejects.unlink()  # from an earlier run of the same conversion
    return result
