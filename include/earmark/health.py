"""``earmark health``: one verdict for a monitoring system, with Nagios exit codes.

Each check looks at one thing an operator would otherwise look at by hand: the two databases,
the Celery broker (Redis) and the depth of each queue, a live worker for every queue the day
needs, free disk on the data volume, the day against its deadline, the review backlog, tasks
running far longer than they should, and GPU work units a finished run left unscreened. The
worst check decides the exit code (0 ok, 1 warning, 2 critical, 3 unknown); the first line
names every check that is not ok. Thresholds are settings (``EARMARK_HEALTH_*``). Checks report
counts, ids and names of queues and tasks, never recording names or transcript text.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from earmark.config import Settings
from earmark.day_status import as_utc, day_status, named_queries
from earmark.store.db import Store

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATE_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
# Celery's Redis transport keeps a queue's messages of priority 0 under its name and the others
# under these suffixes (priority steps 3, 6, 9).
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


@dataclass(frozen=True)
class Check:
    """One check's state, a short reason and its figures."""

    name: str
    state: int
    summary: str
    figures: dict[str, Any] = field(default_factory=dict)


def required_queues(settings: Settings) -> tuple[str, ...]:
    """The Celery queues that need a live worker: transfer only where transfers are set up."""
    return ("default", "unpack", "gpu", *(("transfer",) if settings.transfer_source else ()))


def check_results_db(store: Store) -> Check:
    try:
        store.scalar("SELECT 1")
    except sa.exc.SQLAlchemyError as exc:
        return Check("results_db", CRITICAL, f"unreachable ({type(exc).__name__})")
    try:
        version = store.schema_version()
    except sa.exc.SQLAlchemyError:
        return Check("results_db", CRITICAL, "reachable but not migrated (earmark migrate)")
    return Check("results_db", OK, f"schema {version}", {"schema": version})


def check_metadata_db(url: str) -> Check:
    engine = sa.create_engine(url, pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        return Check("metadata_db", CRITICAL, f"unreachable ({type(exc).__name__})")
    finally:
        engine.dispose()
    return Check("metadata_db", OK, "reachable")


def check_broker(broker_url: str, queues: tuple[str, ...], warn_depth: int) -> Check:
    """Redis reachable, and the messages waiting in each Celery queue."""
    import redis  # noqa: PLC0415

    client = redis.Redis.from_url(broker_url, socket_connect_timeout=3, socket_timeout=3)
    try:
        depths = {q: sum(client.llen(q + suffix) for suffix in _PRIORITY_SUFFIXES) for q in queues}
    except redis.RedisError as exc:
        return Check("broker", CRITICAL, f"Redis unreachable ({type(exc).__name__})")
    finally:
        client.close()
    deep = {q: n for q, n in depths.items() if n > warn_depth}
    if deep:
        listed = ", ".join(f"{q} {n}" for q, n in deep.items())
        return Check("broker", WARNING, f"queues over {warn_depth}: {listed}", depths)
    return Check("broker", OK, ", ".join(f"{q} {n}" for q, n in depths.items()), depths)


def check_workers(
    active_queues: Callable[[], dict[str, list[dict]] | None], queues: tuple[str, ...]
) -> Check:
    """A live worker for every queue (Celery's ``inspect active_queues``, which pings them)."""
    try:
        replies = active_queues() or {}
    except Exception as exc:  # the broker's own error types vary by transport
        return Check("workers", CRITICAL, f"cannot ask the workers ({type(exc).__name__})")
    serving = {
        q: sorted(w for w, qs in replies.items() if q in {x["name"] for x in qs}) for q in queues
    }
    missing = [q for q, workers in serving.items() if not workers]
    figures = {q: len(w) for q, w in serving.items()}
    if missing:
        return Check("workers", CRITICAL, f"no live worker for {', '.join(missing)}", figures)
    return Check("workers", OK, ", ".join(f"{q} {n}" for q, n in figures.items()), figures)


def check_disk(data_root: Path, warn_gib: float, critical_gib: float) -> Check:
    try:
        free = shutil.disk_usage(data_root).free / 1024**3
    except OSError as exc:
        return Check("disk", CRITICAL, f"data volume unreadable ({exc.strerror})")
    figures = {"free_gib": round(free, 1)}
    if free < critical_gib:
        return Check("disk", CRITICAL, f"{free:.1f} GiB free (< {critical_gib:g})", figures)
    if free < warn_gib:
        return Check("disk", WARNING, f"{free:.1f} GiB free (< {warn_gib:g})", figures)
    return Check("disk", OK, f"{free:.1f} GiB free", figures)


def check_day(settings: Settings, store: Store, run_date: str, now: datetime) -> Check:
    """Critical once the deadline passed with the day unfinished or nothing delivered at all;
    a warning when the ETA falls after the deadline."""
    status = day_status(settings, store, run_date, now=now)
    deadline = datetime.fromisoformat(status.deadline)
    pending = sum(n for s, n in status.files.items() if s in ("ready", "transcribed"))
    figures = {"date": run_date, "pending_files": pending, "deadline": status.deadline}
    if status.eta:
        figures["eta"] = status.eta
    if now > deadline and not status.deliveries:
        return Check("day", CRITICAL, f"{run_date}: nothing delivered by the deadline", figures)
    if now > deadline and not status.complete:
        return Check(
            "day", CRITICAL, f"{run_date}: deadline missed, {pending} files pending", figures
        )
    if status.on_time is False and not status.complete:
        return Check("day", WARNING, f"{run_date}: ETA {status.eta} after the deadline", figures)
    state = "complete" if status.complete else f"{pending} files pending"
    return Check("day", OK, f"{run_date}: {state}", figures)


def check_review(store: Store, now: datetime, warn_items: int, warn_hours: float) -> Check:
    rows = store.rows(named_queries("monitoring")["review_backlog"])
    open_items = sum(int(r.n) for r in rows)
    oldest = [as_utc(r.oldest) for r in rows if r.oldest is not None]
    age_h = (now - min(oldest)).total_seconds() / 3600 if oldest else 0.0
    figures = {"open": open_items, "oldest_hours": round(age_h, 1)}
    if open_items > warn_items or age_h > warn_hours:
        return Check("review", WARNING, f"{open_items} open, oldest {age_h:.0f} h", figures)
    return Check("review", OK, f"{open_items} open", figures)


def check_long_tasks(meta_url: str, now: datetime, warn_minutes: float) -> Check:
    """Task instances running longer than ``warn_minutes`` (stuck, or far slower than planned)."""
    engine = sa.create_engine(meta_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT dag_id, task_id, map_index, run_id, start_date FROM task_instance"
                    " WHERE state = 'running' AND start_date < :cutoff ORDER BY start_date"
                ),
                {"cutoff": now - timedelta(minutes=warn_minutes)},
            ).all()
    except sa.exc.SQLAlchemyError as exc:
        return Check("tasks", UNKNOWN, f"cannot read task instances ({type(exc).__name__})")
    finally:
        engine.dispose()
    if rows:
        first = rows[0]
        return Check(
            "tasks",
            WARNING,
            f"{len(rows)} running > {warn_minutes:g} min, first {first.dag_id}.{first.task_id}"
            f"[{first.map_index}] of {first.run_id}",
            {"long_running": len(rows)},
        )
    return Check("tasks", OK, f"none running > {warn_minutes:g} min", {"long_running": 0})


def check_units(store: Store, meta_url: str) -> Check:
    """GPU work units whose files are still unscreened although their run is over (failed, or
    marked done): nothing will screen them until the day is rerun."""
    rows = store.rows(named_queries("monitoring")["unfinished_units"])
    if not rows:
        return Check("units", OK, "no GPU unit left unfinished", {"left_behind_files": 0})
    engine = sa.create_engine(meta_url)
    try:
        with engine.connect() as conn:
            active = {
                r.run_id
                for r in conn.execute(
                    sa.text(
                        "SELECT run_id FROM dag_run WHERE state IN ('queued', 'running')"
                        " AND run_id IN :ids"
                    ).bindparams(sa.bindparam("ids", expanding=True)),
                    {"ids": [r.run_id for r in rows]},
                )
            }
    except sa.exc.SQLAlchemyError as exc:
        return Check("units", UNKNOWN, f"cannot read runs ({type(exc).__name__})")
    finally:
        engine.dispose()
    left = [r for r in rows if r.run_id not in active]
    figures = {
        "left_behind_files": sum(int(r.files) for r in left),
        "left_behind_units": sum(int(r.units) for r in left),
        "in_progress_files": sum(int(r.files) for r in rows if r.run_id in active),
    }
    if not left:
        return Check("units", OK, f"{figures['in_progress_files']} files in running units", figures)
    first = left[0]
    days = sorted({str(r.run_date)[:10] for r in left})
    return Check(
        "units",
        WARNING,
        f"{figures['left_behind_files']} files in {figures['left_behind_units']} GPU units left"
        f" unscreened by finished runs (first {first.run_id}); rerun {', '.join(days)}",
        figures,
    )


def verdict(checks: list[Check]) -> tuple[int, str]:
    """The worst state and the one line a monitoring system shows."""
    worst = max((c.state for c in checks), default=UNKNOWN)
    bad = [c for c in checks if c.state != OK]
    detail = "; ".join(f"{c.name}: {c.summary}" for c in bad) or "all checks ok"
    return worst, f"EARMARK {STATE_NAMES[worst]} - {detail}"


def run_checks(
    settings: Settings,
    store: Store,
    *,
    meta_url: str,
    broker_url: str,
    active_queues: Callable[[], dict[str, list[dict]] | None],
    now: datetime | None = None,
    run_date: str | None = None,
) -> list[Check]:
    """Every check, each on its own (one failing never stops the others)."""
    now = now or datetime.now(UTC)
    run_date = run_date or now.astimezone(ZoneInfo(settings.timezone)).date().isoformat()
    queues = required_queues(settings)
    checks = [check_results_db(store), check_metadata_db(meta_url)]
    checks.append(check_broker(broker_url, queues, settings.health_queue_warn))
    checks.append(check_workers(active_queues, queues))
    checks.append(
        check_disk(
            settings.data_root, settings.health_disk_warn_gib, settings.health_disk_critical_gib
        )
    )
    if checks[0].state == OK:
        checks.append(check_day(settings, store, run_date, now))
        checks.append(
            check_review(
                store, now, settings.health_review_warn_items, settings.health_review_warn_hours
            )
        )
    if checks[1].state == OK:
        checks.append(check_long_tasks(meta_url, now, settings.health_task_warn_minutes))
        if checks[0].state == OK:
            checks.append(check_units(store, meta_url))
    return checks


def as_json(checks: list[Check]) -> dict[str, Any]:
    state, line = verdict(checks)
    return {"state": STATE_NAMES[state], "summary": line, "checks": [asdict(c) for c in checks]}
