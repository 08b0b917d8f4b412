from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from earmark.config import Settings
from earmark.schedule import cron_expression, deadline_for, deadline_interval, resolve_run_date


def settings(**env: str) -> Settings:
    base = Settings.from_env()
    return base.__class__(**{**base.__dict__, **env})


def test_default_deadline_is_six_hours_after_the_start():
    s = settings(start_time=time(6, 0), deadline_time=time(12, 0))
    assert cron_expression(s) == "0 6 * * *"
    assert deadline_interval(s) == timedelta(hours=6)


def test_deadline_before_start_is_refused():
    with pytest.raises(ValueError, match="later in the day"):
        deadline_interval(settings(start_time=time(12, 0), deadline_time=time(9, 30)))


def test_explicit_date_wins():
    assert (
        resolve_run_date("2026-11-29", datetime(2026, 1, 1, tzinfo=UTC), None, "UTC")
        == "2026-11-29"
    )


def test_logical_date_is_read_in_the_configured_timezone():
    # 06:00 in Tokyo on the 30th is still the 29th in UTC.
    logical = datetime(2026, 11, 29, 21, 0, tzinfo=UTC)
    assert resolve_run_date(None, logical, None, "Asia/Tokyo") == "2026-11-30"
    assert resolve_run_date(None, logical, None, "UTC") == "2026-11-29"


def test_manual_trigger_without_logical_date_uses_run_after():
    run_after = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    assert resolve_run_date(None, None, run_after, "Europe/London") == "2026-11-30"


def test_bad_date_param_is_a_clear_error():
    with pytest.raises(ValueError):
        resolve_run_date("29/11/2026", None, None, "UTC")


def test_deadline_is_local_noon_across_dst():
    s = settings(timezone="Europe/London", deadline_time=time(12, 0))
    summer, winter = deadline_for("2026-07-01", s), deadline_for("2026-12-01", s)
    assert summer.astimezone(UTC).hour == 11
    assert winter.astimezone(UTC).hour == 12
