"""Check records files before training on them: format, placeholders, lengths, and the media themselves.

    report = validate_records(["train.jsonl"], media_root="data/", check="decode", workers=2)
    print(report.format())             # counts, then every bad record with file, line and reason

    for record in RecordReader(["train.jsonl"], media_root="data/"):   # training: skip and count
        ...

Media checks (``check``), each including the ones before it:

=========  ======================================================================================
none       format only (:func:`.records.parse_record`: schema, placeholders vs media, text length)
exists     every media file exists and is not empty
probe      its header says it holds what the record asks for (a video stream for ``video``, an
           audio stream for ``audio``, a picture for ``image``/``depth``/``normal``), and a time
           window starts before the media ends
decode     one frame / one second of audio / the picture actually decodes
=========  ======================================================================================

Each distinct media file is checked once however many records share it, in worker processes
(``workers``), with a progress bar.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm


from .records import BadRecord, Record, RecordError, printable, read_numbered_records

CHECKS = ("none", "exists", "probe", "decode")


@dataclass(frozen=True)
class RecordLimits:
    """Length limits a record must keep (text length is checked while parsing, ``max_chars``)."""

    max_chars: int = 100_000
    max_turns: int = 64
    max_media: int = 16
    max_num_frames: int = 512

    def check(self, record: Record) -> str | None:
        """The reason ``record`` breaks a limit, or ``None``."""
        if len(record.messages) > self.max_turns:
            return f"{len(record.messages)} turns; the limit is {self.max_turns}"
        if len(record.media) > self.max_media:
            return f"{len(record.media)} media items; the limit is {self.max_media}"
        for i, ref in enumerate(record.media):
            if ref.num_frames is not None and ref.num_frames > self.max_num_frames:
                return f"media[{i}].num_frames is {ref.num_frames}; the limit is {self.max_num_frames}"
        return None


@dataclass(frozen=True)
class MediaCheck:
    """The outcome of checking one media file for one modality."""

    ok: bool
    reason: str = ""
    duration_s: float | None = None


def check_media(path: str, modality: str, check: str) -> MediaCheck:
    """Check one file for ``modality`` at level ``check`` (see the module docstring); never raises for bad media."""
    if check == "none":
        return MediaCheck(True)
    file = Path(path)
    try:
        if not file.is_file():
            return MediaCheck(False, "no such file" if not file.exists() else "not a regular file")
        if file.stat().st_size == 0:
            return MediaCheck(False, "empty file (0 bytes)")
    except OSError as err:  # e.g. a path component over 255 characters
        return MediaCheck(False, f"cannot be read: {err.strerror or err}")
    if check == "exists":
        return MediaCheck(True)
    # Deferred: the media package pulls in torch (1.5 s), which format and existence checks do not need.
    from mico_chat.media import MediaError, load_audio, load_depth, load_image, load_normal, load_video, probe

    try:
        info = probe(path)
        if modality == "video" and not info.has_video:
            return MediaCheck(False, f"holds no video stream (it is {info.kind})")
        if modality == "audio" and not info.has_audio:
            return MediaCheck(False, f"holds no audio stream (it is {info.kind})")
        if modality in ("image", "depth", "normal") and info.kind != "image":
            return MediaCheck(False, f"is a {info.kind} file, not a picture")
        if check == "decode":
            if modality == "video":
                load_video(path, 1)
            elif modality == "audio":
                load_audio(path, duration_s=1.0)
            elif modality == "image":
                load_image(path)
            elif modality == "depth":
                load_depth(path)
            elif modality == "normal":
                load_normal(path)
    except MediaError as err:
        return MediaCheck(False, err.reason)
    return MediaCheck(True, duration_s=info.duration_s)


def _check_job(job: tuple[str, str, str]) -> MediaCheck:
    return check_media(*job)


@dataclass
class ValidationReport:
    """What :func:`validate_records` found.

    Attributes:
        files: the records files, in order.
        total, valid: record counts.
        bad: every bad record (file, line, id, reason), in file order.
        media_files: distinct (file, modality) pairs checked; ``media_bad`` of them failed.
        check: the media check level; ``seconds``: wall time.
    """

    files: list[str]
    total: int = 0
    valid: int = 0
    bad: list[BadRecord] = field(default_factory=list)
    media_files: int = 0
    media_bad: int = 0
    check: str = "decode"
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.bad

    def reasons(self) -> Counter:
        """Bad records per kind of problem (json, format, placeholders, length, media, window)."""
        return Counter(getattr(b, "kind", "format") for b in self.bad)

    def format(self, max_listed: int | None = 200) -> str:
        """A human-readable report: counts, then each bad record as ``file:line: reason (id ...)``."""
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(self.reasons().items()))
        lines = [
            f"{len(self.files)} file(s): {self.total} records, {self.valid} valid, {len(self.bad)} bad" + (f" ({kinds})" if kinds else ""),
            f"media: {self.media_files} distinct files checked ({self.check}), {self.media_bad} bad; {self.seconds:.1f} s",
        ]  # fmt: skip
        if self.bad:
            lines.append("bad records:")
            listed = self.bad if max_listed is None else self.bad[:max_listed]
            lines += [f"  {b}" for b in listed]
            if len(listed) < len(self.bad):
                lines.append(f"  ... and {len(self.bad) - len(listed)} more (write them all with --json)")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "files": self.files, "total": self.total, "valid": self.valid, "bad_count": len(self.bad),
            "reasons": dict(self.reasons()), "media_files": self.media_files, "media_bad": self.media_bad,
            "check": self.check, "seconds": round(self.seconds, 3),
            "bad": [{"file": b.source, "line": b.line, "id": b.id, "kind": getattr(b, "kind", "format"), "reason": b.reason}
                    for b in self.bad],
        }  # fmt: skip


@dataclass(frozen=True)
class InvalidRecord(BadRecord):
    """A bad record with the kind of its problem: ``json``, ``format``, ``placeholders``, ``length``, ``path``,
    ``media`` or ``window``."""

    kind: str = "format"

    @classmethod
    def from_parse(cls, bad: BadRecord) -> InvalidRecord:
        """Classify a record that failed to parse (:func:`.records.read_numbered_records`)."""
        if bad.reason.startswith("not valid JSON"):
            kind = "json"
        elif bad.reason.startswith("placeholders "):
            kind = "placeholders"
        else:
            kind = "format"
        return cls(bad.source, bad.line, bad.reason, bad.id, kind)


def _default_root(path: Path, media_root: str | os.PathLike | None) -> Path:
    return Path(media_root) if media_root is not None else path.parent


def outside_root(ref_path: str, root: Path) -> bool:
    """Whether a record's media path leaves ``root``: absolute, or with ``..`` leading out (lexically)."""
    if os.path.isabs(ref_path):
        return True
    normal = os.path.normpath(ref_path)
    return normal == ".." or normal.startswith(".." + os.sep)


def _escape(record: Record, root: Path) -> tuple[str, str] | None:
    for i, ref in enumerate(record.media):
        if outside_root(ref.path, root):
            return "path", (
                f"media[{i}] ({ref.modality.value}) {printable(ref.path)}: outside the media root {root} "
                "(absolute or leading out with '..'); allow it with allow_outside_root / --allow-outside-root"
            )
    return None


def _media_failure(record: Record, root: Path, results: dict[tuple[str, str], MediaCheck]) -> tuple[str, str] | None:
    """``(kind, reason)`` of the first media item of ``record`` that failed its check, or ``None``."""
    for i, ref in enumerate(record.media):
        path = str(ref.resolve(root))
        result = results.get((path, ref.modality.value))
        if result is None:
            continue
        where = f"media[{i}] ({ref.modality.value}) {ref.path}"
        if not result.ok:
            return "media", f"{where}: {result.reason}"
        if result.duration_s is not None and ref.start is not None and ref.start >= result.duration_s:
            return "window", f"{where}: window starts at {ref.start} s but the media lasts {result.duration_s:.2f} s"
    return None


def _invalid(path: Path, line: int, record: Record, problem: tuple[str, str]) -> InvalidRecord:
    kind, reason = problem
    return InvalidRecord(str(path), line, reason, record.id, kind)


def _check_all(jobs: list[tuple[str, str, str]], workers: int, progress: bool) -> list[MediaCheck]:
    bar = tqdm(total=len(jobs), desc="media", unit="file", disable=not progress)
    try:
        if workers <= 1 or len(jobs) < 8 or jobs[0][2] == "exists":  # a pool costs more than it saves
            out = []
            for job in jobs:
                out.append(check_media(*job))
                bar.update(1)
            return out
        context = multiprocessing.get_context("spawn")  # see synth.world: no forking a torch process
        with context.Pool(workers) as pool:
            out = []
            for result in pool.imap(_check_job, jobs, chunksize=max(1, min(64, len(jobs) // (workers * 16)))):
                out.append(result)
                bar.update(1)
            return out
    finally:
        bar.close()


def validate_records(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    media_root: str | os.PathLike | None = None,
    *,
    check: str = "decode",
    workers: int = 2,
    limits: RecordLimits = RecordLimits(),
    strict: bool = False,
    progress: bool = True,
    allow_outside_root: bool = False,
) -> ValidationReport:
    """Check every record of one or more ``.jsonl``/``.json`` files.

    Args:
        media_root: folder media paths are relative to (default: each records file's folder).
        check: media check level: ``none``, ``exists``, ``probe`` or ``decode``.
        workers: processes for the media checks.
        strict: raise :class:`RecordError` naming the first bad record (file order) instead of
            returning a report with it.
        allow_outside_root: accept media paths that leave the media root (absolute ones, or
            ``../`` leading out); by default such a record is bad and its file is never opened.

    Returns:
        A :class:`ValidationReport` listing every bad record with its file, line and reason.
    """
    if check not in CHECKS:
        raise ValueError(f"check must be one of {', '.join(CHECKS)}, got {check!r}")
    started = time.perf_counter()
    files = [Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    report = ValidationReport(files=[str(f) for f in files], check=check)
    rows: list[tuple[Path, int, Record | BadRecord]] = []
    for path in files:
        for line, item in read_numbered_records(path, max_chars=limits.max_chars):
            if isinstance(item, BadRecord):
                item = InvalidRecord.from_parse(item)
            elif (reason := limits.check(item)) is not None:
                item = _invalid(path, line, item, ("length", reason))
            elif not allow_outside_root and (escape := _escape(item, _default_root(path, media_root))):
                item = _invalid(path, line, item, escape)
            rows.append((path, line, item))
            if strict and isinstance(item, BadRecord):
                raise RecordError(str(item))
    jobs: dict[tuple[str, str], tuple[str, str, str]] = {}
    for path, _, item in rows:
        if isinstance(item, Record):
            root = _default_root(path, media_root)
            for ref in item.media:
                key = (str(ref.resolve(root)), ref.modality.value)
                jobs.setdefault(key, (*key, check))
    results = dict(zip(jobs, _check_all(list(jobs.values()), workers, progress))) if check != "none" else {}
    report.media_files = len(results)
    report.media_bad = sum(not r.ok for r in results.values())
    for path, line, item in rows:
        report.total += 1
        if isinstance(item, Record):
            problem = _media_failure(item, _default_root(path, media_root), results)
            if problem is None:
                report.valid += 1
                continue
            item = _invalid(path, line, item, problem)
        if strict:
            raise RecordError(str(item))
        report.bad.append(item)
    report.seconds = time.perf_counter() - started
    return report


class RecordReader:
    """Iterate over the valid records of files, for training: bad ones are skipped and counted, or,
    with ``strict=True``, the first one raises :class:`RecordError` naming its file and line.

    Media are checked per record as read (``check="exists"`` by default: cheap; use
    :func:`validate_records` beforehand for a full decode check of a whole dataset).

    Attributes:
        num_valid: records yielded so far.
        skipped: the bad records met so far (file, line, reason).
    """

    def __init__(
        self,
        paths: str | os.PathLike | Iterable[str | os.PathLike],
        media_root: str | os.PathLike | None = None,
        *,
        check: str = "exists",
        strict: bool = False,
        limits: RecordLimits = RecordLimits(),
        allow_outside_root: bool = False,
    ):
        if check not in CHECKS:
            raise ValueError(f"check must be one of {', '.join(CHECKS)}, got {check!r}")
        self.paths = [Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
        self.media_root, self.check, self.strict, self.limits = media_root, check, strict, limits
        self.allow_outside_root = allow_outside_root
        self.num_valid = 0
        self.skipped: list[BadRecord] = []

    def _bad(self, bad: BadRecord) -> None:
        if self.strict:
            raise RecordError(str(bad))
        self.skipped.append(bad)

    def __iter__(self) -> Iterator[Record]:
        cache: dict[tuple[str, str], MediaCheck] = {}
        for path in self.paths:
            root = _default_root(path, self.media_root)
            for line, item in read_numbered_records(path, max_chars=self.limits.max_chars):
                if isinstance(item, BadRecord):
                    self._bad(InvalidRecord.from_parse(item))
                    continue
                reason = self.limits.check(item)
                problem = None if reason is None else ("length", reason)
                if problem is None and not self.allow_outside_root:
                    problem = _escape(item, root)
                if problem is None:
                    for ref in item.media:
                        key = (str(ref.resolve(root)), ref.modality.value)
                        if key not in cache:
                            cache[key] = check_media(*key, self.check)
                    problem = _media_failure(item, root, cache)
                if problem is not None:
                    self._bad(_invalid(path, line, item, problem))
                    continue
                self.num_valid += 1
                yield item


def write_report(path: str | os.PathLike, report: ValidationReport) -> None:
    Path(path).write_text(json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
