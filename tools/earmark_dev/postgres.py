"""Throwaway Postgres databases on a server where this user may create them."""

from __future__ import annotations

import os
from typing import Any

PG_ADMIN_URL = os.environ.get(
    "EARMARK_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def database_url(database: str) -> str:
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    return make_url(PG_ADMIN_URL).set(database=database).render_as_string(hide_password=False)


def admin_engine() -> Any:
    import sqlalchemy as sa  # noqa: PLC0415

    return sa.create_engine(
        PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )
