"""Registers Earmark's deadline reference so runs can be created with it.

The reference is ``earmark.orchestration.deadlines.RunDayDeadline``.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from earmark.orchestration.deadlines import RunDayDeadline


class EarmarkDeadlinesPlugin(AirflowPlugin):
    name = "earmark_deadlines"
    deadline_references = [RunDayDeadline]  # noqa: RUF012 - Airflow reads a class attribute
