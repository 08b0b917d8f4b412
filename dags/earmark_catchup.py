"""Earmark's catch-up DAG: late archives screened the same day. Wiring and docs only."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import CronTriggerTimetable, dag, task
from earmark.config import Settings
from earmark.day.schedule import catchup_cron

settings = Settings.from_env()

DOC = """
# earmark_catchup

Archives that arrive in `incoming/` after the day's `earmark_daily` run took its deliveries are
still screened that day when they arrive before `EARMARK_INTAKE_CUTOFF` (10:00 by default).
Every `EARMARK_CATCHUP_EVERY_MINUTES` this DAG looks:

1. **late_archives_waiting** (short-circuit): is the tick between `EARMARK_START_TIME` and the
   cut-off, is a delivery ready in `incoming/`, and is no `earmark_daily` run already queued
   (which would take it)? Returns the day, or skips the rest.
2. **catch_up** triggers `earmark_daily` for that day (`{"date": ...}`, no logical date, so the
   day's deadline applies). It queues behind a run in progress (one run at a time) and, like any
   rerun, only takes what is new: the late archive is registered, unpacked, planned into its own
   work unit and screened.

After the cut-off nothing is triggered: archives still waiting are named in the day's
`noon_check` and `report` and are taken by the next day's run.
"""


@dag(
    dag_id="earmark_catchup",
    schedule=CronTriggerTimetable(catchup_cron(settings), timezone=settings.timezone),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=DOC,
    tags=["earmark", "daily"],
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=settings.retry_delay_seconds),
    },
)
def earmark_catchup() -> None:
    @task.short_circuit
    def late_archives_waiting() -> str | None:
        """The day to catch up, when a late delivery waits and the cut-off has not passed."""
        from airflow.sdk import get_current_context  # noqa: PLC0415
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance  # noqa: PLC0415
        from earmark.day.schedule import catchup_day  # noqa: PLC0415
        from earmark.ingest.intake import waiting_deliveries  # noqa: PLC0415

        env = Settings.from_env()
        dag_run = get_current_context()["dag_run"]
        tick = dag_run.logical_date or dag_run.run_after
        day = catchup_day(tick, env)
        if day is None:
            print(f"{tick.isoformat()}: outside {env.start_time:%H:%M}-{env.intake_cutoff:%H:%M}")
            return None
        waiting = waiting_deliveries(env)
        if not waiting:
            return None
        if RuntimeTaskInstance.get_dr_count(dag_id="earmark_daily", states=["queued"]):
            print(f"{len(waiting)} waiting; a queued earmark_daily run will take them")
            return None
        print(f"{len(waiting)} deliveries waiting: catching up {day}")
        return day

    day = late_archives_waiting()
    catch_up = TriggerDagRunOperator(
        task_id="catch_up",
        trigger_dag_id="earmark_daily",
        trigger_run_id="catch_up__{{ run_id }}",
        conf={"date": "{{ ti.xcom_pull(task_ids='late_archives_waiting') }}"},
        logical_date=None,
    )
    day >> catch_up


earmark_catchup()
