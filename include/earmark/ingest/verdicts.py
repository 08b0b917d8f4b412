"""Verdicts on a claimed delivery from its own files: marker, name, file type, and its bytes.

Nothing here is trusted or followed: entries are judged by ``lstat``, and only regular files with
a single link are opened (``O_NOFOLLOW | O_NONBLOCK``). Reading and judging need no DB; the two
functions at the end give the reason a delivery of bytes an archive already has is recorded with
(saying so when they were erased on request: ``earmark.lifecycle.erase``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from earmark.ingest.formats import ARCHIVE_SUFFIXES
from earmark.ingest.incoming import MARKER_SUFFIX, parse_marker
from earmark.ingest.rejection import Rejected
from earmark.names import printable, unsafe_characters
from earmark.statuses import ArchiveStatus
from earmark.store.sql import as_utc, named_queries

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_MAX_MARKER_BYTES = 4096


class DeliveryRejected(Rejected):
    """A delivery refused before registration: its marker, name, file type or transport."""


@dataclass(frozen=True)
class Verdict:
    """What a claimed delivery is, before the DB has compared its bytes with earlier ones.

    ``declared`` is its marker's digest; ``sha256`` the digest of its bytes, when they were read
    (only for a delivery whose marker names bytes an archive already has).
    """

    name: str
    declared: str | None = None
    sha256: str | None = None
    rejected: DeliveryRejected | None = None


def _kind(mode: int) -> str:
    kinds = (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
        (stat.S_ISREG, "a file"),
    )
    return next((name for test, name in kinds if test(mode)), "of an unknown type")


def described(path: Path, shown: str, mode: int) -> str:
    """``shown`` and what it is, a symbolic link with its target (read, never followed)."""
    if stat.S_ISLNK(mode):
        with contextlib.suppress(OSError):
            return f"{shown} is a symbolic link to {printable(str(path.readlink()))}"
    return f"{shown} is {_kind(mode)}"


@contextlib.contextmanager
def _open_regular(path: Path, shown: str) -> Iterator[int]:
    """A read-only fd on ``path`` when it is a regular file (no link followed, nothing blocks)."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        raise DeliveryRejected("unreadable", f"{shown}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DeliveryRejected("not_a_regular_file", f"{shown} is {_kind(info.st_mode)}")
        if info.st_nlink > 1:
            raise _hard_link(shown, info.st_nlink)
        yield fd
    finally:
        os.close(fd)


def _hard_link(shown: str, links: int) -> DeliveryRejected:
    return DeliveryRejected(
        "hard_link", f"{shown} has {links} hard links (it may be a file elsewhere); not opened"
    )


def _read_marker(path: Path, shown: str) -> str:
    with _open_regular(path, shown) as fd:
        try:
            raw = os.read(fd, _MAX_MARKER_BYTES + 1)
        except OSError as exc:
            raise DeliveryRejected("unreadable", f"{shown}: {exc.strerror}") from None
    if len(raw) > _MAX_MARKER_BYTES:
        raise DeliveryRejected(
            "bad_marker",
            f"{shown} is over {_MAX_MARKER_BYTES} bytes: a marker holds one sha256 digest",
        )
    digest = parse_marker(raw.decode("ascii", errors="replace"))
    if digest is None:
        raise DeliveryRejected("bad_marker", f"{shown} does not hold a sha256 hex digest")
    return digest


def _sha256(path: Path, shown: str) -> str:
    with _open_regular(path, shown) as fd, open(fd, "rb", closefd=False) as handle:
        try:
            return hashlib.file_digest(handle, "sha256").hexdigest()
        except OSError as exc:
            raise DeliveryRejected("unreadable", f"{shown}: {exc.strerror}") from None


def _check_name(name: str) -> None:
    shown = printable(name)
    if unsafe_characters(name):
        raise DeliveryRejected(
            "invalid_name", f"{shown} holds control, bidi or invisible characters"
        )
    suffix = next((s for s in ARCHIVE_SUFFIXES if name.endswith(s)), None)
    if suffix is None:
        raise DeliveryRejected(
            "unsupported_suffix", f"{shown}: expected one of {', '.join(ARCHIVE_SUFFIXES)}"
        )
    if not name.removesuffix(suffix).strip("."):
        raise DeliveryRejected("invalid_name", f"{shown} has no name before its suffix")


def _verdict(folder: Path) -> Verdict:
    """Read a claimed delivery (never following links or opening special files) and judge it."""
    entries = sorted(p.name for p in folder.iterdir())
    if not entries:
        return Verdict(
            folder.name, rejected=DeliveryRejected("vanished", "the claimed folder is empty")
        )
    markers = [n for n in entries if n.endswith(MARKER_SUFFIX)]
    name = markers[0].removesuffix(MARKER_SUFFIX) if markers else entries[0]
    shown = printable(name)
    try:
        return _judge(folder, entries, markers, name, shown)
    except OSError as exc:
        return Verdict(shown, rejected=DeliveryRejected("unreadable", f"{shown}: {exc.strerror}"))


def verdict_or_error(folder: Path) -> Verdict | Exception:
    """`_verdict`, or the unexpected error it raised (a fault of ours, not of the delivery)."""
    try:
        return _verdict(folder)
    except Exception as exc:  # returned: raised after the others are recorded
        return exc


def _judge(folder: Path, entries: list[str], markers: list[str], name: str, shown: str) -> Verdict:
    try:
        if not markers:
            info = (folder / name).lstat()
            if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
                raise DeliveryRejected("marker_missing", f"{shown} was claimed without a marker")
            if stat.S_ISREG(info.st_mode):
                raise _hard_link(shown, info.st_nlink)
            raise DeliveryRejected(
                "not_a_regular_file", described(folder / name, shown, info.st_mode)
            )
        marker = folder / markers[0]
        info = marker.lstat()
        if not stat.S_ISREG(info.st_mode):
            detail = described(marker, f"the marker of {shown}", info.st_mode)
            raise DeliveryRejected("not_a_regular_file", detail)
        if info.st_nlink > 1:
            raise _hard_link(f"the marker of {shown}", info.st_nlink)
        if name.endswith(MARKER_SUFFIX):
            raise DeliveryRejected(
                "unsupported_suffix", f"{shown}{MARKER_SUFFIX} is a marker of a marker"
            )
        _check_name(name)
        archive = folder / name
        if name not in entries:
            raise DeliveryRejected("marker_without_archive", f"no {shown} beside its marker")
        info = archive.lstat()
        if not stat.S_ISREG(info.st_mode):
            raise DeliveryRejected("not_a_regular_file", described(archive, shown, info.st_mode))
        if info.st_nlink > 1:
            raise _hard_link(shown, info.st_nlink)
        declared = _read_marker(marker, f"the marker of {shown}")
        with _open_regular(archive, shown):  # readable by the unpack (which reads it once)
            pass
    except DeliveryRejected as rejected:
        return Verdict(shown, rejected=rejected)
    return Verdict(name, declared)


def mismatch(declared: str, actual: str) -> DeliveryRejected:
    # In full: a digest off by one character must not read as two equal abbreviations.
    return DeliveryRejected("checksum_mismatch", f"marker says {declared}, archive is {actual}")


def read_known(folder: Path, verdict: Verdict) -> Verdict:
    """Hash a delivery whose marker names bytes already registered: a duplicate is never
    unpacked, so this is its one read."""
    declared = verdict.declared
    assert declared is not None, "only a delivery whose marker names a digest is read here"
    shown = printable(verdict.name)
    try:
        actual = _sha256(folder / verdict.name, shown)
    except DeliveryRejected as rejected:
        return Verdict(shown, declared, rejected=rejected)
    except OSError as exc:
        unreadable = DeliveryRejected("unreadable", f"{shown}: {exc.strerror}")
        return Verdict(shown, declared, rejected=unreadable)
    if actual != declared:
        return Verdict(shown, declared, actual, mismatch(declared, actual))
    return Verdict(verdict.name, declared, actual)


def archive_with(conn: sa.Connection, digest: str) -> sa.Row | None:
    """The archive that already has these bytes, with what was erased of it on request; None
    when none has them (any more: ``earmark erase --readmit`` lets an erased archive's go)."""
    query = named_queries("lifecycle")["archive_with_bytes"]
    return conn.execute(sa.text(query), {"sha": digest}).one_or_none()


def same_bytes(first: sa.Row) -> str:
    """The reason a delivery of ``first``'s bytes is its duplicate: ``erased: ...`` when they
    (or some of their recordings) were erased on request, with the erasure's id and date only
    (and, for bytes erased whole, the operator's way to let them in again), so they are not
    screened again and nobody wonders why."""
    if first.erasure_id is not None:
        when = f"erasure #{first.erasure_id} on {as_utc(first.erased_at):%Y-%m-%d}"
        if first.whole:
            return (
                f"erased: same bytes as archive #{first.id}, erased on request ({when});"
                f" `earmark erase --readmit {first.id}` lets them be screened again"
            )
        return (
            f"erased: same bytes as archive #{first.id} ({first.status}), {first.recordings} of"
            f" whose recordings were erased on request (latest {when})"
        )
    reason = f"same bytes as archive #{first.id} ({first.status})"
    if first.status == ArchiveStatus.REJECTED:
        reason += f", rejected for its content: {first.error}"
    return reason
