"""Unpack a registered archive: extract it into its own home while hashing it, judge its delivery
on those bytes, validate every file and register them (see `earmark.ingest.intake`)."""

from __future__ import annotations

import hashlib
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import sqlalchemy as sa

from earmark.config import Settings
from earmark.ingest import intake
from earmark.ingest.extract import ArchiveRejected, ExtractLimits, ExtractResult, safe_extract
from earmark.ingest.homes import (
    archive_quarantine,
    audio_home,
    remove_path,
    settle_claimed,
    settle_delivery,
    write_reason,
)
from earmark.ingest.intake import log
from earmark.ingest.validate import AudioInfo, AudioLimits, AudioRejected, validate_audio
from earmark.ingest.verdicts import archive_with, mismatch, same_bytes
from earmark.names import printable
from earmark.statuses import ArchiveStatus, DeliveryStatus, FileStatus
from earmark.store.db import Store

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


def archive_name(store: Store, archive_id: int) -> str:
    """An archive's delivered name (names with control or bidi characters are never registered)."""
    return store.scalar("SELECT name FROM archives WHERE id = :id", id=archive_id)


def unpack_groups(archive_ids: list[int], max_tasks: int) -> list[list[int]]:
    """``archive_ids`` cut into at most ``max_tasks`` groups of even size, in order.

    One mapped unpack task per group: one archive each while they fit, so the UI names each
    archive; past ``max_tasks`` (a day of thousands) a few archives per task, so the run never
    maps more than Airflow allows (``[core] max_map_length``) and its grid stays readable.
    """
    if max_tasks < 1:
        raise ValueError(f"max_tasks must be at least 1, got {max_tasks}")
    size = max(1, math.ceil(len(archive_ids) / max_tasks))
    return [archive_ids[start : start + size] for start in range(0, len(archive_ids), size)]


def group_label(store: Store, archive_ids: list[int]) -> str:
    """The UI's name for an unpack task: its archive, or its first archive and the count."""
    first = archive_name(store, archive_ids[0])
    return first if len(archive_ids) == 1 else f"{first} +{len(archive_ids) - 1} more"


def _validate(path: Path, limits: AudioLimits) -> AudioInfo | AudioRejected:
    try:
        return validate_audio(path, limits)
    except AudioRejected as rejected:
        return rejected


def _clear_unfinished_attempt(store: Store, archive_id: int, *homes: Path) -> None:
    """Remove what an interrupted unpack of this archive left in its own homes.

    Safe because the homes are keyed by this archive's id and no row refers to anything in
    them while it is ``registered`` (its files are registered with the status change).
    """
    referenced = store.scalar(
        "SELECT count(*) FROM audio_files WHERE archive_id = :id", id=archive_id
    )
    if referenced:
        raise RuntimeError(f"archive {archive_id} is registered but {referenced} files refer to it")
    for home in homes:
        remove_path(home)
        for partial in home.parent.glob(f".tmp-{home.name}-*"):  # an extraction cut short
            remove_path(partial)


def _judge_bytes(store: Store, row: sa.Row, actual: str, home: Path) -> str | None:
    """Record the digest an unpack read; None when the archive stands, else what its delivery
    became instead (``rejected``: not the bytes its marker named; ``duplicate``: bytes another
    archive has), in which case the archive row is gone and its delivery points elsewhere.

    The unique index on ``archives.sha256`` decides between two unpacks of equal bytes. A
    superseded archive's extraction (``home``) is removed before its row goes, so a crash in
    between leaves an archive that the next try unpacks again, never files no row explains.
    """
    expected = row.sha256 or row.declared_sha256
    if expected is not None and actual != expected:
        verdict, reason, first_id = DeliveryStatus.REJECTED, str(mismatch(expected, actual)), None
    else:
        try:
            with store.begin() as conn:
                conn.execute(
                    sa.text("UPDATE archives SET sha256 = :sha WHERE id = :id"),
                    {"sha": actual, "id": row.id},
                )
                if row.delivery_id is not None:
                    conn.execute(
                        sa.text("UPDATE deliveries SET sha256 = :sha WHERE id = :id"),
                        {"sha": actual, "id": row.delivery_id},
                    )
        except sa.exc.IntegrityError:
            pass
        else:
            return None
        with store.engine.connect() as conn:
            first = archive_with(conn, actual)
        if first is None:  # the archive that had them let them go (a readmission): try again
            return _judge_bytes(store, row, actual, home)
        verdict, reason, first_id = DeliveryStatus.DUPLICATE, same_bytes(first), first.id
    remove_path(home)
    intake.step_done("unpack.superseded_removed")
    with store.begin() as conn:
        if row.delivery_id is None:  # registered before deliveries were recorded: keep its row
            conn.execute(
                sa.text("UPDATE archives SET status = 'rejected', error = :e WHERE id = :id"),
                {"e": reason, "id": row.id},
            )
            return ArchiveStatus.REJECTED
        conn.execute(
            sa.text(
                "UPDATE deliveries SET status = :status, archive_id = :first, sha256 = :sha,"
                " reason = :reason WHERE id = :id"
            ),
            {
                "status": verdict,
                "first": first_id,
                "sha": actual,
                "reason": reason,
                "id": row.delivery_id,
            },
        )
        conn.execute(sa.text("DELETE FROM archives WHERE id = :id"), {"id": row.id})
    return verdict


def unpack_archive(
    settings: Settings,
    store: Store,
    archive_id: int,
    workers: int | None = None,
    limits: ExtractLimits | None = None,
) -> UnpackSummary:
    """Extract one registered archive into its own home while hashing it, judge its delivery on
    the digest, then validate every file and register them."""
    rows = store.rows(
        "SELECT a.*, d.token, d.id AS delivery_id, d.declared_sha256 FROM archives a"
        " LEFT JOIN deliveries d ON d.archive_id = a.id AND d.status = 'registered'"
        " WHERE a.id = :id",
        id=archive_id,
    )
    if not rows:  # its delivery was judged on its bytes by an earlier try, which then died
        settle_claimed(settings, store)
        return UnpackSummary(archive_id, "", "superseded")
    row = rows[0]
    if row.status != ArchiveStatus.REGISTERED:
        if row.token:
            settle_delivery(settings, store, row.token)  # an earlier try died before the move
        return _summary(store, row)
    run_date = str(row.run_date)
    home = audio_home(settings, run_date, archive_id)
    quarantine = archive_quarantine(settings, run_date, archive_id)
    reason_file = quarantine.with_name(f"{quarantine.name}.reason.json")
    _clear_unfinished_attempt(store, archive_id, home, quarantine, reason_file)
    intake.step_done("unpack.cleared")
    if not os.path.lexists(row.path):
        where = (
            "its claimed folder is gone"
            if row.token and not (settings.claimed / row.token).exists()
            else "the archive is gone from its claimed folder"
        )
        vanished = ArchiveRejected("vanished", f"{printable(row.name)}: {where}; nothing unpacked")
        return _reject_content(settings, store, row, vanished, reason_file)
    limits = limits or ExtractLimits(
        max_compression_ratio=settings.max_compression_ratio,
        free_disk_margin_bytes=int(settings.free_disk_margin_mb * 1024**2),
        free_disk_margin_share=settings.free_disk_margin_share,
    )
    digest = hashlib.sha256()
    rejected: ArchiveRejected | None = None
    try:
        extracted = safe_extract(Path(row.path), home, limits, digest)
    except ArchiveRejected as refusal:
        rejected = refusal
    intake.step_done("unpack.extracted")
    superseded = _judge_bytes(store, row, digest.hexdigest(), home)
    if superseded is not None:
        if row.token:
            settle_delivery(settings, store, row.token)
        log.info("archive #%s superseded: its delivery is %s", archive_id, superseded)
        return UnpackSummary(archive_id, row.name, superseded)
    if rejected is not None:
        return _reject_content(settings, store, row, rejected, reason_file)
    return _register_members(settings, store, row, extracted, workers, quarantine)


def _reject_content(
    settings: Settings, store: Store, row: sa.Row, rejected: ArchiveRejected, reason_file: Path
) -> UnpackSummary:
    write_reason(reason_file, {"archive": row.id, "name": row.name, "reason": str(rejected)})
    intake.step_done("unpack.reason")
    with store.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE archives SET status = 'rejected', error = :e,"
                " updated_at = CURRENT_TIMESTAMP WHERE id = :id AND status = 'registered'"
            ),
            {"e": str(rejected), "id": row.id},
        )
    log.warning("archive #%s rejected: %s", row.id, rejected.code)
    intake.step_done("unpack.rejected")
    if row.token:
        settle_delivery(settings, store, row.token)
    return _summary(store, store.rows("SELECT * FROM archives WHERE id = :id", id=row.id)[0])


def _register_members(
    settings: Settings,
    store: Store,
    row: sa.Row,
    extracted: ExtractResult,
    workers: int | None,
    quarantine: Path,
) -> UnpackSummary:
    """Validate every extracted file, quarantine the bad ones, register them all."""
    archive_id = row.id
    home = extracted.directory
    reason_file = quarantine.with_name(f"{quarantine.name}.reason.json")
    audio_limits = AudioLimits(max_duration_s=settings.max_audio_seconds)
    members = list(extracted.members)
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        results = list(pool.map(lambda m: _validate(home / m.path, audio_limits), members))

    records = []
    for member, result in zip(members, results, strict=True):
        record = {
            "archive_id": archive_id,
            "member_path": member.path,
            "bytes": member.size,
            "sha256": None,
            "format": None,
            "duration_s": None,
            "sample_rate": None,
            "channels": None,
            "silent": 0,
            "status": FileStatus.READY,
            "error": None,
            "path": str(home / member.path),
        }
        if isinstance(result, AudioRejected):
            target = quarantine / "files" / member.path
            target.parent.mkdir(parents=True, exist_ok=True)
            (home / member.path).rename(target)
            intake.step_done("unpack.file_quarantined")
            record.update(status=FileStatus.QUARANTINED, error=str(result), path=str(target))
        else:
            record.update(
                sha256=result.sha256,
                format=result.format,
                duration_s=result.duration_s,
                sample_rate=result.sample_rate,
                channels=result.channels,
                silent=int(result.silent),
            )
        records.append(record)
    quarantined = [r for r in records if r["status"] == FileStatus.QUARANTINED]
    if quarantined:
        write_reason(
            reason_file,
            {
                "archive": archive_id,
                "name": row.name,
                "files": {r["member_path"]: r["error"] for r in quarantined},
            },
        )

    intake.step_done("unpack.validated")
    register_files(store, archive_id, records)
    intake.step_done("unpack.registered")
    if row.token:  # archives registered before deliveries were recorded have none
        settle_delivery(settings, store, row.token)
    summary = UnpackSummary(
        archive_id,
        row.name,
        ArchiveStatus.UNPACKED,
        ready=len(records) - len(quarantined),
        quarantined=len(quarantined),
    )
    log.info("unpacked %s", asdict(summary))
    return summary


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
            conn.execute(insert, records[start : start + _INSERT_CHUNK])
        conn.execute(
            sa.text(
                "UPDATE archives SET status = 'unpacked', n_files = :n,"
                " updated_at = CURRENT_TIMESTAMP WHERE id = :id AND status = 'registered'"
            ),
            {"n": len(records), "id": archive_id},
        )


def _summary(store: Store, row: sa.Row) -> UnpackSummary:
    counts = store.rows(
        "SELECT COALESCE(SUM(CASE WHEN status = 'quarantined' THEN 0 ELSE 1 END), 0) AS ready,"
        " COALESCE(SUM(CASE WHEN status = 'quarantined' THEN 1 ELSE 0 END), 0) AS quarantined"
        " FROM audio_files WHERE archive_id = :id",
        id=row.id,
    )[0]
    return UnpackSummary(
        row.id,
        row.name,
        row.status,
        ready=int(counts.ready),
        quarantined=int(counts.quarantined),
        error=row.error,
    )
