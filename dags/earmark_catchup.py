"""# earmark_catchup

Archives that arrive in `incoming/` after the day's `earmark_daily` run took its deliveries are
still screened that day when they arrive before `EARMARK_INTAKE_CUTOFF` (10:00 by default).
Every `EARMARK_CATCHUP_EVERY_MINUTES` this DAG looks:

1. **late_archives_waiting** (short-circuit): is the tick between `EARMARK_START_TIME` and the
   cut-off, is a delivery ready in `incoming/`, and is no `earmark_daily` run already queued
   (which would take it)? Returns the day, or skips the rest.
2. **catch_up** triggers `earmark_daily` for that day (`{"date": ...}`, the day as the first
   task returned it; no logical date, so the day's deadline applies). It queues behind a run in
   progress (one run at a time) and, like any rerun, only takes what is new: the late archive is
   registered, unpacked, planned into its own work unit and screened.

After the cut-off nothing is triggered: archives still waiting are named in the day's
`noon_check` and `report` and are taken by the next day's run.

This file is wiring and docs only; the logic lives in `include/earmark`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import CronTriggerTimetable, dag, task
from earmark.config import Settings
from earmark.day.schedule import catchup_cron
from earmark.orchestration.dag_defaults import task_defaults

if TYPE_CHECKING:
    from airflow.sdk.types import DagRunProtocol

settings = Settings.from_env()


@dag(
    dag_id="earmark_catchup",
    schedule=CronTriggerTimetable(catchup_cron(settings), timezone=settings.timezone),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["earmark", "daily"],
    default_args=task_defaults(settings, retries=2),
)
def earmark_catchup() -> None:
    @task.short_circuit
    def late_archives_waiting(dag_run: DagRunProtocol | None = None) -> str | None:
        """The day to catch up, when a late delivery waits and the cut-off has not passed."""
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance
        from earmark.day.schedule import catchup_day
        from earmark.ingest.deliveries import waiting_deliveries
        from earmark.orchestration.airflow_seam import given_run

        env = Settings.from_env()
        run = given_run(dag_run)
        tick = run.logical_date or run.run_after
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

    # The day (a date string) reaches catch_up as late_archives_waiting's XCom, which also makes
    # catch_up its downstream (skipped when it short-circuits).
    day = late_archives_waiting()
    TriggerDagRunOperator(
        task_id="catch_up",
        trigger_dag_id="earmark_daily",
        trigger_run_id="catch_up__{{ run_id }}",
        conf={"date": day},
        logical_date=None,
    )


earmark_catchup()
