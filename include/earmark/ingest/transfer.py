"""Archive transfer: copy settled archives from a source into ``incoming/``, marker last.

The source is an Airflow ``ObjectStoragePath`` URL: ``file:///srv/dropbox``, or
``sftp://conn_id@host/path`` read through Airflow's SFTP provider (``sshfs``) with the connection
``conn_id`` (host, port, login, ``key_file``), its host key always checked against
``EARMARK_TRANSFER_KNOWN_HOSTS`` (the provider alone would not check it). Reaching, listing and
reading the source is `earmark.ingest.transfer_source`; the ledger and the copy are here. A source
archive is complete when a companion ``NAME.sha256`` sits beside it, or else once its size and
mtime have not changed for ``EARMARK_TRANSFER_SETTLE_SECONDS``; a file still being uploaded is
never copied.

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
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from earmark.config import Settings
from earmark.ingest.incoming import MARKER_SUFFIX, marker_text, parse_marker
from earmark.ingest.transfer_source import (
    SourceArchive,
    SourceReadError,
    TransferSourceError,
    companion_digest,
    connect_source,
    connect_source_lost,
    from_source,
    list_source,
    redacted,
    source_error,
    source_path,
    source_stat,
    stream_to_partial,
)
from earmark.statuses import TransferStatus
from earmark.store.db import Store

log = logging.getLogger(__name__)

_LOCK_BUCKETS = 64


@dataclass(frozen=True)
class CopyResult:
    """What one copy did: safe for XCom and logs."""

    transfer_id: int
    name: str
    status: str
    action: str  # copied | already_done | recovered | failed
    error: str | None = None


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
            f"cannot list the transfer source {redacted(settings.transfer_source)}:"
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


def _fail_vanished(conn: sa.Connection, source: str, present: set[str]) -> None:
    prefix = str(source_path(source)).rstrip("/") + "/"
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


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
        before = from_source(lambda: source_stat(source_path(uri)))
        digest, size = stream_to_partial(uri, partial)
        after = from_source(lambda: source_stat(source_path(uri)))
        has_companion, expected = from_source(companion_digest, uri)
    except SourceReadError as failure:
        exc = failure.__cause__ or failure
        kind = source_error(exc)
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


def _delete_source(uri: str, name: str, verified: bool) -> None:
    """EARMARK_TRANSFER_DELETE_SOURCE: remove the source archive and its companion, only when
    the companion's digest matched what was copied."""
    if not verified:
        log.info("%s kept at the source: no companion digest confirmed the copy", name)
        return
    try:
        source_path(f"{uri}{MARKER_SUFFIX}").unlink()
        source_path(uri).unlink()
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
