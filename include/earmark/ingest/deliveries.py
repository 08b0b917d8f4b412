"""Deliveries: claim what is ready in ``incoming/`` and record each delivery with its verdict.

A delivery is an archive and its ``.sha256`` marker (or anything else that turned up), taken out
of ``incoming/`` by rename into a ``claimed/<token>/`` of its own, judged (`verdicts`), recorded
in one transaction, then moved to its home (`homes`). See `earmark.ingest.intake` for the whole
protocol.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import stat
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from earmark.config import Settings
from earmark.ingest import intake
from earmark.ingest.homes import settle_delivery
from earmark.ingest.incoming import MARKER_SUFFIX
from earmark.ingest.intake import log
from earmark.ingest.verdicts import (
    Verdict,
    archive_with,
    read_known,
    same_bytes,
    verdict_or_error,
)
from earmark.reasons import code_of
from earmark.statuses import DeliveryStatus
from earmark.store.db import Store

_VERDICT_WORKERS = 4
_claim_sequence = itertools.count()


def _scan_incoming(incoming: Path) -> tuple[list[str], list[str]]:
    """(markers oldest first, odd entries): nothing followed, nothing opened.

    A marker is any entry named ``*.sha256``. An odd entry is anything else that is not a regular
    file and not hidden (producers write hidden temporaries). A regular file without its marker
    is still arriving and is left alone.
    """
    markers: list[tuple[float, str]] = []
    odd: list[str] = []
    if not incoming.is_dir():
        return [], []
    with os.scandir(incoming) as entries:
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if entry.name.endswith(MARKER_SUFFIX):
                markers.append((info.st_mtime, entry.name))
            elif not stat.S_ISREG(info.st_mode) and not entry.name.startswith("."):
                odd.append(entry.name)
    return [name for _, name in sorted(markers)], sorted(odd)


def has_work(settings: Settings) -> bool:
    """Anything for intake to do: a marker or an odd entry in incoming/, or a claimed delivery."""
    markers, odd = _scan_incoming(settings.incoming)
    return bool(markers or odd) or (settings.claimed.is_dir() and any(settings.claimed.iterdir()))


def waiting_deliveries(settings: Settings) -> list[str]:
    """Deliveries ready in incoming/ that no run has taken yet, oldest first (names only)."""
    if not settings.incoming.is_dir():
        return []
    markers, _ = _scan_incoming(settings.incoming)
    return [marker.removesuffix(MARKER_SUFFIX) for marker in markers]


def day_has_work(settings: Settings, store: Store, run_date: str) -> bool:
    """Whether a run for ``run_date`` can start without waiting for deliveries."""
    known = store.scalar("SELECT count(*) FROM archives WHERE run_date = :d", d=run_date)
    return bool(known) or has_work(settings)


def _claim(settings: Settings, first: str, *companions: str) -> Path | None:
    """Rename ``first`` (and its companions, if present) into a fresh ``claimed/<token>/``.

    A rename never follows a link or opens a file, and only one claimer can win it. None when
    ``first`` is gone (another attempt took it).
    """
    token = (
        f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{next(_claim_sequence) % 10**6:06d}"
        f"-{secrets.token_hex(4)}"
    )
    folder = settings.claimed / token
    folder.mkdir(parents=True)
    intake.step_done("claim.folder")
    try:
        (settings.incoming / first).rename(folder / first)
    except FileNotFoundError:
        folder.rmdir()
        return None
    intake.step_done("claim.first")
    for name in companions:
        with contextlib.suppress(FileNotFoundError):
            (settings.incoming / name).rename(folder / name)
            intake.step_done("claim.companion")
    return folder


def _companion(marker: str) -> tuple[str, ...]:
    """The archive a marker names: exactly its name less ``.sha256``; none for a marker of a
    marker (``a.tar.sha256.sha256`` is a delivery of its own, never paired with a marker)."""
    archive = marker.removesuffix(MARKER_SUFFIX)
    return () if archive.endswith(MARKER_SUFFIX) else (archive,)


def _tidy_claimed(settings: Settings, known: set[str]) -> None:
    """Settle what an interrupted claim left in ``claimed/`` with no row: an empty folder goes
    (its delivery is still in incoming/), a lone marker is joined by its archive if that is
    still in incoming/, and a plain file is put in a folder of its own to be judged."""
    for entry in sorted(settings.claimed.iterdir()):
        if entry.name in known:
            continue
        if entry.is_symlink() or not entry.is_dir():  # not a claim: judged as one
            folder = settings.claimed / f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(6)}"
            folder.mkdir()
            entry.rename(folder / entry.name)
            continue
        names = [p.name for p in entry.iterdir()]
        if not names:
            entry.rmdir()
        elif len(names) == 1 and names[0].endswith(MARKER_SUFFIX):
            for archive in _companion(names[0]):
                with contextlib.suppress(FileNotFoundError):
                    (settings.incoming / archive).rename(entry / archive)


def _registered_digests(store: Store, digests: set[str]) -> set[str]:
    query = sa.text("SELECT sha256 FROM archives WHERE sha256 IN :digests").bindparams(
        sa.bindparam("digests", expanding=True)
    )
    known: set[str] = set()
    ordered = sorted(digests)
    with store.engine.connect() as conn:
        for start in range(0, len(ordered), 500):
            known.update(conn.execute(query, {"digests": ordered[start : start + 500]}).scalars())
    return known


def _record(store: Store, folder: Path, verdict: Verdict, run_date: str) -> None:
    """One transaction: the archive (new bytes only) and the delivery with its verdict."""
    status, reason, archive_id = DeliveryStatus.REGISTERED, None, None
    with store.begin() as conn:
        if verdict.rejected is not None:
            status, reason = DeliveryStatus.REJECTED, str(verdict.rejected)
        elif (
            verdict.sha256 is not None and (first := archive_with(conn, verdict.sha256)) is not None
        ):
            # read here: bytes an archive already has (unless a readmission let them go since)
            status, archive_id, reason = DeliveryStatus.DUPLICATE, first.id, same_bytes(first)
        else:
            archive = folder / verdict.name
            archive_id = conn.execute(
                sa.text(
                    "INSERT INTO archives (name, run_date, status, path, bytes)"
                    " VALUES (:name, :d, 'registered', :path, :bytes) RETURNING id"
                ),
                {
                    "name": verdict.name,
                    "d": run_date,
                    "path": str(archive),
                    "bytes": archive.stat().st_size,
                },
            ).scalar()
        conn.execute(
            sa.text(
                "INSERT INTO deliveries (token, name, run_date, status, sha256, declared_sha256,"
                " archive_id, reason, path) VALUES (:token, :name, :d, :status, :sha, :declared,"
                " :archive_id, :reason, :path)"
            ),
            {
                "token": folder.name,
                "name": verdict.name,
                "d": run_date,
                "status": status,
                "sha": verdict.sha256,
                "declared": verdict.declared,
                "archive_id": archive_id,
                "reason": reason,
                "path": str(folder),
            },
        )
    log.info(
        "delivery %s (%s): %s%s",
        folder.name,
        verdict.name,
        status,
        f" ({code_of(reason)})" if status == DeliveryStatus.REJECTED and reason else "",
    )


def _known_tokens(store: Store, tokens: list[str]) -> set[str]:
    query = sa.text("SELECT token FROM deliveries WHERE token IN :tokens").bindparams(
        sa.bindparam("tokens", expanding=True)
    )
    known: set[str] = set()
    with store.engine.connect() as conn:
        for start in range(0, len(tokens), 500):
            known.update(conn.execute(query, {"tokens": tokens[start : start + 500]}).scalars())
    return known


def register_archives(settings: Settings, store: Store, run_date: str) -> list[int]:
    """Claim everything ready in ``incoming/``, judge and record each delivery; return the ids
    of ``run_date``'s archives still to unpack.

    Each delivery is handled on its own: one that cannot be read is recorded as rejected, and an
    unexpected error in one is raised only after all the others were handled. Deliveries an
    earlier, interrupted attempt claimed are resumed first. Archives of ``run_date`` left
    ``registered`` by an earlier failed run are returned too.
    """
    settings.ensure_layout()
    _tidy_claimed(settings, _known_tokens(store, [p.name for p in settings.claimed.iterdir()]))
    markers, _ = _scan_incoming(settings.incoming)
    for marker in markers:
        _claim(settings, marker, *_companion(marker))
    for name in _scan_incoming(settings.incoming)[1]:
        _claim(settings, name)

    tokens = sorted(p.name for p in settings.claimed.iterdir())
    known = _known_tokens(store, tokens)
    fresh = [settings.claimed / t for t in tokens if t not in known]
    failures: list[BaseException] = []
    with ThreadPoolExecutor(max_workers=_VERDICT_WORKERS) as pool:
        verdicts: dict[Path, Verdict] = {}
        for folder, judged in zip(fresh, pool.map(verdict_or_error, fresh), strict=True):
            if isinstance(judged, Exception):  # a fault of ours: the others still go on
                log.error("delivery %s could not be judged: %r", folder.name, judged)
                failures.append(judged)
            else:
                verdicts[folder] = judged
        fresh = list(verdicts)
        # Markers naming bytes already registered: those deliveries are read (in parallel) now.
        declared = {v.declared for v in verdicts.values() if v.rejected is None and v.declared}
        known = _registered_digests(store, declared) if declared else set()
        reading = {
            f: pool.submit(read_known, f, v) for f, v in verdicts.items() if v.declared in known
        }
        for folder in fresh:  # recorded in claim order: the first of equal bytes wins
            try:
                verdict = reading[folder].result() if folder in reading else verdicts[folder]
                _record(store, folder, verdict, run_date)
                intake.step_done("register.recorded")
            except Exception as exc:  # the others still get their verdicts
                log.exception("delivery %s could not be recorded", folder.name)
                failures.append(exc)
    for token in tokens:
        try:
            settle_delivery(settings, store, token)
        except Exception as exc:
            log.exception("delivery %s could not be moved to its home", token)
            failures.append(exc)
    if failures:
        raise failures[0]
    rows = store.rows(
        "SELECT id FROM archives WHERE run_date = :d AND status = 'registered' ORDER BY id",
        d=run_date,
    )
    return [row.id for row in rows]
