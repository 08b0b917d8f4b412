"""Which day a run processes, and when that day's deadline falls: pure date arithmetic."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any
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


# What a run of earmark_daily accepts in its conf, and how each value is described to people.
RUN_CONF_KEYS = {
    "date": "the day to screen, YYYY-MM-DD (default: the run's logical date, local time)",
    "reprocess": "true to transcribe and screen every file of the day again (default false)",
}
_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


class RunConfError(ValueError):
    """A run's conf that earmark_daily does not accept; the message says what it does accept."""


def _is_iso_day(value: object) -> bool:
    if not isinstance(value, str) or not _ISO_DAY.fullmatch(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def check_run_conf(conf: Mapping[str, Any] | None) -> None:
    """Refuse unknown keys and badly typed values before a run does anything.

    Airflow passes unknown conf keys through silently, so ``{"dat": "2026-11-29"}`` would
    screen today instead of the 29th; this names the key and the nearest accepted one.
    """
    accepted = "; ".join(f"{key}: {meaning}" for key, meaning in RUN_CONF_KEYS.items())
    problems = []
    for key in sorted(conf or {}):
        if key not in RUN_CONF_KEYS:
            near = difflib.get_close_matches(key, RUN_CONF_KEYS, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            problems.append(f"unknown key {key!r}{hint}")
    day = (conf or {}).get("date")
    if day is not None and not _is_iso_day(day):
        problems.append(f"'date' must be a day as YYYY-MM-DD, got {day!r}")
    reprocess = (conf or {}).get("reprocess")
    if reprocess is not None and not isinstance(reprocess, bool):
        problems.append(f"'reprocess' must be true or false, got {reprocess!r}")
    if problems:
        raise RunConfError(f"run conf refused: {'; '.join(problems)}. Accepted keys: {accepted}")


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


def deadline_reference(
    conf: Mapping[str, Any] | None,
    logical_date: datetime | None,
    run_after: datetime | None,
    settings: Settings,
    now: datetime,
) -> datetime | None:
    """Where a run's deadline counts from; the deadline is this plus :func:`deadline_interval`.

    A run with a logical date (every scheduled run) counts from it, the local start time. A run
    triggered without one (the CLI, the REST API) counts from the start time of the day it
    screens, so a manual run for today is due at today's deadline like the scheduled one. A
    rerun of an earlier day has no deadline (None), nor has a conf the run will refuse.
    """
    if logical_date is not None:
        return logical_date
    try:
        check_run_conf(conf)
        day = resolve_run_date((conf or {}).get("date"), None, run_after, settings.timezone)
    except ValueError:
        return None
    zone = ZoneInfo(settings.timezone)
    if date.fromisoformat(day) < now.astimezone(zone).date():
        return None
    return datetime.combine(date.fromisoformat(day), settings.start_time, tzinfo=zone)


def catchup_cron(settings: Settings) -> str:
    """earmark_catchup's schedule: every ``EARMARK_CATCHUP_EVERY_MINUTES`` minutes."""
    every = settings.catchup_every_minutes
    if not 1 <= every <= 60:
        raise ValueError(f"EARMARK_CATCHUP_EVERY_MINUTES must be 1-60, got {every}")
    return f"*/{every} * * * *"


def catchup_day(now: datetime, settings: Settings) -> str | None:
    """Today's local date while a catch-up run may still screen a late archive today (from the
    start time until ``EARMARK_INTAKE_CUTOFF``), else None."""
    if not settings.start_time <= settings.intake_cutoff <= settings.deadline_time:
        raise ValueError(
            "EARMARK_INTAKE_CUTOFF must lie between EARMARK_START_TIME and EARMARK_DEADLINE_TIME"
        )
    local = now.astimezone(ZoneInfo(settings.timezone))
    if settings.start_time <= local.time() < settings.intake_cutoff:
        return local.date().isoformat()
    return None
