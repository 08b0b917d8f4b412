"""Retention per kind of data: the daily ``retention`` task and ``earmark retention``.

Each kind (`RULES`) is kept for a setting's days, or ``forever``, counted from a day of its own;
the README's lifecycle table says which. Delivered archives are processed/'s day folders; audio
files of recordings never flagged (a recording refused at intake is one: its file in
quarantine/) count from the run date; those of flagged recordings (a label 1 or any review
item), transcripts and labels from the later of the run date and the last review decision;
decided review items (with their events and audio fetches) from the last decision, and only
once the audio is gone. No rule touches a recording not yet screened, one with a review item
open, or one an erasure is under way for (the SQL: ``store/queries/retention.sql``).

Crash-consistent as `earmark.lifecycle.erase` is, recorded in the same ``erasures`` table
(scope and actor ``retention``, target the kind, reason the rule):
1. `record_intents`, one transaction per batch: what is due, selected again inside it, gets an
   ``intended`` row per recording (per archive and day folder for delivered archives);
2. `remove_from_disk`: the files (idempotent);
3. `mark_done`, one transaction: the kind's rows go, or the audio is marked gone
   (``audio_files.audio_erased_at``), and the intents are ``done`` with the rows removed.
Every run first finishes what an interrupted one left ``intended`` (`finish_unfinished`). Ids,
hashes, counts and bytes only: never transcript text or names of recordings.

Why one module (over 500 lines): the rules, what each selects, the three steps that apply them
and the figures of what is held are one protocol, read top to bottom as `erase` is; the steps
check again what the selection assumed, and split apart the two would drift.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from earmark.config import Settings, declared
from earmark.ingest.retention import prune_processed
from earmark.lifecycle import disk
from earmark.store.db import Store
from earmark.store.sql import named_queries

log = logging.getLogger(__name__)

_Q = named_queries("retention")
_LIFECYCLE = named_queries("lifecycle")  # the intents' completion and row deletions, as erase's

BATCH = 500  # recordings per intent transaction
_ALL = 2**62  # no batch bound: the dry run and the figures
_HOME = re.compile(r"^(archive|duplicate)-(\d+)$")  # what intake puts in a processed/ day folder
_LOCK_KEY = 0x4541524D52455431  # Postgres advisory lock: one run records intents at a time


class Kind(StrEnum):
    """A kind of data with a retention rule (``erasures.target`` of a retention row)."""

    DELIVERED_ARCHIVES = "delivered_archives"
    UNFLAGGED_AUDIO = "unflagged_audio"
    FLAGGED_AUDIO = "flagged_audio"
    TRANSCRIPTS = "transcripts"
    LABELS = "labels"
    REVIEWS = "reviews"


@dataclass(frozen=True)
class Rule:
    """A kind and the ``Settings`` field that keeps it (the README's lifecycle table says what
    each counts from)."""

    kind: Kind
    field: str


RULES = (
    Rule(Kind.DELIVERED_ARCHIVES, "processed_retention_days"),
    Rule(Kind.UNFLAGGED_AUDIO, "retain_unflagged_audio_days"),
    Rule(Kind.FLAGGED_AUDIO, "retain_flagged_audio_days"),
    Rule(Kind.TRANSCRIPTS, "retain_transcripts_days"),
    Rule(Kind.LABELS, "retain_labels_days"),
    Rule(Kind.REVIEWS, "retain_reviews_days"),
)
#: The order a run applies the rules in: each reads only what the ones before it leave as it
#: was (a review item goes before its recording's audio is marked gone, transcripts and labels
#: before the decisions they count from), so a dry run says what the run takes.
APPLY_ORDER = (
    Kind.DELIVERED_ARCHIVES,
    Kind.TRANSCRIPTS,
    Kind.LABELS,
    Kind.REVIEWS,
    Kind.FLAGGED_AUDIO,
    Kind.UNFLAGGED_AUDIO,
)
AUDIO_KINDS = frozenset({Kind.UNFLAGGED_AUDIO, Kind.FLAGGED_AUDIO})
#: The rows a recording's rule deletes, in order (each refers to the ones after it).
KIND_ROWS: dict[Kind, tuple[tuple[str, str], ...]] = {
    Kind.TRANSCRIPTS: (("transcripts", "delete_transcripts"),),
    Kind.LABELS: (("labels", "delete_labels"),),
    Kind.REVIEWS: (
        ("audio_fetches", "delete_audio_fetches"),
        ("review_events", "delete_review_events"),
        ("review_items", "delete_review_items"),
    ),
}


def _rule(kind: Kind) -> Rule:
    return next(r for r in RULES if r.kind is kind)


def setting_of(kind: Kind) -> str:
    """The environment variable that sets ``kind``'s retention."""
    name = _rule(kind).field
    return next(declared(f).env for f in fields(Settings) if f.name == name)


def days_of(settings: Settings, kind: Kind) -> int | None:
    """How many days ``kind`` is kept; None: forever."""
    days: int | None = getattr(settings, _rule(kind).field)
    return days


def local_today(settings: Settings) -> date:
    return datetime.now(ZoneInfo(settings.timezone)).date()


@dataclass(frozen=True)
class Due:
    """What one rule takes of one recording (or, for delivered archives, of one archive in one
    day folder): ids, hash and bytes, never a name."""

    kind: Kind
    archive_id: int
    file_id: int | None
    sha256: str | None
    bytes: int
    path: str | None = None  # the audio file of an audio kind: never shown
    day: str | None = None  # delivered archives: the processed/ day folder
    homes: tuple[str, ...] = ()  # delivered archives: archive-ID, duplicate-ID in that folder


@dataclass(frozen=True)
class KindFigures:
    """One rule and how much it concerns: recordings (archives, for delivered archives) and
    the bytes of their files on disk (the DB kinds hold rows: 0 bytes)."""

    kind: Kind
    days: int | None
    setting: str
    count: int = 0
    bytes: int = 0

    def as_json(self) -> dict[str, Any]:
        return asdict(self) | {"kind": self.kind.value}


def _figures(settings: Settings, kind: Kind, due: Iterable[Due] = ()) -> KindFigures:
    items = list(due)
    return KindFigures(
        kind, days_of(settings, kind), setting_of(kind), len(items), sum(d.bytes for d in items)
    )


@dataclass(frozen=True)
class RetentionPlan:
    """What a run on ``today`` would take, per kind (`RULES` order), and the intents an
    interrupted run left, which it finishes first."""

    today: date
    due: tuple[Due, ...]
    kinds: tuple[KindFigures, ...]
    unfinished: int = 0


@dataclass(frozen=True)
class RetentionOutcome:
    """What a run took per kind, the interrupted intents it finished first, the recordings kept
    as their path is not under the data root, and the processed/ day folders pruned whole after
    their archives went (what no archive of the DB accounts for)."""

    today: date
    kinds: tuple[KindFigures, ...]
    finished_earlier: int = 0
    refused: int = 0
    leftover_folders: int = 0


@dataclass(frozen=True)
class Held:
    """What is kept of one kind now, and what the next run (tomorrow) would take of it."""

    kind: Kind
    days: int | None
    setting: str
    count: int
    bytes: int
    next_count: int
    next_bytes: int

    @property
    def on_disk(self) -> bool:
        return self.kind in AUDIO_KINDS or self.kind is Kind.DELIVERED_ARCHIVES


# ---- what is due --------------------------------------------------------------------------------
def _cutoffs(settings: Settings, store: Store, days: int, today: date) -> dict[str, Any]:
    """A rule's time is up for what lies before the cutoff day (local midnight for times)."""
    day = today - timedelta(days=days)
    midnight = datetime.combine(day, time(), ZoneInfo(settings.timezone))
    return {"cutoff_day": day.isoformat(), "cutoff_ts": store.timestamp(midnight)}


def _dated_folders(settings: Settings, before: date) -> list[Path]:
    """The day folders of processed/ dated before ``before``, oldest first."""
    found = []
    for entry in settings.processed.iterdir() if settings.processed.is_dir() else []:
        try:
            day = date.fromisoformat(entry.name)
        except ValueError:
            continue
        if day < before and entry.is_dir() and not entry.is_symlink():
            found.append(entry)
    return sorted(found)


def _ids_in(conn: sa.Connection, query: str, ids: set[int]) -> list[sa.Row]:
    if not ids:
        return []
    sql = sa.text(_Q[query]).bindparams(sa.bindparam("ids", expanding=True))
    return list(conn.execute(sql, {"ids": sorted(ids)}))


def _delivered_due(settings: Settings, conn: sa.Connection, before: date) -> list[Due]:
    """Per archive and day folder older than the cutoff: its delivered bytes there (archive-ID
    and duplicate-ID folders). An archive an erasure on request is under way for is left to
    it; what no archive accounts for is left to `prune_processed`."""
    found: list[Due] = []
    for folder in _dated_folders(settings, before):
        entries = {}
        for entry in sorted(folder.iterdir()):
            match = _HOME.match(entry.name)
            if match:
                entries[entry.name] = (match[1], int(match[2]))
        duplicates = {
            r.id: r.archive_id
            for r in _ids_in(
                conn, "duplicates_by_id", {i for k, i in entries.values() if k == "duplicate"}
            )
        }
        homes: dict[int, list[str]] = {}
        for name, (what, some_id) in entries.items():
            archive_id = some_id if what == "archive" else duplicates.get(some_id)
            if archive_id is not None:
                homes.setdefault(archive_id, []).append(name)
        for archive in _ids_in(conn, "archives_by_id", set(homes)):
            if archive.erasing:
                continue
            names = tuple(sorted(homes[archive.id]))
            size = sum(disk.size_of(folder / name)[1] for name in names)
            kind = Kind.DELIVERED_ARCHIVES
            found.append(
                Due(kind, archive.id, None, archive.sha256, size, None, folder.name, names)
            )
    return found


def _due(
    settings: Settings,
    store: Store,
    conn: sa.Connection,
    kind: Kind,
    today: date,
    after: int = 0,
    limit: int = _ALL,
) -> list[Due]:
    """What ``kind``'s rule takes on ``today``: recordings with ids above ``after``, at most
    ``limit`` of them (delivered archives: all of them)."""
    days = days_of(settings, kind)
    if days is None:
        return []
    if kind is Kind.DELIVERED_ARCHIVES:
        return _delivered_due(settings, conn, today - timedelta(days=days))
    params = _cutoffs(settings, store, days, today) | {"after": after, "limit": limit}
    return [
        Due(kind, r.archive_id, r.file_id, r.sha256, int(r.bytes), r.path)
        for r in conn.execute(sa.text(_Q[f"due_{kind.value}"]), params)
    ]


def plan_retention(settings: Settings, store: Store, today: date | None = None) -> RetentionPlan:
    """What a run on ``today`` (default: today, local) would take, changing nothing."""
    today = today or local_today(settings)
    with store.engine.connect() as conn:
        due = [d for kind in APPLY_ORDER for d in _due(settings, store, conn, kind, today)]
        unfinished = len(list(conn.execute(sa.text(_Q["unfinished"]))))
    kinds = tuple(_figures(settings, r.kind, (d for d in due if d.kind is r.kind)) for r in RULES)
    return RetentionPlan(today, tuple(due), kinds, unfinished)


def held_per_kind(settings: Settings, store: Store, today: date | None = None) -> list[Held]:
    """Per kind (`RULES` order): recordings (archives) and bytes held now, and what the next
    run, tomorrow, would take. Counted in the DB (audio bytes as intake measured them) and, for
    delivered archives, on disk."""
    tomorrow = (today or local_today(settings)) + timedelta(days=1)
    with store.engine.connect() as conn:
        held = {r.kind: (int(r.n), int(r.bytes)) for r in conn.execute(sa.text(_Q["held"]))}
        upcoming = {}
        for rule in RULES:
            days = days_of(settings, rule.kind)
            if days is None:
                upcoming[rule.kind] = (0, 0)
            elif rule.kind is Kind.DELIVERED_ARCHIVES:
                due = _delivered_due(settings, conn, tomorrow - timedelta(days=days))
                upcoming[rule.kind] = (len(due), sum(d.bytes for d in due))
            else:
                params = _cutoffs(settings, store, days, tomorrow) | {"after": 0, "limit": _ALL}
                row = conn.execute(
                    sa.text(
                        "SELECT count(*) AS n, coalesce(sum(bytes), 0) AS bytes"
                        f" FROM ({_Q[f'due_{rule.kind.value}']}) due"
                    ),
                    params,
                ).one()
                upcoming[rule.kind] = (int(row.n), int(row.bytes))
    entries = [
        entry
        for folder in _dated_folders(settings, date.max)
        for entry in folder.iterdir()
        if _HOME.match(entry.name)
    ]
    held[Kind.DELIVERED_ARCHIVES] = (len(entries), sum(disk.size_of(e)[1] for e in entries))
    return [
        Held(k, days_of(settings, k), setting_of(k), *held.get(k, (0, 0)), *upcoming[k])
        for k in (rule.kind for rule in RULES)
    ]


# ---- the three steps ----------------------------------------------------------------------------
def _reason(kind: Kind, days: int) -> str:
    return f"{kind.value} older than {days} days ({setting_of(kind)})"


def record_intents(
    settings: Settings, store: Store, kind: Kind, today: date, after: int = 0
) -> tuple[list[Due], int, int | None]:
    """Step 1, one transaction: the next batch of what ``kind``'s rule takes (ids above
    ``after``), selected inside it, each recorded ``intended`` with the bytes its files hold.
    Returns the intents' Dues, how many were refused (a recorded path outside the data root:
    kept, logged by id), and the last id looked at (None when nothing was left)."""
    days = days_of(settings, kind)
    if days is None:
        return [], 0, None
    recorded, refused = [], 0
    with store.begin() as conn:
        if store.dialect == "postgresql":  # two runs at once: the second selects after this one
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        due = _due(settings, store, conn, kind, today, after, BATCH)
        for d in due:
            removed: dict[str, Any] = {}
            size = 0
            if kind is Kind.DELIVERED_ARCHIVES:
                size = d.bytes
                files = sum(disk.size_of(settings.processed / str(d.day) / h)[0] for h in d.homes)
                removed = {"day": d.day, "homes": list(d.homes), "files": files}
            elif kind in AUDIO_KINDS and d.path is not None:
                try:
                    path = disk.inside_data_root(settings, Path(d.path))
                except disk.OutsideDataRootError:
                    log.warning("file %d: path not under the data root, audio kept", d.file_id)
                    refused += 1
                    continue
                files, size = disk.size_of(path)
                removed = {"audio_on_disk": files}
            conn.execute(
                sa.text(_Q["record_intent"]),
                {
                    "reason": _reason(kind, days),
                    "kind": kind.value,
                    "file_id": d.file_id,
                    "archive_id": d.archive_id,
                    "sha256": d.sha256,
                    "bytes_freed": size,
                    "removed": json.dumps(removed),
                },
            )
            recorded.append(replace(d, bytes=size))
    # A full batch may have more after it; delivered archives come in one pass over processed/.
    full = len(due) == BATCH and kind is not Kind.DELIVERED_ARCHIVES
    return recorded, refused, due[-1].file_id if full else None


def _processed_homes(settings: Settings, removed: dict[str, Any]) -> tuple[Path, list[Path]]:
    """The day folder and homes a delivered-archives intent names, checked to be what intake
    puts there (a date, archive-ID and duplicate-ID) before anything is removed."""
    day = date.fromisoformat(str(removed["day"])).isoformat()
    names = [str(h) for h in removed["homes"]]
    if not all(_HOME.match(name) for name in names):
        raise ValueError(f"a retention intent names homes intake never made: {names}")
    folder = settings.processed / day
    return folder, [folder / name for name in names]


def _settled(conn: sa.Connection, file_id: int) -> bool:
    return bool(conn.execute(sa.text(_Q["still_settled"]), {"file_id": file_id}).scalar())


def remove_from_disk(settings: Settings, store: Store, intents: Sequence[sa.Row]) -> set[int]:
    """Step 2: each intended recording's audio file (with the folders it leaves empty), each
    intended archive's homes in its processed/ day folder (and the folder once empty). A
    recording no longer settled (sent back by a rescreen, a review item opened) keeps its audio.
    Returns the intents refused: a recorded path that is not where intake puts things, logged by
    the intent's id only (never the path), kept on disk; one such intent never stops the others."""
    refused: set[int] = set()
    for row in intents:
        kind = Kind(row.kind)
        try:
            if kind in AUDIO_KINDS and row.path is not None:
                with store.engine.connect() as conn:
                    if not _settled(conn, row.file_id):
                        continue
                disk.remove_audio_file(settings, Path(row.path))
            elif kind is Kind.DELIVERED_ARCHIVES:
                folder, homes = _processed_homes(settings, json.loads(row.removed or "{}"))
                disk.remove(settings, homes)
                disk.remove_empty_folders(settings, folder)
        except (disk.OutsideDataRootError, ValueError, KeyError) as exc:
            log.warning("retention intent #%d refused (%s): kept", row.id, type(exc).__name__)
            refused.add(row.id)
    return refused


def mark_done(store: Store, intents: Sequence[sa.Row], refused: set[int] | None = None) -> None:
    """Step 3, one transaction: per intent the kind's rows go or the audio is marked gone, and
    the intent is marked ``done`` with the rows removed per kind. A recording no longer settled
    keeps everything (``kept_not_settled``: a rescreen sent it back or a review item opened
    since the intent); an intent refused at step 2 is done with ``refused``. An intent another
    run completed meanwhile is left as it is."""
    with store.begin() as conn:
        for row in intents:
            if conn.execute(sa.text(_LIFECYCLE["claim_done"]), {"id": row.id}).rowcount != 1:
                continue
            removed = json.loads(row.removed or "{}")
            kind = Kind(row.kind)
            on_file = {"file_id": row.file_id}
            if row.id in (refused or set()):
                removed["refused"] = 1
            elif kind is not Kind.DELIVERED_ARCHIVES and not _settled(conn, row.file_id):
                removed["kept_not_settled"] = 1
            elif kind in AUDIO_KINDS:
                marked = conn.execute(sa.text(_Q["mark_audio_erased"]), on_file).rowcount
                removed["audio_marked_gone"] = marked
            elif kind in KIND_ROWS:
                for name, query in KIND_ROWS[kind]:
                    removed[name] = conn.execute(sa.text(_LIFECYCLE[query]), on_file).rowcount
            conn.execute(
                sa.text(_LIFECYCLE["record_removed"]),
                {"id": row.id, "removed": json.dumps(removed)},
            )


def finish_unfinished(settings: Settings, store: Store) -> int:
    """Complete every ``intended`` retention row (steps 2 and 3); how many there were."""
    intents = store.rows(_Q["unfinished"])
    if intents:
        mark_done(store, intents, remove_from_disk(settings, store, intents))
    return len(intents)


def apply_retention(
    settings: Settings, store: Store, today: date | None = None
) -> RetentionOutcome:
    """Take what every rule says is past its time on ``today`` (default: today, local), after
    finishing interrupted intents; then prune the processed/ day folders past their time of
    what no archive accounts for. Idempotent: a second run the same day takes nothing."""
    today = today or local_today(settings)
    earlier = finish_unfinished(settings, store)
    taken: dict[Kind, list[Due]] = {kind: [] for kind in APPLY_ORDER}
    refused = 0
    for kind in APPLY_ORDER:
        after: int | None = 0
        while after is not None:
            recorded, kept, after = record_intents(settings, store, kind, today, after)
            refused += kept
            if recorded:
                finish_unfinished(settings, store)
            taken[kind] += recorded
    leftover = prune_processed(settings, today)
    kinds = tuple(_figures(settings, r.kind, taken[r.kind]) for r in RULES)
    return RetentionOutcome(today, kinds, earlier, refused, len(leftover))


# ---- for people ---------------------------------------------------------------------------------
def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _keeps(days: int | None) -> str:
    return "kept forever" if days is None else f"keep {days} days"


def describe(kinds: Sequence[KindFigures], verb: str) -> list[str]:
    """One line per kind (what is ``verb``: "due", "removed"), then the total; counts and
    bytes only."""
    lines = []
    for k in kinds:
        what = "archives" if k.kind is Kind.DELIVERED_ARCHIVES else "recordings"
        amount = "-" if k.days is None else f"{k.count} {what} {verb}"
        if k.days is not None and k.kind in (*AUDIO_KINDS, Kind.DELIVERED_ARCHIVES):
            amount += f", {_size(k.bytes)}"
        lines.append(f"{k.kind.value:<19} {_keeps(k.days):<15} {amount}  ({k.setting})")
    total = sum(k.bytes for k in kinds)
    lines.append(f"in all {sum(k.count for k in kinds)} {verb}, {_size(total)} on disk")
    return lines
