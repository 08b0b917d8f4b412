"""Which day a run processes, and when that day's deadline falls: pure date arithmetic."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from earmark.config import Settings


def cron_expression(settings: Settings) -> str:
    """Daily cron at the configured local start time (interpreted in the configured timezone)."""
    return f"{settings.start_time.minute} {settings.start_time.hour} * * *"


def deadline_interval(settings: Settings) -> timedelta:
    """From the run's logical date (the local start time) to the local deadline.

    Wall-clock difference between two times on the same local day; Airflow adds it to the logical
    date, which the timetable keeps at the local start time across DST changes.
    """
    start = timedelta(hours=settings.start_time.hour, minutes=settings.start_time.minute)
    end = timedelta(hours=settings.deadline_time.hour, minutes=settings.deadline_time.minute)
    if end <= start:
        raise ValueError("EARMARK_DEADLINE_TIME must be later in the day than EARMARK_START_TIME")
    return end - start


def resolve_run_date(
    requested: str | None, logical_date: datetime | None, run_after: datetime | None, timezone: str
) -> str:
    """The day a run processes, as YYYY-MM-DD.

    An explicit ``date`` param wins (manual reruns); else the local date of the logical date;
    else (a manual trigger without a logical date) the local date the run was queued for.
    """
    if requested:
        return date.fromisoformat(requested).isoformat()
    moment = logical_date or run_after
    if moment is None:
        raise ValueError("run has neither a date param nor a logical date nor run_after")
    return moment.astimezone(ZoneInfo(timezone)).date().isoformat()


def deadline_for(run_date: str, settings: Settings) -> datetime:
    """The local deadline of ``run_date`` as an aware datetime."""
    day = date.fromisoformat(run_date)
    return datetime.combine(day, settings.deadline_time, tzinfo=ZoneInfo(settings.timezone))
