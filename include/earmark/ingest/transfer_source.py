"""The transfer's source: reaching it (a local folder, or SFTP with its host key checked),
listing its archives and reading one; `earmark.ingest.transfer` keeps the ledger and copies.

The source is an Airflow ``ObjectStoragePath`` URL (``file:///srv/dropbox``,
``sftp://conn_id@host/path``). Errors the source raises are told apart from our own disk's
(`SourceReadError`), and sorted into a vanished file, a refused read or a lost connection.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from earmark.config import Settings
from earmark.ingest.formats import ARCHIVE_SUFFIXES
from earmark.ingest.incoming import MARKER_SUFFIX, parse_marker

_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class SourceArchive:
    """One archive seen at the source."""

    uri: str
    name: str
    bytes: int
    mtime: float
    has_companion: bool


SFTP_SCHEMES = ("sftp", "ssh")


_CONNECTED: set[tuple[str, str]] = set()  # (scheme, connection) bound to a checked filesystem


class TransferSourceError(RuntimeError):
    """The source cannot be reached, or not trusted: the task fails and Airflow retries it."""


def source_path(uri: str) -> Any:
    """The ``ObjectStoragePath`` of ``uri`` (Airflow is imported only when transferring)."""
    from airflow.sdk import ObjectStoragePath  # noqa: PLC0415 - Airflow only when transferring

    return ObjectStoragePath(uri)


def redacted(uri: str) -> str:
    """``uri`` for messages: scheme, host and path, never the connection or its credentials."""
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
            f"cannot connect to the transfer source {redacted(uri)} (connection {conn_id}):"
            f" {type(exc).__name__}: {exc}"
        ) from exc
    attach(parts.scheme, conn_id).fs = fs  # what ObjectStoragePath(uri) then uses
    _CONNECTED.add(key)


def source_stat(path: Any) -> tuple[int, float]:
    """(size, mtime) of a source path, whatever shape its backend answers in."""
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
    """A name the transfer copies: an archive suffix, not hidden (an upload's temporary)."""
    return name.endswith(ARCHIVE_SUFFIXES) and not name.startswith(".")


def list_source(source: str) -> tuple[list[SourceArchive], list[str]]:
    """Archives at ``source`` (top level) and the names of the other files there (ignored)."""
    root = source_path(source)
    entries = {p.name: p for p in root.iterdir() if p.is_file()}
    archives, ignored = [], []
    for name in sorted(entries):
        if is_archive(name):
            size, mtime = source_stat(entries[name])
            archives.append(
                SourceArchive(
                    str(entries[name]), name, size, mtime, f"{name}{MARKER_SUFFIX}" in entries
                )
            )
        elif not (name.endswith(MARKER_SUFFIX) and is_archive(name.removesuffix(MARKER_SUFFIX))):
            ignored.append(name)
    return archives, ignored


def connect_source_lost(uri: str) -> None:
    """Forget an SFTP connection that failed: the next use connects again."""
    parts = urlsplit(uri)
    if parts.scheme in SFTP_SCHEMES and parts.username:
        _CONNECTED.discard((parts.scheme, parts.username))


def companion_digest(uri: str) -> tuple[bool, str | None]:
    """(exists, digest or None if unreadable) for the companion ``NAME.sha256`` at the source."""
    companion = source_path(f"{uri}{MARKER_SUFFIX}")
    if not companion.exists():
        return False, None
    return True, parse_marker(companion.read_text(encoding="ascii", errors="replace"))


class SourceReadError(Exception):
    """An error raised by the source (not by our own disk): ``__cause__`` holds it."""


def from_source(call: Any, *args: Any) -> Any:
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
    src = from_source(lambda: source_path(uri).open("rb"))
    with src, partial.open("wb") as dst:
        while chunk := from_source(src.read, _CHUNK):
            digest.update(chunk)
            dst.write(chunk)
            total += len(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    return digest.hexdigest(), total


def source_error(exc: BaseException) -> str | None:
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
