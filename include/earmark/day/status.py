"""The day's state from the results DB: noon check, ETA and the readable summary.

Queries people read live in ``earmark/store/queries/``; this module runs them and shapes
the answers.
Counts and ids only: nothing here touches transcript text.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa

from earmark.config import Settings
from earmark.day.schedule import catchup_day, deadline_for
from earmark.names import printable
from earmark.statuses import FILE_DONE, ArchiveStatus
from earmark.store.db import Store
from earmark.store.sql import named_queries


@dataclass
class DayStatus:
    """Where one day stands; every field is a count, a time or a flag."""

    run_date: str
    deliveries: dict[str, int] = field(default_factory=dict)
    archives: dict[str, int] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)
    audio_hours: float = 0.0
    pending_audio_hours: float = 0.0
    labels: int = 0
    flagged: int = 0
    review_queue: dict[str, int] = field(default_factory=dict)
    throughput_x_realtime: float | None = None
    deadline: str = ""
    now: str = ""
    complete: bool = False
    eta: str | None = None
    on_time: bool | None = None
    # Ready in incoming/ but not taken by any run yet (today only), and what happens to them.
    waiting: list[str] = field(default_factory=list)
    waiting_for: str = ""

    @property
    def nothing_delivered(self) -> bool:
        """No delivery at all for the day: none registered, duplicate or rejected."""
        return not self.deliveries and not self.archives

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def format_duration(seconds: float) -> str:
    """A duration as people read it, rounded honestly: "45 s", "12 min", "2.4 h", "3.1 days".

    Minutes under an hour (0.2 h is "12 min", never "0 h"), hours with one decimal under two
    days, then days.
    """
    seconds = max(0.0, seconds)
    if round(seconds) < 60:
        return f"{round(seconds)} s"
    if round(seconds / 60) < 60:
        return f"{round(seconds / 60)} min"
    if round(seconds / 3600, 1) < 48:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def data_quality_checks(run_date: str) -> dict[str, str]:
    """The data-quality queries (``store/queries/data_quality.sql``) for ``run_date``, by name.

    The common-sql check operators run raw DB-API SQL, whose placeholders differ between
    Postgres and SQLite, so the date is written in; it is parsed as a date first.
    """
    day = date.fromisoformat(run_date).isoformat()
    queries = named_queries("data_quality")
    return {name: sql.replace("{{ run_date }}", day) for name, sql in queries.items()}


def day_status(
    settings: Settings, store: Store, run_date: str, now: datetime | None = None
) -> DayStatus:
    """Counts by status, throughput from the recorded GPU batches, completeness and ETA."""
    queries = named_queries("day_status")
    now = now or datetime.now(UTC)
    utc_now = now.astimezone(UTC)  # compared with claimed_until as the review queue writes it
    status = DayStatus(run_date=run_date)
    with store.engine.connect() as conn:

        def run(name: str) -> list[sa.Row]:
            return list(conn.execute(sa.text(queries[name]), {"d": run_date, "now": utc_now}))

        status.deliveries = {r.status: int(r.n) for r in run("deliveries_by_status")}
        status.archives = {r.status: int(r.n) for r in run("archives_by_status")}
        status.files = {r.status: int(r.n) for r in run("files_by_status")}
        audio = run("audio_seconds")[0]
        status.audio_hours = round(float(audio.total_s or 0) / 3600, 3)
        status.pending_audio_hours = round(float(audio.pending_s or 0) / 3600, 3)
        labels = run("labels")[0]
        status.labels, status.flagged = int(labels.n or 0), int(labels.flagged or 0)
        for r in run("review_item_counts"):  # per policy and kind: summed by status here
            status.review_queue[r.status] = status.review_queue.get(r.status, 0) + int(r.n)
        speed = run("gpu_throughput")[0]
    if speed.wall_s:
        status.throughput_x_realtime = round(float(speed.audio_s) / float(speed.wall_s), 1)
    deadline = deadline_for(run_date, settings)
    status.deadline = deadline.isoformat()
    if run_date == now.astimezone(deadline.tzinfo).date().isoformat():
        from earmark.ingest.deliveries import waiting_deliveries  # noqa: PLC0415

        status.waiting = [printable(name) for name in waiting_deliveries(settings)]
    if status.waiting:
        cutoff = settings.intake_cutoff.strftime("%H:%M")
        status.waiting_for = (
            f"a catch-up run today (before the {cutoff} cut-off)"
            if catchup_day(now, settings) == run_date
            else f"the next day's run (arrived after the {cutoff} cut-off)"
        )
    status.now = now.astimezone(deadline.tzinfo).isoformat(timespec="seconds")
    live = sum(n for s, n in status.files.items() if s not in FILE_DONE)
    status.complete = live == 0 and status.archives.get(ArchiveStatus.REGISTERED, 0) == 0
    if status.complete:
        status.on_time = now <= deadline
    elif status.throughput_x_realtime:
        seconds_left = status.pending_audio_hours * 3600 / status.throughput_x_realtime
        eta = now.timestamp() + seconds_left
        status.eta = datetime.fromtimestamp(eta, deadline.tzinfo).isoformat(timespec="seconds")
        status.on_time = eta <= deadline.timestamp()
    return status


def format_summary(status: DayStatus) -> str:
    """A summary a person can read at a glance."""

    def counts(d: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"

    if status.nothing_delivered:
        verdict = "NOTHING DELIVERED"
    elif status.complete:
        verdict = "complete, on time" if status.on_time else "complete, AFTER the deadline"
    else:
        verdict = f"INCOMPLETE (ETA {status.eta or 'unknown'})"
    lines = [
        f"Earmark day {status.run_date}",
        f"  deliveries    {counts(status.deliveries)}",
        f"  archives      {counts(status.archives)}",
        f"  files         {counts(status.files)}",
        f"  audio         {status.audio_hours:.2f} h ({status.pending_audio_hours:.2f} h pending)",
        f"  labels        {status.labels} ({status.flagged} flagged)",
        f"  review queue  {counts(status.review_queue)}",
        "  throughput    "
        + (f"{status.throughput_x_realtime}x real time" if status.throughput_x_realtime else "n/a"),
        f"  deadline      {status.deadline}: {verdict}",
    ]
    if status.waiting:
        lines.append(
            f"  waiting       {len(status.waiting)} in incoming/ for {status.waiting_for}: "
            + ", ".join(status.waiting)
        )
    return "\n".join(lines)


def quarantine_report(store: Store, run_date: str) -> list[dict[str, Any]]:
    """Every rejected archive and quarantined file of the day, with its reason."""
    query = named_queries("day_status")["quarantine"]
    return [dict(r._mapping) for r in store.rows(query, d=run_date)]


def review_items(store: Store, run_date: str, limit: int = 10) -> list[dict[str, Any]]:
    """The day's flags in the review queue, highest score first (not the blind second reviews
    and samples: their scores stay hidden)."""
    query = named_queries("day_status")["review_items"]
    now = datetime.now(UTC)  # a claim past its lease is listed as pending
    return [dict(r._mapping) for r in store.rows(query, d=run_date, now=now)[:limit]]


def review_item_counts(
    store: Store, run_date: str, now: datetime | None = None
) -> list[dict[str, Any]]:
    """The day's review items per policy, kind and status (lapsed claims count as pending):
    counts only, for pages any reviewer may open."""
    query = named_queries("day_status")["review_item_counts"]
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return [dict(r._mapping) for r in store.rows(query, d=run_date, now=now)]


def format_items(items: list[dict[str, Any]], quarantined: list[dict[str, Any]]) -> str:
    """Review items and quarantine entries as short lines (ids and names only)."""
    lines = ["Review queue (top by score):"] if items else ["Review queue: empty"]
    lines += [
        f"  #{i['id']:<5} {i['status']:<8} {i['policy']:<12} {i['score']:.3f}  "
        f"{printable(i['archive'])}:{printable(i['member_path'])}"
        for i in items
    ]
    if quarantined:
        lines.append("Quarantine:")
        lines += [
            f"  {q['kind']:<8} {printable(q['item'])}  ({printable(q['reason'] or '')})"
            for q in quarantined
        ]
    return "\n".join(lines)
