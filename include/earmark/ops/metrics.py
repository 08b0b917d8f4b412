"""Prometheus metrics: today's day and the backlogs, read from the results DB at every scrape,
and what each kind of data holds under its retention (read every RETENTION_REFRESH).

``earmark metrics`` serves them on a local port (``EARMARK_METRICS_PORT``) for Prometheus to
scrape; Airflow's own metrics (scheduler, executor, task durations) come from its StatsD or
OpenTelemetry export (see the README). Labels are statuses, reason codes and kinds of data only:
never names, never transcript text. When the results DB cannot be read, ``earmark_up`` is 0 and
nothing else is reported, so a dashboard shows a gap rather than stale numbers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from earmark.config import Settings
from earmark.day.status import DayStatus, day_status, quarantine_report
from earmark.lifecycle.retention import Held, held_per_kind
from earmark.reasons import code_of
from earmark.store.db import Store
from earmark.store.sql import as_utc, named_queries

log = logging.getLogger(__name__)

# Every gauge this module can yield (ETA, throughput and on-time only when they are known);
# the Grafana dashboard in deploy/ may use these and no others (tests/unit/test_metrics.py).
METRIC_NAMES = frozenset(
    {
        "earmark_up",
        "earmark_scrape_seconds",
        "earmark_day_deliveries",
        "earmark_day_archives",
        "earmark_day_files",
        "earmark_day_review_items",
        "earmark_day_audio_seconds",
        "earmark_day_labels",
        "earmark_day_quarantined",
        "earmark_day_complete",
        "earmark_day_deadline_timestamp_seconds",
        "earmark_day_throughput_realtime_x",
        "earmark_day_eta_timestamp_seconds",
        "earmark_day_on_time",
        "earmark_waiting_deliveries",
        "earmark_review_backlog_items",
        "earmark_review_oldest_open_age_seconds",
        "earmark_files_in_flight",
        "earmark_audio_in_flight_seconds",
        "earmark_archives_waiting_to_unpack",
        "earmark_screened_last_hour_files",
        "earmark_screened_last_hour_audio_seconds",
        "earmark_quarantined_last_hour",
        "earmark_task_failures_last_hour",
        "earmark_retention_held_items",
        "earmark_retention_held_bytes",
        "earmark_retention_next_run_items",
        "earmark_retention_next_run_bytes",
    }
)
#: How long the retention figures of one scrape serve the next ones: they count every table
#: and change once a day, when the retention task runs.
RETENTION_REFRESH = timedelta(minutes=10)


def _timestamp(value: Any) -> float | None:
    return None if value is None else as_utc(value).timestamp()


def _gauge(name: str, doc: str, *labels: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


class EarmarkCollector(Collector):
    """Yields Earmark's gauges; every scrape reads the DB afresh (a few small queries)."""

    def __init__(self, settings: Settings, store: Store, clock: Any = None) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock or (lambda: datetime.now(UTC))
        self._retention: tuple[datetime, list[Held]] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("earmark_up", "1 when the results DB could be read")
        started = time.perf_counter()
        try:
            families = list(self._families(self.clock()))
        except sa.exc.SQLAlchemyError as exc:
            log.warning("results DB unreadable for a metrics scrape (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families
        took = GaugeMetricFamily("earmark_scrape_seconds", "Time the DB reads of this scrape took")
        took.add_metric([], time.perf_counter() - started)
        yield took

    def _families(self, now: datetime) -> Iterator[GaugeMetricFamily]:
        today = now.astimezone(self._zone()).date().isoformat()
        status = day_status(self.settings, self.store, today, now=now)
        audio = self.store.rows(named_queries("day_status")["audio_seconds"], d=today)[0]
        yield from _day_families(status, float(audio.total_s or 0), float(audio.pending_s or 0))
        yield _quarantines(quarantine_report(self.store, today))
        yield from self._backlogs(now)
        yield from self._last_hour(now)
        yield from _retention_families(self._held(now))

    def _zone(self) -> Any:
        return ZoneInfo(self.settings.timezone)

    def _held(self, now: datetime) -> list[Held]:
        """What each kind of data holds and the next retention run takes, read at most every
        RETENTION_REFRESH."""
        if self._retention is None or now - self._retention[0] >= RETENTION_REFRESH:
            today = now.astimezone(self._zone()).date()
            try:
                self._retention = (now, held_per_kind(self.settings, self.store, today))
            except OSError as exc:  # processed/ unreadable here: no retention figures
                log.warning("retention figures unreadable for a scrape (%s)", type(exc).__name__)
                return []
        return self._retention[1]

    def _backlogs(self, now: datetime) -> Iterator[GaugeMetricFamily]:
        queries = named_queries("monitoring")
        with self.store.engine.connect() as conn:
            review = list(
                conn.execute(sa.text(queries["review_backlog"]), {"now": now.astimezone(UTC)})
            )
            in_flight = list(conn.execute(sa.text(queries["files_in_flight"])))
            unpack = conn.execute(sa.text(queries["archives_waiting_to_unpack"])).one()
        items = _gauge("earmark_review_backlog_items", "Open review items, all days", "status")
        age = _gauge(
            "earmark_review_oldest_open_age_seconds",
            "Age of the oldest open review item (0 when none)",
        )
        oldest = [t for t in (_timestamp(r.oldest) for r in review) if t is not None]
        for status_name in ("pending", "claimed"):
            count = next((int(r.n) for r in review if r.status == status_name), 0)
            items.add_metric([status_name], count)
        age.add_metric([], max(0.0, now.timestamp() - min(oldest)) if oldest else 0.0)
        files = _gauge("earmark_files_in_flight", "Files of any day not yet classified", "status")
        seconds = _gauge(
            "earmark_audio_in_flight_seconds",
            "Audio seconds of any day not yet classified",
            "status",
        )
        for status_name in ("ready", "transcribed"):
            row = next((r for r in in_flight if r.status == status_name), None)
            files.add_metric([status_name], int(row.n) if row else 0)
            seconds.add_metric([status_name], float(row.audio_s) if row else 0.0)
        waiting = _gauge("earmark_archives_waiting_to_unpack", "Registered archives of any day")
        waiting.add_metric([], int(unpack.n or 0))
        yield from (items, age, files, seconds, waiting)

    def _last_hour(self, now: datetime) -> Iterator[GaugeMetricFamily]:
        """Throughput, quarantines by reason and task failures over the last hour."""
        queries = named_queries("monitoring")
        since = {"since": self.store.timestamp(now - timedelta(hours=1))}
        with self.store.engine.connect() as conn:
            screened = conn.execute(sa.text(queries["screened_since"]), since).one()
            refused = [
                dict(r._mapping) for r in conn.execute(sa.text(queries["quarantined_since"]), since)
            ]
            failures = list(conn.execute(sa.text(queries["task_failures_since"]), since))
        files = _gauge("earmark_screened_last_hour_files", "Files screened in the last hour")
        files.add_metric([], int(screened.files or 0))
        audio = _gauge(
            "earmark_screened_last_hour_audio_seconds", "Audio seconds screened in the last hour"
        )
        audio.add_metric([], float(screened.audio_s or 0))
        yield from (files, audio)
        yield _quarantines(
            refused,
            "earmark_quarantined_last_hour",
            "Deliveries and archives rejected and files quarantined in the last hour, by reason",
        )
        failed = _gauge("earmark_task_failures_last_hour", "Task failures in the last hour", "task")
        for row in failures:
            failed.add_metric([row.task_id], int(row.n))
        yield failed


def _day_families(
    status: DayStatus, audio_s: float, pending_s: float
) -> Iterator[GaugeMetricFamily]:
    for name, doc, counts in (
        ("earmark_day_deliveries", "Today's deliveries by verdict", status.deliveries),
        ("earmark_day_archives", "Today's archives by status", status.archives),
        ("earmark_day_files", "Today's files by status", status.files),
        ("earmark_day_review_items", "Today's review items by status", status.review_queue),
    ):
        family = _gauge(name, doc, "status")
        for key, count in sorted(counts.items()):
            family.add_metric([key], count)
        yield family
    audio = _gauge("earmark_day_audio_seconds", "Today's audio, all and still to screen", "part")
    audio.add_metric(["total"], audio_s)
    audio.add_metric(["pending"], pending_s)
    yield audio
    labels = _gauge("earmark_day_labels", "Today's (file, policy) labels", "label")
    labels.add_metric(["all"], status.labels)
    labels.add_metric(["flagged"], status.flagged)
    yield labels
    waiting = _gauge("earmark_waiting_deliveries", "Ready in incoming/ but not taken by a run")
    waiting.add_metric([], len(status.waiting))
    yield waiting
    complete = _gauge("earmark_day_complete", "1 when today's day is screened completely")
    complete.add_metric([], int(status.complete))
    yield complete
    deadline = _gauge("earmark_day_deadline_timestamp_seconds", "Today's deadline (Unix time)")
    deadline.add_metric([], _timestamp(status.deadline) or 0.0)
    yield deadline
    if status.throughput_x_realtime is not None:
        speed = _gauge("earmark_day_throughput_realtime_x", "Audio seconds per GPU second today")
        speed.add_metric([], status.throughput_x_realtime)
        yield speed
    if status.eta is not None:
        eta = _gauge("earmark_day_eta_timestamp_seconds", "When today's day will be done")
        eta.add_metric([], _timestamp(status.eta) or 0.0)
        yield eta
    if status.on_time is not None:
        on_time = _gauge("earmark_day_on_time", "1 when done, or expected done, by the deadline")
        on_time.add_metric([], int(status.on_time))
        yield on_time


def _retention_families(held: list[Held]) -> Iterator[GaugeMetricFamily]:
    """Per kind of data (a retention rule): recordings (archives) and bytes on disk kept now,
    and what the next retention run takes."""
    for name, doc, value in (
        ("earmark_retention_held_items", "Recordings (archives) kept, per kind", "count"),
        ("earmark_retention_held_bytes", "Bytes on disk kept, per kind", "bytes"),
        ("earmark_retention_next_run_items", "What the next retention run takes", "next_count"),
        ("earmark_retention_next_run_bytes", "Bytes the next retention run frees", "next_bytes"),
    ):
        family = _gauge(name, doc, "kind")
        for h in held:
            family.add_metric([h.kind.value], getattr(h, value))
        yield family


def _quarantines(
    rows: list[dict[str, Any]],
    name: str = "earmark_day_quarantined",
    doc: str = "Today's rejected deliveries and archives and quarantined files, by reason code",
) -> GaugeMetricFamily:
    counts: dict[tuple[str, str], int] = {}
    for row in rows:
        key = (row["kind"], code_of(row["reason"] or "unknown"))
        counts[key] = counts.get(key, 0) + 1
    family = _gauge(name, doc, "kind", "reason")
    for (kind, code), count in sorted(counts.items()):
        family.add_metric([kind, code], count)
    return family


def serve(settings: Settings, store: Store, port: int, bind: str) -> None:
    """Serve ``/metrics`` until interrupted."""
    from prometheus_client import CollectorRegistry, start_http_server  # noqa: PLC0415

    registry = CollectorRegistry(auto_describe=False)
    registry.register(EarmarkCollector(settings, store))
    server, thread = start_http_server(port, addr=bind, registry=registry)
    print(f"serving Earmark metrics on http://{bind}:{port}/metrics", flush=True)
    try:
        while thread.is_alive():
            thread.join(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
