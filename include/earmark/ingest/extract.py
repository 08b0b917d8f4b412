"""Unpack an untrusted tar archive (.tar or .tar.gz) into a directory, or reject it.

Why so strict: `tarfile` itself sets no limits and, without a filter, writes through `../`,
absolute paths and links. Here every header is scanned first, before anything is written:
only regular files and directories are accepted (any link, device, FIFO or sparse member
rejects the whole archive), names must be relative, unique after normalisation and within
length/depth limits, and member count and sizes are capped. Extraction then goes into a
fresh temporary directory next to the destination (same filesystem) with the `data` filter
and sanitised modes, and is renamed into place only when complete. On any failure the
temporary directory is removed, so a destination either holds a complete extraction or
nothing new. An existing destination is never replaced or removed: the caller gives every
archive a home of its own, and a destination that exists is an error (`FileExistsError`).

Formats: the content, never the name, decides how the archive is read: a plain tar or one of
the compressions in `earmark.ingest.formats.FORMATS`. Compression bombs: besides the size caps,
the sizes the headers declare may not exceed `max_compression_ratio` times the compressed file
(checked header by header, before the member is decompressed), for every format in the table.

Read once: given a `digest` (a hashlib object), extraction feeds it every byte of the archive
file, in order, as it reads them (`earmark.ingest.read_once`), so the checksum costs no second
read. A plain tar's headers, read by the scan, are hashed again from the page cache; anything
extraction did not read (the tail after the end marker, or the rest of an archive rejected
part-way) is read at the end, so the digest always covers the whole file.

Errors: `ArchiveRejected` means the input is bad (do not retry); `InsufficientDisk` (from
`earmark.ingest.destination`) and any other `OSError` (ENOSPC, EIO, ...) are infrastructure
problems (retry later).

Truncation: a cut inside a member is always detected. A cut exactly at a member boundary is
detected because the end-of-archive marker (a zero block) must be present. A cut inside the
trailing padding after that marker loses no data and is accepted. The archive checksum,
verified by the caller, remains the authority on completeness.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from hashlib import _Hash

from earmark.ingest.destination import (
    check_free_disk,
    refuse_existing,
    remove_stale,
)
from earmark.ingest.formats import (
    DECOMPRESSION_ERRORS,
    HEAD_BYTES,
    SUPPORTED,
    ArchiveFormat,
    ByteStream,
    format_raising,
    is_unsupported,
    recognise,
)
from earmark.ingest.read_once import HashingReader
from earmark.ingest.rejection import Rejected
from earmark.names import unsafe_characters

__all__ = [
    "ArchiveRejected",
    "ExtractLimits",
    "ExtractResult",
    "Member",
    "safe_extract",
    "scan_archive",
]

FILE_MODE = 0o644
DIR_MODE = 0o755
NAME_MAX_BYTES = 255  # longest single path component most filesystems accept
_BLOCK = tarfile.BLOCKSIZE
_MAX_SINGLE_READ = 4 * 1024 * 1024  # headers (pax, GNU long names) larger than this are bombs
_COPY_BUFSIZE = 1024 * 1024
_MAX_TRAILER = 1024 * 1024  # decompressed bytes allowed after the tar end marker


@dataclass(frozen=True)
class ExtractLimits:
    """Caps applied to every archive before anything is written."""

    max_members: int = 10_000
    max_member_bytes: int = 2 * 1024**3
    max_total_bytes: int = 50 * 1024**3
    max_path_length: int = 255
    max_path_depth: int = 8
    # Free space left beyond what the members need: an absolute margin plus a share of it.
    free_disk_margin_bytes: int = 1 * 1024**3
    free_disk_margin_share: float = 0.0
    # Declared bytes per compressed byte of a .tar.gz. PCM speech gzips to ~1.1x, digital
    # silence to ~1000x: a day of pure silence in one .tar.gz is refused, real audio is not.
    max_compression_ratio: float = 100.0
    # Below this many declared bytes the ratio is not checked (tiny archives compress well).
    compression_check_floor_bytes: int = 16 * 1024**2


class ArchiveRejected(Rejected):
    """The archive itself is unacceptable; `code` is a short snake_case reason."""


@dataclass(frozen=True)
class Member:
    """A regular file of the archive: normalised relative posix path and size in bytes."""

    path: str
    size: int


@dataclass(frozen=True)
class ExtractResult:
    """Where the archive was extracted and which regular files it holds (archive order)."""

    directory: Path
    members: tuple[Member, ...]


@dataclass(frozen=True)
class _Entry:
    """A scanned member: its header, renamed to the normalised path that gets extracted."""

    info: tarfile.TarInfo
    path: str

    @classmethod
    def of(cls, info: tarfile.TarInfo, path: str) -> _Entry:
        # Extract under the normalised name, never the raw one ('b/.' would open a directory).
        return cls(info.replace(name=path, deep=False), path)


class _BoundedReader:
    """File-like wrapper refusing single huge reads, so header bombs fail instead of OOM."""

    def __init__(self, inner: ByteStream) -> None:
        self._inner = inner

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > _MAX_SINGLE_READ:
            raise ArchiveRejected("corrupt", f"header or read of {size} bytes is too large")
        return self._inner.read(size)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._inner.seek(offset, whence)

    def tell(self) -> int:
        return self._inner.tell()


FILTER_CODES = {  # the data filter's refusals; any other FilterError is an unsafe member
    tarfile.OutsideDestinationError: "path_traversal",
    tarfile.AbsolutePathError: "absolute_path",
}


def _translate(exc: BaseException, opening: bool) -> ArchiveRejected | None:  # noqa: PLR0911
    """Map a parsing/decompression error to a rejection; None for infrastructure errors."""
    if isinstance(exc, ArchiveRejected):
        return exc
    if isinstance(exc, EOFError):
        return ArchiveRejected("truncated", f"compressed stream ended early ({exc})")
    if isinstance(exc, tarfile.ReadError):
        message = str(exc)
        if "unexpected end of data" in message:
            return ArchiveRejected("truncated", message)
        if message.startswith("zlib error"):  # tarfile's wrapping of a damaged deflate stream
            return ArchiveRejected("corrupt", message)
        return ArchiveRejected("not_a_tar" if opening else "corrupt", message)
    damaged = format_raising(exc)
    if damaged is not None:
        return ArchiveRejected("corrupt", f"{damaged.name} stream is damaged ({exc})")
    if isinstance(exc, tarfile.FilterError):
        return ArchiveRejected(FILTER_CODES.get(type(exc), "unsafe_member_type"), str(exc))
    if isinstance(exc, tarfile.TarError | ValueError | RecursionError):
        return ArchiveRejected("corrupt", f"{type(exc).__name__}: {exc}")
    return None


# What parsing and decompressing an archive raise for bad input (`_translate` maps them).
_INPUT_ERRORS: tuple[type[Exception], ...] = (
    ArchiveRejected,
    EOFError,
    tarfile.TarError,
    ValueError,
    RecursionError,
    *DECOMPRESSION_ERRORS,
)


@contextlib.contextmanager
def _rejecting(opening: bool = False) -> Iterator[None]:
    try:
        yield
    except _INPUT_ERRORS as exc:
        rejected = _translate(exc, opening)
        if rejected is None or rejected is exc:
            raise
        raise rejected from exc


@contextlib.contextmanager
def _hashing(raw: BinaryIO, digest: _Hash | None) -> Iterator[ByteStream]:
    """``raw``, fed to ``digest`` as it is read; the digest is complete when this exits normally
    or with `ArchiveRejected` (the verdict on the content does not spare reading the bytes)."""
    if digest is None:
        yield raw
        return
    reader = HashingReader(raw, digest)
    try:
        yield reader
    except ArchiveRejected:
        reader.finish()
        raise
    except BaseException:
        reader.abandon()
        raise
    reader.finish()


@dataclass(frozen=True)
class _OpenArchive:
    """An archive opened for reading: its tar, its format (None: a plain tar) and, compressed,
    the size of the file, which the ratio guard weighs the declared sizes against."""

    tar: tarfile.TarFile
    format: ArchiveFormat | None
    compressed: int | None


@contextlib.contextmanager
def _open_tar(archive: Path, digest: _Hash | None = None) -> Iterator[_OpenArchive]:
    """Open a plain tar or one in a format of `FORMATS` (decided by content, not name) behind a
    bounded reader."""
    with Path(archive).open("rb") as file, _hashing(file, digest) as raw:
        head = raw.read(HEAD_BYTES)
        raw.seek(0)
        fmt = recognise(head)
        if fmt is None and is_unsupported(head):
            raise ArchiveRejected("not_a_tar", f"unsupported compression (only {SUPPORTED})")
        stream = raw if fmt is None else fmt.open_stream(raw)
        compressed = None if fmt is None else fmt.compressed_bytes(raw)
        with contextlib.closing(stream):
            with _rejecting(opening=True):
                bounded = _BoundedReader(stream)
                # typeshed's _Fileobj wants write() and close() even for reading; a read-mode
                # TarFile given a fileobj calls neither.
                tf = tarfile.open(fileobj=bounded, mode="r:")  # type: ignore[call-overload]  # noqa: SIM115
            with tf:
                tf.copybufsize = _COPY_BUFSIZE
                yield _OpenArchive(tf, fmt, compressed)


def _show(name: str) -> str:
    """A member name for error details: repr'd (control and bidi chars escaped), length-capped."""
    shown = repr(name if len(name) <= 120 else name[:120] + "...")
    return shown.encode("ascii", "backslashreplace").decode("ascii")


def _member_type_ok(info: tarfile.TarInfo) -> bool:
    if info.issparse():
        return False
    return info.type in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE)


def _normalise(info: tarfile.TarInfo, limits: ExtractLimits) -> str:
    """Return the normalised relative posix path ('' for the root itself) or reject."""
    name = info.name
    shown = _show(name)
    if name == "":
        raise ArchiveRejected("invalid_name", "member with an empty name")
    if name.startswith("/"):
        raise ArchiveRejected("absolute_path", f"member {shown} has an absolute path")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ArchiveRejected("invalid_name", f"member {shown} is not valid UTF-8") from None
    if unsafe_characters(name) or "\\" in name:
        raise ArchiveRejected(
            "invalid_name", f"member {shown} has control, bidi or invisible chars or a backslash"
        )
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ArchiveRejected("path_traversal", f"member {shown} contains '..'")
    path = "/".join(parts)
    if len(path.encode("utf-8")) > limits.max_path_length or any(
        len(part.encode("utf-8")) > NAME_MAX_BYTES for part in parts
    ):
        raise ArchiveRejected("path_too_long", f"member {shown} has too long a path")
    if len(parts) > limits.max_path_depth:
        raise ArchiveRejected(
            "path_too_deep",
            f"member {shown} is {len(parts)} levels deep (max {limits.max_path_depth})",
        )
    return path


class _Layout:
    """Tracks files and directories seen so far to reject duplicates and file/dir clashes."""

    def __init__(self) -> None:
        self.files: set[str] = set()
        self.dirs: set[str] = set()  # explicit
        self.implied: set[str] = set()  # parents of anything

    def add(self, path: str, is_dir: bool) -> None:
        shown = _show(path)
        if path in self.files or path in self.dirs:
            raise ArchiveRejected("duplicate_member", f"{shown} occurs more than once")
        if not is_dir and path in self.implied:
            raise ArchiveRejected("path_conflict", f"{shown} is both a file and a directory")
        parents = path.split("/")[:-1]
        for depth in range(1, len(parents) + 1):
            parent = "/".join(parents[:depth])
            if parent in self.files:
                raise ArchiveRejected(
                    "path_conflict", f"{_show(parent)} is both a file and a directory"
                )
            self.implied.add(parent)
        (self.dirs if is_dir else self.files).add(path)


def _check_ratio(total: int, compressed: int | None, limits: ExtractLimits) -> None:
    """The compression-ratio guard: refuse when the declared sizes so far exceed the ratio."""
    if compressed is None or total <= limits.compression_check_floor_bytes:
        return
    if total > limits.max_compression_ratio * max(compressed, 1):
        raise ArchiveRejected(
            "compression_ratio",
            f"members declare {total} bytes from {compressed} compressed bytes"
            f" (more than {limits.max_compression_ratio:g}x)",
        )


def _scan(archive: _OpenArchive, limits: ExtractLimits) -> list[_Entry]:
    """Read every header (no data written) and enforce all structural rules and limits."""
    tf = archive.tar
    entries: list[_Entry] = []
    layout = _Layout()
    count = 0
    total = 0
    with _rejecting():
        for info in tf:
            count += 1
            if count > limits.max_members:
                raise ArchiveRejected("too_many_members", f"more than {limits.max_members} members")
            if not _member_type_ok(info):
                raise ArchiveRejected(
                    "unsafe_member_type",
                    f"member {_show(info.name)} is not a regular file or directory"
                    f" (type {info.type!r})",
                )
            path = _normalise(info, limits)
            if info.isdir():
                if path:  # '.' / './' is the root itself; nothing to create
                    layout.add(path, is_dir=True)
                    entries.append(_Entry.of(info, path))
                continue
            if not path:
                raise ArchiveRejected("invalid_name", f"file member {_show(info.name)} has no name")
            if info.size > limits.max_member_bytes:
                raise ArchiveRejected(
                    "member_too_large",
                    f"member {_show(path)} declares {info.size} bytes"
                    f" (max {limits.max_member_bytes})",
                )
            total += info.size
            if total > limits.max_total_bytes:
                raise ArchiveRejected(
                    "archive_too_large", f"members total more than {limits.max_total_bytes} bytes"
                )
            _check_ratio(total, archive.compressed, limits)
            layout.add(path, is_dir=False)
            entries.append(_Entry.of(info, path))
        _check_end_marker(tf, drain=archive.format is not None)
    return entries


def _check_end_marker(tf: tarfile.TarFile, drain: bool) -> None:
    """Require the zero block that ends a tar; ``drain`` (a compressed one) also reads to the end
    of the stream, so its decompressor checks the trailer (gzip's CRC).

    tarfile silently stops at a missing or garbled header, which would hide a cut exactly at
    a member boundary or a damaged header in the middle.
    """
    fileobj = tf.fileobj
    fileobj.seek(tf.offset)
    block = fileobj.read(_BLOCK)
    if len(block) < _BLOCK:
        raise ArchiveRejected("truncated", f"no end-of-archive marker at offset {tf.offset}")
    if block.count(0) != _BLOCK:
        raise ArchiveRejected("corrupt", f"unreadable header at offset {tf.offset}")
    if drain:
        drained = 0
        while chunk := fileobj.read(_COPY_BUFSIZE):
            drained += len(chunk)
            if drained > _MAX_TRAILER:
                raise ArchiveRejected("corrupt", "unexpected data after the end of the tar")


def _members(entries: list[_Entry]) -> tuple[Member, ...]:
    return tuple(Member(e.path, e.info.size) for e in entries if not e.info.isdir())


def scan_archive(archive: Path, limits: ExtractLimits = ExtractLimits()) -> tuple[Member, ...]:
    """Check every header of `archive` against `limits`; return its regular files.

    Nothing is written. Raises `ArchiveRejected` for any unsafe or malformed archive.
    """
    with _open_tar(archive) as opened:
        return _members(_scan(opened, limits))


def _sanitise(member: tarfile.TarInfo, dest_path: str) -> tarfile.TarInfo:
    """The stdlib `data` filter plus fixed modes and the normalised name."""
    filtered = tarfile.data_filter(member, dest_path)
    mode = DIR_MODE if filtered.isdir() else FILE_MODE
    # None leaves ownership alone (documented since 3.11.4; the data filter does the same);
    # typeshed's replace() still says int/str.
    return filtered.replace(mode=mode, uid=None, gid=None, uname=None, gname=None, deep=False)  # type: ignore[arg-type]


def _verify_tree(root: Path, entries: list[_Entry]) -> None:
    """Everything on disk is exactly what was scanned: no extras, right types and sizes."""
    expected = {e.path: e.info for e in entries}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            rel = full.relative_to(root).as_posix()
            st = full.lstat()
            info = expected.get(rel)
            if stat.S_ISDIR(st.st_mode) and (info is None or info.isdir()):
                full.chmod(DIR_MODE)  # implied parents were made with the process umask
                continue
            if info is None or not stat.S_ISREG(st.st_mode) or st.st_size != info.size:
                raise ArchiveRejected("corrupt", f"extracted {rel!r} does not match its header")


def safe_extract(
    archive: Path,
    destination: Path,
    limits: ExtractLimits = ExtractLimits(),
    digest: _Hash | None = None,
) -> ExtractResult:
    """Extract `archive` into `destination` completely, or leave the filesystem unchanged.

    The archive is scanned first (`scan_archive` rules), free disk is checked, then members
    are written to `.tmp-<name>-<hex>` inside `destination.parent` and renamed to
    `destination`, which must not exist (`FileExistsError`): nothing that exists is ever
    replaced. Temporary folders a killed earlier attempt for the same destination left are
    removed first, so a retry ends in the same state.

    With ``digest``, every byte of ``archive`` is fed to it once, also when the archive is
    rejected: on return or `ArchiveRejected`, it holds the whole file's hash.
    """
    destination = Path(destination)
    parent = destination.parent
    refuse_existing(destination)
    with _open_tar(archive, digest) as opened:
        entries = _scan(opened, limits)
        parent.mkdir(parents=True, exist_ok=True)
        check_free_disk(
            parent,
            [e.info.size for e in entries],
            limits.free_disk_margin_bytes,
            limits.free_disk_margin_share,
        )
        remove_stale(parent, destination.name)
        tmp = parent / f".tmp-{destination.name}-{secrets.token_hex(4)}"
        tmp.mkdir(mode=0o700)
        try:
            with _rejecting():
                # Members were pre-scanned (regular files and dirs only) and are filtered again.
                opened.tar.extractall(tmp, members=[e.info for e in entries], filter=_sanitise)  # noqa: S202
            _verify_tree(tmp, entries)
            tmp.chmod(DIR_MODE)
            refuse_existing(destination)
            tmp.rename(destination)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return ExtractResult(directory=destination, members=_members(entries))
