from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from earmark.config import Settings
from earmark.day.schedule import cron_expression, deadline_for, deadline_interval, resolve_run_date


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


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"dat": "2026-11-29"}, r"unknown key 'dat' \(did you mean 'date'\?\)"),
        ({"date": "2026-11-29", "reprocss": True}, r"unknown key 'reprocss' \(did you mean"),
        ({"colour": "red"}, r"unknown key 'colour'\. Accepted keys: date: "),
        ({"date": "29/11/2026"}, r"'date' must be a day as YYYY-MM-DD, got '29/11/2026'"),
        ({"date": "20261129"}, r"'date' must be a day"),
        ({"date": "2026-02-30"}, r"'date' must be a day"),
        ({"date": 20261129}, r"'date' must be a day"),
        ({"reprocess": "yes"}, r"'reprocess' must be true or false, got 'yes'"),
    ],
)
def test_run_conf_is_refused_with_what_is_accepted(conf, message):
    from earmark.day.schedule import RunConfError, check_run_conf

    with pytest.raises(RunConfError, match=message) as refused:
        check_run_conf(conf)
    assert "reprocess: true to transcribe" in str(refused.value)


@pytest.mark.parametrize(
    "conf", [None, {}, {"date": "2026-11-29"}, {"date": None}, {"reprocess": True}]
)
def test_accepted_run_conf(conf):
    from earmark.day.schedule import check_run_conf

    check_run_conf(conf)


def test_deadline_counts_from_the_logical_date_when_there_is_one():
    from earmark.day.schedule import deadline_reference

    logical = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
    now = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
    s = settings(timezone="Europe/London", start_time=time(6, 0))
    assert deadline_reference({"date": "2026-11-29"}, logical, None, s, now) == logical


def test_a_manual_run_for_today_is_due_at_today_s_deadline():
    """No logical date (CLI, REST API): the day's local start time, with or without a date."""
    from earmark.day.schedule import deadline_reference

    s = settings(timezone="Europe/London", start_time=time(6, 0), deadline_time=time(12, 0))
    now = datetime(2026, 7, 1, 9, 30, tzinfo=UTC)  # 10:30 in London (BST)
    for conf in (None, {"date": "2026-07-01"}, {"reprocess": True}):
        start = deadline_reference(conf, None, now, s, now)
        assert start is not None
        assert (start + deadline_interval(s)).astimezone(UTC) == datetime(
            2026, 7, 1, 11, 0, tzinfo=UTC
        )
    # Triggered after noon: still today's deadline (already missed, so Airflow alerts at once).
    late = datetime(2026, 7, 1, 15, 0, tzinfo=UTC)
    assert deadline_reference(None, None, late, s, late) is not None


def test_reruns_of_earlier_days_and_refused_conf_have_no_deadline():
    from earmark.day.schedule import deadline_reference

    s = settings(timezone="Europe/London")
    now = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    assert deadline_reference({"date": "2026-11-29"}, None, now, s, now) is None
    assert deadline_reference({"dat": "2026-11-30"}, None, now, s, now) is None
    assert deadline_reference({"date": "30/11/2026"}, None, now, s, now) is None


def test_catch_up_window_runs_from_the_start_to_the_cut_off():
    from earmark.day.schedule import catchup_cron, catchup_day

    s = settings(
        timezone="Europe/London",
        start_time=time(6, 0),
        intake_cutoff=time(10, 0),
        deadline_time=time(12, 0),
    )
    london = ZoneInfo("Europe/London")
    at = [
        datetime(2026, 11, 30, h, m, tzinfo=london) for h, m in ((5, 59), (6, 0), (9, 59), (10, 0))
    ]
    assert [catchup_day(t, s) for t in at] == [None, "2026-11-30", "2026-11-30", None]
    assert catchup_cron(s) == "*/10 * * * *"
    with pytest.raises(ValueError, match="between EARMARK_START_TIME and EARMARK_DEADLINE_TIME"):
        catchup_day(at[1], settings(start_time=time(6, 0), intake_cutoff=time(13, 0)))
