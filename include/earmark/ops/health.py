"""``earmark health``: one verdict for a monitoring system, with Nagios exit codes.

Each check looks at one thing an operator would otherwise look at by hand: the two databases,
the Celery broker (Redis) and the depth of each queue, a live worker for every queue the day
needs and as many live GPU slots as the ``gpu`` pool has, free disk on the data volume, the day
against its deadline, the review backlog, tasks running far longer than they should, and GPU
work units a finished run left unscreened. The worst check decides the exit code (0 ok,
1 warning, 2 critical, 3 unknown); the first line names every check that is not ok. Thresholds
are settings (``EARMARK_HEALTH_*``). Checks report counts, ids and names of queues, workers and
tasks, never recording names or transcript text.

The workers are asked with one Celery broadcast, which ends
``EARMARK_HEALTH_WORKER_WAIT_SECONDS`` after the last reply, in a thread while the databases
are read, and not at all when the broker is unreachable, so a call answers in a few seconds;
an answer that looks short is asked once more, waiting longer, before a missing worker is
reported (a reply may only have been slow).
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from earmark.config import Settings
from earmark.day.status import day_status, format_duration
from earmark.store.db import Store
from earmark.store.sql import as_utc, named_queries

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATE_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
# Celery's Redis transport keeps a queue's messages of priority 0 under its name and the others
# under these suffixes (priority steps 3, 6, 9).
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")
# Longest the workers' broadcast may take beyond its own wait before health gives up on it.
_WORKERS_GRACE_S = 10.0
# A short answer is confirmed by asking again, waiting this many times as long.
_CONFIRM_FACTOR = 4


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


@dataclass(frozen=True)
class Worker:
    """A live Celery worker as it answered: the queues it consumes and its pool's concurrency
    (None when it did not say)."""

    queues: tuple[str, ...]
    concurrency: int | None = None


@dataclass(frozen=True)
class GpuSlots:
    """How many GPU slots should be live: the ``gpu`` pool's slots (what the scheduler runs at
    once) when the metadata DB says, else ``EARMARK_GPU_SLOTS``; both, to compare them."""

    pool: int | None
    setting: int

    @property
    def expected(self) -> int:
        return self.pool if self.pool is not None else self.setting

    @property
    def source(self) -> str:
        return "the gpu pool" if self.pool is not None else "EARMARK_GPU_SLOTS"


def _serving(replies: Mapping[str, Worker], queues: tuple[str, ...]) -> dict[str, list[str]]:
    return {q: sorted(w for w, info in replies.items() if q in info.queues) for q in queues}


def _live_gpu_slots(replies: Mapping[str, Worker], names: list[str]) -> int:
    """A worker that did not say its concurrency counts for one slot (it is live)."""
    return sum(replies[w].concurrency or 1 for w in names)


def looks_short(replies: Mapping[str, Worker], queues: tuple[str, ...], gpu: GpuSlots) -> bool:
    """A queue without a live worker, or fewer live GPU slots than expected."""
    serving = _serving(replies, queues)
    if not all(serving.values()):
        return True
    return "gpu" in queues and _live_gpu_slots(replies, serving["gpu"]) < gpu.expected


def check_workers(replies: Mapping[str, Worker], queues: tuple[str, ...], gpu: GpuSlots) -> Check:
    """A live worker for every queue, and the live GPU slots against the expected count.

    A GPU slot is one task a worker on the ``gpu`` queue runs at once (its concurrency; one per
    GPU in production), so two workers of concurrency 1 and one of concurrency 2 both give 2.
    None live is critical; fewer than expected a warning, with both numbers; a ``gpu`` pool
    that disagrees with ``EARMARK_GPU_SLOTS`` a warning too (the planner and the scheduler
    would then count different GPUs).
    """
    serving = _serving(replies, queues)
    figures: dict[str, Any] = {q: len(w) for q, w in serving.items()}
    summary = {q: str(n) for q, n in figures.items()}
    critical = [f"no live worker for {q}" for q, names in serving.items() if not names]
    warnings: list[str] = []
    if "gpu" in queues:
        names = serving["gpu"]
        live = _live_gpu_slots(replies, names)
        figures |= {
            "gpu_slots_live": live,
            "gpu_slots_expected": gpu.expected,
            "gpu_pool_slots": gpu.pool,
            "gpu_slots_setting": gpu.setting,
            "gpu_workers": names,
        }
        summary["gpu"] = f"{live} of {gpu.expected} slots"
        if not names:
            critical[critical.index("no live worker for gpu")] += (
                f" (0 of {gpu.expected} GPU slots live)"
            )
        elif live < gpu.expected:
            said = ", ".join(f"{w} x{replies[w].concurrency or '?'}" for w in names)
            warnings.append(
                f"GPU slots: {live} of {gpu.expected} live"
                f" (expected {gpu.expected} from {gpu.source}; live: {said})"
            )
        if gpu.pool is not None and gpu.pool != gpu.setting:
            warnings.append(f"gpu pool has {gpu.pool} slots but EARMARK_GPU_SLOTS is {gpu.setting}")
    if critical or warnings:
        state = CRITICAL if critical else WARNING
        return Check("workers", state, ", ".join(critical + warnings), figures)
    return Check("workers", OK, ", ".join(f"{q} {n}" for q, n in summary.items()), figures)


class WorkerQuestion:
    """The workers asked in a thread (one Celery broadcast), so the databases are read while
    it waits; asked once more, waiting longer, before a missing worker is reported."""

    def __init__(self, ask: Callable[[float], Mapping[str, Worker]], wait_s: float) -> None:
        self._ask = ask
        self._wait_s = wait_s
        self._answer: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._run, name="earmark-health", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._answer["replies"] = self._ask(self._wait_s)
        except Exception as exc:  # the broker's own error types vary by transport
            self._answer["error"] = exc

    def check(self, queues: tuple[str, ...], gpu: GpuSlots) -> Check:
        """The workers check from the answer; a short answer is confirmed (a reply may only
        have been slow: whoever answers either time is live)."""
        # The broadcast ends on its own; this bounds a broker that took the connection and
        # then went silent.
        self._thread.join(self._wait_s + _WORKERS_GRACE_S)
        try:
            if self._thread.is_alive():
                raise TimeoutError("no answer from the broker")
            if "error" in self._answer:
                raise self._answer["error"]
            replies = dict(self._answer.get("replies") or {})
            if looks_short(replies, queues, gpu):
                again = self._ask(self._wait_s * _CONFIRM_FACTOR)
                for name, worker in again.items():
                    if name not in replies or replies[name].concurrency is None:
                        replies[name] = worker
        except Exception as exc:  # the broker's own error types vary by transport
            return Check("workers", CRITICAL, f"cannot ask the workers ({type(exc).__name__})")
        return check_workers(replies, queues, gpu)


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
    rows = store.rows(named_queries("monitoring")["review_backlog"], now=now.astimezone(UTC))
    open_items = sum(int(r.n) for r in rows)
    oldest = [as_utc(r.oldest) for r in rows if r.oldest is not None]
    age_s = max(0.0, (now - min(oldest)).total_seconds()) if oldest else 0.0
    figures = {"open": open_items, "oldest_hours": round(age_s / 3600, 2)}
    summary = f"{open_items} open" + (f", oldest {format_duration(age_s)}" if oldest else "")
    if open_items > warn_items or age_s / 3600 > warn_hours:
        return Check("review", WARNING, summary, figures)
    return Check("review", OK, summary, figures)


def check_long_tasks(meta_url: str, now: datetime, warn_minutes: float) -> Check:
    """Task instances running longer than ``warn_minutes`` (stuck, or far slower than planned)."""
    engine = sa.create_engine(meta_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(named_queries("health")["long_running_tasks"]),
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
                    sa.text(named_queries("health")["active_runs"]).bindparams(
                        sa.bindparam("ids", expanding=True)
                    ),
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


def gpu_pool_slots(meta_url: str) -> int | None:
    """The ``gpu`` pool's slots in Airflow's metadata DB (None: no such pool, or unreadable)."""
    engine = sa.create_engine(meta_url)
    try:
        with engine.connect() as conn:
            value = conn.execute(sa.text(named_queries("health")["gpu_pool_slots"])).scalar()
    except sa.exc.SQLAlchemyError:
        return None
    finally:
        engine.dispose()
    return None if value is None else int(value)


def run_checks(
    settings: Settings,
    store: Store,
    *,
    meta_url: str,
    broker_url: str,
    workers: Callable[[float], Mapping[str, Worker]],
    now: datetime | None = None,
    run_date: str | None = None,
) -> list[Check]:
    """Every check, each on its own (one failing never stops the others).

    ``workers(wait_s)`` is the one Celery broadcast (seconds of waiting): it runs in a thread
    while the databases are read, and is not called when the broker is unreachable.
    """
    now = now or datetime.now(UTC)
    run_date = run_date or now.astimezone(ZoneInfo(settings.timezone)).date().isoformat()
    queues = required_queues(settings)
    broker = check_broker(broker_url, queues, settings.health_queue_warn)
    question = (
        WorkerQuestion(workers, settings.health_worker_wait_seconds)
        if broker.state != CRITICAL
        else None
    )
    results_db, metadata_db = check_results_db(store), check_metadata_db(meta_url)
    disk = check_disk(
        settings.data_root, settings.health_disk_warn_gib, settings.health_disk_critical_gib
    )
    later = []
    if results_db.state == OK:
        later.append(check_day(settings, store, run_date, now))
        later.append(
            check_review(
                store, now, settings.health_review_warn_items, settings.health_review_warn_hours
            )
        )
    if metadata_db.state == OK:
        later.append(check_long_tasks(meta_url, now, settings.health_task_warn_minutes))
        if results_db.state == OK:
            later.append(check_units(store, meta_url))
    pool = gpu_pool_slots(meta_url) if metadata_db.state == OK else None
    gpu = GpuSlots(pool, settings.gpu_slots)
    workers_check = (
        question.check(queues, gpu)
        if question is not None
        else Check("workers", CRITICAL, "cannot ask the workers: the broker is unreachable")
    )
    return [results_db, metadata_db, broker, workers_check, disk, *later]


def as_json(checks: list[Check]) -> dict[str, Any]:
    state, line = verdict(checks)
    return {"state": STATE_NAMES[state], "summary": line, "checks": [asdict(c) for c in checks]}
