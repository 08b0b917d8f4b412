"""The README's harness steps, run as written: its two shell blocks, line by line, in the
project root (so under the default ``.harness/``), waiting between lines as a person would."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

import pytest
import sqlalchemy as sa
from earmark.config import PROJECT_ROOT
from earmark.ops.deploy_config import parse_env
from earmark_dev.postgres import database_url

pytestmark = pytest.mark.distributed

T = TypeVar("T")
HOME = PROJECT_ROOT / ".harness"
TIMEOUT = 300


def _shell_blocks() -> tuple[list[str], list[str]]:
    """The README's ``# shell 1`` and ``# shell 2`` blocks: their command lines, in order."""
    text = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    blocks = {}
    for body in re.findall(r"```bash\n(.*?)```", text, re.S):
        lines = body.splitlines()
        match = re.match(r"# (shell \d)", lines[0])
        if match:
            blocks[match[1]] = [ln for ln in lines if ln.strip() and not ln.startswith("#")]
    return blocks["shell 1"], blocks["shell 2"]


class _Output:
    """Everything a process prints, collected by a thread so it never blocks on a full pipe."""

    def __init__(self, stream: IO[str]) -> None:
        self.text = ""
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.text += line

    def wait_for(self, needle: str, proc: subprocess.Popen[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            if proc.poll() is not None:
                raise AssertionError(f"exited {proc.returncode} before {needle!r}:\n{self.text}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {needle!r} after {timeout}s:\n{self.text}")
            time.sleep(0.5)


def _shell(setup: list[str], line: str) -> str:
    """``line`` in a shell where ``setup`` ran (the same shell, as far as ``line`` can tell)."""
    done = subprocess.run(
        ["bash", "-ec", "\n".join([*setup, line])],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, f"{line!r} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _runs(meta: sa.Engine) -> dict[str, tuple[str, str]]:
    with meta.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT run_id, run_type, state FROM dag_run WHERE dag_id = 'earmark_daily'"
                " ORDER BY id"
            )
        )
        return {r.run_id: (r.run_type, r.state) for r in rows}


def _wait(what: str, check: Callable[[], T | None], timeout: float = TIMEOUT) -> T:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what}: not after {timeout}s"
        time.sleep(1)
    return found


def _finished(meta: sa.Engine, run_type: str) -> str | None:
    runs = _runs(meta)
    mine = [run for run, (kind, _) in runs.items() if kind == run_type]
    if not mine or runs[mine[-1]][1] not in ("success", "failed"):
        return None
    assert runs[mine[-1]][1] == "success", runs
    return mine[-1]


def _sensor_state(meta: sa.Engine, run_id: str) -> str | None:
    with meta.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT state FROM task_instance"
                " WHERE run_id = :r AND task_id = 'wait_for_archives'"
            ),
            {"r": run_id},
        ).scalar()


@pytest.fixture
def shell_one():
    pidfile = HOME / "harness.pid"
    if pidfile.exists():
        if Path(f"/proc/{pidfile.read_text().strip()}").exists():
            pytest.fail(f"a harness is running under {HOME}: stop it first (harness down)")
        pidfile.unlink()  # left by a harness that was killed
    first, _ = _shell_blocks()
    proc = subprocess.Popen(
        ["bash", "-ec", "\n".join(first)],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output = _Output(proc.stdout)
    try:
        yield proc, output
    finally:
        if proc.poll() is None:  # the test failed before `down`: what Ctrl-C would do
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def test_the_readme_harness_steps_work_as_written(shell_one):
    """Today's scheduled run waits in its sensor (deferred to the triggerer) until the sample
    day arrives, then screens it; the rerun with reprocess screens it again; down stops all."""
    proc, output = shell_one
    _, second = _shell_blocks()
    setup = [ln for ln in second if ln.startswith((". ", "set -a"))]
    commands = [ln for ln in second if ln not in setup]
    assert [c.split()[:4] for c in commands] == [
        ["airflow", "dags", "list-runs", "earmark_daily"],
        ["python", "-m", "earmark_dev.harness", "deliver"],
        ["airflow", "dags", "trigger", "earmark_daily"],
        ["airflow", "dags", "list-runs", "earmark_daily"],
        ["python", "-m", "earmark_dev.harness", "down"],
    ]
    list_runs, deliver, trigger, list_again, down = commands

    output.wait_for("up in", proc, timeout=300)
    env = parse_env(Path(HOME / "airflow.env").read_text(encoding="utf-8"))
    meta = sa.create_engine(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    name = json.loads((HOME / "harness.json").read_text(encoding="utf-8"))["name"]
    results = sa.create_engine(database_url(f"{name}_results"))
    try:
        scheduled = _wait(
            "a scheduled run",
            lambda: next((r for r, (kind, _) in _runs(meta).items() if kind == "scheduled"), None),
        )
        assert scheduled in _shell(setup, list_runs)
        _wait("the sensor deferred", lambda: _sensor_state(meta, scheduled) == "deferred")

        assert _shell(setup, deliver).count("delivered") == 2
        assert _wait("the scheduled run", lambda: _finished(meta, "scheduled")) == scheduled
        with results.connect() as conn:
            first = conn.execute(sa.text("SELECT max(created_at) FROM transcripts")).scalar()
            archives = conn.execute(
                sa.text("SELECT status, count(*) FROM archives GROUP BY status")
            ).all()
            files = conn.execute(
                sa.text("SELECT status, count(*) FROM audio_files GROUP BY status")
            ).all()
        assert archives == [("unpacked", 2)]
        assert files == [("classified", 6)]

        _shell(setup, trigger)
        manual = _wait("the manual run", lambda: _finished(meta, "manual"))
        shown = _shell(setup, list_again)
        assert scheduled in shown and manual in shown
        with results.connect() as conn:  # "reprocess": the day was screened again
            again = conn.execute(sa.text("SELECT min(created_at) FROM transcripts")).scalar()
        assert again > first

        _shell(setup, down)
        assert proc.wait(timeout=90) == 0, output.text
        assert not (HOME / "harness.pid").exists()
    finally:
        meta.dispose()
        results.dispose()
