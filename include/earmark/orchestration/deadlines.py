"""The deadline of every earmark_daily run, however it was triggered (a deadline reference).

Airflow's ``DAGRUN_LOGICAL_DATE`` reference gives runs triggered from the CLI or the REST API
(which have no logical date) no deadline at all, so a manual run for today would miss noon
silently. :class:`RunDayDeadline` reads the run's conf and dates when the run is created and
returns :func:`earmark.day.schedule.deadline_reference`. Airflow finds the class by its import path
among the plugins' ``deadline_references`` (``plugins/earmark_deadlines.py``): every process that
creates runs (scheduler, api-server, the ``airflow`` CLI) loads the plugins folder.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # task-sdk 1.3.2's airflow/sdk/__init__.pyi omits it; the module exports it
    from airflow.sdk.definitions.deadline import BaseDeadlineReference
else:
    from airflow.sdk import BaseDeadlineReference


class RunDayDeadline(BaseDeadlineReference):
    """The local start time of the day a run screens (its logical date when it has one)."""

    required_kwargs = frozenset({"dag_id", "run_id"})

    def _evaluate_with(
        self, *, session: Any, dag_id: str, run_id: str, **_: Any
    ) -> datetime | None:
        from airflow.models.dagrun import DagRun
        from sqlalchemy import select

        from earmark.config import Settings
        from earmark.day.schedule import deadline_reference

        run = session.scalars(
            select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
        ).one_or_none()
        if run is None:
            return None
        return deadline_reference(
            run.conf,
            run.logical_date,
            run.run_after or run.queued_at,
            Settings.from_env(),
            datetime.now(UTC),
        )
