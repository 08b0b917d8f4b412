"""# earmark_daily

Screens one day of audio: every recording that arrived in `incoming/` is unpacked, transcribed
(Whisper) and scored against every policy (CoPE-A); flagged recordings wait in the RA review queue.

0. **check_run_conf** (a setup task) refuses a conf with unknown keys or bad values: the run
   fails with the accepted keys in the message and no other task runs.
   **resolve_run_date** picks the run date (param `date`, else the logical date in the
   configured timezone); every later task takes it as an argument.
   **migrate_results_db** applies pending results-DB migrations (the one place a run does).
1. **check_for_work** waits for archives only when there is nothing to do yet.
2. **wait_for_archives**: FileSensor on `incoming/*.sha256`; an archive is ready once its
   `.sha256` marker exists (written last). It waits until the day's deadline and no longer:
   a day with nothing delivered fails there (at once for a past day), and the failure mail is
   the "nothing arrived" alert.
3. **register_archives**: every delivery taken out of `incoming/` (by rename: no link is
   followed, no special file opened) gets one verdict in `deliveries` (registered, duplicate or
   rejected with a reason) from its marker; archives are not read here.
4. **unpack** (mapped per archive, queue `unpack`; past `EARMARK_UNPACK_TASKS_MAX` archives, or
   Airflow's `max_map_length`, per even group of archives): safe extraction with the sha256
   computed from the same reads (each archive is read once), the delivery judged on it (checksum
   mismatch: rejected; bytes already an archive: duplicate), full audio validation; bad input is
   quarantined with a reason.
5. **plan_work_units** → **gpu_unit** (mapped task group per work unit, queue and pool `gpu`):
   **transcribe** then **classify**, each under its unit's time budget (3× its planned GPU
   time plus loading; failing names the unit), inside a static backstop execution_timeout.
6. **noon_check**, **data_quality**, **report**: completeness, ETA, checks; the report writes
   the day's HTML report with plots (`/earmark/report/<date>`) and fails the run when nothing
   was delivered or the day is incomplete.
7. **retention** (after the report, whatever became of it; a teardown, so its failure does not
   change the run's verdict) removes what each kind of data's retention says is past its time:
   delivered archives in `processed/`, audio of unflagged and of flagged recordings,
   transcripts, labels, decided review items; each recorded in `erasures`, counts and bytes in
   the log (`earmark retention --dry-run` says what it would take).

A Deadline Alert emails when the local deadline passes with the run unfinished, for scheduled
runs and for runs triggered without a logical date (CLI, REST API) for today alike; reruns of
earlier days have no deadline. The deadline mail says what the run's tasks are doing (running,
queued, waiting) and whether anything still moves, with an ETA only when the day's throughput is
measured and the run is moving; a run that finishes after its deadline sends a short "done late"
mail. A failed run emails too. Each mail names the day, what is missing or which tasks failed
and why (every task records its reason in `task_failures`), the counts, and links to the run,
the day page and the report. Rerun a day:
`airflow dags trigger earmark_daily --conf '{"date": "2026-11-29"}'` (add `"reprocess": true`
to redo transcription and screening); any other conf key fails the run at once.

This file is wiring, params and docs only; the logic lives in `include/earmark`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.sql.operators.sql import SQLCheckOperator, SQLColumnCheckOperator
from airflow.sdk import CronTriggerTimetable, Param, dag, task, task_group
from earmark.config import Settings
from earmark.day.schedule import cron_expression, deadline_interval
from earmark.gpu.work_units import gpu_task_timeout
from earmark.orchestration.alerts import (
    deadline_missed,
    record_task_failure,
    run_failed,
    run_succeeded,
)
from earmark.orchestration.dag_defaults import task_defaults
from earmark.orchestration.deadlines import RunDayDeadline
from earmark.orchestration.sensors import ArchivesSensor
from earmark.store.sql import named_queries

if TYPE_CHECKING:  # task-sdk 1.3.2's airflow/sdk/__init__.pyi omits both; the module exports them
    from contextlib import AbstractContextManager

    from airflow.sdk.definitions.callback import AsyncCallback
    from airflow.sdk.definitions.deadline import DeadlineAlert
    from airflow.sdk.types import DagRunProtocol
    from earmark.orchestration.airflow_seam import TaskEnv
else:
    from airflow.sdk import AsyncCallback, DeadlineAlert

settings = Settings.from_env()
# GPU tasks: the gpu Celery queue, a pool slot per GPU, a readable unit name. Each task runs
# under its own unit's time budget (_unit_deadline); execution_timeout, static for every mapped
# instance, is the backstop above a normal unit's budget.
GPU_TASK: dict[str, Any] = {
    "queue": "gpu",
    "pool": "gpu",
    "map_index_template": "{{ unit_label }}",
    "execution_timeout": gpu_task_timeout(settings.unit_target_minutes * 60),
}


def _deadline() -> DeadlineAlert | None:
    if not settings.deadline_alerts:
        return None
    return DeadlineAlert(
        reference=RunDayDeadline(),
        interval=deadline_interval(settings),
        callback=AsyncCallback(deadline_missed),
    )


def _gpu_task_env(unit_id: int) -> TaskEnv:
    """The task's env, with the work unit's readable name for the UI's map index."""
    from earmark.gpu.work_units import unit_label
    from earmark.orchestration.airflow_seam import task_env

    env = task_env()
    env.set_template_var("unit_label", unit_label(env.store, unit_id))
    return env


def _unit_deadline(env: TaskEnv, unit_id: int, stage: str) -> AbstractContextManager[None]:
    """The unit's own time budget for this GPU task: over it, the task fails naming the unit."""
    from earmark.gpu.work_units import unit_budget, unit_deadline

    backstop = GPU_TASK["execution_timeout"].total_seconds()
    return unit_deadline(unit_budget(env.store, unit_id, backstop), stage)


def _reprocess(params: dict[str, Any] | None) -> bool:
    return bool((params or {}).get("reprocess"))


@dag(
    dag_id="earmark_daily",
    schedule=CronTriggerTimetable(cron_expression(settings), timezone=settings.timezone),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["earmark", "daily", "gpu"],
    params={
        "date": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Date to process",
            description="YYYY-MM-DD. Empty: the run's logical date in the configured timezone.",
        ),
        "reprocess": Param(
            False,
            type="boolean",
            title="Reprocess",
            description="Transcribe and screen every file of the date again, "
            "replacing earlier results (still one row each).",
        ),
    },
    default_args=task_defaults(
        settings, max_retry_delay=timedelta(minutes=15), on_failure_callback=record_task_failure
    ),
    deadline=_deadline(),
    on_failure_callback=run_failed,
    on_success_callback=run_succeeded,
)
def earmark_daily() -> None:
    @task
    def migrate_results_db() -> list[str]:
        """Apply pending results-DB migrations (idempotent; an advisory lock on Postgres)."""
        from earmark.orchestration.airflow_seam import migrate_results_db as migrate

        return migrate()

    @task
    def check_run_conf(dag_run: DagRunProtocol | None = None) -> None:
        """Refuse a conf with an unknown key or a bad value: no retry, the accepted keys in the
        message. A setup task, so every task after it (the all_done ones too) is then
        upstream_failed: nothing is read or written."""
        from airflow.sdk.exceptions import AirflowFailException
        from earmark.day.schedule import RunConfError
        from earmark.day.schedule import check_run_conf as check
        from earmark.orchestration.airflow_seam import given_run

        try:
            check(given_run(dag_run).conf)
        except RunConfError as refused:
            raise AirflowFailException(str(refused)) from None

    @task
    def resolve_run_date(
        params: dict[str, Any] | None = None, dag_run: DagRunProtocol | None = None
    ) -> str:
        """The day this run screens: param ``date``, else the logical date, local time."""
        from earmark.day.schedule import resolve_run_date as resolve
        from earmark.orchestration.airflow_seam import given_run

        run = given_run(dag_run)
        return resolve(
            (params or {}).get("date"),
            run.logical_date,
            run.run_after,
            Settings.from_env().timezone,
        )

    @task.branch
    def check_for_work(run_date: str) -> str:
        """Skip waiting when archives are already there or registered."""
        from earmark.ingest.deliveries import day_has_work
        from earmark.orchestration.airflow_seam import task_env

        env = task_env()
        if day_has_work(env.settings, env.store, run_date):
            return "register_archives"
        return "wait_for_archives"

    wait_for_archives = ArchivesSensor(
        task_id="wait_for_archives",
        fs_conn_id="earmark_fs",
        filepath="incoming/*.sha256",
        deferrable=True,
        poke_interval=settings.sensor_poke_seconds,
    )

    @task(
        trigger_rule="none_failed_min_one_success",
        execution_timeout=timedelta(minutes=settings.register_timeout_minutes),
    )
    def register_archives(run_date: str) -> list[list[int]]:
        """Claim deliveries from incoming/, read their markers, register archives; the archives to
        unpack, in groups (one per mapped unpack task, never more than Airflow maps)."""
        from airflow.sdk.configuration import conf
        from earmark.ingest.deliveries import register_archives as register
        from earmark.ingest.unpack import unpack_groups
        from earmark.orchestration.airflow_seam import task_env

        env = task_env()
        max_tasks = min(env.settings.unpack_tasks_max, conf.getint("core", "max_map_length"))
        return unpack_groups(register(env.settings, env.store, run_date), max_tasks)

    @task(queue="unpack", map_index_template="{{ archive_label }}")
    def unpack(archive_ids: list[int]) -> list[dict[str, Any]]:
        """Extract each archive of the group safely, validate and register its files; per
        archive its summary and the seconds the unpack itself took (the day benchmark's
        measure of the task's own overhead)."""
        import time
        from dataclasses import asdict

        from earmark.ingest.unpack import group_label, unpack_archive
        from earmark.orchestration.airflow_seam import task_env

        env = task_env()
        env.set_template_var("archive_label", group_label(env.store, archive_ids))
        summaries = []
        for archive_id in archive_ids:
            started = time.perf_counter()
            summary = unpack_archive(env.settings, env.store, archive_id)
            seconds = round(time.perf_counter() - started, 3)
            summaries.append({**asdict(summary), "seconds": seconds})
        return summaries

    @task(trigger_rule="all_done")
    def plan_work_units(run_date: str, params: dict[str, Any] | None = None) -> list[int]:
        """Group the day's pending files into GPU work units; their ids.

        Runs whatever became of the unpacks, so one failed archive does not hold up the day.
        """
        from airflow.sdk.configuration import conf
        from earmark.gpu.work_units import plan_work_units as plan
        from earmark.orchestration.airflow_seam import task_env

        env = task_env()
        return plan(
            env.store,
            env.context["run_id"],
            run_date,
            reprocess=_reprocess(params),
            gpu_slots=env.settings.gpu_slots,
            target_unit_s=env.settings.unit_target_minutes * 60,
            assumed_realtime_x=env.settings.assumed_realtime_x,
            max_files=env.settings.unit_max_files,
            max_units=conf.getint("core", "max_map_length"),
        )

    @task_group
    def gpu_unit(unit_id: int) -> None:
        @task(**GPU_TASK)
        def transcribe(unit_id: int, params: dict[str, Any] | None = None) -> int:
            """Whisper over every pending file of the work unit."""
            from earmark.gpu.transcribe import transcribe_unit

            env = _gpu_task_env(unit_id)
            with _unit_deadline(env, unit_id, "transcribe"):
                transcribe_unit(env.settings, env.store, unit_id, reprocess=_reprocess(params))
            return unit_id

        @task(**GPU_TASK)
        def classify(unit_id: int, params: dict[str, Any] | None = None) -> int:
            """CoPE-A scores against every policy; flagged items to the review queue."""
            from earmark.gpu.classify import classify_unit

            env = _gpu_task_env(unit_id)
            with _unit_deadline(env, unit_id, "classify"):
                classify_unit(env.settings, env.store, unit_id, reprocess=_reprocess(params))
            return unit_id

        classify(transcribe(unit_id))

    @task(trigger_rule="all_done")
    def noon_check(run_date: str) -> dict[str, Any]:
        """Complete or not, ETA and throughput (counts only)."""
        from earmark.day.status import day_status
        from earmark.orchestration.airflow_seam import task_env

        env = task_env()
        return day_status(env.settings, env.store, run_date).as_dict()

    @task(trigger_rule="all_done", multiple_outputs=True)
    def data_quality_queries(run_date: str) -> dict[str, str]:
        """The data-quality checks' SQL for the run date (one output per check)."""
        from earmark.day.status import data_quality_checks

        return data_quality_checks(run_date)

    @task_group
    def data_quality(queries: Any) -> None:
        SQLColumnCheckOperator(
            task_id="label_scores_in_range",
            conn_id=settings.db_conn_id,
            table="labels",
            column_mapping={
                "score": {"min": {"geq_to": 0}, "max": {"leq_to": 1}, "null_check": {"equal_to": 0}}
            },
            trigger_rule="all_done",
        )
        for name in named_queries("data_quality"):
            SQLCheckOperator(
                task_id=name,
                conn_id=settings.db_conn_id,
                sql=queries[name],
                trigger_rule="all_done",
            )

    @task(trigger_rule="all_done")
    def report(run_date: str) -> str:
        """The day's summary in the log and its HTML report with plots (stored with the day);
        fails the run when nothing was delivered or the day is incomplete, without retrying:
        the verdict cannot change by asking again (a rerun of the day can)."""
        from airflow.sdk.exceptions import AirflowFailException
        from earmark.day.report import write_day_report
        from earmark.day.schedule import deadline_for
        from earmark.day.status import day_status, format_summary
        from earmark.orchestration.airflow_seam import task_env

        env = task_env()
        status = day_status(env.settings, env.store, run_date)
        print(format_summary(status))
        write_day_report(env.settings, env.store, run_date, env.context["run_id"], status=status)
        if status.nothing_delivered:
            deadline = deadline_for(run_date, env.settings)
            raise AirflowFailException(
                f"nothing arrived for {run_date} by its deadline {deadline:%Y-%m-%d %H:%M %Z}"
            )
        if not status.complete:
            raise AirflowFailException(
                f"day {status.run_date} incomplete: files {status.files},"
                f" archives {status.archives}"
            )
        return status.run_date

    @task(trigger_rule="all_done")
    def retention() -> dict[str, Any]:
        """Apply each kind of data's retention (earmark.lifecycle.retention), today local time
        whatever day the run screens; per kind how many went and their bytes, never names."""
        from earmark.lifecycle.retention import apply_retention, describe
        from earmark.orchestration.airflow_seam import task_env

        env = task_env()
        outcome = apply_retention(env.settings, env.store)
        print("\n".join(describe(outcome.kinds, "removed")))
        return {k.kind.value: {"count": k.count, "bytes": k.bytes} for k in outcome.kinds}

    conf_checked = check_run_conf().as_setup()
    # An XComArg that each task below receives as the str it resolves to; mypy cannot see
    # TaskFlow's deferred values (a task's call signature takes the resolved types).
    run_date: Any = resolve_run_date()
    migrated = migrate_results_db()
    conf_checked >> [run_date, migrated]
    start = check_for_work(run_date)
    migrated >> start
    registered = register_archives(run_date)
    start >> [wait_for_archives, registered]
    wait_for_archives >> registered
    unpacked = unpack.expand(archive_ids=registered)
    units = plan_work_units(run_date)
    unpacked >> units
    gpu = gpu_unit.expand(unit_id=units)
    checked = noon_check(run_date)
    gpu >> checked
    reported = report(run_date)
    checked_quality = data_quality(data_quality_queries(run_date))
    checked >> [checked_quality, reported]
    # After the report and the checks, whatever became of them: the run's teardown (of the conf
    # check's setup), so they stay the tasks whose failure fails the run; retention's own
    # failure is recorded in task_failures like any task's, and its next run finishes what it
    # left. Every task is upstream of it, so a failed conf check leaves them all upstream_failed.
    retained = retention().as_teardown()
    [conf_checked, checked_quality, reported] >> retained


earmark_daily()
