"""The distributed topology on one machine (see ``earmark_dev.harness``): configure it from the
production template, start and stop its processes, reach its databases."""

from __future__ import annotations

import atexit
import contextlib
import email
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from earmark.config import PROJECT_ROOT
from earmark.ops.deploy_config import TEMPLATE, env_file_text, render_template
from earmark_dev.localenv import AUTH_USERS, HomeLayout, simple_auth_users
from earmark_dev.mailsink import read_mails, wait_for_mail
from earmark_dev.postgres import admin_engine, database_url
from earmark_dev.processes import Proc, free_port, stop_all
from earmark_dev.runs import DAG_ID, RunControl
from earmark_dev.tiny_models import TINY_POLICIES

BIN = Path(sys.executable).parent
DEFAULT_HOSTNAME = "earmark-coord-1"
GPU_HOST = "earmark-gpu-1"
# One Celery worker per GPU of one GPU host, as deploy/systemd/earmark-worker-gpu@.service runs
# them: pinned by CUDA_VISIBLE_DEVICES (ignored by the CPU build), concurrency 1, named host+GPU.
GPU_DEVICES = (0, 1)
DEFAULT_WORKER_CONCURRENCY = 2  # the default,unpack,transfer worker: one slot per core here
GPU_CONCURRENCY = 1
GPU_ROLES = tuple(f"worker-gpu{n}" for n in GPU_DEVICES)
GPU_HOSTNAMES = {f"worker-gpu{n}": f"{GPU_HOST}-gpu{n}" for n in GPU_DEVICES}
WORKER_ROLES = ("worker-default", *GPU_ROLES)
ROLES = ("api-server", "scheduler", "dag-processor", "triggerer", *WORKER_ROLES)
SIMPLE_AUTH_MANAGER = (
    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
)

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
    # The DAG files do not change while the harness runs: parse each once at start, not every
    # 30 s (a parse is a process that imports Airflow and Earmark, ~2 s of CPU; three files
    # every 30 s kept a fifth of a core busy per harness, and the tests run three at once).
    "AIRFLOW_MIN_FILE_PROCESS_INTERVAL": "600",
    "AIRFLOW_EXECUTION_JWT_EXPIRATION": "600",
}


@dataclass
class Harness(HomeLayout, RunControl):
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
        return database_url(self.meta_db)

    @property
    def results_url(self) -> str:
        return database_url(self.results_db)

    def template_values(self) -> dict[str, str]:
        from sqlalchemy.engine import make_url

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
            "AIRFLOW_AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            # The caller's users (AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS) with admin, or admin.
            "AIRFLOW_USERS": simple_auth_users(os.environ).get(AUTH_USERS, "admin:admin"),
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
            # From midnight to a minute before the next: the latest scheduled run is always
            # today's, the day a run triggered without a date screens too, and its sensor waits
            # (it gives up at the deadline), so the README's steps hold at any hour.
            "EARMARK_START_TIME": "00:00",
            "EARMARK_DEADLINE_TIME": "23:59",
            # Late archives are caught up all day long here, so a test can deliver one at any hour.
            "EARMARK_INTAKE_CUTOFF": "12:00",
            "EARMARK_CATCHUP_EVERY_MINUTES": "10",
            "EARMARK_ALERT_EMAIL": "ops@example.org",
            "EARMARK_ASR_MODEL_DIR": str(self.models / "asr"),
            "EARMARK_BASE_MODEL_DIR": str(self.models / "base"),
            "EARMARK_ADAPTER_DIR": str(self.models / "adapter"),
            "EARMARK_PREPARED_MODEL_DIR": str(self.models / "prepared"),
            "EARMARK_POLICIES_DIR": str(TINY_POLICIES),
            "EARMARK_DEVICE": "cpu",
            "EARMARK_ASR_MAX_NEW_TOKENS": "8",
            "EARMARK_ASR_SEGMENTER": "vad",
            "EARMARK_UNIT_TARGET_MINUTES": "20",
            "EARMARK_ASSUMED_REALTIME_X": "100",
            "EARMARK_FLAG_THRESHOLD": "0.42",
            "EARMARK_GPU_SLOTS": str(len(GPU_DEVICES) * GPU_CONCURRENCY),
            "EARMARK_UNIT_MAX_FILES": "2000",
            "EARMARK_UNPACK_TASKS_MAX": "256",
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
                from cryptography.fernet import Fernet

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
        for key in ("api", "redis", "smtp", "log_default", "log_trigger", *GPU_ROLES):
            self.ports.setdefault(key, free_port())
        rendered = render_template(TEMPLATE.read_text(encoding="utf-8"), self.template_values())
        # The caller's Airflow and Earmark settings give way to the template, the whole
        # configuration; its users are kept (template_values).
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "EARMARK_"))}
        self.env = {
            **base,
            **rendered,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.ports["log_trigger"]),
            "PYTHONUNBUFFERED": "1",
        }
        (self.home / "airflow.env").write_text(env_file_text(rendered), encoding="utf-8")
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
                    str(DEFAULT_WORKER_CONCURRENCY),
                    "--celery-hostname",
                    f"default@{DEFAULT_HOSTNAME}",
                ],
                {
                    "EARMARK_HOSTNAME": DEFAULT_HOSTNAME,
                    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.ports["log_default"]),
                },
            )
        if role in GPU_ROLES:
            device = role.removeprefix("worker-gpu")
            return (
                [
                    str(BIN / "earmark-gpu-worker"),
                    "--queues",
                    "gpu",
                    "--concurrency",
                    str(GPU_CONCURRENCY),
                    "--celery-hostname",
                    f"gpu{device}@{GPU_HOST}",
                ],
                {
                    "CUDA_VISIBLE_DEVICES": device,
                    "EARMARK_HOSTNAME": GPU_HOSTNAMES[role],
                    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.ports[role]),
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
                    "earmark_dev.mailsink",
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
        import sqlalchemy as sa

        engine = admin_engine()
        with engine.connect() as conn:
            for db in (self.meta_db, self.results_db):
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
                conn.execute(sa.text(f'CREATE DATABASE "{db}"'))
                self._created_dbs.append(db)
        engine.dispose()

    def drop_databases(self) -> None:
        import sqlalchemy as sa

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
        """Start everything and wait until the DAG is parsed and both workers are ready.

        The databases are new, so the data root and the mail of an earlier ``up`` in the same
        home go too (files the new results DB knows nothing of); the built models stay.
        """
        from earmark_dev.tiny_models import build_tiny_models

        atexit.register(self.down)
        started = time.monotonic()
        for stale in (self.data_root, self.maildir):
            shutil.rmtree(stale, ignore_errors=True)
        self.configure()
        self.create_databases()
        self.start("redis")
        self.start("smtp")
        self.airflow("db", "migrate")
        slots = len(GPU_DEVICES) * GPU_CONCURRENCY  # pool = sum of the gpu workers' slots
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
        pending = {"api", "dag", *WORKER_ROLES}
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
            for role in WORKER_ROLES:
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
        """Stop every process this harness started (all at once) and drop its databases."""
        stop_all(list(reversed(self.procs.values())), timeout=15)
        self.procs.clear()
        with contextlib.suppress(Exception):
            self.drop_databases()

    # ---- databases ---------------------------------------------------------------------------
    def _engine(self, which: str) -> Any:
        import sqlalchemy as sa

        if which not in self._engines:
            url = self.meta_url if which == "meta" else self.results_url
            self._engines[which] = sa.create_engine(url, pool_pre_ping=True)
        return self._engines[which]

    def meta_rows(self, sql: str, **params: Any) -> list[Any]:
        import sqlalchemy as sa

        try:
            with self._engine("meta").connect() as conn:
                return list(conn.execute(sa.text(sql), params))
        except sa.exc.ProgrammingError:  # tables not migrated yet
            return []

    def meta_execute(self, sql: str, **params: Any) -> int:
        """Change Airflow's metadata DB as a test needs (rows affected)."""
        import sqlalchemy as sa

        with self._engine("meta").begin() as conn:
            return conn.execute(sa.text(sql), params).rowcount

    def results_store(self) -> Any:
        from earmark.store.db import Store

        return Store.from_url(self.results_url)

    def reset_results(self) -> None:
        """Empty results DB and data root, as before a first run (the DAG migrates again)."""
        import sqlalchemy as sa

        with self._engine("results").begin() as conn:
            conn.execute(sa.text("DROP SCHEMA public CASCADE"))
            conn.execute(sa.text("CREATE SCHEMA public"))
        for sub in ("incoming", "claimed", "audio", "processed", "quarantine"):
            shutil.rmtree(self.data_root / sub, ignore_errors=True)
        (self.data_root / "incoming").mkdir(parents=True, exist_ok=True)

    # ---- mail --------------------------------------------------------------------------------
    def mails(self) -> list[email.message.EmailMessage]:
        return read_mails(self.maildir)

    def wait_mail(self, predicate: Any, timeout: float = 120) -> email.message.EmailMessage:
        return wait_for_mail(self.maildir, predicate, timeout)
