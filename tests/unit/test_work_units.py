from __future__ import annotations

import math
from datetime import date

import pytest
from earmark.gpu.work_units import (
    FileLength,
    UnitPlanError,
    measured_rate,
    pack,
    plan_work_units,
    unit_count,
)
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
    measured = plan_work_units(store, "r2", DAY, assumed_realtime_x=100, **plan)
    assert len(measured) == 1
    later = date.fromisoformat(DAY).replace(year=2027).isoformat()
    assert measured_rate(store, later, 100).measured_units == 0  # old figures age out
