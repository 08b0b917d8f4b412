"""What the mails say: the day, what is missing or failed (task, map name, reason line), the
counts, the ETA and the links, from a constructed day; reason lines are one short line."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from earmark.config import Settings
from earmark.day.mail import (
    NO_REASON,
    FailedTask,
    RunProgress,
    compose_deadline_mail,
    compose_failure_mail,
    compose_late_mail,
    count_task_states,
    run_progress,
)
from earmark.day.status import day_status
from earmark.orchestration.alerts import (
    REASON_MAX,
    late_mail,
    reason_line,
    recorded_failures,
    run_deadline,
)
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
    assert "no ETA: nothing was delivered" in empty.html and "ETA 2026" not in empty.subject


# r1 of the constructed day: unit 1 done, unit 2 transcribed only (its classify not started),
# unpack and the tasks before done; what Airflow says of the run's task instances.
R1_STALLED = {
    "check_run_conf": "success",
    "unpack_0": "success",
    "unpack_1": "success",
    "plan_work_units": "success",
    "gpu_unit.transcribe_0": "success",
    "gpu_unit.transcribe_1": "queued",
    "gpu_unit.classify_0": "success",
    "gpu_unit.classify_1": None,
    "noon_check": None,
}


def _deadline_mail(settings, store, states, now):
    status = day_status(settings, store, DAY, now=now)
    return compose_deadline_mail(
        run_date=DAY,
        run_id="r1",
        deadline=at(12),
        status=status,
        settings=settings,
        base_url=BASE,
        progress=run_progress(store, "r1", DAY, states),
        now=now,
    )


def test_task_states_are_counted_per_task():
    counted = count_task_states({**R1_STALLED, "unpack_2": "up_for_retry"})
    assert counted["unpack"] == {"success": 2, "up_for_retry": 1}
    assert counted["gpu_unit.transcribe"] == {"success": 1, "queued": 1}
    assert counted["gpu_unit.classify"] == {"success": 1, "none": 1}
    assert counted["plan_work_units"] == {"success": 1}


def test_progress_is_when_the_day_last_changed_and_when_the_units_were_planned(store):
    build(store)
    progress = run_progress(store, "r1", DAY, None)
    assert (progress.tasks, progress.last_change, progress.units_planned) == (
        None,
        at(10, 30),  # y1.wav classified (its labels written then)
        at(7, 2),  # r1's second unit
    )
    assert run_progress(store, "nope", "2026-11-01", {}).last_change is None


def test_a_stalled_run_gets_no_eta_and_says_what_is_queued(settings, store):
    """The day's throughput is known (r1's first unit) and the ETA sum would say 12:05, the
    minute the mail goes out; but nothing runs and nothing has moved since 10:30: no ETA, the
    GPU stage is queued waiting for a worker, and the subject says stalled."""
    build(store)
    mail = _deadline_mail(settings, store, R1_STALLED, at(12, 5))
    assert mail.subject == (
        f"[earmark] deadline missed: {DAY}, 1 files pending (0.03 h of audio), 1 archives not"
        " unpacked, stalled, no ETA: nothing has progressed since 10:30 GMT (run r1)"
    )
    for expected in (
        ">transcribe</th><td>0 running, 1 queued, 1 done"
        " (waiting for a GPU worker since 10:30 GMT)</td>",
        ">classify</th><td>0 running, 0 queued, 1 done, 1 not started</td>",
        ">unpack</th><td>0 running, 0 queued, 2 done</td>",
        "Stalled: no task running (1 queued or waiting for a slot);"
        " nothing has progressed since 10:30 GMT",
        ">ETA</th><td>no ETA: nothing has progressed since 10:30 GMT</td>",
    ):
        assert expected in mail.html, expected
    assert "12:05" not in mail.html.split("Deadline")[1].split("Counts")[0]  # no ETA anywhere


def test_a_moving_run_gets_the_eta_and_a_quiet_one_does_not(settings, store):
    build(store)
    running = {**R1_STALLED, "gpu_unit.transcribe_1": "running"}
    moving = _deadline_mail(settings, store, running, at(10, 40))  # 10 min after the last change
    assert ", ETA 2026-11-29 10:40 GMT (run r1)" in moving.subject
    assert ">ETA</th><td>2026-11-29 10:40 GMT (at 60.0x real time, measured today)</td>" in (
        moving.html
    )
    assert "Moving: last change 10:30 GMT" in moving.html
    assert ">transcribe</th><td>1 running, 0 queued, 1 done</td>" in moving.html
    quiet = _deadline_mail(settings, store, running, at(12, 5))  # running, silent for 95 min
    assert "stalled, no ETA: nothing has progressed since 10:30 GMT" in quiet.subject
    assert "tasks running but nothing of the day has changed for 1.6 h" in quiet.html
    # Not asked of Airflow (no supervisor): the results DB alone says it is moving.
    unasked = _deadline_mail(settings, store, None, at(10, 40))
    assert ", ETA 2026-11-29 10:40 GMT" in unasked.subject and "transcribe</th>" not in unasked.html


def test_without_a_measured_throughput_there_is_no_eta(settings, store):
    build(store)
    status = replace(day_status(settings, store, DAY, now=at(10, 40)), eta=None)
    mail = compose_deadline_mail(
        run_date=DAY,
        run_id="r1",
        deadline=at(12),
        status=status,
        settings=settings,
        base_url=BASE,
        progress=RunProgress(count_task_states(R1_STALLED | {"unpack_1": "running"}), at(10, 30)),
        now=at(10, 40),
    )
    assert "ETA" not in mail.subject
    assert "no ETA: the throughput is unknown (no GPU work unit of the day has finished)" in (
        mail.html
    )


def test_the_done_late_mail_says_when_and_how_late(settings, store):
    build(store)
    mail = compose_late_mail(
        run_date=DAY,
        run_id="scheduled__2026-11-29T06:00:00+00:00",
        deadline=at(12),
        finished=at(14, 5),
        status=day_status(settings, store, DAY, now=at(14, 5)),
        settings=settings,
        base_url=BASE,
    )
    assert mail.subject == (
        f"[earmark] done late: {DAY} finished 14:05 GMT, 2.1 h after its deadline 12:00 GMT"
        " (run scheduled__2026-11-29T06:00:00+00:00)"
    )
    for expected in (
        f"{DAY} is done, 2.1 h after its deadline",
        ">Finished</th><td>2026-11-29 14:05 GMT</td>",
        ">Late by</th><td>2.1 h</td>",
        f'href="{BASE}/earmark/report/{DAY}"',
    ):
        assert expected in mail.html, expected


def test_which_runs_are_late(settings):
    """The deadline a run was given, as RunDayDeadline gives it: a scheduled run from its
    logical date, a manual run for today from today's start, a rerun of an earlier day none;
    only a run that ended after it gets the done-late mail."""
    scheduled = SimpleNamespace(run_id="s", logical_date=at(6), run_after=at(6), conf={})
    assert run_deadline(scheduled, settings) == at(12)
    today = SimpleNamespace(logical_date=None, run_after=at(9), conf={"date": DAY})
    assert run_deadline(today, settings) == at(12)
    earlier = SimpleNamespace(logical_date=None, run_after=at(9), conf={"date": "2026-11-20"})
    assert run_deadline(earlier, settings) is None
    in_time = SimpleNamespace(**vars(scheduled), end_date=at(11, 59))
    assert late_mail({"dag_run": in_time}, settings, BASE) is None
    rerun = SimpleNamespace(**vars(earlier), end_date=datetime(2026, 11, 30, tzinfo=UTC))
    assert late_mail({"dag_run": rerun}, settings, BASE) is None
