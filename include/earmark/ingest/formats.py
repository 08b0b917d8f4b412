"""Archive formats: the compressions a tar may arrive in, as one table (the extension point).

Each `ArchiveFormat` says how it is recognised (its name suffixes and magic bytes), how its
stream is opened, how many compressed bytes it has (for the compression-ratio guard,
``EARMARK_MAX_COMPRESSION_RATIO``) and which errors its decompressor raises (a damaged stream is
``corrupt``). `FORMATS` lists the supported ones and drives recognising (`ARCHIVE_SUFFIXES`,
`recognise`), opening, extracting and the ratio guard in `earmark.ingest.extract`. An archive
whose first bytes match none of them is read as a plain tar, unless they are the magic of a
compression that is not supported (refused as ``not_a_tar``).

Adding a format is one entry in `FORMATS`; tests/unit/test_extract.py builds an archive over the
ratio for every entry and fails for a format without a working guard (or without a builder there).
Light on purpose (stdlib only): `earmark.ingest.incoming` takes its suffixes from here.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class ByteStream(Protocol):
    """What an archive is read through: the file, its hashing wrapper, or a decompressed stream."""

    def read(self, size: int = -1, /) -> bytes: ...
    def seek(self, offset: int, whence: int = os.SEEK_SET, /) -> int: ...
    def tell(self) -> int: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class ArchiveFormat:
    """A compression around a tar: how it is named, recognised, opened, measured and broken."""

    name: str  # in details: "<name> stream is damaged"
    suffixes: tuple[str, ...]  # names a delivery of it may have; the first names it in messages
    magic: bytes  # how its content starts (the name is never trusted)
    open_stream: Callable[[ByteStream], ByteStream]  # the decompressed tar, read from the file
    compressed_bytes: Callable[[ByteStream], int]  # the archive file's size, for the ratio guard
    errors: tuple[type[Exception], ...]  # what its decompressor raises for a damaged stream

    def matches(self, head: bytes) -> bool:
        """Whether an archive starting with ``head`` is of this format."""
        return head.startswith(self.magic)


def _open_gzip(raw: ByteStream) -> ByteStream:
    return gzip.GzipFile(fileobj=raw, mode="rb")


def _file_size(raw: ByteStream) -> int:
    return os.fstat(raw.fileno()).st_size


GZIP = ArchiveFormat(
    name="gzip",
    suffixes=(".tar.gz", ".tgz"),
    magic=b"\x1f\x8b",
    open_stream=_open_gzip,
    compressed_bytes=_file_size,
    errors=(zlib.error, gzip.BadGzipFile),
)

FORMATS: tuple[ArchiveFormat, ...] = (GZIP,)

PLAIN_TAR_SUFFIX = ".tar"
ARCHIVE_SUFFIXES = (PLAIN_TAR_SUFFIX, *(suffix for fmt in FORMATS for suffix in fmt.suffixes))
HEAD_BYTES = 8  # enough of an archive's start to tell every format (and the refused ones) apart
# Compressions refused by content: bzip2, xz, zstd, zip.
_UNSUPPORTED_MAGIC = (b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd", b"PK\x03\x04")
DECOMPRESSION_ERRORS: tuple[type[Exception], ...] = tuple(
    error for fmt in FORMATS for error in fmt.errors
)
SUPPORTED = " and ".join(
    suffix.removeprefix(".") for suffix in (PLAIN_TAR_SUFFIX, *(f.suffixes[0] for f in FORMATS))
)


def is_unsupported(head: bytes) -> bool:
    """Whether an archive starting with ``head`` is a compression no entry of `FORMATS` reads."""
    return head.startswith(_UNSUPPORTED_MAGIC)


def recognise(head: bytes) -> ArchiveFormat | None:
    """The format of an archive starting with ``head``; None for a plain tar."""
    return next((fmt for fmt in FORMATS if fmt.matches(head)), None)


def format_raising(exc: BaseException) -> ArchiveFormat | None:
    """The format whose decompressor raises errors like ``exc``; None for any other error."""
    return next((fmt for fmt in FORMATS if isinstance(exc, fmt.errors)), None)
