"""Reference day on the distributed harness: wall time per stage and the orchestration overhead.

Starts the harness (real scheduler, Celery workers, Redis, Postgres; tiny models), delivers a
generated day of ``--archives`` x ``--files`` recordings of mixed lengths, unpauses
``earmark_daily`` and lets the scheduler's own run screen it. From the task instances (metadata
DB), the unpack tasks' own timings (their XCom) and the GPU units' (``work_units``) it prints:

- wall time per stage: first task start to last task end, and the task-seconds spent in it;
- orchestration overhead per archive: slot-seconds of the unpack stage not spent unpacking,
  ``(unpack wall x unpack slots - unpack work) / archives``; per GPU unit the same with the GPU
  slots and the units' transcribe + classify time;
- the fixed part of a run: its wall minus the unpack and GPU stages' walls;

then extrapolates to a production day, the formula written out with its inputs. Figures only; it
asserts nothing about speed.

    python -m earmark_dev.bench.day --archives 24 --files 4 --minutes 8
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

STAGES = (
    ("start", ("check_run_conf", "resolve_run_date", "migrate_results_db", "check_for_work")),
    ("wait_for_archives", ("wait_for_archives",)),
    ("register", ("register_archives",)),
    ("unpack", ("unpack",)),
    ("plan", ("plan_work_units",)),
    ("gpu", ("gpu_unit.transcribe", "gpu_unit.classify")),
    ("after", ("noon_check", "data_quality", "report", "retention")),
    ("side", ("data_quality_queries",)),  # runs beside the others, off the critical path
)


@dataclass(frozen=True)
class Production:
    """The day to extrapolate to, and the deployment that screens it."""

    archives: int = 2000
    files: int = 60_000
    audio_hours: float = 1000.0
    wav_bytes_per_audio_s: float = 32_000.0  # 16 kHz mono 16-bit
    unpack_slots: int = 4  # deploy/systemd/earmark-worker-unpack.service
    unpack_tasks_max: int = 256  # EARMARK_UNPACK_TASKS_MAX: past it, archives share a task
    unpack_mb_s: float = 900.0  # one unpack on a 1 GB archive: python -m earmark_dev.bench.ingest
    gpus: int = 2
    realtime_x: float = 100.0  # EARMARK_ASSUMED_REALTIME_X, the planner's conservative figure
    unit_target_s: float = 20 * 60.0  # EARMARK_UNIT_TARGET_MINUTES


@dataclass(frozen=True)
class Stage:
    name: str
    tasks: int
    wall_s: float
    task_s: float


@dataclass(frozen=True)
class DayFigures:
    archives: int
    files: int
    audio_s: float
    archive_bytes: int
    run_wall_s: float
    stages: tuple[Stage, ...]
    unpack_slots: int
    unpack_work_s: float
    gpu_slots: int
    gpu_units: int
    gpu_work_s: float

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    @property
    def per_archive_s(self) -> float:
        """Slot-seconds of the unpack stage not spent unpacking, per archive (one per task)."""
        unpack = self.stage("unpack")
        return (unpack.wall_s * self.unpack_slots - self.unpack_work_s) / self.archives

    @property
    def per_unit_s(self) -> float:
        gpu = self.stage("gpu")
        return (gpu.wall_s * self.gpu_slots - self.gpu_work_s) / max(self.gpu_units, 1)

    @property
    def fixed_s(self) -> float:
        return self.run_wall_s - self.stage("unpack").wall_s - self.stage("gpu").wall_s

    def per_file_work_s(self, unpack_mb_s: float) -> float:
        """The unpack's own cost per file beyond reading bytes (opening, decoding set-up, rows)."""
        return max(0.0, self.unpack_work_s - self.archive_bytes / (unpack_mb_s * 1e6)) / (
            self.files
        )

    def lines(self, day: Production) -> list[str]:
        out = [
            f"day               {self.archives} archives, {self.files} files,"
            f" {self.audio_s / 60:.1f} min of audio, {self.archive_bytes / 1e6:.1f} MB",
            f"run wall          {self.run_wall_s:7.1f} s",
            "stage             tasks    wall s  task-s",
        ]
        out += [
            f"  {s.name:<17}{s.tasks:4d}  {s.wall_s:8.1f}  {s.task_s:6.1f}" for s in self.stages
        ]
        out += [
            f"unpack work       {self.unpack_work_s:7.2f} s inside {self.archives} tasks,"
            f" {self.unpack_slots} slots",
            f"gpu work          {self.gpu_work_s:7.2f} s inside {self.gpu_units} units,"
            f" {self.gpu_slots} slots",
            f"overhead          {self.per_archive_s:7.2f} s per archive (= per unpack task)"
            "  = (unpack wall x slots - unpack work) / archives",
            f"                  {self.per_unit_s:7.2f} s per GPU unit"
            "  = (gpu wall x slots - gpu work) / units",
            f"                  {self.fixed_s:7.2f} s per run  = run wall - unpack wall - gpu wall",
            "",
            *self.extrapolate(day),
        ]
        return out

    def non_gpu_s(self, day: Production, units: int) -> tuple[float, float, float]:
        """(unpack stage wall, GPU slots' overhead wall, total non-GPU wall) of ``day``."""
        tasks = min(day.archives, day.unpack_tasks_max)
        unpack_bytes = day.audio_hours * 3600 * day.wav_bytes_per_audio_s
        unpack_wall = (
            tasks * self.per_archive_s
            + day.files * self.per_file_work_s(day.unpack_mb_s)
            + unpack_bytes / (day.unpack_mb_s * 1e6)
        ) / day.unpack_slots
        unit_wall = units * self.per_unit_s / day.gpus
        return unpack_wall, unit_wall, self.fixed_s + unpack_wall + unit_wall

    def extrapolate(self, day: Production) -> list[str]:
        audio_s = day.audio_hours * 3600
        gpu_wall = audio_s / day.realtime_x / day.gpus
        units = max(day.gpus, math.ceil(audio_s / day.realtime_x / day.unit_target_s))
        tasks = min(day.archives, day.unpack_tasks_max)
        unpack_bytes = audio_s * day.wav_bytes_per_audio_s
        unpack_wall, unit_wall, non_gpu = self.non_gpu_s(day, units)
        return [
            f"production day    {day.archives:,} archives, {day.files:,} files,"
            f" {day.audio_hours:,.0f} h of audio ({unpack_bytes / 1e9:,.0f} GB of 16 kHz WAV)",
            f"  deployment      {day.unpack_slots} unpack slots, {tasks} unpack tasks"
            f" (EARMARK_UNPACK_TASKS_MAX), {day.gpus} GPUs at {day.realtime_x:g}x real time"
            " (EARMARK_ASSUMED_REALTIME_X)",
            "  GPU time        T_gpu = audio / realtime_x / gpus"
            f" = {audio_s:,.0f} / {day.realtime_x:g} / {day.gpus} = {gpu_wall:,.0f} s",
            f"  GPU units       U = max(gpus, ceil(audio / realtime_x / unit_target)) = {units}",
            "  non-GPU time    T = fixed"
            " + (tasks x per_task + files x work_per_file + bytes / unpack_rate) / unpack_slots"
            " + U x per_unit / gpus",
            f"                    = {self.fixed_s:.1f} + ({tasks} x {self.per_archive_s:.2f}"
            f" + {day.files:,} x {self.per_file_work_s(day.unpack_mb_s):.4f}"
            f" + {unpack_bytes / 1e9:,.0f} GB / {day.unpack_mb_s:g} MB/s) / {day.unpack_slots}"
            f" + {units} x {self.per_unit_s:.2f} / {day.gpus}",
            f"                    = {self.fixed_s:.0f} + {unpack_wall:,.0f} + {unit_wall:,.0f}"
            f" = {non_gpu:,.0f} s",
            f"  ratio           T / T_gpu = {non_gpu / gpu_wall:.1%} (goal < 5%)",
            f"  break-even      under 5% while the GPUs screen at less than"
            f" {self.break_even_x(day):,.0f}x real time",
        ]

    def break_even_x(self, day: Production) -> float:
        """The real-time factor at which the non-GPU time reaches 5% of the GPU time."""
        low, high = 1.0, 1e6
        for _ in range(60):
            mid = (low * high) ** 0.5
            trial = replace(day, realtime_x=mid)
            audio_s = day.audio_hours * 3600
            units = max(day.gpus, math.ceil(audio_s / mid / day.unit_target_s))
            ratio = self.non_gpu_s(trial, units)[2] / (audio_s / mid / day.gpus)
            low, high = (mid, high) if ratio < 0.05 else (low, mid)
        return low


def _seconds(start: datetime | None, end: datetime | None) -> float:
    return (end - start).total_seconds() if start and end else 0.0


def _stage_of(task_id: str) -> str | None:
    for name, prefixes in STAGES:
        if any(task_id == p or task_id.startswith(f"{p}.") for p in prefixes):
            return name
    return None


def measure(harness: Any, run_id: str, archive_bytes: int, unpack_slots: int) -> DayFigures:
    """The figures of a finished run, from the metadata DB, XCom and the results DB."""
    from earmark_dev.runs import DAG_ID

    run = harness.meta_rows(
        "SELECT start_date, end_date FROM dag_run WHERE dag_id = :d AND run_id = :r",
        d=DAG_ID,
        r=run_id,
    )[0]
    tis = harness.meta_rows(
        "SELECT task_id, start_date, end_date FROM task_instance"
        " WHERE dag_id = :d AND run_id = :r AND start_date IS NOT NULL",
        d=DAG_ID,
        r=run_id,
    )
    stages = []
    for name, _ in STAGES:
        mine = [ti for ti in tis if _stage_of(ti.task_id) == name]
        if not mine:
            stages.append(Stage(name, 0, 0.0, 0.0))
            continue
        first = min(ti.start_date for ti in mine)
        last = max(ti.end_date or ti.start_date for ti in mine)
        stages.append(
            Stage(
                name,
                len(mine),
                _seconds(first, last),
                sum(_seconds(ti.start_date, ti.end_date) for ti in mine),
            )
        )
    unpacked = harness.meta_rows(
        "SELECT value FROM xcom WHERE dag_id = :d AND run_id = :r AND task_id = 'unpack'"
        " AND key = 'return_value'",
        d=DAG_ID,
        r=run_id,
    )
    summaries = [s for row in unpacked for s in _json(row.value)]
    store = harness.results_store()
    try:
        units = store.rows(
            "SELECT coalesce(transcribe_wall_s, 0) + coalesce(classify_wall_s, 0) AS work_s"
            " FROM work_units WHERE run_id = :r",
            r=run_id,
        )
        files = store.rows(
            "SELECT count(*) AS n, coalesce(sum(duration_s), 0) AS audio_s FROM audio_files"
        )[0]
    finally:
        store.dispose()
    return DayFigures(
        archives=len(summaries),
        files=int(files.n),
        audio_s=float(files.audio_s),
        archive_bytes=archive_bytes,
        run_wall_s=_seconds(run.start_date, run.end_date),
        stages=tuple(stages),
        unpack_slots=unpack_slots,
        unpack_work_s=sum(float(s["seconds"]) for s in summaries),
        gpu_slots=int(harness.env["EARMARK_GPU_SLOTS"]),
        gpu_units=len(units),
        gpu_work_s=sum(float(u.work_s) for u in units),
    )


def _json(value: Any) -> Any:
    while isinstance(value, str | bytes):
        value = json.loads(value)
    return value


def _scheduled_day(harness: Any) -> date:
    """The day of the latest scheduled tick (06:00 in the harness's timezone)."""
    tz = ZoneInfo(harness.env["EARMARK_TIMEZONE"])
    hour, minute = (int(x) for x in harness.env.get("EARMARK_RUN_AT", "06:00").split(":"))
    now = datetime.now(tz)
    tick = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return (tick - timedelta(days=1) if tick > now else tick).date()


def run_day(home: Path, archives: int, files: int, minutes: float, seed: int) -> DayFigures:
    from earmark_dev.runs import DAG_ID
    from earmark_dev.sampledata import generate_day
    from earmark_dev.topology import DEFAULT_WORKER_CONCURRENCY, Harness

    harness = Harness(home)
    try:
        started = time.monotonic()
        harness.up(unpause=False)
        print(f"harness up in {time.monotonic() - started:.0f} s", flush=True)
        day = _scheduled_day(harness)
        delivered = generate_day(
            harness.data_root / "incoming",
            day,
            archives=archives,
            files_per_archive=files,
            minutes=minutes,
            seed=seed,
        )
        archive_bytes = sum(p.stat().st_size for p in delivered)
        harness.unpause()  # the scheduler's own run for the day takes the delivery
        deadline = time.monotonic() + 120
        while not (
            runs := harness.meta_rows(
                "SELECT run_id FROM dag_run WHERE dag_id = :d AND run_type = 'scheduled'",
                d=DAG_ID,
            )
        ):
            if time.monotonic() > deadline:
                raise TimeoutError("no scheduled run after unpausing")
            time.sleep(1)
        run_id = runs[0].run_id
        state = harness.wait_run(run_id, timeout=3600)
        if state != "success":
            raise RuntimeError(f"run {run_id} ended {state}; logs under {harness.logs}")
        return measure(harness, run_id, archive_bytes, DEFAULT_WORKER_CONCURRENCY)
    finally:
        harness.down()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--archives", type=int, default=24)
    parser.add_argument("--files", type=int, default=4, help="files per archive")
    parser.add_argument("--minutes", type=float, default=8.0, help="audio of the whole day")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--home", type=Path, default=None, help="harness folder (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="earmark-day-") as scratch:
        home = args.home or Path(scratch)
        figures = run_day(home, args.archives, args.files, args.minutes, args.seed)
    print("\n".join(figures.lines(Production())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
