"""A self-contained Airflow + Earmark environment in one folder: the demo's and the tests'.

Everything lives under ``home``: Airflow's metadata DB (SQLite), the data root, tiny models and,
by default, the SQLite results DB. The environment variables it produces are the whole
configuration; ``env.sh`` holds them for a shell (``make ui`` sources it).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from earmark.config import PROJECT_ROOT
from earmark_dev.tiny_models import TINY_POLICIES

#: The simple auth manager's users, ``name:role,...`` (roles viewer, user, op, admin).
AUTH_USERS = "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"


def simple_auth_users(environ: Mapping[str, str]) -> dict[str, str]:
    """A caller's simple-auth-manager users, kept, with ``admin:admin`` added when no ``admin``
    is among them (the tools and the harness's REST calls log in as admin); nothing when the
    caller set none (Airflow's default is ``admin`` alone). Passwords are generated for every
    user into ``$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated``."""
    users = [u.strip() for u in environ.get(AUTH_USERS, "").split(",") if u.strip()]
    if not users:
        return {}
    if "admin" not in {u.split(":", 1)[0] for u in users}:
        users.append("admin:admin")
    return {AUTH_USERS: ",".join(users)}


class HomeLayout:
    """Where things live under one local ``home``: shared by the demo's env and the harness."""

    home: Path

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def data_root(self) -> Path:
        return self.home / "data"

    @property
    def models(self) -> Path:
        return self.home / "models"


@dataclass(frozen=True)
class LocalEnv(HomeLayout):
    """Paths and settings of one local environment."""

    home: Path
    results_db_url: str | None = None  # None: SQLite file under home
    timezone: str = "Europe/London"
    extra: dict[str, str] = field(default_factory=dict)  # more variables, e.g. Airflow's limits

    @property
    def results_db(self) -> Path:
        return self.home / "results.db"

    def db_connection(self) -> dict[str, object]:
        if self.results_db_url is None:
            return {"conn_type": "sqlite", "host": str(self.results_db)}
        from sqlalchemy.engine import make_url

        url = make_url(self.results_db_url)
        return {
            "conn_type": "postgres",
            "host": url.host,
            "port": url.port,
            "login": url.username,
            "password": url.password or "",
            "schema": url.database,
        }

    def store_url(self) -> str:
        return self.results_db_url or f"sqlite:///{self.results_db}"

    def variables(self, *, deadline_alerts: bool = True) -> dict[str, str]:
        """Environment for Airflow and Earmark in this folder."""
        bin_dir = Path(sys.executable).parent
        return {
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.airflow_home}/airflow.db",
            "AIRFLOW__CORE__DEFAULT_TIMEZONE": "utc",
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
            "AIRFLOW_CONN_EARMARK_DB": json.dumps(self.db_connection()),
            "AIRFLOW_CONN_EARMARK_FS": json.dumps(
                {"conn_type": "fs", "extra": {"path": str(self.data_root)}}
            ),
            "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(
                {
                    "conn_type": "smtp",
                    "host": "127.0.0.1",
                    "port": 8025,
                    "extra": {
                        "disable_ssl": True,
                        "disable_tls": True,
                        "from_email": "earmark@localhost",
                    },
                }
            ),
            "EARMARK_DATA_ROOT": str(self.data_root),
            "EARMARK_TIMEZONE": self.timezone,
            "EARMARK_ASR_MODEL_DIR": str(self.models / "asr"),
            "EARMARK_BASE_MODEL_DIR": str(self.models / "base"),
            "EARMARK_ADAPTER_DIR": str(self.models / "adapter"),
            "EARMARK_PREPARED_MODEL_DIR": str(self.models / "prepared"),
            "EARMARK_POLICIES_DIR": str(TINY_POLICIES),
            "EARMARK_DEADLINE_ALERTS": "true" if deadline_alerts else "false",
            "EARMARK_DEVICE": "cpu",
            "EARMARK_ASR_MAX_NEW_TOKENS": "24",
            # The tiny models have random weights: their scores mean nothing and sit at
            # 0.422-0.428 with the short policies. This threshold puts scores on both sides so
            # the review queue has items to show and the rest are passed.
            "EARMARK_FLAG_THRESHOLD": "0.4235",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            **simple_auth_users(os.environ),
            **self.extra,
        }

    def environ(self, **overrides: str) -> dict[str, str]:
        env = {**os.environ, **self.variables()}
        env.update(overrides)
        return env

    def airflow(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        check: bool = True,
        capture: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run the ``airflow`` CLI of this interpreter's environment in this folder."""
        airflow_bin = Path(sys.executable).parent / "airflow"
        return subprocess.run(
            [str(airflow_bin), *args],
            env=env or self.environ(),
            check=check,
            text=True,
            capture_output=capture,
        )

    def prepare(self) -> None:
        """Create folders, Airflow's metadata DB, the gpu pool and the tiny models.

        With ``EARMARK_DEV_CACHE`` set, a new metadata DB is a copy of one migrated (with the
        pool) once per Airflow version: ``airflow db migrate`` from nothing takes seconds.
        """
        from earmark_dev.tiny_models import build_tiny_models, dev_cache

        for folder in (self.airflow_home, self.data_root / "incoming", self.models):
            folder.mkdir(parents=True, exist_ok=True)
        metadata = self.airflow_home / "airflow.db"
        cache = dev_cache()
        template = cache / f"airflow-{_airflow_version()}-metadata.db" if cache else None
        if template is not None and template.is_file() and not metadata.exists():
            shutil.copyfile(template, metadata)
        else:
            self.airflow("db", "migrate", capture=True)
            self.airflow("pools", "set", "gpu", "1", "GPU slots (one per GPU)", capture=True)
            if template is not None and not template.exists():
                template.parent.mkdir(parents=True, exist_ok=True)
                partial = template.with_suffix(f".{os.getpid()}.partial")
                shutil.copyfile(metadata, partial)
                partial.replace(template)
        paths = build_tiny_models(self.models)
        assert paths.asr == self.models / "asr", paths
        self.write_env_file()

    def write_env_file(self) -> Path:
        lines = [f"export {k}={shlex.quote(v)}" for k, v in self.variables().items()]
        target = self.home / "env.sh"
        target.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return target


def _airflow_version() -> str:
    from importlib.metadata import version

    return version("apache-airflow")
