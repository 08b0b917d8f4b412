"""The mails that say what happened to a day's run, composed from what is known of it: a failed
run, nothing delivered by the deadline, a missed deadline, and a run that finished after its
deadline ("done late").

Each mail names the day, what is missing or failed (task, map name, the reason line), the day's
counts, and links to the run, the day page and the day's report. The deadline mail says what
the run's tasks are doing (running, queued, waiting; :class:`RunProgress`) and whether anything
is still moving, and gives an ETA only when the day's throughput is measured and the run is
moving. Counts, ids, task names and reason lines only: never transcript text.

Pure composition from a :class:`~earmark.day.status.DayStatus`, a :class:`RunProgress` and the
failed tasks; gathering them from Airflow and sending the mails is
``earmark.orchestration.alerts``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, select_autoescape

from earmark.config import Settings
from earmark.day.schedule import deadline_for
from earmark.day.status import DayStatus, format_duration
from earmark.names import printable
from earmark.store.db import Store
from earmark.store.sql import as_utc, named_queries

NO_REASON = "no reason recorded: marked failed by hand, or its process was lost"
#: The DAG whose runs the mails are about (the link to a run in Airflow's UI).
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
    """A composed mail: its subject line and its HTML body."""

    subject: str
    html: str


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


def bare_mail(what: str, run_id: str, error: BaseException) -> Mail:
    """A mail with only what the callback's context says, when the rest cannot be read."""
    rows = [("Run", run_id), ("Day status", f"unavailable ({type(error).__name__})")]
    return Mail(f"[earmark] {what}: run {run_id}", _render(f"{what}: {run_id}", rows, None, [], {}))
