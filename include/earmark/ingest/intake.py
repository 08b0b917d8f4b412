"""Archive intake: claim what arrived in ``incoming/``, give every delivery a verdict, unpack.

Every delivery ends in one queryable state (``deliveries``): ``registered`` (its bytes became an
archive), ``duplicate`` (those bytes were an archive already) or ``rejected`` (its marker, its
name, its file type or the transport was wrong). A rejected delivery's bytes are not remembered as
bad, so a corrected delivery of them is screened; an archive rejected for its *content* is, and a
later delivery of it says so. A registered archive then ends ``unpacked`` or ``rejected``.

Each archive is read once. Registration reads markers, not archives: a delivery whose marker
names new bytes becomes an archive whose digest is still unknown (``archives.sha256`` NULL), and
the unpack hashes the archive while extracting it. Only then is the delivery judged on its bytes:
a digest that differs from the marker's rejects it (``checksum_mismatch``, the archive row goes),
a digest another archive already has makes it a ``duplicate`` of that one (the row and its
extraction go), and otherwise the digest is recorded with the files. A marker naming bytes an
archive already has is checked at registration, by hashing that delivery there, since it will
not be unpacked.

Homes are keyed by ids, never by names, so no delivery can touch another's files:

    claimed/<token>/                      taken out of incoming/, until its verdict (and unpack)
    audio/<date>/archive-<id>/            an archive's accepted files
    quarantine/<date>/archive-<id>/       its refused files (files/...) or, rejected, the archive
    quarantine/<date>/delivery-<id>/      a rejected delivery, as it arrived
    processed/<date>/archive-<id>/        an unpacked archive and its marker
    processed/<date>/duplicate-<id>/      a delivery of bytes already registered

Nothing in ``incoming/`` is trusted: entries are taken by rename (no link followed, no special file
opened), and only regular files with a single link are read, opened with ``O_NOFOLLOW |
O_NONBLOCK``; a rejected delivery's links (symbolic or hard) are recorded with their targets and
removed, so nothing kept under the data root points outside it. A marker pairs with the archive
of exactly its name, and a marker of a marker is a delivery of its own (rejected).

Every step is crash-consistent: the DB records where files belong before they are moved there,
so every step resumes from the DB and the disk, and whatever an interrupted claim left in
``claimed/`` with no row is settled by the next registration (an empty folder removed, a marker
joined by its archive from ``incoming/``). A delivery, archive or file that vanishes after it was
recorded ends with the reason ``vanished``. Input problems never raise; infrastructure problems
(DB down, disk full) do, so Airflow retries.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import math
import os
import secrets
import shutil
import stat
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from earmark.config import Settings
from earmark.ingest.extract import ArchiveRejected, ExtractLimits, ExtractResult, safe_extract
from earmark.ingest.incoming import ARCHIVE_SUFFIXES, MARKER_SUFFIX, parse_marker
from earmark.ingest.rejection import Rejected
from earmark.ingest.validate import AudioInfo, AudioLimits, AudioRejected, validate_audio
from earmark.names import printable, unsafe_characters
from earmark.reasons import code_of
from earmark.statuses import ArchiveStatus, DeliveryStatus, FileStatus
from earmark.store.db import Store

log = logging.getLogger(__name__)

_INSERT_CHUNK = 1000
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_MAX_MARKER_BYTES = 4096
_VERDICT_WORKERS = 4
_claim_sequence = itertools.count()


def _step_done(step: str) -> None:
    """Called after each step of a claim, a registration and an unpack that leaves the disk or
    the DB changed: a no-op. The crash tests replace it to stop intake right there."""


class DeliveryRejected(Rejected):
    """A delivery refused before registration: its marker, name, file type or transport."""


@dataclass(frozen=True)
class UnpackSummary:
    """What one unpack produced: counts only, safe for XCom and logs."""

    archive_id: int
    name: str
    status: str
    ready: int = 0
    quarantined: int = 0
    error: str | None = None


@dataclass(frozen=True)
class _Verdict:
    """What a claimed delivery is, before the DB has compared its bytes with earlier ones.

    ``declared`` is its marker's digest; ``sha256`` the digest of its bytes, when they were read
    (only for a delivery whose marker names bytes an archive already has).
    """

    name: str
    declared: str | None = None
    sha256: str | None = None
    rejected: DeliveryRejected | None = None


# --- homes ----------------------------------------------------------------------------------


def audio_home(settings: Settings, run_date: str, archive_id: int) -> Path:
    """Where an archive's accepted files live."""
    return settings.audio / run_date / f"archive-{archive_id}"


def archive_quarantine(settings: Settings, run_date: str, archive_id: int) -> Path:
    """Where an archive's refused files, or the rejected archive itself, live."""
    return settings.quarantine / run_date / f"archive-{archive_id}"


def _delivery_home(settings: Settings, row: sa.Row) -> Path | None:
    """Where a delivery's own files belong once settled; None while its archive awaits unpack."""
    run_date = str(row.run_date)
    if row.status == DeliveryStatus.REJECTED:
        return settings.quarantine / run_date / f"delivery-{row.id}"
    if row.status == DeliveryStatus.DUPLICATE:
        return settings.processed / run_date / f"duplicate-{row.id}"
    archive_date = str(row.archive_date)
    if row.archive_status == ArchiveStatus.UNPACKED:
        return settings.processed / archive_date / f"archive-{row.archive_id}"
    if row.archive_status == ArchiveStatus.REJECTED:
        return archive_quarantine(settings, archive_date, row.archive_id)
    return None


# --- incoming/ ------------------------------------------------------------------------------


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


def archive_name(store: Store, archive_id: int) -> str:
    """An archive's delivered name (names with control or bidi characters are never registered)."""
    return store.scalar("SELECT name FROM archives WHERE id = :id", id=archive_id)


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
    _step_done("claim.folder")
    try:
        (settings.incoming / first).rename(folder / first)
    except FileNotFoundError:
        folder.rmdir()
        return None
    _step_done("claim.first")
    for name in companions:
        with contextlib.suppress(FileNotFoundError):
            (settings.incoming / name).rename(folder / name)
            _step_done("claim.companion")
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


# --- verdicts -------------------------------------------------------------------------------


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


def _described(path: Path, shown: str, mode: int) -> str:
    """``shown`` and what it is, a symbolic link with its target (read, never followed)."""
    if stat.S_ISLNK(mode):
        with contextlib.suppress(OSError):
            return f"{shown} is a symbolic link to {printable(str(path.readlink()))}"
    return f"{shown} is {_kind(mode)}"


def _verdict(folder: Path) -> _Verdict:
    """Read a claimed delivery (never following links or opening special files) and judge it."""
    entries = sorted(p.name for p in folder.iterdir())
    if not entries:
        return _Verdict(
            folder.name, rejected=DeliveryRejected("vanished", "the claimed folder is empty")
        )
    markers = [n for n in entries if n.endswith(MARKER_SUFFIX)]
    name = markers[0].removesuffix(MARKER_SUFFIX) if markers else entries[0]
    shown = printable(name)
    try:
        return _judge(folder, entries, markers, name, shown)
    except OSError as exc:
        return _Verdict(shown, rejected=DeliveryRejected("unreadable", f"{shown}: {exc.strerror}"))


def _verdict_or_error(folder: Path) -> _Verdict | Exception:
    try:
        return _verdict(folder)
    except Exception as exc:  # returned: raised after the others are recorded
        return exc


def _judge(folder: Path, entries: list[str], markers: list[str], name: str, shown: str) -> _Verdict:
    try:
        if not markers:
            info = (folder / name).lstat()
            if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
                raise DeliveryRejected("marker_missing", f"{shown} was claimed without a marker")
            if stat.S_ISREG(info.st_mode):
                raise _hard_link(shown, info.st_nlink)
            raise DeliveryRejected(
                "not_a_regular_file", _described(folder / name, shown, info.st_mode)
            )
        marker = folder / markers[0]
        info = marker.lstat()
        if not stat.S_ISREG(info.st_mode):
            detail = _described(marker, f"the marker of {shown}", info.st_mode)
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
            raise DeliveryRejected("not_a_regular_file", _described(archive, shown, info.st_mode))
        if info.st_nlink > 1:
            raise _hard_link(shown, info.st_nlink)
        declared = _read_marker(marker, f"the marker of {shown}")
        with _open_regular(archive, shown):  # readable by the unpack (which reads it once)
            pass
    except DeliveryRejected as rejected:
        return _Verdict(shown, rejected=rejected)
    return _Verdict(name, declared)


def _mismatch(declared: str, actual: str) -> DeliveryRejected:
    # In full: a digest off by one character must not read as two equal abbreviations.
    return DeliveryRejected("checksum_mismatch", f"marker says {declared}, archive is {actual}")


def _read_known(folder: Path, verdict: _Verdict) -> _Verdict:
    """Hash a delivery whose marker names bytes already registered: a duplicate is never
    unpacked, so this is its one read."""
    declared = verdict.declared
    assert declared is not None, "only a delivery whose marker names a digest is read here"
    shown = printable(verdict.name)
    try:
        actual = _sha256(folder / verdict.name, shown)
    except DeliveryRejected as rejected:
        return _Verdict(shown, declared, rejected=rejected)
    except OSError as exc:
        unreadable = DeliveryRejected("unreadable", f"{shown}: {exc.strerror}")
        return _Verdict(shown, declared, rejected=unreadable)
    if actual != declared:
        return _Verdict(shown, declared, actual, _mismatch(declared, actual))
    return _Verdict(verdict.name, declared, actual)


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


def _write_reason(path: Path, reason: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(reason, indent=2, ensure_ascii=True), encoding="utf-8")


def _record(store: Store, folder: Path, verdict: _Verdict, run_date: str) -> None:
    """One transaction: the archive (new bytes only) and the delivery with its verdict."""
    status, reason, archive_id = DeliveryStatus.REGISTERED, None, None
    with store.begin() as conn:
        if verdict.rejected is not None:
            status, reason = DeliveryStatus.REJECTED, str(verdict.rejected)
        elif verdict.sha256 is not None:  # read here: bytes an archive already has
            first = _archive_with(conn, verdict.sha256)
            status, archive_id, reason = DeliveryStatus.DUPLICATE, first.id, _same_bytes(first)
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


def _archive_with(conn: sa.Connection, digest: str) -> sa.Row:
    return conn.execute(
        sa.text("SELECT id, status, error FROM archives WHERE sha256 = :sha"), {"sha": digest}
    ).one()


def _same_bytes(first: sa.Row) -> str:
    reason = f"same bytes as archive #{first.id} ({first.status})"
    if first.status == ArchiveStatus.REJECTED:
        reason += f", rejected for its content: {first.error}"
    return reason


_DELIVERY_SQL = (
    "SELECT d.id, d.token, d.name, d.run_date, d.status, d.reason, d.archive_id, d.path,"
    " a.status AS archive_status, a.run_date AS archive_date, a.error AS archive_error"
    " FROM deliveries d LEFT JOIN archives a ON a.id = d.archive_id"
)


def _settle(settings: Settings, store: Store, token: str) -> None:
    """Move a claimed delivery to the home its DB state gives it, and record the path there.

    Idempotent: a no-op once moved, or while its archive still awaits unpack.
    """
    folder = settings.claimed / token
    rows = store.rows(_DELIVERY_SQL + " WHERE d.token = :t", t=token)
    home = _delivery_home(settings, rows[0]) if rows else None
    if home is None:
        return
    row = rows[0]
    if row.path != str(home):  # the DB says where first, so an interrupted move resumes
        with store.begin() as conn:
            conn.execute(
                sa.text("UPDATE deliveries SET path = :p WHERE id = :id"),
                {"p": str(home), "id": row.id},
            )
            if row.status == DeliveryStatus.REGISTERED:
                conn.execute(
                    sa.text("UPDATE archives SET path = :p WHERE id = :id"),
                    {"p": str(home / row.name), "id": row.archive_id},
                )
        _step_done("settle.recorded")
    if not folder.exists():
        return
    if row.status == DeliveryStatus.REJECTED:
        removed = _remove_links(folder)
        _write_reason(
            home.with_name(f"{home.name}.reason.json"),
            {"delivery": row.id, "name": row.name, "reason": row.reason}
            | ({"links_removed": removed} if removed else {}),
        )
        _step_done("settle.reason")
    home.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(home):
        raise FileExistsError(f"{home} exists; delivery {row.id} cannot move there")
    folder.rename(home)
    _step_done("settle.moved")


def _remove_links(folder: Path) -> list[str]:
    """Remove what a rejected delivery holds that is not a plain file of its own (symbolic and
    hard links, FIFOs, sockets, devices), never following or opening one; what went, with
    link targets. Kept under quarantine/ they could point outside the data root."""
    removed = []
    for parent, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            path = Path(parent) / name
            info = path.lstat()
            if stat.S_ISDIR(info.st_mode) or (stat.S_ISREG(info.st_mode) and info.st_nlink == 1):
                continue
            what = _described(path, printable(str(path.relative_to(folder))), info.st_mode)
            if stat.S_ISREG(info.st_mode):
                what += f" with {info.st_nlink} hard links"
            path.unlink()
            removed.append(what)
    return removed


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
        verdicts: dict[Path, _Verdict] = {}
        for folder, judged in zip(fresh, pool.map(_verdict_or_error, fresh), strict=True):
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
            f: pool.submit(_read_known, f, v) for f, v in verdicts.items() if v.declared in known
        }
        for folder in fresh:  # recorded in claim order: the first of equal bytes wins
            try:
                verdict = reading[folder].result() if folder in reading else verdicts[folder]
                _record(store, folder, verdict, run_date)
                _step_done("register.recorded")
            except Exception as exc:  # the others still get their verdicts
                log.exception("delivery %s could not be recorded", folder.name)
                failures.append(exc)
    for token in tokens:
        try:
            _settle(settings, store, token)
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


# --- unpack ---------------------------------------------------------------------------------


def _validate(path: Path, limits: AudioLimits) -> AudioInfo | AudioRejected:
    try:
        return validate_audio(path, limits)
    except AudioRejected as rejected:
        return rejected


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


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
        _remove(home)
        for partial in home.parent.glob(f".tmp-{home.name}-*"):  # an extraction cut short
            _remove(partial)


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
        verdict, reason, first_id = DeliveryStatus.REJECTED, str(_mismatch(expected, actual)), None
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
            first = _archive_with(conn, actual)
        verdict, reason, first_id = DeliveryStatus.DUPLICATE, _same_bytes(first), first.id
    _remove(home)
    _step_done("unpack.superseded_removed")
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


def settle_claimed(settings: Settings, store: Store) -> None:
    """Move every claimed delivery whose verdict is final to its home (see `_settle`)."""
    for folder in sorted(settings.claimed.iterdir()) if settings.claimed.is_dir() else []:
        _settle(settings, store, folder.name)


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
            _settle(settings, store, row.token)  # an earlier try died before the move
        return _summary(store, row)
    run_date = str(row.run_date)
    home = audio_home(settings, run_date, archive_id)
    quarantine = archive_quarantine(settings, run_date, archive_id)
    reason_file = quarantine.with_name(f"{quarantine.name}.reason.json")
    _clear_unfinished_attempt(store, archive_id, home, quarantine, reason_file)
    _step_done("unpack.cleared")
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
    _step_done("unpack.extracted")
    superseded = _judge_bytes(store, row, digest.hexdigest(), home)
    if superseded is not None:
        if row.token:
            _settle(settings, store, row.token)
        log.info("archive #%s superseded: its delivery is %s", archive_id, superseded)
        return UnpackSummary(archive_id, row.name, superseded)
    if rejected is not None:
        return _reject_content(settings, store, row, rejected, reason_file)
    return _register_members(settings, store, row, extracted, workers, quarantine)


def _reject_content(
    settings: Settings, store: Store, row: sa.Row, rejected: ArchiveRejected, reason_file: Path
) -> UnpackSummary:
    _write_reason(reason_file, {"archive": row.id, "name": row.name, "reason": str(rejected)})
    _step_done("unpack.reason")
    with store.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE archives SET status = 'rejected', error = :e,"
                " updated_at = CURRENT_TIMESTAMP WHERE id = :id AND status = 'registered'"
            ),
            {"e": str(rejected), "id": row.id},
        )
    log.warning("archive #%s rejected: %s", row.id, rejected.code)
    _step_done("unpack.rejected")
    if row.token:
        _settle(settings, store, row.token)
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
            _step_done("unpack.file_quarantined")
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
        _write_reason(
            reason_file,
            {
                "archive": archive_id,
                "name": row.name,
                "files": {r["member_path"]: r["error"] for r in quarantined},
            },
        )

    _step_done("unpack.validated")
    register_files(store, archive_id, records)
    _step_done("unpack.registered")
    if row.token:  # archives registered before deliveries were recorded have none
        _settle(settings, store, row.token)
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


# --- retention ------------------------------------------------------------------------------


def prune_processed(settings: Settings, today: date | None = None) -> list[Path]:
    """Delete dated folders in ``processed/`` older than the retention; returns what went."""
    today = today or datetime.now(UTC).date()
    cutoff = today - timedelta(days=settings.processed_retention_days)
    removed = []
    for folder in _dated_folders(
        settings.processed.iterdir() if settings.processed.is_dir() else []
    ):
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
