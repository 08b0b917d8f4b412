"""The reference-day benchmark's arithmetic and its map of the DAG (the run itself needs the
distributed harness and takes minutes: ``python -m earmark_dev.bench.day``)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from earmark_dev.bench.day import STAGES, DayFigures, Production, Stage, _stage_of


def _figures(**changes) -> DayFigures:
    stages = tuple(
        Stage(name, 1, {"unpack": 20.0, "gpu": 12.0}.get(name, 1.0), 1.0) for name, _ in STAGES
    )
    base = DayFigures(
        archives=20,
        files=80,
        audio_s=600.0,
        archive_bytes=90_000_000,
        run_wall_s=50.0,
        stages=stages,
        unpack_slots=2,
        unpack_work_s=1.0,
        gpu_slots=2,
        gpu_units=2,
        gpu_work_s=20.0,
    )
    return replace(base, **changes)


def test_every_task_of_the_daily_dag_belongs_to_one_stage(dagbag):
    tasks = dagbag.dags["earmark_daily"].task_ids
    assert [t for t in tasks if _stage_of(t) is None] == []
    assert _stage_of("data_quality_queries") == "side"  # not the checks that follow the GPUs
    assert _stage_of("gpu_unit.classify") == "gpu"


def test_overheads_are_the_slot_seconds_not_spent_working():
    figures = _figures()
    assert figures.per_archive_s == pytest.approx((20.0 * 2 - 1.0) / 20)
    assert figures.per_unit_s == pytest.approx((12.0 * 2 - 20.0) / 2)
    assert figures.fixed_s == pytest.approx(50.0 - 20.0 - 12.0)
    assert figures.per_file_work_s(900.0) == pytest.approx((1.0 - 0.09e9 / 900e6) / 80)


def test_the_production_day_follows_its_written_formula():
    figures, day = _figures(), Production()
    audio_s = day.audio_hours * 3600
    units = math.ceil(audio_s / day.realtime_x / day.unit_target_s)
    expected = (
        figures.fixed_s
        + (
            day.unpack_tasks_max * figures.per_archive_s
            + day.files * figures.per_file_work_s(day.unpack_mb_s)
            + audio_s * day.wav_bytes_per_audio_s / (day.unpack_mb_s * 1e6)
        )
        / day.unpack_slots
        + units * figures.per_unit_s / day.gpus
    )
    assert figures.non_gpu_s(day, units)[2] == pytest.approx(expected)
    text = "\n".join(figures.extrapolate(day))
    assert f"= {expected:,.0f} s" in text
    assert f"T / T_gpu = {expected / (audio_s / day.realtime_x / day.gpus):.1%}" in text


def test_break_even_is_where_the_ratio_crosses_five_percent():
    figures, day = _figures(), Production()
    x = figures.break_even_x(day)

    def ratio(realtime_x: float) -> float:
        audio_s = day.audio_hours * 3600
        units = max(day.gpus, math.ceil(audio_s / realtime_x / day.unit_target_s))
        non_gpu = figures.non_gpu_s(replace(day, realtime_x=realtime_x), units)[2]
        return non_gpu / (audio_s / realtime_x / day.gpus)

    assert ratio(x * 0.99) < 0.05 < ratio(x * 1.02)
