"""What the mails say: the day, what is missing or failed (task, map name, reason line), the
counts, the ETA and the links, from a constructed day; reason lines are one short line."""

from __future__ import annotations

from dataclasses import replace

import pytest
from earmark.alerts import (
    NO_REASON,
    REASON_MAX,
    FailedTask,
    compose_deadline_mail,
    compose_failure_mail,
    reason_line,
    recorded_failures,
)
from earmark.config import Settings
from earmark.day_status import day_status
from earmark_dev.constructed_day import DAY, at, build

BASE = "https://airflow.example.org"


@pytest.fixture
def settings(tmp_path) -> Settings:
    return replace(Settings.from_env(), data_root=tmp_path / "data", timezone="Europe/London")


def test_a_reason_is_one_short_printable_line():
    error = RuntimeError("unit 7 failed\n[SQL: INSERT INTO transcripts ...]\n[parameters: ...]")
    assert reason_line(error) == "RuntimeError: unit 7 failed"
    assert reason_line(ValueError()) == "ValueError"
    assert reason_line(None) == NO_REASON
    assert reason_line("a\u202etxt.wav gone") == "a\\u202etxt.wav gone"
    long = reason_line(OSError("x" * 1000))
    assert len(long) == REASON_MAX and long.endswith("…")


def test_the_failure_mail_names_the_day_the_failed_tasks_and_why(settings, store):
    build(store)
    failures, recorded_day = recorded_failures(store, "r1")
    assert recorded_day == DAY
    failures.append(FailedTask("gpu_unit.classify", 0))  # failed without a recorded reason
    status = day_status(settings, store, DAY, now=at(11, 40))
    mail = compose_failure_mail(
        run_date=DAY,
        run_id="r1",
        status=status,
        failures=failures,
        settings=settings,
        base_url=BASE,
    )
    assert mail.subject == (
        f"[earmark] run failed: {DAY}, gpu_unit.transcribe [unit 2 of r1]: RuntimeError: try 2"
        " (run r1)"
    )
    body = mail.html
    for expected in (
        DAY,
        "gpu_unit.transcribe",
        "unit 2 of r1",
        "RuntimeError: try 2",
        "report",
        "gpu_unit.classify",
        NO_REASON,
        "1 files pending (0.03 h of audio), 1 archives not unpacked",
        "2026-11-29 11:40 GMT",  # the ETA
        "classified 3, quarantined 1, ready 1",
        f'href="{BASE}/dags/earmark_daily/runs/r1"',
        f'href="{BASE}/earmark/?date={DAY}"',
        f'href="{BASE}/earmark/report/{DAY}"',
    ):
        assert expected in body, expected


def test_nothing_delivered_is_an_alert_of_its_own(settings, store):
    day = "2026-11-27"
    mail = compose_failure_mail(
        run_date=day,
        run_id="scheduled__x",
        status=day_status(settings, store, day, now=at(13)),
        failures=[FailedTask("wait_for_archives", reason="AirflowSensorTimeout: nothing arrived")],
        settings=settings,
        base_url=BASE,
    )
    assert mail.subject.startswith(f"[earmark] nothing arrived: {day}, no archive by the deadline")
    assert "12:00 GMT" in mail.subject
    assert "Nothing arrived for 2026-11-27 by its deadline" in mail.html
    assert "wait_for_archives" in mail.html and "rerun the day" in mail.html


def test_the_deadline_mail_says_what_is_missing_and_when_it_will_be_done(settings, store):
    build(store)
    status = day_status(settings, store, DAY, now=at(12, 5))
    mail = compose_deadline_mail(
        run_date=DAY,
        run_id="scheduled__2026-11-29",
        deadline="2026-11-29T12:00:00+00:00",
        status=status,
        settings=settings,
        base_url=BASE,
    )
    assert mail.subject.startswith(
        f"[earmark] deadline missed: {DAY}, 1 files pending (0.03 h of audio),"
        " 1 archives not unpacked, ETA 2026-11-29 12:05 GMT"
    )
    assert "scheduled__2026-11-29" in mail.subject
    assert "2026-11-29 12:00 GMT" in mail.html
    assert f"{BASE}/earmark/report/{DAY}" in mail.html
    empty = compose_deadline_mail(
        run_date="2026-11-27",
        run_id="x",
        deadline=at(12),
        status=day_status(settings, store, "2026-11-27", now=at(12, 5)),
        settings=settings,
        base_url=BASE,
    )
    assert "nothing delivered" in empty.subject
    assert "unknown (no GPU batch finished yet)" in empty.html
