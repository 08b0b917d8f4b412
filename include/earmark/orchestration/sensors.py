"""The wait for the day's archives, which ends at the day's deadline.

A FileSensor's timeout is fixed when the DAG is parsed; the time left until a run's deadline is
known only once the run knows its day. :class:`ArchivesSensor` computes it when it starts, so a
day whose archives never arrive fails at its deadline with a reason that says so (and the run's
failure mail becomes the "nothing arrived" alert), and a rerun of a past day with nothing to
screen fails at once instead of waiting hours.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from airflow.providers.standard.sensors.filesystem import FileSensor
from airflow.sdk.exceptions import AirflowSensorTimeout

from earmark.config import Settings
from earmark.day.schedule import deadline_for


def nothing_arrived(run_date: str, deadline: datetime) -> str:
    """The reason a day's wait ended empty."""
    return (
        f"nothing arrived in incoming/ for {run_date} by its deadline"
        f" {deadline.strftime('%Y-%m-%d %H:%M %Z')}"
    )


class ArchivesSensor(FileSensor):
    """FileSensor on the delivery markers that gives up at the run day's deadline."""

    def __init__(self, *, run_date_task_id: str = "resolve_run_date", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run_date_task_id = run_date_task_id

    def _deadline(self, context: Any) -> tuple[str, datetime]:
        run_date = context["ti"].xcom_pull(task_ids=self.run_date_task_id)
        return run_date, deadline_for(run_date, Settings.from_env())

    def execute(self, context: Any) -> None:
        run_date, deadline = self._deadline(context)
        if self.poke(context=context):
            return
        seconds_left = (deadline - datetime.now(UTC)).total_seconds()
        if seconds_left <= 0:
            raise AirflowSensorTimeout(nothing_arrived(run_date, deadline))
        self.timeout = seconds_left
        super().execute(context)

    def resume_execution(
        self, next_method: str, next_kwargs: dict[str, Any] | None, context: Any
    ) -> Any:
        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except AirflowSensorTimeout:
            raise AirflowSensorTimeout(nothing_arrived(*self._deadline(context))) from None
