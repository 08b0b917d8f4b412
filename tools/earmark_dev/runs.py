"""Driving runs of a started topology: trigger, wait, inspect, and the REST API as an operator."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from earmark_dev.processes import Proc, descendants

DAG_ID = "earmark_daily"


class RunControl:
    """What a test or an operator does with ``earmark_daily`` runs (mixed into ``Harness``)."""

    procs: dict[str, Proc]
    ports: dict[str, int]
    airflow_home: Path

    def airflow(self, *args: str, check: bool = True, timeout: float = 180) -> Any:
        raise NotImplementedError

    def meta_rows(self, sql: str, **params: Any) -> list[Any]:
        raise NotImplementedError

    def meta_scalar(self, sql: str, **params: Any) -> Any:
        rows = self.meta_rows(sql, **params)
        return rows[0][0] if rows else None

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

    def task_process(self, ti_id: str, timeout: float = 60) -> tuple[str, int]:
        """The worker role running a task and the pid of its task process (title
        ``airflow worker -- <ti id>``)."""
        deadline = time.monotonic() + timeout
        while True:
            for role, proc in list(self.procs.items()):
                if not role.startswith("worker-"):
                    continue
                for pid in descendants(proc.pid):
                    with contextlib.suppress(OSError):
                        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                        if f"airflow worker -- {ti_id}".encode() in cmd:
                            return role, pid
            if time.monotonic() > deadline:
                raise TimeoutError(f"no task process for {ti_id} under any worker")
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
        # A state change can lose a deadlock against the scheduler's own update of the same run
        # (500 after Postgres's 1 s deadlock_timeout); the calls made here are idempotent.
        for attempt in range(3):
            try:
                with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                    return json.loads(response.read() or b"null")
            except urllib.error.HTTPError as error:
                if error.code < 500 or attempt == 2:
                    raise
                time.sleep(1)
        raise AssertionError("unreachable")

    def mark_failed(self, run_id: str, task_id: str) -> Any:
        """What an operator does in the UI: mark a task (every map index) failed."""
        return self.api(
            "PATCH",
            f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}",
            {"new_state": "failed"},
        )
