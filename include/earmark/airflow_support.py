"""The seam between Airflow and the package: the results DB from an Airflow connection.

Imported by tasks at run time only; everything else in the package works without Airflow.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import URL

from earmark.config import Settings
from earmark.store.db import Store


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


def results_store(settings: Settings) -> Store:
    """The results DB named by ``EARMARK_DB_CONN_ID`` (default ``earmark_db``)."""
    from airflow.sdk import Connection  # noqa: PLC0415 - only inside a running task

    return Store.from_url(url_from_connection(Connection.get(settings.db_conn_id)))
