"""The distributed topology on one machine: real Airflow components, Celery workers, Redis, SMTP.

``python -m earmark.harness up`` starts, under one folder (default ``.harness/``):

- two fresh Postgres databases, ``earmark_h_<id>_meta`` (Airflow metadata) and
  ``earmark_h_<id>_results`` (the results DB);
- a private ``redis-server`` (its own port, AOF with ``appendfsync everysec``) as Celery broker;
- a local SMTP sink (aiosmtpd) writing every message to ``mail/NNNN.eml``;
- ``airflow api-server``, ``scheduler``, ``dag-processor``, ``triggerer``;
- two Celery workers: ``default,unpack,transfer`` and ``gpu`` (concurrency 1, its own
  ``EARMARK_HOSTNAME`` so ``task_instance.hostname`` tells them apart);

all configured from ``deploy/airflow.env.template``, the file production renders too. The ``gpu``
pool is sized to the GPU workers' slots. ``down`` (or the end of the Python process that called
``up``) stops every process it started by process group, and drops the databases.

Tests use :class:`Harness` directly (``tests/integration/test_distributed.py``).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import email
import email.policy
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from earmark.config import PROJECT_ROOT
from earmark.localenv import HomeLayout

TEMPLATE = PROJECT_ROOT / "deploy" / "airflow.env.template"
PG_ADMIN_URL = os.environ.get(
    "EARMARK_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
BIN = Path(sys.executable).parent
DAG_ID = "earmark_daily"
GPU_HOSTNAME = "earmark-gpu-1"
DEFAULT_HOSTNAME = "earmark-coord-1"
GPU_CONCURRENCY = 1
ROLES = ("api-server", "scheduler", "dag-processor", "triggerer", "worker-default", "worker-gpu")

# Fast loops for one machine and a test suite; production values are in deploy/values.env.
TUNING = {
    "AIRFLOW_PARALLELISM": "8",
    "AIRFLOW_VISIBILITY_TIMEOUT": "3600",
    "AIRFLOW_TASK_QUEUED_TIMEOUT": "240",
    "AIRFLOW_TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "15",
    "AIRFLOW_TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
    "AIRFLOW_HEARTBEAT_DETECTION_INTERVAL": "5",
    "AIRFLOW_SCHEDULER_HEARTBEAT_SEC": "2",
    "AIRFLOW_ORPHANED_TASKS_CHECK_INTERVAL": "30",
    "AIRFLOW_DAG_REFRESH_INTERVAL": "10",
    "AIRFLOW_MIN_FILE_PROCESS_INTERVAL": "30",
    "AIRFLOW_EXECUTION_JWT_EXPIRATION": "600",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def parse_env(text: str) -> dict[str, str]:
    """KEY=VALUE lines (comments, blanks skipped; one pair of surrounding quotes stripped)."""
    env: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def render_template(text: str, values: dict[str, str]) -> dict[str, str]:
    """``${NAME}`` substitution (every name must have a value), then KEY=VALUE lines."""
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return parse_env(string.Template(body).substitute(values))


def _pg_url(database: str) -> str:
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    return make_url(PG_ADMIN_URL).set(database=database).render_as_string(hide_password=False)


def admin_engine() -> Any:
    import sqlalchemy as sa  # noqa: PLC0415

    return sa.create_engine(
        PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )


@dataclass
class Proc:
    role: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``timeout``; reap the leader."""
        if not self.alive():
            self.signal_group(signal.SIGKILL)  # leftovers of a group whose leader died
            return
        self.signal_group(signal.SIGCONT)
        self.signal_group(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)


@dataclass
class Harness(HomeLayout):
    """One distributed Earmark on this machine, under ``home``."""

    home: Path
    name: str = field(default_factory=lambda: f"earmark_h_{uuid.uuid4().hex[:8]}")
    procs: dict[str, Proc] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    _created_dbs: list[str] = field(default_factory=list)
    _engines: dict[str, Any] = field(default_factory=dict)

    # ---- paths and configuration -------------------------------------------------------------
    @property
    def maildir(self) -> Path:
        return self.home / "mail"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def meta_db(self) -> str:
        return f"{self.name}_meta"

    @property
    def results_db(self) -> str:
        return f"{self.name}_results"

    @property
    def meta_url(self) -> str:
        return _pg_url(self.meta_db)

    @property
    def results_url(self) -> str:
        return _pg_url(self.results_db)

    def template_values(self) -> dict[str, str]:
        from sqlalchemy.engine import make_url  # noqa: PLC0415

        results = make_url(self.results_url).set(drivername="postgresql")
        return {
            **TUNING,
            "AIRFLOW_HOME": str(self.airflow_home),
            "EARMARK_PROJECT_ROOT": str(PROJECT_ROOT),
            "AIRFLOW_FERNET_KEY": self._secret("fernet"),
            "AIRFLOW_API_HOST": "127.0.0.1",
            "AIRFLOW_API_PORT": str(self.ports["api"]),
            "AIRFLOW_API_SECRET_KEY": self._secret("api"),
            "AIRFLOW_JWT_SECRET": self._secret("jwt"),
            "AIRFLOW_METADATA_DB_URL": self.meta_url,
            "AIRFLOW_BROKER_URL": f"redis://127.0.0.1:{self.ports['redis']}/0",
            "EARMARK_RESULTS_DB_URI": results.render_as_string(hide_password=False),
            "EARMARK_DATA_ROOT": str(self.data_root),
            "EARMARK_SMTP_HOST": "127.0.0.1",
            "EARMARK_SMTP_PORT": str(self.ports["smtp"]),
            "EARMARK_SMTP_DISABLE_SSL": "true",
            "EARMARK_SMTP_DISABLE_TLS": "true",
            "EARMARK_MAIL_FROM": "earmark@localhost",
            "EARMARK_TIMEZONE": "Europe/London",
            "EARMARK_START_TIME": "06:00",
            "EARMARK_DEADLINE_TIME": "12:00",
            "EARMARK_ALERT_EMAIL": "ops@example.org",
            "EARMARK_ASR_MODEL_DIR": str(self.models / "asr"),
            "EARMARK_BASE_MODEL_DIR": str(self.models / "base"),
            "EARMARK_ADAPTER_DIR": str(self.models / "adapter"),
            "EARMARK_DEVICE": "cpu",
            "EARMARK_ASR_MAX_NEW_TOKENS": "8",
            "EARMARK_FLAG_THRESHOLD": "0.42",
            "EARMARK_BATCH_AUDIO_SECONDS": "14400",
            "EARMARK_BATCH_MAX_FILES": "2000",
            "EARMARK_GPU_MEMORY_GIB": "22",
            "EARMARK_CLASSIFIER_ATTENTION": "eager",
            "EARMARK_SENSOR_POKE_SECONDS": "3",
            # Fault tests wait out one retry each: seconds, not production's minute.
            "EARMARK_RETRY_DELAY_SECONDS": "3",
            "EARMARK_TRANSFER_SOURCE": "",
        }

    def _secret(self, kind: str) -> str:
        path = self.home / "secrets.json"
        known = json.loads(path.read_text()) if path.exists() else {}
        if kind not in known:
            if kind == "fernet":
                from cryptography.fernet import Fernet  # noqa: PLC0415

                known[kind] = Fernet.generate_key().decode()
            else:
                known[kind] = secrets.token_urlsafe(32)
            path.write_text(json.dumps(known))
            path.chmod(0o600)
        return known[kind]

    def configure(self) -> dict[str, str]:
        """Pick ports, render the template into ``env`` and ``airflow.env``."""
        for folder in (
            self.airflow_home,
            self.data_root / "incoming",
            self.models,
            self.maildir,
            self.logs,
            self.home / "redis",
        ):
            folder.mkdir(parents=True, exist_ok=True)
        for key in ("api", "redis", "smtp", "log_default", "log_gpu", "log_trigger"):
            self.ports.setdefault(key, free_port())
        rendered = render_template(TEMPLATE.read_text(encoding="utf-8"), self.template_values())
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "EARMARK_"))}
        self.env = {
            **base,
            **rendered,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.ports["log_trigger"]),
            "PYTHONUNBUFFERED": "1",
        }
        lines = [f"{k}={shlex.quote(v)}" for k, v in rendered.items()]
        (self.home / "airflow.env").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (self.home / "harness.json").write_text(
            json.dumps({"name": self.name, "ports": self.ports}), encoding="utf-8"
        )
        return self.env

    def role_command(self, role: str) -> tuple[list[str], dict[str, str]]:
        airflow = str(BIN / "airflow")
        if role == "api-server":
            return [
                airflow,
                "api-server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.ports["api"]),
            ], {}
        if role in ("scheduler", "dag-processor", "triggerer"):
            return [airflow, role], {}
        if role == "worker-default":
            return (
                [
                    airflow,
                    "celery",
                    "worker",
                    "--queues",
                    "default,unpack,transfer",
                    "--concurrency",
                    "2",
                    "--celery-hostname",
                    f"default@{DEFAULT_HOSTNAME}",
                ],
                {
                    "EARMARK_HOSTNAME": DEFAULT_HOSTNAME,
                    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.ports["log_default"]),
                },
            )
        if role == "worker-gpu":
            return (
                [
                    airflow,
                    "celery",
                    "worker",
                    "--queues",
                    "gpu",
                    "--concurrency",
                    str(GPU_CONCURRENCY),
                    "--celery-hostname",
                    f"gpu@{GPU_HOSTNAME}",
                ],
                {
                    "EARMARK_HOSTNAME": GPU_HOSTNAME,
                    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.ports["log_gpu"]),
                },
            )
        if role == "redis":
            return (
                [
                    "redis-server",
                    "--port",
                    str(self.ports["redis"]),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self.home / "redis"),
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "everysec",
                    "--save",
                    "",
                    "--daemonize",
                    "no",
                ],
                {},
            )
        if role == "smtp":
            return (
                [
                    sys.executable,
                    "-m",
                    "earmark.harness",
                    "smtp",
                    "--port",
                    str(self.ports["smtp"]),
                    "--maildir",
                    str(self.maildir),
                ],
                {},
            )
        raise ValueError(f"unknown role {role!r}")

    # ---- processes ---------------------------------------------------------------------------
    def start(self, role: str) -> Proc:
        old = self.procs.get(role)
        if old is not None and old.alive():
            raise RuntimeError(f"{role} is already running (pid {old.pid})")
        argv, extra = self.role_command(role)
        log = self.logs / f"{role}.log"
        with log.open("ab") as out:
            out.write(f"\n=== {datetime.now().isoformat()} start {' '.join(argv)}\n".encode())
            out.flush()
            popen = subprocess.Popen(
                argv,
                env={**self.env, **extra},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=PROJECT_ROOT,
            )
        proc = Proc(role, popen, log)
        self.procs[role] = proc
        return proc

    def stop(self, role: str, timeout: float = 20.0) -> None:
        proc = self.procs.get(role)
        if proc is not None:
            proc.stop(timeout)

    def kill(self, role: str) -> None:
        """SIGKILL the whole process group of ``role`` (a crash, not a shutdown)."""
        proc = self.procs[role]
        proc.signal_group(signal.SIGKILL)
        proc.popen.wait(10)

    def pause(self, role: str) -> None:
        self.procs[role].signal_group(signal.SIGSTOP)

    def resume(self, role: str) -> None:
        self.procs[role].signal_group(signal.SIGCONT)

    def airflow(
        self, *args: str, check: bool = True, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(BIN / "airflow"), *args],
            env=self.env,
            text=True,
            check=False,
            capture_output=True,
            timeout=timeout,
            cwd=PROJECT_ROOT,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"airflow {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    # ---- lifecycle ---------------------------------------------------------------------------
    def create_databases(self) -> None:
        import sqlalchemy as sa  # noqa: PLC0415

        engine = admin_engine()
        with engine.connect() as conn:
            for db in (self.meta_db, self.results_db):
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
                conn.execute(sa.text(f'CREATE DATABASE "{db}"'))
                self._created_dbs.append(db)
        engine.dispose()

    def drop_databases(self) -> None:
        import sqlalchemy as sa  # noqa: PLC0415

        for engine in self._engines.values():
            engine.dispose()
        self._engines.clear()
        if not self._created_dbs:
            return
        engine = admin_engine()
        with engine.connect() as conn:
            for db in self._created_dbs:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        engine.dispose()
        self._created_dbs.clear()

    def up(self, *, timeout: float = 300, unpause: bool = True) -> Harness:
        """Start everything and wait until the DAG is parsed and both workers are ready."""
        from earmark.tiny_models import build_tiny_models  # noqa: PLC0415

        atexit.register(self.down)
        started = time.monotonic()
        self.configure()
        self.create_databases()
        self.start("redis")
        self.start("smtp")
        self.airflow("db", "migrate")
        slots = GPU_CONCURRENCY  # one gpu worker here: pool = sum of the gpu workers' slots
        self.airflow("pools", "set", "gpu", str(slots), "GPU slots: sum of gpu-worker concurrency")
        if not (self.models / "adapter").exists():
            build_tiny_models(self.models)
        for role in ROLES:
            self.start(role)
        self.wait_ready(timeout=timeout - (time.monotonic() - started))
        if unpause:
            self.unpause()
        return self

    def unpause(self) -> None:
        """Unpause earmark_daily: the scheduler then creates the latest scheduled run at once."""
        self.airflow("dags", "unpause", DAG_ID)

    def wait_ready(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        pending = {"api", "dag", "worker-default", "worker-gpu"}
        while pending:
            for role, proc in self.procs.items():
                if not proc.alive():
                    raise RuntimeError(f"{role} exited ({proc.popen.returncode}); see {proc.log}")
            if "api" in pending and self._api_healthy():
                pending.discard("api")
            if "dag" in pending and self.meta_scalar(
                "SELECT count(*) FROM serialized_dag WHERE dag_id = :d", d=DAG_ID
            ):
                pending.discard("dag")
            for role in ("worker-default", "worker-gpu"):
                if role in pending and self.worker_ready(role):
                    pending.discard(role)
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"not ready after {timeout:.0f}s: {sorted(pending)}")
            time.sleep(1)

    def worker_ready(self, role: str) -> bool:
        """The worker's latest start logged Celery's ``ready.`` line."""
        proc = self.procs.get(role)
        if proc is None or not proc.alive():
            return False
        text = proc.log.read_text(errors="replace")
        return " ready." in text.rsplit("=== ", 1)[-1]

    def wait_worker(self, role: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not self.worker_ready(role):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{role} not ready after {timeout}s; see {self.logs}")
            time.sleep(0.5)

    def _api_healthy(self) -> bool:
        url = f"http://127.0.0.1:{self.ports['api']}/api/v2/monitor/health"
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                return response.status == 200
        except OSError:
            return False

    def down(self) -> None:
        """Stop every process this harness started (reverse order) and drop its databases."""
        for role in reversed(list(self.procs)):
            self.procs[role].stop(timeout=15)
        self.procs.clear()
        with contextlib.suppress(Exception):
            self.drop_databases()

    # ---- databases ---------------------------------------------------------------------------
    def _engine(self, which: str) -> Any:
        import sqlalchemy as sa  # noqa: PLC0415

        if which not in self._engines:
            url = self.meta_url if which == "meta" else self.results_url
            self._engines[which] = sa.create_engine(url, pool_pre_ping=True)
        return self._engines[which]

    def meta_rows(self, sql: str, **params: Any) -> list[Any]:
        import sqlalchemy as sa  # noqa: PLC0415

        try:
            with self._engine("meta").connect() as conn:
                return list(conn.execute(sa.text(sql), params))
        except sa.exc.ProgrammingError:  # tables not migrated yet
            return []

    def meta_scalar(self, sql: str, **params: Any) -> Any:
        rows = self.meta_rows(sql, **params)
        return rows[0][0] if rows else None

    def results_store(self) -> Any:
        from earmark.store.db import Store  # noqa: PLC0415

        return Store.from_url(self.results_url)

    def reset_results(self) -> None:
        """Empty results DB and data root, as before a first run (the DAG migrates again)."""
        import sqlalchemy as sa  # noqa: PLC0415

        with self._engine("results").begin() as conn:
            conn.execute(sa.text("DROP SCHEMA public CASCADE"))
            conn.execute(sa.text("CREATE SCHEMA public"))
        for sub in ("incoming", "claimed", "audio", "processed", "quarantine"):
            shutil.rmtree(self.data_root / sub, ignore_errors=True)
        (self.data_root / "incoming").mkdir(parents=True, exist_ok=True)

    # ---- runs ----------------------------------------------------------------------------------
    def trigger(
        self,
        run_id: str,
        *,
        conf: dict[str, Any] | None = None,
        logical_date: datetime | None = None,
    ) -> str:
        args = ["dags", "trigger", DAG_ID, "--run-id", run_id]
        if conf is not None:
            args += ["--conf", json.dumps(conf)]
        if logical_date is not None:
            args += ["--logical-date", logical_date.isoformat()]
        self.airflow(*args)
        return run_id

    def fail_active_runs(self) -> list[str]:
        """Mark every queued or running run failed (a test that failed leaves none behind)."""
        active = [
            r.run_id
            for r in self.meta_rows(
                "SELECT run_id FROM dag_run WHERE dag_id = :d AND state IN ('queued', 'running')",
                d=DAG_ID,
            )
        ]
        for run_id in active:
            self.api("PATCH", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}", {"state": "failed"})
        return active

    def run_state(self, run_id: str) -> str | None:
        return self.meta_scalar(
            "SELECT state FROM dag_run WHERE dag_id = :d AND run_id = :r", d=DAG_ID, r=run_id
        )

    def wait_run(self, run_id: str, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        while True:
            state = self.run_state(run_id)
            if state in ("success", "failed"):
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"run {run_id} still {state} after {timeout}s:\n"
                    + "\n".join(map(str, self.task_instances(run_id)))
                )
            time.sleep(1)

    def task_instances(self, run_id: str) -> list[Any]:
        return self.meta_rows(
            "SELECT task_id, map_index, state, queue, pool, hostname, try_number, id"
            " FROM task_instance WHERE dag_id = :d AND run_id = :r ORDER BY task_id, map_index",
            d=DAG_ID,
            r=run_id,
        )

    def wait_ti(
        self, run_id: str, task_suffix: str, states: tuple[str, ...], timeout: float = 180
    ) -> Any:
        """The first instance of a task (``task_id`` ending with ``task_suffix``) in ``states``."""
        deadline = time.monotonic() + timeout
        while True:
            for ti in self.task_instances(run_id):
                if ti.task_id.endswith(task_suffix) and ti.state in states:
                    return ti
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{task_suffix} never {states} in {run_id}:\n"
                    + "\n".join(map(str, self.task_instances(run_id)))
                )
            time.sleep(0.5)

    def task_process(self, ti_id: str, role: str = "worker-gpu", timeout: float = 60) -> int:
        """Pid of the task process (title ``airflow worker -- <ti id>``) under ``role``."""
        leader = self.procs[role].pid
        deadline = time.monotonic() + timeout
        while True:
            for pid in _descendants(leader):
                with contextlib.suppress(OSError):
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                    if f"airflow worker -- {ti_id}".encode() in cmd:
                        return pid
            if time.monotonic() > deadline:
                raise TimeoutError(f"no task process for {ti_id} under {role}")
            time.sleep(0.2)

    # ---- REST API ------------------------------------------------------------------------------
    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call the public REST API as ``admin`` (SimpleAuthManager's generated password)."""
        base = f"http://127.0.0.1:{self.ports['api']}"
        if "token" not in self.__dict__:
            passwords = json.loads(
                (self.airflow_home / "simple_auth_manager_passwords.json.generated").read_text()
            )
            request = urllib.request.Request(  # noqa: S310 - local http URL
                f"{base}/auth/token",
                method="POST",
                data=json.dumps({"username": "admin", "password": passwords["admin"]}).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                self.__dict__["token"] = json.loads(response.read())["access_token"]
        request = urllib.request.Request(  # noqa: S310 - local http URL
            f"{base}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {self.__dict__['token']}",
            },
        )
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return json.loads(response.read() or b"null")

    def mark_failed(self, run_id: str, task_id: str) -> Any:
        """What an operator does in the UI: mark a task (every map index) failed."""
        return self.api(
            "PATCH",
            f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}",
            {"new_state": "failed"},
        )

    # ---- mail ----------------------------------------------------------------------------------
    def mails(self) -> list[email.message.EmailMessage]:
        out = []
        for path in sorted(self.maildir.glob("*.eml")):
            out.append(email.message_from_bytes(path.read_bytes(), policy=email.policy.default))
        return out

    def wait_mail(self, predicate: Any, timeout: float = 120) -> email.message.EmailMessage:
        deadline = time.monotonic() + timeout
        while True:
            for message in self.mails():
                if predicate(message):
                    return message
            if time.monotonic() > deadline:
                subjects = [m["subject"] for m in self.mails()]
                raise TimeoutError(f"no matching mail after {timeout}s; have {subjects}")
            time.sleep(1)


def _descendants(pid: int) -> Iterator[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            yield child
            stack.append(child)


# ---- the SMTP sink (a subprocess of the harness) -------------------------------------------------
def serve_smtp(port: int, maildir: Path) -> None:
    """Accept every message on 127.0.0.1:``port``; write each to ``maildir/NNNN.eml``."""
    from aiosmtpd.controller import Controller  # noqa: PLC0415

    maildir.mkdir(parents=True, exist_ok=True)

    class Sink:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            count = len(list(maildir.glob("*.eml")))
            tmp = maildir / f".{count:04d}.tmp"
            tmp.write_bytes(envelope.original_content or envelope.content)
            tmp.rename(maildir / f"{count:04d}-{uuid.uuid4().hex[:6]}.eml")
            return "250 OK"

    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    print(f"smtp sink on 127.0.0.1:{port} -> {maildir}", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    while not stop:
        time.sleep(0.5)
    controller.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start everything; Ctrl-C (or SIGTERM) stops it all")
    up.add_argument("--home", type=Path, default=PROJECT_ROOT / ".harness")
    up.add_argument("--sample-day", help="YYYY-MM-DD: drop a generated day into incoming/")
    down = sub.add_parser("down", help="stop a harness started with `up` in another shell")
    down.add_argument("--home", type=Path, default=PROJECT_ROOT / ".harness")
    render = sub.add_parser(
        "render",
        help="render deploy/airflow.env.template with a values"
        " file (KEY=VALUE lines) into an EnvironmentFile",
    )
    render.add_argument("--values", type=Path, required=True)
    render.add_argument("--out", type=Path, required=True)
    smtp = sub.add_parser("smtp", help="(internal) the SMTP sink")
    smtp.add_argument("--port", type=int, required=True)
    smtp.add_argument("--maildir", type=Path, required=True)
    args = parser.parse_args(argv)

    if args.command == "smtp":
        serve_smtp(args.port, args.maildir)
        return 0
    if args.command == "render":
        values = parse_env(args.values.read_text(encoding="utf-8"))
        rendered = render_template(TEMPLATE.read_text(encoding="utf-8"), values)
        args.out.write_text(
            "".join(f"{k}={shlex.quote(v)}\n" for k, v in rendered.items()), encoding="utf-8"
        )
        args.out.chmod(0o640)
        print(f"wrote {args.out} ({len(rendered)} settings)")
        return 0
    home = args.home.resolve()
    pidfile = home / "harness.pid"
    if args.command == "down":
        if not pidfile.exists():
            print(f"no harness running under {home}")
            return 1
        os.kill(int(pidfile.read_text()), signal.SIGTERM)
        print("stopping…")
        return 0
    return _serve(home, pidfile, args.sample_day)


def _serve(home: Path, pidfile: Path, sample_day: str | None) -> int:
    """``up``: start everything, print where things are, stop it all on Ctrl-C or SIGTERM."""
    home.mkdir(parents=True, exist_ok=True)
    harness = Harness(home)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        started = time.monotonic()
        harness.up(unpause=False)
        pidfile.write_text(str(os.getpid()))
        if sample_day:
            from datetime import date  # noqa: PLC0415

            from earmark.sampledata import generate_day  # noqa: PLC0415

            generate_day(
                harness.data_root / "incoming",
                date.fromisoformat(sample_day),
                archives=2,
                files_per_archive=3,
                minutes=1.0,
                seed=0,
            )
        harness.unpause()  # after the sample day is in place: the scheduled run starts now
        print(
            f"up in {time.monotonic() - started:.0f}s\n"
            f"  UI:        http://127.0.0.1:{harness.ports['api']}\n"
            f"  password:  {harness.airflow_home}/simple_auth_manager_passwords.json.generated\n"
            f"  shell:     set -a; . {home}/airflow.env; set +a\n"
            f"  mail:      {harness.maildir}\n  logs:      {harness.logs}\n"
            f'  trigger:   airflow dags trigger {DAG_ID} --conf \'{{"date": "YYYY-MM-DD"}}\'\n'
            "Ctrl-C or `python -m earmark.harness down` stops everything.",
            flush=True,
        )
        while not stop:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        harness.down()
        pidfile.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
