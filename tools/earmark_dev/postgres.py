"""Postgres for the tests and the benchmarks: the server named by ``EARMARK_TEST_PG_URL``, the
usual local one, or a throwaway cluster of their own.

``ThrowawayPostgres`` is a private cluster in a temporary folder (initdb, a free loopback port,
trust authentication, no fsync) that is stopped and removed when it is done with, so a machine
with the PostgreSQL server packages but no running server still runs every test. ``initdb`` and
``postgres`` refuse to run as root: as root they run as the ``postgres`` system user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
#: Where the tests' Postgres is chosen: "auto" (a configured URL, else the local server when it
#: answers, else a throwaway cluster) or "throwaway" (always a cluster of the run's own).
MODE_VARIABLE = "EARMARK_TEST_PG"


def admin_url() -> str:
    """The URL of a database on the tests' server where this user may create databases."""
    return os.environ.get("EARMARK_TEST_PG_URL", DEFAULT_URL)


def database_url(database: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(admin_url()).set(database=database).render_as_string(hide_password=False)


def admin_engine() -> Any:
    import sqlalchemy as sa

    return sa.create_engine(
        admin_url(), isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )


@contextlib.contextmanager
def throwaway_database(server_url: str, prefix: str = "earmark_bench") -> Iterator[str]:
    """A new, empty database on ``server_url``'s server, dropped afterwards (on errors and
    Ctrl-C too); its URL."""
    import sqlalchemy as sa

    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def answers(url: str, timeout_s: float = 3) -> bool:
    """Whether a Postgres server at ``url`` accepts this user's connection now."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, connect_args={"connect_timeout": max(1, int(timeout_s))})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()
    return True


def server_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl`` (Debian keeps them out of PATH)."""
    versions = Path("/usr/lib/postgresql").glob("*/bin/initdb")
    found = sorted(versions, key=lambda p: int(p.parts[4]) if p.parts[4].isdigit() else 0)
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ThrowawayPostgres:
    """A private PostgreSQL cluster: ``start()`` it, use ``url``, ``stop()`` it (folder and
    all). Also a context manager."""

    def __init__(self, parent: Path | None = None, max_connections: int = 300) -> None:
        self.parent = parent
        self.max_connections = max_connections
        self.folder: Path | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def data(self) -> Path:
        assert self.folder is not None, "not started"
        return self.folder / "data"

    def _run(self, *command: str | Path) -> subprocess.CompletedProcess[str]:
        """A server command, as the ``postgres`` system user when this is root."""
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run(
            [*prefix, *map(str, command)],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )

    def start(self) -> ThrowawayPostgres:
        binaries = server_binaries()
        if binaries is None:
            raise RuntimeError(
                "no PostgreSQL server here (initdb not found): install it with `make system`"
                " (Debian's postgresql package), or set EARMARK_TEST_PG_URL to a server"
            )
        self.folder = Path(tempfile.mkdtemp(prefix="earmark-pg-", dir=self.parent))
        try:
            if os.geteuid() == 0:
                user = pwd.getpwnam("postgres")  # KeyError: no postgres user to run as
                os.chown(self.folder, user.pw_uid, user.pw_gid)
            self.port = _free_port()
            initdb = self._run(
                binaries / "initdb",
                "-D",
                self.data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            )
            if initdb.returncode != 0:
                raise RuntimeError(f"initdb failed: {initdb.stderr.strip()[-2000:]}")
            options = (
                f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
                f" -c max_connections={self.max_connections} -c fsync=off"
                " -c synchronous_commit=off -c full_page_writes=off"
            )
            started = self._run(
                binaries / "pg_ctl",
                "-D",
                self.data,
                "-o",
                options,
                "-l",
                self.folder / "server.log",
                "-w",
                "-t",
                "60",
                "start",
            )
            if started.returncode != 0:
                log = (self.folder / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the throwaway Postgres did not start: {log}")
        except BaseException:
            self.stop()
            raise
        return self

    def server_pid(self) -> int | None:
        """The postmaster's pid while the cluster runs."""
        with contextlib.suppress(OSError, ValueError, AssertionError):
            return int((self.data / "postmaster.pid").read_text().split()[0])
        return None

    def stop(self) -> None:
        """Stop the server at once (nothing in it is kept) and remove its folder."""
        if self.folder is None:
            return
        pid = self.server_pid()
        if pid is not None:
            binaries = server_binaries()
            if binaries is not None:
                self._run(binaries / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
            deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None

    def __enter__(self) -> ThrowawayPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
