"""Shared fixtures: the parsed DAGs once per session, throwaway Postgres databases (on the
run's server: ``earmark_dev.pytest_postgres``), a Redis, the tiny models."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from earmark_dev.postgres import admin_url

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
_OWN_CACHE = "EARMARK_DEV_CACHE" not in os.environ


pytest_plugins = ("earmark_dev.pytest_postgres",)
#: Fixtures that reach Postgres: a test using one is marked ``postgres``.
_POSTGRES_FIXTURES = frozenset({"pg_url", "migrated_pg_template", "harness", "scheduled", "ui"})


def pytest_configure(config: pytest.Config) -> None:
    """One tooling cache per test run: tiny models and a migrated Airflow DB built once."""
    if _OWN_CACHE:
        os.environ["EARMARK_DEV_CACHE"] = tempfile.mkdtemp(prefix="earmark-dev-cache-")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _OWN_CACHE and "EARMARK_DEV_CACHE" in os.environ:
        shutil.rmtree(os.environ.pop("EARMARK_DEV_CACHE"), ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark what needs Postgres: the fixtures above, a Postgres backend parameter, and every
    integration test."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if (
            _POSTGRES_FIXTURES & set(getattr(item, "fixturenames", ()))
            or "postgres" in params.values()
            or item.get_closest_marker("integration")
        ):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory):
    """TinyModelPaths (asr, base, adapter) of tiny random models, built once per test run."""
    from earmark_dev.tiny_models import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def dagbag(tmp_path_factory: pytest.TempPathFactory):
    """Every DAG in dags/, parsed once (no metadata DB needed)."""
    home = tmp_path_factory.mktemp("airflow-home")
    os.environ.setdefault("AIRFLOW_HOME", str(home))
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


@pytest.fixture(scope="session")
def tiny_settings(tiny_models):
    """Settings that run the production GPU-stage code on the tiny models, on the CPU."""
    from dataclasses import replace

    from earmark.config import Settings
    from earmark_dev.tiny_models import TINY_POLICIES

    return replace(
        Settings.from_env(),
        device="cpu",
        dtype="float32",
        asr_model_dir=tiny_models.asr,
        base_model_dir=tiny_models.base,
        adapter_dir=tiny_models.adapter,
        prepared_model_dir=tiny_models.prepared,
        policies_dir=TINY_POLICIES,
        asr_max_new_tokens=8,
        flag_threshold=0.42,
        asr_batch_size=2,
    )


@pytest.fixture(scope="session")
def models(tiny_settings):
    """The production loaders, once per run: a GPU task loads its models once too."""
    from earmark.gpu.models import load_classifier, load_transcriber

    return {
        "transcriber": load_transcriber(tiny_settings),
        "classifier": load_classifier(tiny_settings),
    }


def _admin_engine():
    import sqlalchemy as sa

    engine = sa.create_engine(
        admin_url(), isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as error:
        pytest.fail(
            f"Postgres is not reachable at {admin_url()} ({error.orig}): the tests use the server"
            " EARMARK_TEST_PG_URL names, or their own (README: 'Services').",
            pytrace=False,
        )
    return engine


def _create_database(template: str | None = None) -> str:
    import sqlalchemy as sa

    engine = _admin_engine()
    name = f"earmark_test_{uuid.uuid4().hex[:10]}"
    with engine.connect() as conn:
        conn.execute(
            sa.text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        )
    engine.dispose()
    return name


def _drop_database(name: str) -> None:
    import sqlalchemy as sa

    engine = _admin_engine()
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def _url(name: str) -> str:
    import sqlalchemy as sa

    return sa.make_url(admin_url()).set(database=name).render_as_string(hide_password=False)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """URL of a new, empty Postgres database, dropped afterwards."""
    name = _create_database()
    try:
        yield _url(name)
    finally:
        _drop_database(name)


@pytest.fixture(scope="session")
def migrated_pg_template() -> Iterator[str]:
    """A Postgres database migrated once per run: each test's results DB is a copy of it."""
    from earmark.store.db import Store

    name = _create_database()
    store = Store.from_url(_url(name))
    store.migrate()
    store.dispose()
    try:
        yield name
    finally:
        _drop_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    """A migrated results store on each supported backend."""
    from earmark.store.db import Store

    if request.param == "sqlite":
        store = Store.from_url(f"sqlite:///{tmp_path / 'results.db'}")
        store.migrate()
        yield store
        store.dispose()
        return
    name = _create_database(template=request.getfixturevalue("migrated_pg_template"))
    store = Store.from_url(_url(name))
    try:
        yield store
    finally:
        store.dispose()
        _drop_database(name)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis for the tests: the local one on 6379 when it answers, else a private
    ``redis-server`` of this test worker (no persistence), stopped at the end."""
    import subprocess
    import time

    import redis

    local = "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(local, socket_connect_timeout=1).ping()
    except redis.exceptions.ConnectionError:
        pass
    else:
        yield local
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("no Redis on 6379 and no redis-server to start one: `make system`")
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    folder = tmp_path_factory.mktemp("redis")
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                redis.Redis.from_url(url, socket_connect_timeout=1).ping()
                break
            except redis.exceptions.ConnectionError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the tests' private redis-server did not start on {port}")
                time.sleep(0.05)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)
