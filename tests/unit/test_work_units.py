from __future__ import annotations

import math
import signal
import time
from dataclasses import replace
from datetime import date

import pytest
from earmark.gpu.work_units import (
    BUDGET_MARGIN,
    PLAN_HEADROOM,
    FileLength,
    GpuRate,
    UnitOverBudget,
    UnitPlanError,
    gpu_task_timeout,
    measured_rate,
    pack,
    plan_work_units,
    unit_budget,
    unit_budget_s,
    unit_count,
    unit_deadline,
)
from earmark.orchestration.alerts import reason_line
from hypothesis import given
from hypothesis import strategies as st

DAY = "2026-11-29"


def test_pack_balances_longest_first_and_keeps_every_file():
    files = [FileLength(i, d) for i, d in enumerate([50, 400, 10, 300, 900, 20, 5])]
    units = pack(files, units=3, max_files=3)
    assert sorted(f.file_id for u in units for f in u) == list(range(len(files)))
    loads = sorted(sum(f.duration_s for f in u) for u in units)
    assert loads == [370, 415, 900]  # 900 alone; the rest spread over the other two
    assert all(len(u) <= 3 for u in units)


def test_unit_count_follows_gpu_time_and_slots():
    assert unit_count(3600, 500, slots=2, target_s=1200, max_files=2000) == 3
    assert unit_count(100, 500, slots=4, target_s=1200, max_files=2000) == 4  # a unit per GPU
    assert unit_count(100, 3, slots=4, target_s=1200, max_files=2000) == 3  # never empty units
    assert unit_count(100, 5000, slots=1, target_s=1200, max_files=2000) == 3
    assert unit_count(0, 0, slots=2, target_s=1200, max_files=10) == 0


def test_unit_count_never_maps_more_than_airflow_allows():
    # 100 h of GPU time wants 300 units of 20 min; Airflow maps 64: longer units instead.
    assert unit_count(360_000, 60_000, slots=8, target_s=1200, max_files=2000, max_units=64) == 64
    with pytest.raises(UnitPlanError, match=r"need 30 GPU tasks; Airflow maps at most 16"):
        unit_count(100, 60_000, slots=1, target_s=1200, max_files=2000, max_units=16)


@given(
    st.lists(st.floats(min_value=0, max_value=5000), max_size=200),
    st.integers(min_value=1, max_value=8),
    st.integers(min_value=1, max_value=50),
)
def test_pack_never_loses_or_duplicates(durations, units, max_files):
    files = [FileLength(i, d) for i, d in enumerate(durations)]
    units = max(units, math.ceil(len(files) / max_files))
    packed = pack(files, units=units, max_files=max_files)
    assert sorted(f.file_id for u in packed for f in u) == list(range(len(files)))
    assert all(0 < len(u) <= max_files for u in packed)
    if packed and all(len(u) < max_files for u in packed):
        loads = [sum(f.duration_s for f in u) for u in packed]
        assert max(loads) - min(loads) <= max(durations)  # LPT: within one file of balance


def _day_with_files(store, durations):
    with store.begin() as conn:
        archive = conn.exec_driver_sql(
            "INSERT INTO archives (name, sha256, run_date, status, path)"
            f" VALUES ('a.tar', 'x', '{DAY}', 'unpacked', '/a') RETURNING id"
        ).scalar_one()
        for k, seconds in enumerate(durations):
            conn.exec_driver_sql(
                "INSERT INTO audio_files (archive_id, member_path, sha256, path, duration_s,"
                f" sample_rate, channels, status) VALUES ({archive}, 'm{k}.wav', 's{k}',"
                f" '/a/m{k}.wav', {seconds}, 16000, 1, 'ready')"
            )


def test_plan_uses_the_measured_rate_once_there_is_one(store):
    _day_with_files(store, [600.0] * 60)  # 10 h of audio
    plan = {"reprocess": False, "gpu_slots": 1, "target_unit_s": 120, "max_files": 2000}
    assumed = plan_work_units(store, "r1", DAY, assumed_realtime_x=100, **plan)
    assert len(assumed) == 3  # 36,000 s / 100x = 360 GPU s -> 3 units of 120 s
    assert measured_rate(store, DAY, 100).measured_units == 0
    with store.begin() as conn:  # the units ran at 300x, with 5 s of loading each
        conn.exec_driver_sql(
            "UPDATE work_units SET transcribe_wall_s = audio_s / 600 + 2,"
            " classify_wall_s = audio_s / 600 + 3, transcribe_load_s = 2, classify_load_s = 3"
        )
    rate = measured_rate(store, DAY, 100)
    assert rate.realtime_x == pytest.approx(300) and rate.load_s == pytest.approx(5)
    assert rate.slowest_x == pytest.approx(300)
    measured = plan_work_units(store, "r2", DAY, assumed_realtime_x=100, **plan)
    # Cut at 300x / 1.5 headroom = 200x: 180 GPU s -> 2 units (1 at the mean rate).
    assert len(measured) == 2
    expected = store.rows("SELECT audio_s, expected_gpu_s FROM work_units WHERE run_id = 'r2'")
    for unit in expected:
        assert unit.expected_gpu_s == pytest.approx(5 + unit.audio_s / 200)
        assert unit.expected_gpu_s - 5 <= 120  # each within the target at the planning rate
    later = date.fromisoformat(DAY).replace(year=2027).isoformat()
    assert measured_rate(store, later, 100).measured_units == 0  # old figures age out


def test_planning_rate_has_headroom_and_follows_the_slowest_unit():
    assert GpuRate(100, 0, 0).planning_x == 100  # the assumed rate is conservative already
    assert GpuRate(300, 5, 4, slowest_x=280).planning_x == pytest.approx(200)  # mean / 1.5
    assert GpuRate(300, 5, 4, slowest_x=150).planning_x == pytest.approx(150)  # slowest unit
    assert GpuRate(300, 5, 4, slowest_x=20).planning_x == pytest.approx(100)  # one odd unit
    assert GpuRate(300, 5, 4).planning_x == pytest.approx(200)


def test_unit_budget_follows_the_planned_time():
    assert unit_budget_s(0) == 600  # the floor: loading alone may take minutes
    assert unit_budget_s(1200) == 3 * 1200 + 300
    # The static execution_timeout is a backstop above a target-sized unit's budget.
    assert gpu_task_timeout(1200).total_seconds() == unit_budget_s(2 * 1200) > unit_budget_s(1200)
    # A unit cut at the target (at the planning rate) still fits its budget on a day that runs
    # PLAN_HEADROOM x BUDGET_MARGIN slower than the recent mean, loading aside.
    target, mean = 1200.0, 300.0
    audio = target * mean / PLAN_HEADROOM
    assert audio / (mean / (PLAN_HEADROOM * BUDGET_MARGIN)) <= unit_budget_s(target)


def test_a_task_over_its_budget_fails_naming_the_unit(store):
    _day_with_files(store, [600.0] * 6)
    [unit_id] = plan_work_units(
        store,
        "r1",
        DAY,
        reprocess=False,
        gpu_slots=1,
        target_unit_s=1200,
        assumed_realtime_x=100,
        max_files=2000,
    )
    budget = unit_budget(store, unit_id, fallback_s=7500)
    assert budget.planned_gpu_s == pytest.approx(36.0)  # 3,600 s of audio at 100x
    assert budget.seconds == unit_budget_s(36.0)
    with (
        pytest.raises(UnitOverBudget) as caught,
        unit_deadline(replace(budget, seconds=0.05), "transcribe"),
    ):
        time.sleep(5)
    line = reason_line(caught.value)
    assert line.startswith(f"UnitOverBudget: unit {unit_id} ({DAY} unit 000 (6 files)) transcribe")
    assert "time budget of 0.05 s" in line
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_the_unit_budget_nests_inside_airflows_timeout():
    """Airflow's execution_timeout uses the same timer: it is put back with what it had left,
    and when it is the sooner one the failure still names the unit."""
    from airflow.sdk.exceptions import AirflowTaskTimeout
    from airflow.sdk.execution_time.timeout import timeout
    from earmark.gpu.work_units import UnitBudget

    budget = UnitBudget(7, f"{DAY} unit 003 (2 files)", 10.0, 0.05)
    with timeout(30) as outer:
        with pytest.raises(UnitOverBudget), unit_deadline(budget, "classify"):
            time.sleep(5)
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 25 < left <= 30
        assert signal.getsignal(signal.SIGALRM) == outer.handle_timeout
        with unit_deadline(budget, "classify"):
            pass  # a task within its budget changes nothing
        assert signal.getsignal(signal.SIGALRM) == outer.handle_timeout
    under_airflow = pytest.raises(UnitOverBudget, match=r"unit 7 .*execution_timeout")
    with timeout(0.05), under_airflow, unit_deadline(replace(budget, seconds=30), "classify"):
        time.sleep(5)
    with pytest.raises(AirflowTaskTimeout), timeout(0.05):  # Airflow's own still works
        time.sleep(5)


def test_the_unit_budget_names_the_unit_whatever_the_timer_interrupted():
    """A driver interrupted mid-call may turn the timer's exception into its own (psycopg,
    mid-connect, reports a broken connection): the task still fails as over budget, with the
    driver's error as the cause; an error while the timer has not fired passes unchanged."""
    from earmark.gpu.work_units import UnitBudget

    class DriverError(Exception):
        pass

    def driver_call() -> None:
        try:
            time.sleep(5)
        except UnitOverBudget as interrupted:
            raise DriverError("connection in transaction status ACTIVE") from interrupted

    budget = UnitBudget(9, f"{DAY} unit 004 (3 files)", 10.0, 0.05)
    over = pytest.raises(UnitOverBudget, match=r"unit 9 .*classify")
    with over as caught, unit_deadline(budget, "classify"):
        driver_call()
    assert isinstance(caught.value.__cause__, DriverError)
    with pytest.raises(DriverError), unit_deadline(replace(budget, seconds=30), "classify"):
        raise DriverError("not the timer")
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_the_unit_budget_holds_when_a_library_swallows_the_timer():
    """A library that catches every exception and carries on: the block ends normally, but the
    unit ran past its budget, so it still fails as over budget."""
    from earmark.gpu.work_units import UnitBudget

    def forgiving_call() -> None:
        try:
            time.sleep(5)
        except Exception:
            return

    budget = UnitBudget(9, f"{DAY} unit 004 (3 files)", 10.0, 0.05)
    over = pytest.raises(UnitOverBudget, match=r"unit 9 .*transcribe")
    with over, unit_deadline(budget, "transcribe"):
        forgiving_call()
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
