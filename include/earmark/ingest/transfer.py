"""Archive transfer: copy settled archives from a source into ``incoming/``, marker last.

The source is an Airflow ``ObjectStoragePath`` URL: ``file:///srv/dropbox``, or
``sftp://conn_id@host/path`` read through Airflow's SFTP provider (``sshfs``) with the connection
``conn_id`` (host, port, login, ``key_file``), its host key always checked against
``EARMARK_TRANSFER_KNOWN_HOSTS`` (the provider alone would not check it). A source archive is
complete when a companion ``NAME.sha256`` sits beside it, or else once its size and mtime have not
changed for ``EARMARK_TRANSFER_SETTLE_SECONDS``; a file still being uploaded is never copied.

Every settled source archive gets one row in the ``transfers`` ledger (keyed by its URI) and ends
``copied`` or ``failed`` (reason in ``error``), so a rerun or a redelivered task never copies a file
twice, even after the daily DAG has moved it on from ``incoming/``. A copy streams to
``incoming/.NAME.partial`` while hashing, checks the companion digest, fsyncs, renames to
``incoming/NAME`` and only then writes ``incoming/NAME.sha256`` (write-then-rename): the daily
DAG's ready marker. Input problems (digest mismatch, vanished source file, a file that changed
while it was copied, one the source refuses to let be read) are recorded, not raised;
infrastructure problems (source unreachable or untrusted, a connection lost mid-copy, disk full,
DB down) raise so Airflow retries, and the next try starts the copy again from nothing. A source
file is deleted only when ``EARMARK_TRANSFER_DELETE_SOURCE`` is on, and then only after its
companion digest matched the copied bytes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa

from earmark.config import Settings
from earmark.ingest.incoming import ARCHIVE_SUFFIXES, MARKER_SUFFIX, marker_text, parse_marker
from earmark.statuses import TransferStatus
from earmark.store.db import Store

log = logging.getLogger(__name__)

_CHUNK = 4 * 1024 * 1024
_LOCK_BUCKETS = 64


@dataclass(frozen=True)
class SourceArchive:
    """One archive seen at the source."""

    uri: str
    name: str
    bytes: int
    mtime: float
    has_companion: bool


@dataclass(frozen=True)
class CopyResult:
    """What one copy did: safe for XCom and logs."""

    transfer_id: int
    name: str
    status: str
    action: str  # copied | already_done | recovered | failed
    error: str | None = None


SFTP_SCHEMES = ("sftp", "ssh")


class TransferSourceError(RuntimeError):
    """The source cannot be reached, or not trusted: the task fails and Airflow retries it."""


def _source_path(uri: str) -> Any:
    from airflow.sdk import ObjectStoragePath  # noqa: PLC0415 - Airflow only when transferring

    return ObjectStoragePath(uri)


def _redacted(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.hostname or ''}{parts.path}" if parts.scheme else uri


def connect_source(settings: Settings, uri: str) -> None:
    """For an SFTP source, bind Airflow's store for its connection to an SFTP filesystem that
    checks the server's host key against ``EARMARK_TRANSFER_KNOWN_HOSTS`` (once per process,
    again after ``connect_source_lost``). Other schemes need nothing."""
    parts = urlsplit(uri)
    if parts.scheme not in SFTP_SCHEMES:
        return
    conn_id = parts.username
    if not conn_id:
        raise TransferSourceError(
            f"an SFTP source names its Airflow connection: {parts.scheme}://<conn_id>@host/path"
        )
    key = (parts.scheme, conn_id)
    if key in _CONNECTED:
        return
    known_hosts = settings.transfer_known_hosts
    if not known_hosts.is_file():
        raise TransferSourceError(
            f"no known_hosts file at {known_hosts} (EARMARK_TRANSFER_KNOWN_HOSTS): the SFTP"
            f" server's host key must be checked; add it with ssh-keyscan -p <port>"
            f" {parts.hostname} >> {known_hosts} and compare the fingerprint with the vendor's"
        )
    from airflow.providers.sftp.fs.sftp import get_fs  # noqa: PLC0415
    from airflow.sdk.io import attach  # noqa: PLC0415

    try:
        fs = get_fs(conn_id, {"known_hosts": str(known_hosts), "skip_instance_cache": True})
    except Exception as exc:
        _CONNECTED.discard(key)
        raise TransferSourceError(
            f"cannot connect to the transfer source {_redacted(uri)} (connection {conn_id}):"
            f" {type(exc).__name__}: {exc}"
        ) from exc
    attach(parts.scheme, conn_id).fs = fs  # what ObjectStoragePath(uri) then uses
    _CONNECTED.add(key)


_CONNECTED: set[tuple[str, str]] = set()


def _stat(path: Any) -> tuple[int, float]:
    st = path.stat()
    size = getattr(st, "st_size", None)
    mtime = getattr(st, "st_mtime", None)
    if size is None or mtime is None:  # some fsspec backends answer with a plain dict
        size = st.get("size")
        mtime = st.get("mtime") or st.get("LastModified") or st.get("modified")
    if isinstance(mtime, datetime):
        mtime = mtime.timestamp()
    return int(size), float(mtime)


def is_archive(name: str) -> bool:
    return name.endswith(ARCHIVE_SUFFIXES) and not name.startswith(".")


def list_source(source: str) -> tuple[list[SourceArchive], list[str]]:
    """Archives at ``source`` (top level) and the names of the other files there (ignored)."""
    root = _source_path(source)
    entries = {p.name: p for p in root.iterdir() if p.is_file()}
    archives, ignored = [], []
    for name in sorted(entries):
        if is_archive(name):
            size, mtime = _stat(entries[name])
            archives.append(
                SourceArchive(
                    str(entries[name]), name, size, mtime, f"{name}{MARKER_SUFFIX}" in entries
                )
            )
        elif not (name.endswith(MARKER_SUFFIX) and is_archive(name.removesuffix(MARKER_SUFFIX))):
            ignored.append(name)
    return archives, ignored


def is_settled(archive: SourceArchive, settle_seconds: float, now: float) -> bool:
    """Complete: a companion digest exists, or size and mtime are unchanged for the settle time."""
    return archive.has_companion or now - archive.mtime >= settle_seconds


def discover(settings: Settings, store: Store, now: float | None = None) -> list[int]:
    """List the source, record every settled archive in the ledger; ids of ``pending`` rows.

    A ``failed`` row goes back to ``pending`` when the source file changed (size or mtime), so a
    re-upload is retried; a ``copied`` row is never touched again.
    """
    if not settings.transfer_source:
        log.info("EARMARK_TRANSFER_SOURCE is empty: nothing to transfer")
        return []
    now = time.time() if now is None else now
    connect_source(settings, settings.transfer_source)
    try:
        archives, ignored = list_source(settings.transfer_source)
    except (OSError, TransferSourceError) as exc:
        connect_source_lost(settings.transfer_source)
        raise TransferSourceError(
            f"cannot list the transfer source {_redacted(settings.transfer_source)}:"
            f" {type(exc).__name__}: {exc}"
        ) from exc
    if ignored:
        log.info(
            "ignoring %d non-archive file(s) at the source: %s",
            len(ignored),
            ", ".join(ignored[:20]),
        )
    settled = [a for a in archives if is_settled(a, settings.transfer_settle_seconds, now)]
    for waiting in sorted({a.name for a in archives} - {a.name for a in settled}):
        log.info(
            "%s is still arriving (changed in the last %ss, no companion digest)",
            waiting,
            settings.transfer_settle_seconds,
        )
    with store.begin() as conn:
        for archive in settled:
            conn.execute(
                sa.text(
                    "INSERT INTO transfers (source_uri, name, bytes, source_mtime)"
                    " VALUES (:uri, :name, :bytes, :mtime)"
                    " ON CONFLICT (source_uri) DO UPDATE SET bytes = excluded.bytes,"
                    "  source_mtime = excluded.source_mtime, status = 'pending', error = NULL"
                    " WHERE transfers.status = 'pending' OR (transfers.status = 'failed' AND"
                    "  (transfers.bytes <> excluded.bytes"
                    "   OR transfers.source_mtime <> excluded.source_mtime))"
                ),
                {
                    "uri": archive.uri,
                    "name": archive.name,
                    "bytes": archive.bytes,
                    "mtime": archive.mtime,
                },
            )
        _fail_vanished(conn, settings.transfer_source, {a.uri for a in archives})
        ids = list(
            conn.execute(
                sa.text("SELECT id FROM transfers WHERE status = 'pending' ORDER BY id")
            ).scalars()
        )
    log.info(
        "source %s: %d archive(s), %d settled, %d pending copy",
        settings.transfer_source,
        len(archives),
        len(settled),
        len(ids),
    )
    return [int(i) for i in ids]


def connect_source_lost(uri: str) -> None:
    """Forget an SFTP connection that failed: the next use connects again."""
    parts = urlsplit(uri)
    if parts.scheme in SFTP_SCHEMES and parts.username:
        _CONNECTED.discard((parts.scheme, parts.username))


def _fail_vanished(conn: sa.Connection, source: str, present: set[str]) -> None:
    prefix = str(_source_path(source)).rstrip("/") + "/"
    rows = conn.execute(
        sa.text("SELECT id, source_uri FROM transfers WHERE status = 'pending'")
    ).all()
    for row_id, uri in rows:
        if uri.startswith(prefix) and uri not in present:
            conn.execute(
                sa.text(
                    "UPDATE transfers SET status = 'failed', error = :e WHERE id = :id"
                    " AND status = 'pending'"
                ),
                {"id": row_id, "e": "source_vanished: the source file disappeared before copy"},
            )
            log.warning(
                "transfer %s: %s vanished from the source before it was copied", row_id, uri
            )


def transfer_name(store: Store, transfer_id: int) -> str:
    """The archive name of a ledger row (the copy task's label)."""
    return store.scalar("SELECT name FROM transfers WHERE id = :id", id=transfer_id) or "?"


@contextlib.contextmanager
def _row_lock(settings: Settings, transfer_id: int) -> Iterator[None]:
    """One copy of a ledger row at a time (a Celery redelivery waits for the first to finish)."""
    folder = settings.data_root / ".transfer-locks"
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{transfer_id % _LOCK_BUCKETS:02d}.lock").open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _companion_digest(uri: str) -> tuple[bool, str | None]:
    """(exists, digest or None if unreadable) for the companion ``NAME.sha256`` at the source."""
    companion = _source_path(f"{uri}{MARKER_SUFFIX}")
    if not companion.exists():
        return False, None
    return True, parse_marker(companion.read_text(encoding="ascii", errors="replace"))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SourceReadError(Exception):
    """An error raised by the source (not by our own disk): ``__cause__`` holds it."""


def _from_source(call: Any, *args: Any) -> Any:
    """``call(*args)`` on the source; whatever it raises comes back as a SourceReadError, so a
    failure of the local disk (ENOSPC, a read-only incoming/) is never taken for the source's."""
    try:
        return call(*args)
    except Exception as exc:
        raise SourceReadError(f"{type(exc).__name__}: {exc}") from exc


def stream_to_partial(uri: str, partial: Path) -> tuple[str, int]:
    """Copy the source into ``partial`` (fsynced), hashing on the fly; (sha256, bytes).
    Source errors raise SourceReadError; local ones raise as they are."""
    digest, total = hashlib.sha256(), 0
    src = _from_source(lambda: _source_path(uri).open("rb"))
    with src, partial.open("wb") as dst:
        while chunk := _from_source(src.read, _CHUNK):
            digest.update(chunk)
            dst.write(chunk)
            total += len(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    return digest.hexdigest(), total


def publish(incoming: Path, partial: Path, name: str, digest: str) -> None:
    """Rename ``partial`` to ``incoming/NAME``, then write the marker with write-then-rename."""
    partial.replace(incoming / name)
    _fsync_dir(incoming)
    write_marker(incoming, name, digest)


def write_marker(incoming: Path, name: str, digest: str) -> None:
    tmp = incoming / f".{name}{MARKER_SUFFIX}.partial"
    with tmp.open("w", encoding="ascii") as handle:
        handle.write(marker_text(digest, name))
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(incoming / f"{name}{MARKER_SUFFIX}")
    _fsync_dir(incoming)


def _already_delivered(settings: Settings, store: Store, name: str, digest: str | None) -> bool:
    """A previous attempt got as far as the marker (or the daily DAG already took the archive)."""
    if not digest:
        return False
    marker = settings.incoming / f"{name}{MARKER_SUFFIX}"
    if (
        marker.is_file()
        and parse_marker(marker.read_text(encoding="ascii", errors="replace")) == digest
    ):
        return True
    return bool(store.scalar("SELECT count(*) FROM archives WHERE sha256 = :s", s=digest))


def _set(store: Store, transfer_id: int, status: str, **values: Any) -> None:
    assignments = ", ".join(f"{k} = :{k}" for k in values)
    copied = ", copied_at = CURRENT_TIMESTAMP" if status == TransferStatus.COPIED else ""
    with store.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE transfers SET status = :status"
                f"{', ' if values else ''}{assignments}{copied}"
                " WHERE id = :id"
            ),
            {"id": transfer_id, "status": status, **values},
        )


def copy_one(settings: Settings, store: Store, transfer_id: int) -> CopyResult:
    """Copy one pending ledger row into ``incoming/``; a no-op for a row already settled."""
    with _row_lock(settings, transfer_id):
        row = store.rows(
            "SELECT name, source_uri, status, sha256, error FROM transfers WHERE id = :id",
            id=transfer_id,
        )
        if not row:
            raise LookupError(f"transfer {transfer_id} is not in the ledger")
        name, uri, status, recorded, error = row[0]
        if status != TransferStatus.PENDING:
            log.info("%s already %s: nothing to do", name, status)
            return CopyResult(transfer_id, name, status, "already_done", error)
        incoming = settings.incoming
        incoming.mkdir(parents=True, exist_ok=True)
        if _already_delivered(settings, store, name, recorded):
            _set(store, transfer_id, TransferStatus.COPIED)
            log.info("%s was delivered by an earlier attempt; ledger updated", name)
            return CopyResult(transfer_id, name, TransferStatus.COPIED, "recovered")
        marker = incoming / f"{name}{MARKER_SUFFIX}"
        if marker.exists():
            # Another delivery of this name still waits for the daily DAG: never replace it.
            raise FileExistsError(
                f"incoming/{marker.name} belongs to another delivery; "
                "retrying once the daily DAG has taken it"
            )
        partial = incoming / f".{name}.partial"
        connect_source(settings, uri)
        try:
            problem, digest, size, has_companion, expected = _copy_checked(uri, partial, name)
            if problem:
                partial.unlink(missing_ok=True)
                _set(store, transfer_id, TransferStatus.FAILED, error=problem, sha256=digest)
                log.warning("%s not transferred: %s", name, problem)
                return CopyResult(transfer_id, name, TransferStatus.FAILED, "failed", problem)
            assert digest is not None, "a copy without a problem has its digest"
            _set(store, transfer_id, TransferStatus.PENDING, sha256=digest, bytes=size)
            publish(incoming, partial, name, digest)
        finally:
            partial.unlink(missing_ok=True)
        _set(store, transfer_id, TransferStatus.COPIED)
        log.info("%s copied to incoming/ (%d bytes, sha256 %s)", name, size, digest)
        if settings.transfer_delete_source:
            _delete_source(uri, name, has_companion and expected == digest)
        return CopyResult(transfer_id, name, TransferStatus.COPIED, "copied")


def _copy_checked(
    uri: str, partial: Path, name: str
) -> tuple[str | None, str | None, int, bool, str | None]:
    """Stream the source into ``partial`` and check it: (problem or None, sha256, bytes,
    has companion, companion digest). A problem with the file itself is returned; a lost
    connection raises (the partial file is removed by the caller, the next try starts over)."""
    try:
        before = _from_source(lambda: _stat(_source_path(uri)))
        digest, size = stream_to_partial(uri, partial)
        after = _from_source(lambda: _stat(_source_path(uri)))
        has_companion, expected = _from_source(_companion_digest, uri)
    except SourceReadError as failure:
        exc = failure.__cause__ or failure
        kind = _source_error(exc)
        if kind is None:
            raise exc from None
        if kind == "vanished":
            return (
                "source_vanished: the source file disappeared during the copy",
                None,
                0,
                False,
                None,
            )
        if kind == "unreadable":
            return f"source_unreadable: the source refused the read ({exc})", None, 0, False, None
        connect_source_lost(uri)
        log.warning(
            "copy of %s interrupted (%s: %s): the partial file is removed; the next try copies"
            " it again from the start",
            name,
            type(exc).__name__,
            exc,
        )
        raise TransferSourceError(
            f"copy of {name} interrupted: {type(exc).__name__}: {exc}"
        ) from exc
    if after != before or size != before[0]:
        return (
            f"source_changed: {before[0]} bytes when the copy started, {after[0]} when it ended,"
            f" {size} read: still being uploaded",
            digest,
            size,
            has_companion,
            expected,
        )
    if has_companion and expected is None:
        problem = "bad_companion: the source's .sha256 holds no sha256 hex digest"
    elif has_companion and expected != digest:
        problem = f"checksum_mismatch: source says {expected}, copied bytes are {digest}"
    else:
        problem = None
    return problem, digest, size, has_companion, expected


def _source_error(exc: BaseException) -> str | None:
    """What an error the source raised means: the file is gone, it may not be read, or the
    connection was lost (an SFTP client raises its own errors, not always OSError); None for
    anything else."""
    name = type(exc).__name__
    if isinstance(exc, FileNotFoundError) or name == "SFTPNoSuchFile":
        return "vanished"
    if isinstance(exc, PermissionError) or name == "SFTPPermissionDenied":
        return "unreadable"
    if isinstance(exc, OSError) or type(exc).__module__.startswith("asyncssh"):
        return "lost"
    return None


def _delete_source(uri: str, name: str, verified: bool) -> None:
    """EARMARK_TRANSFER_DELETE_SOURCE: remove the source archive and its companion, only when
    the companion's digest matched what was copied."""
    if not verified:
        log.info("%s kept at the source: no companion digest confirmed the copy", name)
        return
    try:
        _source_path(f"{uri}{MARKER_SUFFIX}").unlink()
        _source_path(uri).unlink()
    except OSError as exc:
        log.warning(
            "%s copied but not deleted at the source: %s: %s", name, type(exc).__name__, exc
        )
        return
    log.info("%s deleted at the source (its digest matched the copy)", name)


def ledger_counts(store: Store) -> dict[str, int]:
    """Rows per status: where the transfers stand."""
    return {
        str(s): int(n)
        for s, n in store.rows(
            "SELECT status, count(*) FROM transfers GROUP BY status ORDER BY status"
        )
    }
