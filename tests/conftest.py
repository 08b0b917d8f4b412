"""Shared fixtures: the parsed DAGs once per session, and throwaway Postgres databases."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get(
    "EARMARK_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def dagbag(tmp_path_factory: pytest.TempPathFactory):
    """Every DAG in dags/, parsed once (no metadata DB needed)."""
    home = tmp_path_factory.mktemp("airflow-home")
    os.environ.setdefault("AIRFLOW_HOME", str(home))
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def _admin_engine():
    import sqlalchemy as sa

    engine = sa.create_engine(
        PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as error:
        pytest.fail(
            f"Postgres is not reachable at {PG_ADMIN_URL} ({error.orig}). Start it (README:"
            " 'Services') or point EARMARK_TEST_PG_URL at a server where you may create"
            " databases.",
            pytrace=False,
        )
    return engine


@pytest.fixture
def pg_url() -> Iterator[str]:
    """URL of a new, empty Postgres database, dropped afterwards."""
    import sqlalchemy as sa

    engine = _admin_engine()
    name = f"earmark_test_{uuid.uuid4().hex[:10]}"
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = engine.url.set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    """A migrated results store on each supported backend."""
    from earmark.store.db import Store

    if request.param == "sqlite":
        store = Store.from_url(f"sqlite:///{tmp_path / 'results.db'}")
        store.migrate()
        yield store
        store.dispose()
    else:
        url = request.getfixturevalue("pg_url")
        store = Store.from_url(url)
        store.migrate()
        yield store
        store.dispose()
