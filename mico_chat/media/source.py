"""Where media comes from: a path or an in-memory file, checked before anything is decoded."""

from __future__ import annotations

import io
import os
import stat
from dataclasses import dataclass
from typing import BinaryIO

from mico_chat.media.errors import MediaError, MediaLimits

MediaSource = str | os.PathLike | bytes
"""A file path, or the bytes of a whole file (an upload). Errors about bytes name them ``"<bytes>"``
unless the caller passes ``name=``, which also supplies the extension used to guess the kind."""


@dataclass(frozen=True)
class ResolvedSource:
    """A media source that exists, is a non-empty regular file (or bytes) and is within ``max_bytes``."""

    name: str
    """What errors call it: the path as given, the caller's ``name=``, or ``"<bytes>"``."""
    path: str | None
    """The filesystem path; ``None`` for in-memory data."""
    data: bytes | None
    """The file's bytes for in-memory data; ``None`` for a path."""
    size: int

    @property
    def suffix(self) -> str:
        """Lower-case extension without the dot (``"mp4"``), from the path or the caller's name; ``""`` if none."""
        _, ext = os.path.splitext(self.name if self.path is None else self.path)
        return ext[1:].lower()

    def open_binary(self) -> BinaryIO:
        """A fresh binary file object positioned at the start (the caller closes it)."""
        if self.data is not None:
            return io.BytesIO(self.data)
        try:
            return open(self.path, "rb")
        except OSError as err:
            raise MediaError(self.name, f"cannot open: {err.strerror or err}") from err

    def read_head(self, num_bytes: int) -> bytes:
        """The first ``num_bytes`` bytes (fewer if the file is shorter): enough to sniff a header."""
        if self.data is not None:
            return self.data[:num_bytes]
        with self.open_binary() as f:
            try:
                return f.read(num_bytes)
            except OSError as err:
                raise MediaError(self.name, f"cannot read: {err.strerror or err}") from err


def resolve_source(source: MediaSource, name: str | None, limits: MediaLimits) -> ResolvedSource:
    """Check that ``source`` can be read at all, without reading it.

    A path must name an existing regular file, not empty and at most ``limits.max_bytes`` long
    (checked with ``stat``, so a 2 GB upload is refused without reading it). Bytes must be non-empty
    and within the same limit. Raises ``MediaError`` otherwise, ``TypeError`` for other types.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        resolved = ResolvedSource(name=name or "<bytes>", path=None, data=data, size=len(data))
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        display = name or path
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise MediaError(display, "no such file") from None
        except OSError as err:
            raise MediaError(display, f"cannot access: {err.strerror or err}") from err
        if stat.S_ISDIR(st.st_mode):
            raise MediaError(display, "is a directory, not a media file")
        if not stat.S_ISREG(st.st_mode):
            raise MediaError(display, "is not a regular file")
        resolved = ResolvedSource(name=display, path=path, data=None, size=st.st_size)
    else:
        raise TypeError(f"a media source is a path or bytes, got {type(source).__name__}")

    if resolved.size == 0:
        raise MediaError(resolved.name, "empty file (0 bytes)")
    limits.check_bytes(resolved.name, resolved.size)
    return resolved
