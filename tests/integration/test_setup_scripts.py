"""``deploy/setup-coordinator.sh`` run for real with ``--skip-system`` (what needs no root or
systemd: secrets, Postgres roles, databases and grants, the Redis config, the rendered
``airflow.env``) against this machine's Postgres and a throwaway Redis, twice: the second run
changes nothing. ``--dry-run`` prints every action and does none; ``setup-worker.sh --dry-run``
too. Role and database names are this test's own, dropped after."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from earmark.config import PROJECT_ROOT
from earmark_dev.postgres import admin_url

pytestmark = pytest.mark.integration

COORDINATOR = PROJECT_ROOT / "deploy" / "setup-coordinator.sh"
WORKER = PROJECT_ROOT / "deploy" / "setup-worker.sh"
SECRETS = (
    "AIRFLOW_FERNET_KEY",
    "AIRFLOW_API_SECRET_KEY",
    "AIRFLOW_JWT_SECRET",
    "AIRFLOW_DB_PASSWORD",
    "EARMARK_DB_PASSWORD",
    "REDIS_PASSWORD",
)


def _admin() -> sa.Engine:
    return sa.create_engine(admin_url(), isolation_level="AUTOCOMMIT")


def _server() -> tuple[str, int]:
    """Host and port of the tests' Postgres (the local server or the run's own)."""
    url = sa.make_url(admin_url())
    return url.host or "127.0.0.1", url.port or 5432


class Host:
    """A pretend coordinator: /etc/earmark and the Redis config under a temp folder, Postgres
    roles and databases named after this test."""

    def __init__(self, root: Path) -> None:
        tag = uuid.uuid4().hex[:8]
        self.root = root
        self.etc = root / "etc" / "earmark"
        self.redis_conf = root / "etc" / "redis" / "earmark-redis.conf"
        self.redis_main = root / "etc" / "redis" / "redis.conf"
        self.roles = {"airflow": f"earmark_s_{tag}_airflow", "earmark": f"earmark_s_{tag}_results"}
        self.etc.mkdir(parents=True)
        self.redis_main.parent.mkdir(parents=True)
        self.redis_main.write_text("# the distribution's redis.conf\n")
        host, port = _server()
        values = (PROJECT_ROOT / "deploy" / "values.env").read_text()
        values = values.replace(
            "postgresql+psycopg://airflow:CHANGE-ME@coordinator.internal:5432/airflow",
            f"postgresql+psycopg://{self.roles['airflow']}:CHANGE-ME@{host}:{port}/{self.roles['airflow']}",
        ).replace(
            "postgresql://earmark:CHANGE-ME@coordinator.internal:5432/earmark",
            f"postgresql://{self.roles['earmark']}:CHANGE-ME@{host}:{port}/{self.roles['earmark']}",
        )
        (self.etc / "values.env").write_text(values)

    def run(self, script: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "EARMARK_"))}
        environ.update(
            ETC=str(self.etc),
            PROJECT=str(PROJECT_ROOT),
            PSQL_ADMIN="psql -h {} -p {} -U postgres -d postgres".format(*_server()),
            REDIS_CONF=str(self.redis_conf),
            REDIS_MAIN_CONF=str(self.redis_main),
            **env,
        )
        return subprocess.run(
            ["bash", str(script), *args],
            env=environ,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def files(self) -> dict[str, tuple[str, int, float]]:
        """Every file the script may write: content hash, mode, mtime."""
        out = {}
        for path in sorted([*self.etc.iterdir(), *self.redis_conf.parent.iterdir()]):
            st = path.stat()
            out[path.name] = (
                hashlib.sha256(path.read_bytes()).hexdigest(),
                st.st_mode,
                st.st_mtime,
            )
        return out

    def pg_state(self) -> list[tuple]:
        with _admin().connect() as conn:
            roles = conn.execute(
                sa.text(
                    "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolcanlogin,"
                    " rolpassword FROM pg_authid WHERE rolname = ANY(:r) ORDER BY 1"
                ),
                {"r": list(self.roles.values())},
            ).all()
            dbs = conn.execute(
                sa.text(
                    "SELECT datname, pg_get_userbyid(datdba), datacl::text FROM pg_database"
                    " WHERE datname = ANY(:r) ORDER BY 1"
                ),
                {"r": list(self.roles.values())},
            ).all()
        return [tuple(r) for r in [*roles, *dbs]]

    def secrets(self) -> dict[str, str]:
        lines = (self.etc / "secrets.env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))

    def drop(self) -> None:
        engine = _admin()
        with engine.connect() as conn:
            for name in self.roles.values():
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            for name in self.roles.values():
                conn.execute(sa.text(f'DROP ROLE IF EXISTS "{name}"'))
        engine.dispose()


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    for tool in ("psql", "openssl", "redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing (README, Services)", pytrace=False)
    made = Host(tmp_path)
    try:
        yield made
    finally:
        made.drop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _redis_answers(conf: Path, home: Path, password: str) -> tuple[str, str, str]:
    """Start redis-server with the rendered config (port and folder of its own); what it
    answers without the password, with it, and its AOF setting."""
    port = _free_port()
    home.mkdir()
    proc = subprocess.Popen(
        ["redis-server", str(conf), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(home)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    cli = ["redis-cli", "-p", str(port)]
    try:
        deadline = time.monotonic() + 20
        while True:
            anonymous = subprocess.run([*cli, "ping"], capture_output=True, text=True, check=False)
            if anonymous.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        authed = [*cli, "-a", password, "--no-auth-warning"]
        ping = subprocess.run([*authed, "ping"], capture_output=True, text=True, check=False)
        aof = subprocess.run(
            [*authed, "config", "get", "appendonly"], capture_output=True, text=True, check=False
        )
        return anonymous.stdout.strip(), ping.stdout.strip(), aof.stdout.split()[-1]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_coordinator_setup_runs_and_a_second_run_changes_nothing(host: Host, tmp_path: Path):
    first = host.run(COORDINATOR, "--skip-system")
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.count("   changed:") == 10, first.stdout

    secrets = host.secrets()
    assert sorted(secrets) == sorted(SECRETS) and all(len(v) >= 40 for v in secrets.values())
    assert oct((host.etc / "secrets.env").stat().st_mode & 0o777) == "0o600"
    rendered = (host.etc / "airflow.env").read_text()
    assert "CHANGE-ME" not in rendered
    assert f"AIRFLOW__CORE__FERNET_KEY={secrets['AIRFLOW_FERNET_KEY']}" in rendered
    results_url = (
        f"postgresql://{host.roles['earmark']}:{secrets['EARMARK_DB_PASSWORD']}@{{}}:{{}}/".format(
            *_server()
        )
        + host.roles["earmark"]
    )
    assert f"AIRFLOW_CONN_EARMARK_DB={results_url}" in rendered
    assert not any(secret in first.stdout + first.stderr for secret in secrets.values())

    # Least privilege: each role owns its database only, and cannot even connect to the other.
    state = host.pg_state()
    assert [r[1:5] for r in state[:2]] == [(False, False, False, True)] * 2
    assert [(r[0], r[1]) for r in state[2:]] == [
        (name, name) for name in sorted(host.roles.values())
    ]
    own = sa.create_engine(sa.make_url(results_url).set(drivername="postgresql+psycopg2"))
    with own.connect() as conn:
        assert conn.execute(sa.text("SELECT current_user")).scalar() == host.roles["earmark"]
    own.dispose()
    other = sa.create_engine(
        sa.make_url(results_url).set(
            drivername="postgresql+psycopg2", database=host.roles["airflow"]
        )
    )
    with pytest.raises(sa.exc.OperationalError, match="CONNECT privilege"):
        other.connect()
    other.dispose()

    anonymous, authed, aof = _redis_answers(
        host.redis_conf, tmp_path / "redis", secrets["REDIS_PASSWORD"]
    )
    assert anonymous.startswith("NOAUTH") and authed == "PONG" and aof == "yes"
    assert f"include {host.redis_conf}" in host.redis_main.read_text()

    files, pg = host.files(), host.pg_state()
    second = host.run(COORDINATOR, "--skip-system")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "   changed:" not in second.stdout and second.stdout.count("unchanged:") == 10
    assert host.files() == files and host.pg_state() == pg


def test_dry_run_prints_every_action_and_does_none(host: Host):
    before = host.files()
    planned = host.run(COORDINATOR, "--skip-system", "--dry-run")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    for action in (
        f"+ CREATE ROLE {host.roles['airflow']} LOGIN",
        f"+ CREATE DATABASE {host.roles['earmark']} OWNER {host.roles['earmark']}",
        f"+ REVOKE ALL ON DATABASE {host.roles['airflow']} FROM PUBLIC",
        "+ install -m 640",
        "render-config --values <values + secrets>",
        "(dry run: nothing was changed)",
    ):
        assert action in planned.stdout, (action, planned.stdout)
    assert host.files() == before and host.pg_state() == []

    whole = host.run(COORDINATOR, "--dry-run")  # as a non-root user it refuses, saying why
    if os.getuid() != 0:
        assert whole.returncode == 1 and "run as root" in whole.stderr


def test_clear_errors_for_missing_prerequisites(host: Host):
    (host.etc / "values.env").unlink()
    missing = host.run(COORDINATOR, "--skip-system")
    assert missing.returncode == 1 and "copy deploy/values.env there" in missing.stderr
    values = (PROJECT_ROOT / "deploy" / "values.env").read_text()
    (host.etc / "values.env").write_text(
        values.replace("EARMARK_SMTP_HOST=smtp.internal", "EARMARK_SMTP_HOST=CHANGE-ME")
    )
    left = host.run(COORDINATOR, "--skip-system")
    assert left.returncode == 1 and "EARMARK_SMTP_HOST still says CHANGE-ME" in left.stderr

    no_env = host.run(WORKER, "gpu", "--dry-run")
    assert no_env.returncode == 1 and "copy airflow.env from the coordinator" in no_env.stderr


def test_worker_dry_run_lists_its_steps(host: Host):
    rendered = host.etc / "airflow.env"
    rendered.write_text(
        "AIRFLOW_HOME=/var/lib/earmark/airflow\nEARMARK_DATA_ROOT=/mnt/data\n"
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://coordinator:8080/execution/\n"
        "EARMARK_ASR_MODEL_DIR=/models/a\nEARMARK_BASE_MODEL_DIR=/models/b\n"
        "EARMARK_ADAPTER_DIR=/models/c\nEARMARK_PREPARED_MODEL_DIR=/models/prepared/d\n"
    )
    gpu = host.run(WORKER, "gpu", "--dry-run", GPUS="2")
    assert gpu.returncode == 0, gpu.stdout + gpu.stderr
    for action in (
        "+ apt-get install",
        "earmark models check",
        "earmark-worker-gpu@0",
        "earmark-worker-gpu@1",
        "earmark-worker-unpack",
        "(dry run: nothing was changed)",
    ):
        assert action in gpu.stdout, (action, gpu.stdout)
    transfer = host.run(WORKER, "transfer", "--dry-run")
    assert transfer.returncode == 0 and "earmark-worker-transfer" in transfer.stdout
    assert "earmark-worker-gpu" not in transfer.stdout
    wrong = host.run(WORKER, "cpu", "--dry-run")
    assert wrong.returncode == 2 and "transfer|gpu" in wrong.stderr
