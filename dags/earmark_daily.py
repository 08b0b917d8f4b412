"""Earmark's daily DAG: wiring, params and docs only; the logic lives in ``include/earmark``."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.providers.common.sql.operators.sql import SQLCheckOperator, SQLColumnCheckOperator
from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.providers.standard.sensors.filesystem import FileSensor
from airflow.sdk import (
    AsyncCallback,
    CronTriggerTimetable,
    DeadlineAlert,
    DeadlineReference,
    Param,
    dag,
    get_current_context,
    task,
    task_group,
)
from earmark.config import Settings
from earmark.monitoring import named_queries
from earmark.schedule import cron_expression, deadline_interval

settings = Settings.from_env()
# GPU tasks: the gpu Celery queue, a pool slot per GPU, a readable batch name, well under an hour.
GPU_TASK: dict[str, Any] = {
    "queue": "gpu",
    "pool": "gpu",
    "map_index_template": "{{ batch_label }}",
    "execution_timeout": timedelta(hours=1),
}
RUN_DATE = "{{ ti.xcom_pull(task_ids='check_for_work', key='run_date') }}"

DOC = """
# earmark_daily

Screens one day of audio: every recording that arrived in `incoming/` is unpacked, transcribed
(Whisper) and scored against every policy (CoPE-A); flagged recordings wait in the RA review queue.

1. **check_for_work** picks the run date (param `date`, else the logical date in the configured
   timezone) and waits for archives only when there is nothing to do yet.
2. **wait_for_archives**: FileSensor on `incoming/*.sha256`; an archive is ready once its
   `.sha256` marker exists (written last).
3. **register_archives**: every delivery taken out of `incoming/` (by rename: no link is
   followed, no special file opened) gets one verdict in `deliveries` (registered, duplicate or
   rejected with a reason); checksums verified; one row per archive (idempotent on sha256).
4. **unpack** (mapped per archive, queue `unpack`): safe extraction, full audio validation; bad
   input is quarantined with a reason.
5. **plan_batches** → **gpu_batch** (mapped task group per batch, queue and pool `gpu`):
   **transcribe** then **classify**.
6. **noon_check**, **data_quality**, **report**: completeness, ETA, checks, summary.

A Deadline Alert emails when the local deadline passes with the run unfinished; a failed run
emails too. Rerun a day: `airflow dags trigger earmark_daily --conf '{"date": "2026-11-29"}'`
(add `"reprocess": true` to redo transcription and screening).
"""

_alert_kwargs = {
    "to": settings.alert_email,
    "smtp_conn_id": settings.smtp_conn_id,
}


def _deadline() -> DeadlineAlert | None:
    if not settings.deadline_alerts:
        return None
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_LOGICAL_DATE,
        interval=deadline_interval(settings),
        callback=AsyncCallback(
            SmtpNotifier,
            kwargs={
                **_alert_kwargs,
                "subject": (
                    "[earmark] deadline missed: {{ dag_run.dag_id }} {{ dag_run.dag_run_id }}"
                ),
                "html_content": (
                    "<p>{{ dag_run.dag_id }} run {{ dag_run.dag_run_id }} (logical date "
                    "{{ dag_run.logical_date }}) was not finished by its deadline "
                    "{{ deadline.deadline_time }}.</p>"
                ),
            },
        ),
    )


def _context() -> tuple[Settings, Any, dict[str, Any]]:
    from earmark.airflow_support import results_store  # noqa: PLC0415

    current = Settings.from_env()
    return current, results_store(current), get_current_context()


def _gpu_stage(stage: str, batch_id: int, params: dict[str, Any] | None) -> int:
    """Run one stage of ``earmark.screening`` on a batch; the batch id goes on to the next."""
    from earmark import screening  # noqa: PLC0415
    from earmark.batches import batch_label  # noqa: PLC0415

    current, store, context = _context()
    context["batch_label"] = batch_label(store, batch_id)
    getattr(screening, stage)(
        current, store, batch_id, reprocess=bool((params or {}).get("reprocess"))
    )
    return batch_id


def _run_date(context: dict[str, Any]) -> str:
    return context["ti"].xcom_pull(task_ids="check_for_work", key="run_date")


@dag(
    dag_id="earmark_daily",
    schedule=CronTriggerTimetable(cron_expression(settings), timezone=settings.timezone),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=DOC,
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
    default_args={
        "retries": 3,
        "retry_delay": timedelta(seconds=settings.retry_delay_seconds),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=15),
    },
    deadline=_deadline(),
    on_failure_callback=SmtpNotifier(
        **_alert_kwargs,
        subject="[earmark] run failed: {{ dag.dag_id }} {{ run_id }}",
        html_content="<p>{{ dag.dag_id }} run {{ run_id }} failed. See the Airflow UI.</p>",
    ),
)
def earmark_daily() -> None:
    @task.branch
    def check_for_work(params: dict[str, Any] | None = None) -> str:
        """Pick the run date; skip waiting when archives are already there or registered."""
        from earmark.intake import has_work  # noqa: PLC0415
        from earmark.schedule import resolve_run_date  # noqa: PLC0415

        current, store, context = _context()
        dag_run = context["dag_run"]
        run_date = resolve_run_date(
            (params or {}).get("date"), dag_run.logical_date, dag_run.run_after, current.timezone
        )
        context["ti"].xcom_push(key="run_date", value=run_date)
        store.migrate()
        known = store.scalar("SELECT count(*) FROM archives WHERE run_date = :d", d=run_date)
        if known or has_work(current):
            return "register_archives"
        return "wait_for_archives"

    wait_for_archives = FileSensor(
        task_id="wait_for_archives",
        fs_conn_id="earmark_fs",
        filepath="incoming/*.sha256",
        deferrable=True,
        poke_interval=settings.sensor_poke_seconds,
        timeout=int(deadline_interval(settings).total_seconds()),
    )

    @task(
        trigger_rule="none_failed_min_one_success",
        execution_timeout=timedelta(minutes=settings.register_timeout_minutes),
    )
    def register_archives() -> list[int]:
        """Claim deliveries from incoming/, verify checksums, register archives; ids to unpack."""
        from earmark.intake import register_archives as register  # noqa: PLC0415

        current, store, context = _context()
        return register(current, store, _run_date(context))

    @task(queue="unpack", map_index_template="{{ archive_label }}")
    def unpack(archive_id: int) -> dict[str, Any]:
        """Extract one archive safely, validate and register its files."""
        from dataclasses import asdict  # noqa: PLC0415

        from earmark.intake import unpack_archive  # noqa: PLC0415

        current, store, context = _context()
        context["archive_label"] = store.scalar(
            "SELECT name FROM archives WHERE id = :id", id=archive_id
        )
        return asdict(unpack_archive(current, store, archive_id))

    @task(trigger_rule="all_done")
    def plan_batches(params: dict[str, Any] | None = None) -> list[int]:
        """Group the day's pending files into GPU batches; their ids.

        Runs whatever became of the unpacks, so one failed archive does not hold up the day.
        """
        from earmark.batches import plan_batches as plan  # noqa: PLC0415

        current, store, context = _context()
        return plan(
            store,
            context["run_id"],
            _run_date(context),
            reprocess=bool((params or {}).get("reprocess")),
            max_audio_s=current.batch_audio_seconds,
            max_files=current.batch_max_files,
        )

    @task_group
    def gpu_batch(batch_id: int) -> None:
        @task(**GPU_TASK)
        def transcribe(batch_id: int, params: dict[str, Any] | None = None) -> int:
            """Whisper over every pending file of the batch."""
            return _gpu_stage("transcribe_batch", batch_id, params)

        @task(**GPU_TASK)
        def classify(batch_id: int, params: dict[str, Any] | None = None) -> int:
            """CoPE-A scores against every policy; flagged items to the review queue."""
            return _gpu_stage("classify_batch", batch_id, params)

        classify(transcribe(batch_id))

    @task(trigger_rule="all_done")
    def noon_check() -> dict[str, Any]:
        """Complete or not, ETA and throughput (counts only)."""
        from earmark.monitoring import day_status  # noqa: PLC0415

        current, store, context = _context()
        return day_status(current, store, _run_date(context)).as_dict()

    @task_group
    def data_quality() -> None:
        SQLColumnCheckOperator(
            task_id="label_scores_in_range",
            conn_id=settings.db_conn_id,
            table="labels",
            column_mapping={
                "score": {"min": {"geq_to": 0}, "max": {"leq_to": 1}, "null_check": {"equal_to": 0}}
            },
            trigger_rule="all_done",
        )
        for name, sql in named_queries("data_quality").items():
            SQLCheckOperator(
                task_id=name,
                conn_id=settings.db_conn_id,
                sql=sql.replace("{{ run_date }}", RUN_DATE),
                trigger_rule="all_done",
            )

    @task(trigger_rule="all_done")
    def report() -> str:
        """The day's summary; fails the run when the day is incomplete."""
        from earmark.intake import prune_processed  # noqa: PLC0415
        from earmark.monitoring import day_status, format_summary  # noqa: PLC0415

        current, store, context = _context()
        status = day_status(current, store, _run_date(context))
        print(format_summary(status))  # the task log is the report's home
        prune_processed(current)
        if not status.complete:
            raise RuntimeError(f"day {status.run_date} incomplete: files {status.files}")
        return status.run_date

    start = check_for_work()
    registered = register_archives()
    start >> [wait_for_archives, registered]
    wait_for_archives >> registered
    unpacked = unpack.expand(archive_id=registered)
    batches = plan_batches()
    unpacked >> batches
    gpu = gpu_batch.expand(batch_id=batches)
    checked = noon_check()
    gpu >> checked
    checked >> [data_quality(), report()]


earmark_daily()
