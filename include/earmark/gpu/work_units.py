"""Plan the day's GPU work units from expected GPU time: one mapped GPU task per unit.

A *work unit* is a set of files one GPU task transcribes and screens (a row of ``work_units``);
inside it Whisper and the classifier batch across all its files. Units are sized by the GPU
seconds they are expected to take — the audio divided by the rate measured on recent units
(wall time less model loading), or a conservative assumed rate before anything was measured —
aiming at ``target_unit_s`` each so loading a model is a few percent of a task, with at least
one unit per GPU slot so every GPU has work. Files go longest first to the least-loaded unit,
so units come out balanced. XCom carries unit ids only.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import sqlalchemy as sa

from earmark.statuses import FileStatus
from earmark.store.db import Store

PENDING_STATUSES = (FileStatus.READY, FileStatus.TRANSCRIBED)
ALL_LIVE_STATUSES = (FileStatus.READY, FileStatus.TRANSCRIBED, FileStatus.CLASSIFIED)
RATE_WINDOW_DAYS = 14


@dataclass(frozen=True)
class FileLength:
    file_id: int
    duration_s: float


@dataclass(frozen=True)
class GpuRate:
    """Audio seconds screened per GPU second (loading excluded), and a unit's load seconds."""

    realtime_x: float
    load_s: float
    measured_units: int


def measured_rate(store: Store, run_date: str, assumed_realtime_x: float) -> GpuRate:
    """The rate of the units finished in the last two weeks, or the assumed one."""
    row = store.rows(
        "SELECT count(*) AS n, sum(audio_s) AS audio,"
        " sum(transcribe_wall_s + classify_wall_s) AS wall,"
        " sum(coalesce(transcribe_load_s, 0) + coalesce(classify_load_s, 0)) AS loads"
        " FROM work_units WHERE transcribe_wall_s IS NOT NULL AND classify_wall_s IS NOT NULL"
        " AND audio_s > 0 AND run_date <= :d AND run_date > :since",
        d=run_date,
        since=_days_before(run_date, RATE_WINDOW_DAYS),
    )[0]
    busy = float(row.wall or 0.0) - float(row.loads or 0.0)
    if not row.n or busy <= 0:
        return GpuRate(assumed_realtime_x, 0.0, 0)
    return GpuRate(float(row.audio) / busy, float(row.loads) / row.n, int(row.n))


def _days_before(day: str, days: int) -> str:
    from datetime import date, timedelta

    return (date.fromisoformat(str(day)[:10]) - timedelta(days=days)).isoformat()


class UnitPlanError(ValueError):
    """The day's files cannot be planned into as many units as Airflow may map."""


def unit_count(
    total_gpu_s: float,
    files: int,
    *,
    slots: int,
    target_s: float,
    max_files: int,
    max_units: int | None = None,
) -> int:
    """Enough units for ``target_s`` each, at least one per slot, never more than files, nor
    more than ``max_units`` (Airflow's ``max_map_length``: then units run longer than the
    target). Raises :class:`UnitPlanError` when ``max_files`` per unit cannot fit that."""
    if files == 0:
        return 0
    needed = math.ceil(files / max_files)
    if max_units is not None and needed > max_units:
        raise UnitPlanError(
            f"{files} files in units of at most {max_files} (EARMARK_UNIT_MAX_FILES) need "
            f"{needed} GPU tasks; Airflow maps at most {max_units} ([core] max_map_length): "
            "raise one of them"
        )
    wanted = max(slots, math.ceil(total_gpu_s / target_s), needed)
    if max_units is not None:
        wanted = min(wanted, max_units)
    return min(files, wanted)


def pack(files: list[FileLength], units: int, max_files: int) -> list[list[FileLength]]:
    """Longest file first to the least-loaded unit with room; empty units are dropped."""
    if units < 1:
        return []
    heap = [(0.0, k) for k in range(units)]
    bins: list[list[FileLength]] = [[] for _ in range(units)]
    for item in sorted(files, key=lambda f: (-f.duration_s, f.file_id)):
        if not heap:
            raise ValueError("more files than units x max_files")
        load, k = heapq.heappop(heap)
        bins[k].append(item)
        if len(bins[k]) < max_files:
            heapq.heappush(heap, (load + item.duration_s, k))
    return [b for b in bins if b]


def plan_work_units(
    store: Store,
    run_id: str,
    run_date: str,
    *,
    reprocess: bool,
    gpu_slots: int,
    target_unit_s: float,
    assumed_realtime_x: float,
    max_files: int,
    max_units: int | None = None,
) -> list[int]:
    """Record the units of ``run_id`` (replacing an earlier try's plan); return their ids.

    Without ``reprocess`` only files still waiting for a stage are planned; with it, every live
    file of the day is planned again. A silent file costs no GPU time and weighs nothing.
    """
    statuses = ALL_LIVE_STATUSES if reprocess else PENDING_STATUSES
    query = sa.text(
        "SELECT f.id, f.duration_s, f.silent FROM audio_files f"
        " JOIN archives a ON a.id = f.archive_id"
        " WHERE a.run_date = :d AND f.status IN :statuses"
    ).bindparams(sa.bindparam("statuses", expanding=True))
    with store.engine.connect() as conn:
        rows = conn.execute(query, {"d": run_date, "statuses": [s.value for s in statuses]}).all()
    files = [FileLength(r.id, 0.0 if r.silent else float(r.duration_s or 0.0)) for r in rows]
    rate = measured_rate(store, run_date, assumed_realtime_x)
    total_gpu_s = sum(f.duration_s for f in files) / rate.realtime_x
    count = unit_count(
        total_gpu_s,
        len(files),
        slots=gpu_slots,
        target_s=target_unit_s,
        max_files=max_files,
        max_units=max_units,
    )
    units = pack(files, count, max_files)
    ids = []
    with store.begin() as conn:
        old = (
            conn.execute(sa.text("SELECT id FROM work_units WHERE run_id = :r"), {"r": run_id})
            .scalars()
            .all()
        )
        for unit_id in old:
            conn.execute(sa.text("DELETE FROM work_unit_files WHERE unit_id = :b"), {"b": unit_id})
        conn.execute(sa.text("DELETE FROM work_units WHERE run_id = :r"), {"r": run_id})
        for seq, unit in enumerate(units):
            unit_id = conn.execute(
                sa.text(
                    "INSERT INTO work_units"
                    " (run_id, run_date, seq, n_files, audio_s, expected_gpu_s)"
                    " VALUES (:r, :d, :seq, :n, :a, :e) RETURNING id"
                ),
                {
                    "r": run_id,
                    "d": run_date,
                    "seq": seq,
                    "n": len(unit),
                    "a": sum(f.duration_s for f in unit),
                    "e": rate.load_s + sum(f.duration_s for f in unit) / rate.realtime_x,
                },
            ).scalar_one()
            conn.execute(
                sa.text("INSERT INTO work_unit_files (unit_id, file_id) VALUES (:b, :f)"),
                [{"b": unit_id, "f": f.file_id} for f in unit],
            )
            ids.append(unit_id)
    return ids


def unit_label(store: Store, unit_id: int) -> str:
    """A readable name for the UI's map index: date, sequence, size (never content)."""
    row = store.rows("SELECT run_date, seq, n_files FROM work_units WHERE id = :b", b=unit_id)[0]
    return f"{row.run_date} unit {row.seq:03d} ({row.n_files} files)"
