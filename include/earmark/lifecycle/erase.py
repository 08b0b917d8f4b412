"""Erasure on request: ``earmark erase --file ID | --archive ID | --delivery NAME``.

A recording goes entirely: its audio on disk and its rows in transcripts, labels, review_queue
(with the review_events and audio_fetches of its items), work_unit_files and audio_files. An
archive (or the archive a delivery name became) goes with all its recordings and the delivered
bytes wherever they still lie (processed/, duplicate deliveries of them, quarantine/). The
``archives`` row stays, with its sha256: a later delivery of the same bytes is then a duplicate
whose reason says they were erased, never screened again.

Crash-consistent, as intake is: the DB records the intent first.
1. `record_intent`, one transaction: an ``intended`` row in ``erasures`` per recording and one
   per archive (``file_id`` NULL), and each recording set aside (quarantined, reason ``erased``)
   so no GPU unit planned from now on takes it. Refused while a work unit already holds a
   recording not yet screened (``ready`` or ``transcribed``).
2. `remove_from_disk`: the files (idempotent: a second pass finds them gone).
3. `delete_rows`, one transaction: the recordings' rows go and the intents are marked ``done``.
Every erase first finishes what an interrupted one left ``intended`` (`finish_unfinished`).
Ids, hashes, counts and times only: never transcript text or names of recordings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from earmark.config import Settings
from earmark.lifecycle import disk
from earmark.names import printable
from earmark.statuses import ArchiveStatus
from earmark.store.db import Store
from earmark.store.sql import as_utc, named_queries

_Q = named_queries("lifecycle")

#: The DB rows of one recording, in the order they go (each refers to the ones after it).
ROW_KINDS = (
    ("audio_fetches", "delete_audio_fetches"),
    ("review_events", "delete_review_events"),
    ("review_items", "delete_review_items"),
    ("labels", "delete_labels"),
    ("transcripts", "delete_transcripts"),
    ("work_unit_files", "delete_work_unit_files"),
    ("audio_files", "delete_audio_file"),
)


class Scope(StrEnum):
    """What an erasure was asked for (``erasures.scope``)."""

    FILE = "file"
    ARCHIVE = "archive"
    DELIVERY = "delivery"


class ErasureError(Exception):
    """An erasure that cannot be done as asked; ``exit_code`` for the command."""

    exit_code = 1


class UnknownTargetError(ErasureError):
    """No recording, archive or delivery by that id or name."""

    exit_code = 2


class HeldError(ErasureError):
    """A GPU work unit holds recordings not yet screened, or the archive awaits its unpack."""


@dataclass(frozen=True)
class Recording:
    """One recording to erase: ids, hash and sizes, never its name."""

    id: int
    path: str
    sha256: str | None
    status: str
    review_items: int
    bytes: int


@dataclass(frozen=True)
class ArchivePlan:
    """What an erasure takes of one archive: ``whole`` also takes its delivered bytes."""

    id: int
    run_date: str
    sha256: str | None
    recordings: tuple[Recording, ...]
    whole: bool
    copies: tuple[Path, ...] = ()  # existing homes of the delivered bytes (whole only)
    copies_files: int = 0
    copies_bytes: int = 0
    delivered_kept: bool = False  # a recording's archive is still in processed/ (file scope)

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.recordings) + self.copies_bytes


@dataclass(frozen=True)
class Plan:
    """What ``earmark erase`` would remove; ``already`` says why nothing is left to remove."""

    scope: Scope
    target: str
    archives: tuple[ArchivePlan, ...]
    unfinished: int = 0
    already: str | None = None

    @property
    def recordings(self) -> list[Recording]:
        return [r for a in self.archives for r in a.recordings]

    @property
    def bytes(self) -> int:
        return sum(a.bytes for a in self.archives)


def _day(value: Any) -> str:
    return str(value)[:10]


def _held_check(conn: sa.Connection, archive_id: int, file_ids: set[int]) -> None:
    held = [
        r
        for r in conn.execute(sa.text(_Q["holding_units"]), {"archive_id": archive_id})
        if r.file_id in file_ids
    ]
    if held:
        units = sorted({(r.unit_id, r.run_id, r.seq) for r in held})
        named = "; ".join(f"unit {u} (run {printable(run)}, #{seq:03d})" for u, run, seq in units)
        raise HeldError(
            f"{len(held)} of these recordings are in GPU work units not yet screened: {named}."
            " Nothing was erased; retry after those units finish."
        )


def _archive_plan(
    settings: Settings, conn: sa.Connection, archive: sa.Row, only_file: int | None
) -> ArchivePlan:
    """The recordings (all, or ``only_file``) and, for a whole archive, its delivered bytes."""
    if archive.status == ArchiveStatus.REGISTERED:
        raise HeldError(
            f"archive {archive.id} is registered but not unpacked yet (an unpack may be running):"
            " retry after the day's run unpacked it."
        )
    rows = conn.execute(sa.text(_Q["files_of_archive"]), {"archive_id": archive.id}).all()
    recordings = []
    for r in rows:
        if only_file is not None and r.id != only_file:
            continue
        path = Path(r.path)
        try:
            disk.inside_data_root(settings, path)
        except disk.OutsideDataRootError as exc:
            raise ErasureError(f"file {r.id}: {exc}; nothing was erased") from None
        size = disk.size_of(path)[1]
        recordings.append(Recording(r.id, r.path, r.sha256, r.status, r.review_items, size))
    _held_check(conn, archive.id, {r.id for r in recordings})
    run_date = _day(archive.run_date)
    if only_file is not None:
        kept = (settings.processed / run_date / f"archive-{archive.id}").exists()
        return ArchivePlan(
            archive.id, run_date, archive.sha256, tuple(recordings), False, delivered_kept=kept
        )
    duplicates = conn.execute(sa.text(_Q["duplicate_deliveries"]), {"archive_id": archive.id})
    homes = disk.archive_homes(
        settings, archive.id, run_date, [(d.id, _day(d.run_date)) for d in duplicates]
    )
    leave_out = frozenset(r.path for r in rows)  # each recording is counted on its own row
    sizes = {home: disk.size_of(home, leave_out) for home in homes if home.exists()}
    return ArchivePlan(
        archive.id,
        run_date,
        archive.sha256,
        tuple(recordings),
        whole=True,
        copies=tuple(sizes),
        copies_files=sum(n for n, _ in sizes.values()),
        copies_bytes=sum(b for _, b in sizes.values()),
    )


def _erased_before(conn: sa.Connection, archive_id: int, file_id: int) -> str | None:
    """Why there is nothing left to erase, when an earlier erasure took it."""
    rows = conn.execute(
        sa.text(_Q["erased_before"]), {"archive_id": archive_id, "file_id": file_id}
    ).all()
    match = next((r for r in rows if r.file_id == file_id or r.file_id is None), None)
    if match is None:
        return None
    return f"erased already (erasure #{match.id} on {as_utc(match.at):%Y-%m-%d}); nothing to do"


def plan_erasure(settings: Settings, store: Store, scope: Scope, target: str) -> Plan:
    """What erasing ``target`` would remove; UnknownTargetError or HeldError if it cannot go."""
    unfinished = len(store.rows(_Q["unfinished"]))
    with store.engine.connect() as conn:
        if scope is Scope.FILE:
            file_id = int(target)
            row = conn.execute(sa.text(_Q["file"]), {"file_id": file_id}).one_or_none()
            if row is None:
                already = _erased_before(conn, -1, file_id)
                if already is None:
                    raise UnknownTargetError(f"no audio file {file_id}")
                return Plan(scope, target, (), unfinished, f"file {file_id}: {already}")
            archive_ids, only_file = [row.archive_id], file_id
        elif scope is Scope.ARCHIVE:
            archive_ids, only_file = [int(target)], None
        else:
            archive_ids = list(
                conn.execute(sa.text(_Q["deliveries_named"]), {"name": target}).scalars()
            )
            only_file = None
            if not archive_ids:
                raise UnknownTargetError(
                    f"no delivery named {printable(target)} became an archive (a rejected"
                    " delivery's files lie in quarantine/delivery-<id>/)"
                )
        plans, done = [], []
        for archive_id in archive_ids:
            archive = conn.execute(sa.text(_Q["archive"]), {"archive_id": archive_id}).one_or_none()
            if archive is None:
                raise UnknownTargetError(f"no archive {archive_id}")
            plan = _archive_plan(settings, conn, archive, only_file)
            already = _erased_before(conn, archive_id, -1)
            if not plan.recordings and not plan.copies and already:
                done.append(f"archive {archive_id}: {already}")
            else:
                plans.append(plan)
    return Plan(scope, target, tuple(plans), unfinished, "; ".join(done) if not plans else None)


def record_intent(store: Store, plan: Plan, actor: str, reason: str) -> list[int]:
    """Step 1, one transaction: the ``intended`` rows, and the recordings set aside so no GPU
    unit takes them; the holding check again, inside it. The new erasures' ids."""
    ids: list[int] = []
    with store.begin() as conn:
        for archive in plan.archives:
            _held_check(conn, archive.id, {r.id for r in archive.recordings})
            common = {"actor": actor, "reason": reason, "scope": plan.scope, "target": plan.target}
            for r in archive.recordings:
                on_disk = int(Path(r.path).is_file())
                erasure_id = conn.execute(
                    sa.text(_Q["record_intent"]),
                    common
                    | {
                        "file_id": r.id,
                        "archive_id": archive.id,
                        "sha256": r.sha256,
                        "bytes_freed": r.bytes,
                        "removed": json.dumps({"audio_on_disk": on_disk}),
                    },
                ).scalar_one()
                conn.execute(
                    sa.text(_Q["set_aside"]),
                    {"file_id": r.id, "error": f"erased: erasure #{erasure_id} under way"},
                )
                ids.append(erasure_id)
            if archive.whole:
                counts = {"archive_homes": len(archive.copies), "files": archive.copies_files}
                ids.append(
                    conn.execute(
                        sa.text(_Q["record_intent"]),
                        common
                        | {
                            "file_id": None,
                            "archive_id": archive.id,
                            "sha256": archive.sha256,
                            "bytes_freed": archive.copies_bytes,
                            "removed": json.dumps(counts),
                        },
                    ).scalar_one()
                )
    return ids


def remove_from_disk(settings: Settings, store: Store, intents: list[sa.Row]) -> None:
    """Step 2: each intended recording's audio file, and each intended archive's homes."""
    for row in intents:
        if row.file_id is not None:
            if row.path is not None:
                disk.remove(settings, [Path(row.path)])
            continue
        duplicates = store.rows(_Q["duplicate_deliveries"], archive_id=row.archive_id)
        homes = disk.archive_homes(
            settings,
            row.archive_id,
            _day(row.run_date),
            [(d.id, _day(d.run_date)) for d in duplicates],
        )
        disk.remove(settings, homes)


def delete_rows(store: Store, intents: list[sa.Row]) -> None:
    """Step 3, one transaction: each intended recording's rows go and every intent is marked
    ``done``, with the rows removed per kind. An intent another erase completed meanwhile is
    left as it is."""
    with store.begin() as conn:
        for row in intents:
            if conn.execute(sa.text(_Q["claim_done"]), {"id": row.id}).rowcount != 1:
                continue
            removed = json.loads(row.removed or "{}")
            if row.file_id is not None:
                for kind, query in ROW_KINDS:
                    removed[kind] = conn.execute(
                        sa.text(_Q[query]), {"file_id": row.file_id}
                    ).rowcount
            conn.execute(
                sa.text(_Q["record_removed"]), {"id": row.id, "removed": json.dumps(removed)}
            )


def finish_unfinished(settings: Settings, store: Store) -> int:
    """Complete every ``intended`` erasure (steps 2 and 3); how many there were."""
    intents = store.rows(_Q["unfinished"])
    if intents:
        remove_from_disk(settings, store, intents)
        delete_rows(store, intents)
    return len(intents)


@dataclass(frozen=True)
class Outcome:
    """What ``erase`` did: the plan it carried out, the erasures recorded, earlier ones finished."""

    plan: Plan
    erasure_ids: tuple[int, ...]
    finished_earlier: int


def erase(
    settings: Settings, store: Store, scope: Scope, target: str, actor: str, reason: str
) -> Outcome:
    """Erase ``target`` (see the module docstring), after finishing interrupted erasures.
    Idempotent: a target erased already is a no-op whose plan says so."""
    if not reason.strip():
        raise ErasureError("a reason is required")
    if not actor.strip():
        raise ErasureError("who erases is required")
    earlier = finish_unfinished(settings, store)
    plan = plan_erasure(settings, store, scope, target)
    if plan.already is not None:
        return Outcome(plan, (), earlier)
    ids = record_intent(store, plan, actor.strip(), reason.strip())
    finish_unfinished(settings, store)
    return Outcome(plan, tuple(ids), earlier)


def describe(plan: Plan) -> list[str]:
    """What ``plan`` removes, for people: ids, counts and bytes, never names of recordings."""
    if plan.already is not None:
        return [plan.already]
    lines = []
    if plan.unfinished:
        lines.append(f"{plan.unfinished} interrupted erasures are finished first")
    for a in plan.archives:
        ids = ", ".join(str(r.id) for r in a.recordings) or "none left"
        reviews = sum(r.review_items for r in a.recordings)
        lines.append(
            f"archive {a.id} ({a.run_date}): {len(a.recordings)} recordings (ids {ids}),"
            f" {reviews} review items, {_mb(sum(r.bytes for r in a.recordings))} of audio"
        )
        if a.whole:
            homes = ", ".join("/".join(p.parts[-3:]) for p in a.copies) or "none left"
            lines.append(
                f"  and its delivered bytes and homes: {a.copies_files} more files,"
                f" {_mb(a.copies_bytes)} ({homes})"
            )
        elif a.delivered_kept:
            lines.append(
                "  the delivered archive still holds them in processed/ until it is pruned:"
                f" `earmark erase --archive {a.id}` removes it too"
            )
    lines.append(f"in all {len(plan.recordings)} recordings, {_mb(plan.bytes)}")
    return lines


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n} bytes"


def erasures(store: Store) -> list[dict[str, Any]]:
    """The audit: every erasure, oldest first (``removed`` as a dict)."""
    rows = [dict(r._mapping) for r in store.rows(_Q["erasures"])]
    for row in rows:
        row["removed"] = json.loads(row["removed"] or "{}")
    return rows


@dataclass(frozen=True)
class Readmission:
    """An archive erased whole whose bytes may be screened again; ``already`` says why there is
    nothing left to do."""

    archive_id: int
    sha256: str
    erasure_id: int
    already: str | None = None


def plan_readmission(store: Store, archive_id: int) -> Readmission:
    """What ``earmark erase --readmit`` would do; UnknownTargetError for no such archive,
    ErasureError for one not erased whole (its other recordings are still screened)."""
    with store.engine.connect() as conn:
        if conn.execute(sa.text(_Q["archive"]), {"archive_id": archive_id}).first() is None:
            raise UnknownTargetError(f"no archive {archive_id}")
        whole = conn.execute(sa.text(_Q["erased_whole"]), {"archive_id": archive_id}).first()
        if whole is None or whole.sha256 is None:
            raise ErasureError(
                f"archive {archive_id} was not erased whole: only an archive erased with"
                " --archive or --delivery can be readmitted"
            )
        done = conn.execute(sa.text(_Q["readmitted"]), {"archive_id": archive_id}).first()
    already = None
    if done is not None:
        already = (
            f"archive {archive_id}: readmitted already (readmission #{done.id} on"
            f" {as_utc(done.at):%Y-%m-%d}); nothing to do"
        )
    return Readmission(archive_id, whole.sha256, whole.id, already)


def readmit(store: Store, archive_id: int, actor: str, reason: str) -> tuple[Readmission, int]:
    """Let the bytes of an archive erased whole be delivered and screened again: one
    transaction releases the erased archive's digest (kept in ``erasures`` and here) and
    records who and why in ``readmissions``. Idempotent; returns the plan and the
    readmission's id (0 when it was readmitted already)."""
    if not reason.strip():
        raise ErasureError("a reason is required")
    if not actor.strip():
        raise ErasureError("who readmits is required")
    plan = plan_readmission(store, archive_id)
    if plan.already is not None:
        return plan, 0
    params = {"archive_id": archive_id, "sha256": plan.sha256}
    with store.begin() as conn:
        if conn.execute(sa.text(_Q["release_digest"]), params).rowcount != 1:
            raise ErasureError(f"archive {archive_id} changed meanwhile; nothing was readmitted")
        readmission_id = conn.execute(
            sa.text(_Q["record_readmission"]),
            params | {"actor": actor.strip(), "reason": reason.strip()},
        ).scalar_one()
    return plan, int(readmission_id)


def readmissions(store: Store) -> list[dict[str, Any]]:
    """The audit: every readmission, oldest first."""
    return [dict(r._mapping) for r in store.rows(_Q["readmissions"])]
