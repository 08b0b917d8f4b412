"""Archive intake: pick up ready archives, register them, unpack and register their files.

Every archive that arrives ends in one queryable state: ``archives.status`` is ``unpacked`` (its
files registered, the archive in ``processed/``) or ``rejected`` (the reason in ``error`` and in a
reason file beside it in ``quarantine/``); a second delivery of the same bytes goes to
``processed/duplicates/``. Input problems never raise; infrastructure problems (DB down, disk
full) do, so that Airflow retries with the archive left where it was.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from earmark.config import Settings
from earmark.contract import (
    ARCHIVE_SUFFIXES,
    MARKER_SUFFIX,
    marker_path,
    parse_marker,
    sha256_file,
)
from earmark.ingest.extract import ArchiveRejected, ExtractLimits, safe_extract
from earmark.ingest.validate import AudioInfo, AudioLimits, AudioRejected, validate_audio
from earmark.store.db import Store

log = logging.getLogger(__name__)

_INSERT_CHUNK = 1000


@dataclass(frozen=True)
class UnpackSummary:
    """What one unpack produced: counts only, safe for XCom and logs."""

    archive_id: int
    name: str
    status: str
    ready: int = 0
    quarantined: int = 0
    error: str | None = None


def read_marker(marker: Path) -> str:
    """The hex digest in a ``NAME.sha256`` marker (``sha256sum`` format accepted)."""
    digest = parse_marker(marker.read_text(encoding="ascii", errors="replace"))
    if digest is None:
        raise ArchiveRejected("bad_marker", f"{marker.name} does not hold a sha256 hex digest")
    return digest


def ready_markers(incoming: Path) -> list[Path]:
    """Markers in ``incoming/``, oldest first. An archive without its marker is never touched."""
    if not incoming.is_dir():
        return []
    markers = [p for p in incoming.iterdir() if p.name.endswith(MARKER_SUFFIX) and p.is_file()]
    return sorted(markers, key=lambda p: (p.stat().st_mtime, p.name))


def _move(src: Path, dest_dir: Path) -> Path:
    """Move ``src`` into ``dest_dir`` (same volume: a rename), never overwriting another file."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / src.name
    if dest.exists() and not src.samefile(dest):
        dest = dest_dir / f"{src.name}.{int(time.time() * 1000)}"
    src.replace(dest)
    return dest


def _write_reason(directory: Path, name: str, reason: dict[str, object]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.reason.json").write_text(json.dumps(reason, indent=2), encoding="utf-8")


def _quarantine_archive(
    settings: Settings, archive: Path, marker: Path | None, run_date: str, code: str, detail: str
) -> Path:
    target = settings.quarantine / run_date
    moved = _move(archive, target) if archive.exists() else target / archive.name
    if marker is not None and marker.exists():
        _move(marker, target)
    _write_reason(target, archive.name, {"archive": archive.name, "code": code, "detail": detail})
    log.warning("archive %s quarantined: %s", archive.name, code)
    return moved


def register_archives(settings: Settings, store: Store, run_date: str) -> list[int]:
    """Register every archive whose marker is present; return the ids still to unpack.

    Idempotent on sha256: a rerun or a second delivery of the same bytes registers nothing new.
    Archives of ``run_date`` left ``registered`` by an earlier failed run are returned too.
    """
    store.migrate()
    settings.ensure_layout()
    for marker in ready_markers(settings.incoming):
        _register_one(settings, store, marker, run_date)
    rows = store.rows(
        "SELECT id FROM archives WHERE run_date = :d AND status = 'registered' ORDER BY id",
        d=run_date,
    )
    return [row.id for row in rows]


def _register_one(settings: Settings, store: Store, marker: Path, run_date: str) -> None:
    archive = marker.with_name(marker.name.removesuffix(MARKER_SUFFIX))
    if not archive.exists():
        _write_reason(settings.quarantine / run_date, marker.name,
                      {"marker": marker.name, "code": "marker_without_archive"})
        _move(marker, settings.quarantine / run_date)
        return
    try:
        expected = read_marker(marker)
    except ArchiveRejected as rejected:
        _reject_unregistered(settings, store, archive, marker, run_date, rejected)
        return
    if not archive.name.endswith(ARCHIVE_SUFFIXES):
        _reject_unregistered(settings, store, archive, marker, run_date, ArchiveRejected(
            "not_a_tar", f"{archive.name}: expected one of {', '.join(ARCHIVE_SUFFIXES)}"))
        return
    actual = sha256_file(archive)
    if actual != expected:
        _reject_unregistered(settings, store, archive, marker, run_date, ArchiveRejected(
            "checksum_mismatch", f"marker says {expected[:12]}…, archive is {actual[:12]}…"),
            sha=actual)
        return
    with store.begin() as conn:
        new_id = conn.execute(sa.text(
            "INSERT INTO archives (name, sha256, run_date, status, path, bytes)"
            " VALUES (:name, :sha, :d, 'registered', :path, :bytes)"
            " ON CONFLICT (sha256) DO NOTHING RETURNING id"
        ), {"name": archive.name, "sha": actual, "d": run_date, "path": str(archive),
            "bytes": archive.stat().st_size}).scalar()
        if new_id is not None:
            log.info("registered archive %s as #%s", archive.name, new_id)
            return
        existing = conn.execute(sa.text(
            "SELECT id, status, path FROM archives WHERE sha256 = :sha"), {"sha": actual}).one()
    if existing.status == "registered" and Path(existing.path) == archive:
        return  # a retried registration: unpack will pick it up
    moved = _move(archive, settings.processed / "duplicates")
    _move(marker, settings.processed / "duplicates")
    log.info("archive %s duplicates #%s; moved to %s", archive.name, existing.id, moved.parent)


def _reject_unregistered(
    settings: Settings, store: Store, archive: Path, marker: Path, run_date: str,
    rejected: ArchiveRejected, sha: str | None = None,
) -> None:
    moved = _quarantine_archive(settings, archive, marker, run_date, rejected.code, rejected.detail)
    # Keyed on the actual bytes so the same bad delivery is recorded once.
    if sha is None:
        sha = sha256_file(moved) if moved.exists() else f"missing:{archive.name}"
    with store.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO archives (name, sha256, run_date, status, path, bytes, error)"
            " VALUES (:name, :sha, :d, 'rejected', :path, :bytes, :error)"
            " ON CONFLICT (sha256) DO NOTHING"
        ), {"name": archive.name, "sha": sha, "d": run_date, "path": str(moved),
            "bytes": moved.stat().st_size if moved.exists() else None,
            "error": f"{rejected.code}: {rejected.detail}"})


def _validate(path: Path, limits: AudioLimits) -> AudioInfo | AudioRejected:
    try:
        return validate_audio(path, limits)
    except AudioRejected as rejected:
        return rejected


def unpack_archive(settings: Settings, store: Store, archive_id: int,
                   workers: int | None = None,
                   limits: ExtractLimits | None = None) -> UnpackSummary:
    """Extract one registered archive safely, validate every file, register them in bulk."""
    row = store.rows("SELECT * FROM archives WHERE id = :id", id=archive_id)[0]
    run_date = str(row.run_date)
    archive = Path(row.path)
    if row.status != "registered":
        if row.status == "unpacked" and archive.parent == settings.incoming and archive.exists():
            _file_away(settings, store, archive_id, archive, run_date)  # an earlier try died here
        return _summary(store, row)
    marker = marker_path(archive)
    destination = settings.audio / run_date / _stem(archive.name)
    try:
        extracted = safe_extract(archive, destination, limits or ExtractLimits())
    except ArchiveRejected as rejected:
        moved = _quarantine_archive(settings, archive, marker, run_date,
                                    rejected.code, rejected.detail)
        with store.begin() as conn:
            conn.execute(sa.text(
                "UPDATE archives SET status = 'rejected', error = :e, path = :p,"
                " updated_at = CURRENT_TIMESTAMP WHERE id = :id AND status = 'registered'"
            ), {"e": f"{rejected.code}: {rejected.detail}", "p": str(moved), "id": archive_id})
        row = store.rows("SELECT * FROM archives WHERE id = :id", id=archive_id)[0]
        return _summary(store, row)

    limits = AudioLimits(max_duration_s=settings.max_audio_seconds)
    members = list(extracted.members)
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        results = list(pool.map(lambda m: _validate(extracted.directory / m.path, limits), members))

    quarantine_dir = settings.quarantine / run_date / _stem(archive.name)
    records = []
    for member, result in zip(members, results, strict=True):
        path = extracted.directory / member.path
        record = {"archive_id": archive_id, "member_path": member.path, "bytes": member.size,
                  "sha256": None, "format": None, "duration_s": None, "sample_rate": None,
                  "channels": None, "silent": 0, "status": "ready", "error": None}
        if isinstance(result, AudioRejected):
            target = quarantine_dir / Path(member.path).parent
            moved = _move(path, target)
            record.update(status="quarantined", error=f"{result.code}: {result.detail}",
                          path=str(moved))
        else:
            record.update(sha256=result.sha256, format=result.format,
                          duration_s=result.duration_s, sample_rate=result.sample_rate,
                          channels=result.channels, silent=int(result.silent), path=str(path))
        records.append(record)
    quarantined = [r for r in records if r["status"] == "quarantined"]
    if quarantined:
        _write_reason(quarantine_dir, "files", {
            "archive": archive.name,
            "files": {r["member_path"]: r["error"] for r in quarantined},
        })

    register_files(store, archive_id, records)
    _file_away(settings, store, archive_id, archive, run_date)
    summary = UnpackSummary(archive_id, archive.name, "unpacked",
                            ready=len(records) - len(quarantined), quarantined=len(quarantined))
    log.info("unpacked %s", asdict(summary))
    return summary


def _file_away(settings: Settings, store: Store, archive_id: int, archive: Path,
               run_date: str) -> None:
    """Move a processed archive and its marker to ``processed/<date>/`` and record where."""
    moved = _move(archive, settings.processed / run_date)
    marker = marker_path(archive)
    if marker.exists():
        _move(marker, settings.processed / run_date)
    with store.begin() as conn:
        conn.execute(sa.text("UPDATE archives SET path = :p WHERE id = :id"),
                     {"p": str(moved), "id": archive_id})


def register_files(store: Store, archive_id: int, records: list[dict[str, object]]) -> None:
    """Insert the files and mark the archive unpacked, in one transaction, in chunks."""
    insert = sa.text(
        "INSERT INTO audio_files (archive_id, member_path, sha256, path, bytes, format,"
        " duration_s, sample_rate, channels, silent, status, error)"
        " VALUES (:archive_id, :member_path, :sha256, :path, :bytes, :format, :duration_s,"
        " :sample_rate, :channels, :silent, :status, :error)"
        " ON CONFLICT (archive_id, member_path) DO NOTHING"
    )
    with store.begin() as conn:
        for start in range(0, len(records), _INSERT_CHUNK):
            conn.execute(insert, records[start:start + _INSERT_CHUNK])
        conn.execute(sa.text(
            "UPDATE archives SET status = 'unpacked', n_files = :n, updated_at = CURRENT_TIMESTAMP"
            " WHERE id = :id AND status = 'registered'"
        ), {"n": len(records), "id": archive_id})


def _stem(name: str) -> str:
    for suffix in ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def _summary(store: Store, row: sa.Row) -> UnpackSummary:
    counts = store.rows(
        "SELECT COALESCE(SUM(CASE WHEN status = 'quarantined' THEN 0 ELSE 1 END), 0) AS ready,"
        " COALESCE(SUM(CASE WHEN status = 'quarantined' THEN 1 ELSE 0 END), 0) AS quarantined"
        " FROM audio_files WHERE archive_id = :id", id=row.id)[0]
    return UnpackSummary(row.id, row.name, row.status, ready=int(counts.ready),
                         quarantined=int(counts.quarantined), error=row.error)


def prune_processed(settings: Settings, today: date | None = None) -> list[Path]:
    """Delete dated folders in ``processed/`` older than the retention; returns what went."""
    today = today or datetime.now(UTC).date()
    cutoff = today - timedelta(days=settings.processed_retention_days)
    removed = []
    for folder in _dated_folders(settings.processed.iterdir() if settings.processed.is_dir()
                                 else []):
        if date.fromisoformat(folder.name) < cutoff:
            shutil.rmtree(folder)
            removed.append(folder)
    return removed


def _dated_folders(entries: Iterable[Path]) -> list[Path]:
    dated = []
    for entry in entries:
        try:
            date.fromisoformat(entry.name)
        except ValueError:
            continue
        if entry.is_dir():
            dated.append(entry)
    return dated
