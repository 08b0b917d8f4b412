"""Mails that say what happened: a failed run, nothing delivered by the deadline, a missed
deadline, and a run that finished after its deadline ("done late").

Each mail names the day, what is missing or failed (task, map name, the reason line), the day's
counts, and links to the run, the day page and the day's report. The deadline mail says what
the run's tasks are doing (running, queued, waiting) and whether anything is still moving, and
gives an ETA only when the day's throughput is measured and the run is moving. Counts, ids, task
names and reason lines only: never transcript text.

Why a task failed is written by the failing task itself (:func:`record_task_failure`, every
task's ``on_failure_callback``) into ``task_failures``, before Airflow marks it failed, so the
run's failure mail (:func:`run_failed`, run by the dag-processor) can name it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, select_autoescape

from earmark.config import Settings
from earmark.day.schedule import (
    deadline_for,
    deadline_interval,
    deadline_reference,
    resolve_run_date,
)
from earmark.day.status import DayStatus, day_status, format_duration
from earmark.names import printable
from earmark.store.db import Store
from earmark.store.sql import as_utc, named_queries

log = logging.getLogger(__name__)

REASON_MAX = 300
NO_REASON = "no reason recorded: marked failed by hand, or its process was lost"
DAG_ID = "earmark_daily"


@dataclass(frozen=True)
class FailedTask:
    """One failed task instance of a run and why (the reason's first line)."""

    task_id: str
    map_index: int = -1
    map_name: str | None = None
    reason: str = NO_REASON

    @property
    def label(self) -> str:
        if self.map_index < 0:
            return self.task_id
        return f"{self.task_id} [{self.map_name or self.map_index}]"


@dataclass(frozen=True)
class Mail:
    subject: str
    html: str


def reason_line(error: BaseException | str | None) -> str:
    """An exception as one short line: its type and the first line of its message.

    Only the first line: a database error's later lines carry the statement and its parameters.
    """
    if error is None:
        return NO_REASON
    if isinstance(error, BaseException):
        first = next(iter(str(error).strip().splitlines()), "")
        text = f"{type(error).__name__}: {first}" if first else type(error).__name__
    else:
        text = next(iter(str(error).strip().splitlines()), "") or NO_REASON
    text = printable(text)
    return text if len(text) <= REASON_MAX else text[: REASON_MAX - 1] + "…"


# ---- recording a task's failure (runs in the failing task's process) --------------------------
def record_task_failure(context: Mapping[str, Any]) -> None:
    """A task's ``on_failure_callback``: why it failed, into ``task_failures``. Never raises."""
    try:
        ti = context.get("ti") or context.get("task_instance")
        if ti is None:  # not a task's callback: nothing to record (logged below)
            raise LookupError("no task instance in the callback's context")
        run_id = str(context.get("run_id") or getattr(ti, "run_id", ""))
        map_name = (
            getattr(ti, "rendered_map_index", None)
            or context.get("unit_label")
            or context.get("archive_label")
        )
        run_date = None
        try:
            run_date = ti.xcom_pull(task_ids="resolve_run_date")
        except Exception:  # the task that failed may be the one that produces it
            run_date = None
        from earmark.orchestration.airflow_seam import results_store  # noqa: PLC0415

        store = results_store(Settings.from_env())
        try:
            save_failure(
                store,
                run_id=run_id,
                run_date=run_date if isinstance(run_date, str) else None,
                failed=FailedTask(
                    task_id=ti.task_id,
                    map_index=int(getattr(ti, "map_index", -1) or -1),
                    map_name=str(map_name) if map_name not in (None, "") else None,
                    reason=reason_line(context.get("exception")),
                ),
                try_number=int(getattr(ti, "try_number", 1) or 1),
            )
        finally:
            store.dispose()
    except Exception as error:  # a callback must never hide the task's own failure
        log.warning("could not record the task failure (%s)", type(error).__name__)


def save_failure(
    store: Store, *, run_id: str, run_date: str | None, failed: FailedTask, try_number: int
) -> None:
    """One ``task_failures`` row; a second record of the same try is ignored."""
    with store.begin() as conn:
        conn.execute(
            _sql("save_failure"),
            {
                "run_id": run_id,
                "run_date": run_date,
                "task_id": failed.task_id,
                "map_index": failed.map_index,
                "map_name": failed.map_name,
                "try_number": try_number,
                "reason": failed.reason,
            },
        )


def recorded_failures(store: Store, run_id: str) -> tuple[list[FailedTask], str | None]:
    """The run's recorded failures (last try of each task, oldest first) and its run date."""
    rows = store.rows(named_queries("alerts")["run_failures"], run_id=run_id)
    failures = [FailedTask(r.task_id, int(r.map_index), r.map_name, r.reason) for r in rows]
    dates = [str(r.run_date)[:10] for r in rows if r.run_date is not None]
    return failures, (dates[0] if dates else None)


def _sql(name: str) -> Any:
    import sqlalchemy as sa  # noqa: PLC0415

    return sa.text(named_queries("alerts")[name])


# ---- what a run is doing -------------------------------------------------------------------------
#: The stages the deadline mail reports, by task id, in run order; GPU stages wait for a GPU worker.
STAGES = {"unpack": "unpack", "gpu_unit.transcribe": "transcribe", "gpu_unit.classify": "classify"}
GPU_STAGES = frozenset({"gpu_unit.transcribe", "gpu_unit.classify"})
# Airflow's task states in the words of the mail, in the order they are listed.
_STATE_WORDS = {
    "scheduled": "waiting for a slot",
    "up_for_retry": "up for retry",
    "up_for_reschedule": "up for retry",
    "deferred": "deferred",
    "success": "done",
    "skipped": "done",
    "failed": "failed",
    "upstream_failed": "failed",
}
_NOT_STARTED = "not started"


@dataclass(frozen=True)
class RunProgress:
    """What a run's task instances are doing and when its day last moved.

    ``tasks``: Airflow's states counted per task id (None when Airflow could not be asked);
    ``last_change``: the latest change of the day in the results DB (an archive or file status,
    a transcript, a label); ``units_planned``: when the run planned its GPU work units.
    """

    tasks: dict[str, Counter[str]] | None
    last_change: datetime | None = None
    units_planned: datetime | None = None

    def count(self, state: str) -> int:
        """Task instances of the run in ``state``, over every task."""
        return sum(c[state] for c in (self.tasks or {}).values())


def count_task_states(states: Mapping[str, str | None]) -> dict[str, Counter[str]]:
    """Airflow's task states of one run (keyed ``task_id``, or ``task_id_<map index>`` for a
    mapped instance) counted per task id; an instance with no state counts as "none"."""
    counted: dict[str, Counter[str]] = {}
    for key, state in states.items():
        head, _, tail = key.rpartition("_")
        task_id = head if head and tail.isdigit() else key
        counted.setdefault(task_id, Counter())[str(state or "none").lower()] += 1
    return counted


def run_task_states(run_id: str) -> dict[str, str | None] | None:
    """The states of every task instance of the run, asked of Airflow through the Task SDK
    (the triggerer and the dag-processor relay it); None where there is no one to ask."""
    try:
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance  # noqa: PLC0415

        states = RuntimeTaskInstance.get_task_states(dag_id=DAG_ID, run_ids=[run_id])
    except Exception:  # an in-process test run, or a process without a supervisor
        return None
    return dict((states or {}).get(run_id) or {})


def run_progress(
    store: Store, run_id: str, run_date: str, states: Mapping[str, str | None] | None
) -> RunProgress:
    """The run's task states (counted) and, from the results DB, when its day last moved."""
    row = store.rows(named_queries("alerts")["day_progress"], d=run_date, run_id=run_id)[0]
    changes = [
        as_utc(v)
        for v in (row.archive_changed, row.file_changed, row.transcribed, row.labelled)
        if v is not None
    ]
    return RunProgress(
        tasks=None if states is None else count_task_states(states),
        last_change=max(changes, default=None),
        units_planned=as_utc(row.units_planned) if row.units_planned is not None else None,
    )


def stalled(progress: RunProgress, now: datetime, stall_minutes: float) -> str | None:
    """Why the run is not moving, or None while it is: none of its tasks running (only queued
    or waiting), or nothing of the day changed for ``stall_minutes``."""
    if progress.tasks is not None and progress.count("running") == 0:
        waiting = progress.count("queued") + progress.count("scheduled")
        return f"no task running ({waiting} queued or waiting for a slot)"
    if progress.last_change is not None and now - progress.last_change > timedelta(
        minutes=stall_minutes
    ):
        quiet = format_duration((now - progress.last_change).total_seconds())
        return f"tasks running but nothing of the day has changed for {quiet}"
    return None


def _clock(moment: datetime, timezone: str, day: str) -> str:
    """A time of ``day`` as "09:12 GMT"; of another day with its date."""
    local = moment.astimezone(ZoneInfo(timezone))
    fmt = "%H:%M %Z" if local.date().isoformat() == day else "%Y-%m-%d %H:%M %Z"
    return local.strftime(fmt)


def stage_lines(progress: RunProgress, timezone: str, day: str) -> list[tuple[str, str]]:
    """One line per stage the run has reached: "transcribe: 0 running, 2 queued (waiting for a
    GPU worker since 09:12 GMT)". A GPU stage waits from when its units were planned, or from
    the day's last change if that is later."""
    lines = []
    for task_id, name in STAGES.items():
        counts = (progress.tasks or {}).get(task_id)
        if not counts:
            continue
        running, queued = counts["running"], counts["queued"]
        parts = [f"{running} running", f"{queued} queued"]
        words: Counter[str] = Counter()
        for state, n in counts.items():
            if state not in ("running", "queued"):
                words[_STATE_WORDS.get(state, _NOT_STARTED)] += n
        order = [*dict.fromkeys(_STATE_WORDS.values()), _NOT_STARTED]
        parts += [f"{words[w]} {w}" for w in order if words[w]]
        line = ", ".join(parts)
        if queued:
            gpu = task_id in GPU_STAGES
            line += f" (waiting for a {'GPU ' if gpu else ''}worker"
            marks = [progress.last_change, progress.units_planned if gpu else None]
            since = max((m for m in marks if m is not None), default=None)
            if running == 0 and since is not None:
                line += f" since {_clock(since, timezone, day)}"
            line += ")"
        lines.append((name, line))
    return lines


# ---- composing ---------------------------------------------------------------------------------
def _templates() -> Environment:
    env = Environment(
        loader=PackageLoader("earmark.day", "templates"), autoescape=select_autoescape(["html"])
    )
    env.filters["printable"] = printable
    return env


def links(run_date: str, run_id: str | None, base_url: str) -> dict[str, str]:
    """The run in Airflow's UI, the day page and the day's report."""
    base = base_url.rstrip("/")
    found = {
        "day page": f"{base}/earmark/?date={run_date}",
        "day report": f"{base}/earmark/report/{run_date}",
    }
    if run_id:
        found = {"run in Airflow": f"{base}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}", **found}
    return found


def airflow_base_url() -> str:
    """Where people open Airflow: ``[api] base_url``; else the api-server address the hosts
    use (``[core] execution_api_server_url``); else this host's api-server port."""
    from urllib.parse import urlsplit  # noqa: PLC0415

    from airflow.configuration import conf  # noqa: PLC0415

    base = conf.get("api", "base_url", fallback=None)
    if base and base.startswith("http"):
        return base
    execution = urlsplit(conf.get("core", "execution_api_server_url", fallback=None) or "")
    if execution.scheme and execution.netloc:
        return f"{execution.scheme}://{execution.netloc}"
    return f"http://localhost:{conf.get('api', 'port', fallback='8080')}"


def _local(moment: datetime | str | None, timezone: str) -> str:
    if not moment:
        return "unknown"
    value = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    return value.astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M %Z")


def _pending(status: DayStatus) -> int:
    return sum(n for s, n in status.files.items() if s in ("ready", "transcribed"))


def _missing(status: DayStatus) -> str:
    """What keeps the day from being done, in a few words."""
    if status.nothing_delivered:
        return "nothing delivered"
    parts = []
    if pending := _pending(status):
        parts.append(f"{pending} files pending ({status.pending_audio_hours:.2f} h of audio)")
    if waiting := status.archives.get("registered", 0):
        parts.append(f"{waiting} archives not unpacked")
    return ", ".join(parts) or "nothing pending"


def _render(
    headline: str,
    rows: list[tuple[str, str]],
    status: DayStatus | None,
    failures: list[FailedTask],
    urls: dict[str, str],
    note: str = "",
) -> str:
    return (
        _templates()
        .get_template("alert_mail.html")
        .render(headline=headline, rows=rows, s=status, failures=failures, links=urls, note=note)
    )


def compose_failure_mail(
    *,
    run_date: str,
    run_id: str,
    status: DayStatus | None,
    failures: list[FailedTask],
    settings: Settings,
    base_url: str,
) -> Mail:
    """The mail for a failed run; a day with nothing delivered gets an alert of its own."""
    deadline = deadline_for(run_date, settings)
    deadline_text = _local(deadline, settings.timezone)
    urls = links(run_date, run_id, base_url)
    rows = [("Day", run_date), ("Run", run_id), ("Deadline", deadline_text)]
    if status is not None and status.nothing_delivered:
        subject = (
            f"[earmark] nothing arrived: {run_date}, no archive by the deadline"
            f" {deadline.strftime('%H:%M %Z')} (run {run_id})"
        )
        headline = f"Nothing arrived for {run_date} by its deadline"
        note = (
            "No archive was delivered to incoming/ for this day (none registered, rejected or"
            " duplicate). Check the producer or the transfer; once it arrives, rerun the day."
        )
        return Mail(subject, _render(headline, rows, status, failures, urls, note))
    root = next((f for f in failures if f.task_id != "report"), failures[0] if failures else None)
    what = f"{root.label}: {root.reason}" if root else "a task failed"
    subject = f"[earmark] run failed: {run_date}, {what} (run {run_id})"
    if len(subject) > 200:
        subject = subject[:199] + "…"
    if status is not None:
        rows.append(("Missing", _missing(status)))
        if status.eta:
            rows.append(("ETA", _local(status.eta, settings.timezone)))
    headline = f"The run for {run_date} failed"
    return Mail(subject, _render(headline, rows, status, failures, urls))


def compose_deadline_mail(
    *,
    run_date: str,
    run_id: str,
    deadline: datetime | str | None,
    status: DayStatus | None,
    settings: Settings,
    base_url: str,
    progress: RunProgress | None = None,
    now: datetime | None = None,
) -> Mail:
    """The mail for a run not finished by its deadline: what is missing, what the run's tasks
    are doing, whether it is moving, and an ETA only when one can be stood behind (the day's
    throughput measured and the run moving)."""
    now = now or datetime.now(UTC)
    tz = settings.timezone
    urls = links(run_date, run_id, base_url)
    rows = [("Day", run_date), ("Run", run_id), ("Deadline", _local(deadline, tz))]
    missing = _missing(status) if status is not None else "day status unavailable"
    rows.append(("Missing", missing))
    eta = stall_note = None
    if status is not None and status.nothing_delivered:
        eta_text = "no ETA: nothing was delivered"
    else:
        why = stalled(progress, now, settings.stall_minutes) if progress is not None else None
        last = progress.last_change if progress is not None else None
        since = (
            f"nothing has progressed since {_clock(last, tz, run_date)}"
            if last is not None
            else "nothing has progressed"
        )
        if progress is not None:
            rows += stage_lines(progress, tz, run_date)
        if why is not None:
            rows.append(("Progress", f"Stalled: {why}; {since}"))
            eta_text = stall_note = f"no ETA: {since}"
        else:
            if last is not None:
                rows.append(("Progress", f"Moving: last change {_clock(last, tz, run_date)}"))
            if status is None or status.eta is None:
                eta_text = "no ETA: the throughput is unknown (no GPU work unit of the day has"
                eta_text += " finished)"
            else:
                eta = _local(status.eta, tz)
                eta_text = f"{eta} (at {status.throughput_x_realtime}x real time, measured today)"
    rows.append(("ETA", eta_text))
    subject = f"[earmark] deadline missed: {run_date}, {missing}"
    if eta:
        subject += f", ETA {eta}"
    elif stall_note:
        subject += f", stalled, {stall_note}"
    subject += f" (run {run_id})"
    headline = f"{run_date} was not done by its deadline"
    return Mail(subject, _render(headline, rows, status, [], urls))


def compose_late_mail(
    *,
    run_date: str,
    run_id: str,
    deadline: datetime,
    finished: datetime,
    status: DayStatus | None,
    settings: Settings,
    base_url: str,
) -> Mail:
    """The short mail when a run that missed its deadline has finished: when, and how late."""
    tz = settings.timezone
    late = format_duration((finished - deadline).total_seconds())
    done_at = _clock(finished, tz, run_date)
    subject = (
        f"[earmark] done late: {run_date} finished {done_at}, {late} after its deadline"
        f" {_clock(deadline, tz, run_date)} (run {run_id})"
    )
    rows = [
        ("Day", run_date),
        ("Run", run_id),
        ("Deadline", _local(deadline, tz)),
        ("Finished", _local(finished, tz)),
        ("Late by", late),
    ]
    if status is not None:
        rows.append(("Missing", _missing(status)))
    headline = f"{run_date} is done, {late} after its deadline"
    return Mail(subject, _render(headline, rows, status, [], links(run_date, run_id, base_url)))


# ---- gathering and sending ---------------------------------------------------------------------
def _run_date_of(dag_run: Any, settings: Settings) -> str | None:
    if dag_run is None:
        return None
    conf = getattr(dag_run, "conf", None) or {}
    requested = conf.get("date") if isinstance(conf, Mapping) else None
    try:
        return resolve_run_date(
            requested if isinstance(requested, str) else None,
            getattr(dag_run, "logical_date", None),
            getattr(dag_run, "run_after", None),
            settings.timezone,
        )
    except (TypeError, ValueError):
        return None


def _failed_without_record(dag: Any, run_id: str, known: list[FailedTask]) -> list[FailedTask]:
    """Failed task instances the run has no recorded reason for (Airflow's task states)."""
    try:
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance  # noqa: PLC0415

        states = RuntimeTaskInstance.get_task_states(dag_id=dag.dag_id, run_ids=[run_id])
    except Exception:  # an in-process test run has no supervisor to ask
        return []
    seen = {(f.task_id, f.map_index) for f in known}
    task_ids = set(dag.task_ids)
    found = []
    for key, state in sorted((states or {}).get(run_id, {}).items()):
        if state != "failed":
            continue
        task_id, map_index = key, -1
        if key not in task_ids and "_" in key:
            head, _, tail = key.rpartition("_")
            if head in task_ids and tail.isdigit():
                task_id, map_index = head, int(tail)
        if (task_id, map_index) not in seen:
            found.append(FailedTask(task_id, map_index))
    return found


def failure_mail(context: Mapping[str, Any], settings: Settings, base_url: str) -> Mail:
    """Everything the failure mail says, gathered from the run's context and the results DB."""
    from earmark.orchestration.airflow_seam import results_store  # noqa: PLC0415

    run_id = str(context.get("run_id") or getattr(context.get("dag_run"), "run_id", ""))
    run_date = _run_date_of(context.get("dag_run"), settings)
    failures: list[FailedTask] = []
    status = None
    store = results_store(settings)
    try:
        failures, recorded_date = recorded_failures(store, run_id)
        run_date = run_date or recorded_date
        if run_date:
            status = day_status(settings, store, run_date)
    finally:
        store.dispose()
    if context.get("dag") is not None:
        failures += _failed_without_record(context["dag"], run_id, failures)
    return compose_failure_mail(
        run_date=run_date or "unknown day",
        run_id=run_id,
        status=status,
        failures=failures,
        settings=settings,
        base_url=base_url,
    )


def _hook(settings: Settings) -> Any:
    from airflow.providers.smtp.hooks.smtp import SmtpHook  # noqa: PLC0415

    return SmtpHook(smtp_conn_id=settings.smtp_conn_id)


def send(settings: Settings, mail: Mail) -> None:
    """Send ``mail`` to ``EARMARK_ALERT_EMAIL`` through the Airflow SMTP connection."""
    with _hook(settings) as hook:
        hook.send_email_smtp(to=settings.alert_email, subject=mail.subject, html_content=mail.html)


async def asend(settings: Settings, mail: Mail) -> None:
    """:func:`send` for the triggerer's event loop."""
    async with _hook(settings) as hook:
        await hook.asend_email_smtp(
            to=settings.alert_email, subject=mail.subject, html_content=mail.html
        )


def _bare_mail(what: str, run_id: str, error: BaseException) -> Mail:
    """A mail with only what the callback's context says, when the rest cannot be read."""
    rows = [("Run", run_id), ("Day status", f"unavailable ({type(error).__name__})")]
    return Mail(f"[earmark] {what}: run {run_id}", _render(f"{what}: {run_id}", rows, None, [], {}))


def run_failed(context: Mapping[str, Any]) -> None:
    """The DAG's ``on_failure_callback``: one mail naming the day, the failed tasks and why."""
    settings = Settings.from_env()
    try:
        mail = failure_mail(context, settings, airflow_base_url())
    except Exception as error:  # the mail goes out with what is known
        log.warning("failure mail without day status (%s)", type(error).__name__)
        mail = _bare_mail("run failed", str(context.get("run_id", "")), error)
    send(settings, mail)


def deadline_mail(context: Mapping[str, Any], settings: Settings, base_url: str) -> Mail:
    """The deadline mail from the deadline callback's context (a serialised run)."""
    from earmark.orchestration.airflow_seam import results_store  # noqa: PLC0415

    run = dict(context.get("dag_run") or {})
    run_id = str(run.get("dag_run_id") or run.get("run_id") or "")
    logical = run.get("logical_date")
    run_after = run.get("run_after")
    conf = run.get("conf") or {}
    run_date = resolve_run_date(
        conf.get("date") if isinstance(conf.get("date"), str) else None,
        datetime.fromisoformat(logical) if isinstance(logical, str) else logical,
        datetime.fromisoformat(run_after) if isinstance(run_after, str) else run_after,
        settings.timezone,
    )
    deadline = (context.get("deadline") or {}).get("deadline_time")
    status = progress = None
    states = run_task_states(run_id)
    try:
        store = results_store(settings)
        try:
            status = day_status(settings, store, run_date)
            progress = run_progress(store, run_id, run_date, states)
        finally:
            store.dispose()
    except Exception as error:  # the mail goes out with what is known
        log.warning("deadline mail without day status (%s)", type(error).__name__)
        progress = RunProgress(count_task_states(states)) if states is not None else None
    return compose_deadline_mail(
        run_date=run_date,
        run_id=run_id,
        deadline=deadline,
        status=status,
        settings=settings,
        base_url=base_url,
        progress=progress,
    )


async def deadline_missed(*, context: dict[str, Any]) -> None:
    """The deadline alert's callback (runs in the triggerer): the deadline mail."""
    settings = Settings.from_env()
    try:
        mail = await asyncio.to_thread(deadline_mail, context, settings, airflow_base_url())
    except Exception as error:  # the mail goes out with what is known
        log.warning("deadline mail without its day (%s)", type(error).__name__)
        run_id = str((context.get("dag_run") or {}).get("dag_run_id", ""))
        mail = _bare_mail("deadline missed", run_id, error)
    await asend(settings, mail)


def run_deadline(dag_run: Any, settings: Settings) -> datetime | None:
    """The deadline a run was given (:class:`earmark.orchestration.deadlines.RunDayDeadline`,
    from its conf and dates when it was created); None for a run without one (a rerun of an
    earlier day)."""
    run_after = getattr(dag_run, "run_after", None) or getattr(dag_run, "queued_at", None)
    conf = getattr(dag_run, "conf", None)
    reference = deadline_reference(
        conf if isinstance(conf, Mapping) else None,
        getattr(dag_run, "logical_date", None),
        run_after,
        settings,
        run_after or datetime.now(UTC),
    )
    return None if reference is None else reference + deadline_interval(settings)


def late_mail(context: Mapping[str, Any], settings: Settings, base_url: str) -> Mail | None:
    """The "done late" mail for a run that has just succeeded after its deadline; None for a
    run that finished in time or had no deadline."""
    from earmark.orchestration.airflow_seam import results_store  # noqa: PLC0415

    dag_run = context.get("dag_run")
    deadline = run_deadline(dag_run, settings)
    finished = getattr(dag_run, "end_date", None) or datetime.now(UTC)
    if deadline is None or finished <= deadline:
        return None
    run_id = str(context.get("run_id") or getattr(dag_run, "run_id", ""))
    run_date = _run_date_of(dag_run, settings) or "unknown day"
    status = None
    try:
        store = results_store(settings)
        try:
            status = day_status(settings, store, run_date)
        finally:
            store.dispose()
    except Exception as error:  # the mail goes out with what is known
        log.warning("done-late mail without day status (%s)", type(error).__name__)
    return compose_late_mail(
        run_date=run_date,
        run_id=run_id,
        deadline=deadline,
        finished=finished,
        status=status,
        settings=settings,
        base_url=base_url,
    )


def run_succeeded(context: Mapping[str, Any]) -> None:
    """The DAG's ``on_success_callback``: a short "done late" mail when the run ended after
    its deadline, so whoever got the deadline mail learns when the day was done. Nothing when
    it was in time, had no deadline, or deadline alerts are off (``airflow dags test``)."""
    settings = Settings.from_env()
    if not settings.deadline_alerts:
        return
    mail = late_mail(context, settings, airflow_base_url())
    if mail is not None:
        send(settings, mail)
