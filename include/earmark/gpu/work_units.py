"""Plan the day's GPU work units from expected GPU time: one mapped GPU task per unit.

A *work unit* is a set of files one GPU task transcribes and screens (a row of ``work_units``);
inside it Whisper and the classifier batch across all its files. Units are sized by the GPU
seconds they are expected to take — the audio divided by the rate measured on recent units
(wall time less model loading), or a conservative assumed rate before anything was measured —
aiming at ``target_unit_s`` each so loading a model is a few percent of a task, with at least
one unit per GPU slot so every GPU has work. Files go longest first to the least-loaded unit,
so units come out balanced. XCom carries unit ids only.

Headroom: units are cut at a rate slower than the recent mean (the mean / ``PLAN_HEADROOM``, or
the slowest recent unit's rate when that is slower, down to the mean / ``SLOWEST_UNIT_FLOOR``),
so a day with less silence than the window still fits its units; ``expected_gpu_s`` records
that planned time. Each GPU task then runs under its unit's own time budget
(:func:`unit_budget_s`: ``BUDGET_MARGIN`` x the planned time plus a model-load allowance, at
least ``BUDGET_FLOOR_S``), enforced inside the task by :func:`unit_deadline`, which names the
unit when it fails. Airflow's ``execution_timeout`` is static per task, shared by every mapped
instance, so it stays as a backstop above any normal unit's budget (:func:`gpu_task_timeout`).
"""

from __future__ import annotations

import heapq
import logging
import math
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from types import FrameType

import sqlalchemy as sa

from earmark.statuses import FileStatus
from earmark.store.db import Store

log = logging.getLogger(__name__)

PENDING_STATUSES = (FileStatus.READY, FileStatus.TRANSCRIBED)
ALL_LIVE_STATUSES = (FileStatus.READY, FileStatus.TRANSCRIBED, FileStatus.CLASSIFIED)
RATE_WINDOW_DAYS = 14
# Units are cut at the mean rate / PLAN_HEADROOM, or at the slowest recent unit's rate when that
# is slower (one odd unit lowers it at most to the mean / SLOWEST_UNIT_FLOOR).
PLAN_HEADROOM = 1.5
SLOWEST_UNIT_FLOOR = 3.0
# A GPU task's budget: BUDGET_MARGIN x its unit's planned GPU seconds, plus loading the models
# (a 17 GiB classifier from a cold disk), never under BUDGET_FLOOR_S.
BUDGET_MARGIN = 3.0
BUDGET_LOAD_ALLOWANCE_S = 300.0
BUDGET_FLOOR_S = 600.0
# Airflow's static execution_timeout: the budget of a unit planned at this many targets.
TIMEOUT_TARGETS = 2.0


@dataclass(frozen=True)
class FileLength:
    file_id: int
    duration_s: float


@dataclass(frozen=True)
class GpuRate:
    """Audio seconds screened per GPU second (loading excluded), and a unit's load seconds.

    ``slowest_x``: the slowest finished unit's own rate in the window (None when unmeasured).
    """

    realtime_x: float
    load_s: float
    measured_units: int
    slowest_x: float | None = None

    @property
    def planning_x(self) -> float:
        """The rate units are cut at: the assumed rate (already conservative) until measured,
        then headroom below the mean, or the slowest unit's rate when slower (bounded)."""
        if not self.measured_units:
            return self.realtime_x
        slowest = self.slowest_x if self.slowest_x else self.realtime_x
        floor = self.realtime_x / SLOWEST_UNIT_FLOOR
        return min(self.realtime_x / PLAN_HEADROOM, max(slowest, floor))


_BUSY = (
    "(transcribe_wall_s + classify_wall_s"
    " - coalesce(transcribe_load_s, 0) - coalesce(classify_load_s, 0))"
)


def measured_rate(store: Store, run_date: str, assumed_realtime_x: float) -> GpuRate:
    """The rate of the units finished in the last two weeks, or the assumed one."""
    row = store.rows(
        "SELECT count(*) AS n, sum(audio_s) AS audio,"
        " sum(transcribe_wall_s + classify_wall_s) AS wall,"
        " sum(coalesce(transcribe_load_s, 0) + coalesce(classify_load_s, 0)) AS loads,"
        f" min(CASE WHEN {_BUSY} > 0 THEN audio_s / {_BUSY} END) AS slowest"
        " FROM work_units WHERE transcribe_wall_s IS NOT NULL AND classify_wall_s IS NOT NULL"
        " AND audio_s > 0 AND run_date <= :d AND run_date > :since",
        d=run_date,
        since=_days_before(run_date, RATE_WINDOW_DAYS),
    )[0]
    busy = float(row.wall or 0.0) - float(row.loads or 0.0)
    if not row.n or busy <= 0:
        return GpuRate(assumed_realtime_x, 0.0, 0)
    slowest = float(row.slowest) if row.slowest is not None else None
    return GpuRate(float(row.audio) / busy, float(row.loads) / row.n, int(row.n), slowest)


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
        " AND f.audio_erased_at IS NULL"  # retention removed its audio: its screening is final
    ).bindparams(sa.bindparam("statuses", expanding=True))
    with store.engine.connect() as conn:
        rows = conn.execute(query, {"d": run_date, "statuses": [s.value for s in statuses]}).all()
    files = [FileLength(r.id, 0.0 if r.silent else float(r.duration_s or 0.0)) for r in rows]
    rate = measured_rate(store, run_date, assumed_realtime_x)
    total_gpu_s = sum(f.duration_s for f in files) / rate.planning_x
    count = unit_count(
        total_gpu_s,
        len(files),
        slots=gpu_slots,
        target_s=target_unit_s,
        max_files=max_files,
        max_units=max_units,
    )
    units = pack(files, count, max_files)
    planned = [rate.load_s + sum(f.duration_s for f in unit) / rate.planning_x for unit in units]
    timeout = gpu_task_timeout(target_unit_s).total_seconds()
    if planned and unit_budget_s(max(planned)) > timeout:
        log.warning(
            "a unit of %s plans %.0f GPU s: its budget passes the GPU tasks' execution_timeout "
            "(%.0f s), which then ends it first",
            run_date,
            max(planned),
            timeout,
        )
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
        for seq, (unit, expected_s) in enumerate(zip(units, planned, strict=True)):
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
                    "e": expected_s,
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
    return _unit_name(row)


def _unit_name(row: sa.Row) -> str:
    return f"{row.run_date} unit {row.seq:03d} ({row.n_files} files)"


# ---- the unit's time budget, enforced inside its GPU tasks ------------------------------------


def unit_budget_s(expected_gpu_s: float) -> float:
    """Seconds a GPU task of a unit planned at ``expected_gpu_s`` may run (margin + loading)."""
    return max(BUDGET_FLOOR_S, BUDGET_MARGIN * expected_gpu_s + BUDGET_LOAD_ALLOWANCE_S)


def gpu_task_timeout(target_unit_s: float) -> timedelta:
    """The GPU tasks' static ``execution_timeout``: a backstop above a normal unit's budget.

    Airflow fixes it per task for every mapped instance, so it cannot follow each unit; the
    unit's own budget (:func:`unit_deadline`) does, and normally fires first.
    """
    return timedelta(seconds=unit_budget_s(TIMEOUT_TARGETS * target_unit_s))


class UnitOverBudget(BaseException):
    """A GPU task ran past its unit's time budget (ids and seconds only in the message).

    A ``BaseException``, like Airflow's own task timeout, so no ``except Exception`` in a stage
    swallows it. Airflow retries it like any failure, and a retry resumes where the unit
    stopped: transcripts and labels are written as each file and policy finishes.
    """


@dataclass(frozen=True)
class UnitBudget:
    """A unit's name, its planned GPU seconds (None for a unit planned before they were
    recorded) and the seconds each of its GPU tasks may run."""

    unit_id: int
    label: str
    planned_gpu_s: float | None
    seconds: float


def unit_budget(store: Store, unit_id: int, fallback_s: float) -> UnitBudget:
    """The unit's budget from its planned ``expected_gpu_s``; ``fallback_s`` without one."""
    row = store.rows(
        "SELECT run_date, seq, n_files, expected_gpu_s FROM work_units WHERE id = :b", b=unit_id
    )[0]
    label = _unit_name(row)
    if row.expected_gpu_s is None:
        return UnitBudget(unit_id, label, None, fallback_s)
    planned = float(row.expected_gpu_s)
    return UnitBudget(unit_id, label, planned, unit_budget_s(planned))


@contextmanager
def unit_deadline(budget: UnitBudget, stage: str) -> Iterator[None]:
    """Raise :class:`UnitOverBudget`, naming the unit, once the block has run ``budget.seconds``.

    A SIGALRM timer, nested inside Airflow's own ``execution_timeout`` (the same timer): the
    sooner of the two fires, with this unit's name either way, and on leaving the block
    Airflow's handler and the time it had left are put back. Off the main thread (no signals)
    the block runs under Airflow's timeout alone, with a warning.

    The timer may land inside a library that turns the exception it raises into its own (a
    database driver interrupted mid-connect reports a broken connection): once the timer has
    fired, whatever leaves the block leaves as :class:`UnitOverBudget`, the other as its cause,
    so the task's failure names the unit and its budget, not the line the timer happened to hit.
    """
    if threading.current_thread() is not threading.main_thread():
        log.warning("unit %s %s: no time budget off the main thread", budget.unit_id, stage)
        yield
        return
    outer_handler = signal.getsignal(signal.SIGALRM)
    outer_left, _ = signal.getitimer(signal.ITIMER_REAL)
    seconds = min(budget.seconds, outer_left) if outer_left else budget.seconds
    started = time.monotonic()
    fired = False

    def over(_signum: int, _frame: FrameType | None) -> None:
        nonlocal fired
        fired = True
        raise UnitOverBudget(_over_message(budget, stage, seconds))

    signal.signal(signal.SIGALRM, over)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
        if fired:  # the timer's exception was swallowed on the way: the unit is over all the same
            raise UnitOverBudget(_over_message(budget, stage, seconds))
    except UnitOverBudget:
        raise
    except Exception as interrupted:
        if fired:
            raise UnitOverBudget(_over_message(budget, stage, seconds)) from interrupted
        raise
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(
            signal.SIGALRM, outer_handler if outer_handler is not None else signal.SIG_DFL
        )
        spent = fired and seconds < budget.seconds  # Airflow's time ran out: the task ends
        if outer_left and not spent:  # Airflow's timer goes on with what it had left
            left = outer_left - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))


def _over_message(budget: UnitBudget, stage: str, seconds: float) -> str:
    """Why the task stopped: the unit by id and name, its budget and where that came from."""
    if seconds < budget.seconds:
        why = f"the task's execution_timeout, under the unit's own {budget.seconds:g} s"
    elif budget.planned_gpu_s is None:
        why = "no planned GPU time recorded for the unit"
    else:
        why = (
            f"{BUDGET_MARGIN:g} x {budget.planned_gpu_s:.0f} s of planned GPU time"
            f" + {BUDGET_LOAD_ALLOWANCE_S:.0f} s for loading, at least {BUDGET_FLOOR_S:.0f} s"
        )
    return (
        f"unit {budget.unit_id} ({budget.label}) {stage} ran past its time budget of "
        f"{seconds:g} s ({why})"
    )
