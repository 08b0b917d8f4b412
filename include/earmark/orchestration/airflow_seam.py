"""The seam between Airflow and the package: the results DB from an Airflow connection, and
what every task starts from (settings, results store, Airflow context).

Imported by tasks at run time only; everything else in the package works without Airflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy.engine import URL

from earmark.config import Settings
from earmark.store.db import Store

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.types import DagRunProtocol


def url_from_connection(conn: Any) -> str:
    """A SQLAlchemy URL for an Airflow connection of type postgres or sqlite."""
    if conn.conn_type == "postgres":
        return URL.create(
            "postgresql+psycopg",
            username=conn.login or None,
            password=conn.password or None,
            host=conn.host or None,
            port=conn.port or None,
            database=conn.schema or None,
        ).render_as_string(hide_password=False)
    if conn.conn_type == "sqlite":
        if not conn.host or not conn.host.startswith("/"):
            raise ValueError(f"sqlite connection {conn.conn_id!r} needs an absolute path as host")
        return f"sqlite:///{conn.host}"
    raise ValueError(f"connection {conn.conn_id!r}: unsupported type {conn.conn_type!r}")


def results_url(settings: Settings) -> str:
    """The URL of the results DB named by ``EARMARK_DB_CONN_ID`` (default ``earmark_db``)."""
    from airflow.sdk import Connection

    return url_from_connection(Connection.get(settings.db_conn_id))


def results_store(settings: Settings) -> Store:
    """The results DB named by ``EARMARK_DB_CONN_ID`` (default ``earmark_db``)."""
    return Store.from_url(results_url(settings))


@dataclass(frozen=True)
class TaskEnv:
    """What a task body works with: settings read now, the results DB, Airflow's context."""

    settings: Settings
    store: Store
    context: Context

    def set_template_var(self, name: str, value: str) -> None:
        """A variable for the task's ``map_index_template`` (its name in the UI). The Context
        type lists Airflow's own keys only; the context itself takes any."""
        cast("dict[str, Any]", self.context)[name] = value


def task_env() -> TaskEnv:
    """The ``TaskEnv`` of the running task (settings are read at run time, never at parse time)."""
    from airflow.sdk import get_current_context

    settings = Settings.from_env()
    return TaskEnv(settings, results_store(settings), get_current_context())


def given_run(dag_run: DagRunProtocol | None) -> DagRunProtocol:
    """The run Airflow passes a task that names ``dag_run`` among its arguments. The argument
    defaults to None only so that the DAG file can call the task without it."""
    if dag_run is None:
        raise TypeError("a task's dag_run is given by Airflow when the task runs; none was")
    return dag_run


def migrate_results_db() -> list[str]:
    """Apply pending results-DB migrations: the first task of every Earmark DAG (idempotent;
    one migrator at a time on Postgres). Returns the versions applied."""
    return task_env().store.migrate()


def metadata_db_url() -> str:
    """Airflow's metadata DB, as this host's Airflow configuration names it."""
    from airflow.configuration import conf

    return conf.get("database", "sql_alchemy_conn")


def celery_broker_url() -> str:
    from airflow.configuration import conf

    return conf.get("celery", "broker_url")


def celery_workers(wait_s: float) -> dict[str, Any]:
    """Each live Celery worker: the queues it consumes and its pool's concurrency
    (``earmark.ops.health.Worker`` by worker name; empty when none answered).

    One broadcast (``active_queues``): Celery stops listening ``wait_s`` seconds after the last
    reply, so a healthy cluster answers in about ``wait_s``. Then ``stats`` is asked of the
    workers that answered only, for their concurrency (a GPU worker may run more than one task
    at once); it returns as soon as each has answered (``limit``), so it may wait longer.
    """
    from airflow.providers.celery.executors.celery_executor_utils import app

    from earmark.ops.health import Worker

    replies = app.control.inspect(timeout=wait_s).active_queues() or {}
    if not replies:
        return {}
    names = sorted(replies)
    patient = max(4 * wait_s, 2.0)
    stats = app.control.inspect(timeout=patient, destination=names, limit=len(names)).stats() or {}

    def concurrency(name: str) -> int | None:
        value = ((stats.get(name) or {}).get("pool") or {}).get("max-concurrency")
        return int(value) if isinstance(value, int) and value > 0 else None

    return {
        name: Worker(tuple(q["name"] for q in queues), concurrency(name))
        for name, queues in replies.items()
    }
