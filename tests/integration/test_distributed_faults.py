"""Faults on the real distributed topology (a harness of its own, fixtures in conftest.py): a
GPU task's process killed mid-batch, a GPU worker killed and restarted, Redis crashed with tasks
queued, results-DB connections cut mid-write. Each run must end in the state of a clean run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import sqlalchemy as sa
from distributed_kit import (
    DAY,
    GPU_TASKS,
    RUN_TIMEOUT,
    assert_placement,
    contract_state,
    deliver,
    reference_state,
)
from earmark_dev.harness import GPU_ROLES, admin_engine

pytestmark = pytest.mark.distributed


def test_gpu_task_process_killed_mid_batch(fresh):
    h = fresh
    deliver(h)
    h.trigger("kill_task", conf={"date": DAY})
    ti = h.wait_ti("kill_task", "gpu_unit.transcribe", ("running",))
    _, pid = h.task_process(str(ti.id))
    os.kill(pid, signal.SIGKILL)
    assert h.wait_run("kill_task", RUN_TIMEOUT) == "success"
    tries = {(t.task_id, t.map_index): t.try_number for t in h.task_instances("kill_task")}
    assert tries[(ti.task_id, ti.map_index)] == 2, tries
    assert_placement(h, "kill_task")
    state = contract_state(h)
    assert state == reference_state(h)  # asked for after the run: see reference_state


def test_gpu_worker_killed_and_restarted(fresh):
    h = fresh
    deliver(h)
    h.trigger("kill_worker", conf={"date": DAY})
    ti = h.wait_ti("kill_worker", "gpu_unit.transcribe", ("running",))
    role, _ = h.task_process(str(ti.id))  # the worker that really started it
    assert role in GPU_ROLES
    h.kill(role)
    h.start(role)
    assert h.wait_run("kill_worker", RUN_TIMEOUT) == "success"
    tries = {(t.task_id, t.map_index): t.try_number for t in h.task_instances("kill_worker")}
    assert tries[(ti.task_id, ti.map_index)] >= 2, tries
    assert_placement(h, "kill_worker")
    state = contract_state(h)
    assert state == reference_state(h)  # asked for after the run: see reference_state


def test_redis_restarted_with_tasks_queued(fresh):
    h = fresh
    deliver(h)
    for role in GPU_ROLES:
        h.stop(role)
    h.trigger("redis", conf={"date": DAY})
    h.wait_ti("redis", "gpu_unit.transcribe", ("queued",))
    cli = ["redis-cli", "-p", str(h.ports["redis"])]
    deadline = time.monotonic() + 30
    while (
        subprocess.run(
            [*cli, "LLEN", "gpu"], capture_output=True, text=True, check=True
        ).stdout.strip()
        != "2"
    ):
        assert time.monotonic() < deadline, "the two units never reached the broker"
        time.sleep(0.5)
    time.sleep(1.5)  # appendfsync everysec
    h.kill("redis")  # a crash, not a clean shutdown
    h.start("redis")
    deadline = time.monotonic() + 30
    while True:
        out = subprocess.run([*cli, "LLEN", "gpu"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout.strip().isdigit():
            break
        assert time.monotonic() < deadline, out
        time.sleep(0.5)
    assert out.stdout.strip() == "2", "the queued gpu tasks did not survive the restart (AOF)"
    for role in GPU_ROLES:
        h.start(role)
    assert h.wait_run("redis", RUN_TIMEOUT) == "success"
    assert_placement(h, "redis")
    state = contract_state(h)
    assert state == reference_state(h)  # asked for after the run: see reference_state


def test_results_db_connections_terminated_mid_write(fresh):
    """Every results-DB connection is cut every 0.2 s while the GPU units run."""
    h = fresh
    deliver(h)
    h.trigger("pg_kill", conf={"date": DAY})
    h.wait_ti("pg_kill", "gpu_unit.transcribe", ("running",))
    engine = admin_engine()
    terminated = 0
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        gpu = [ti for ti in h.task_instances("pg_kill") if ti.task_id in GPU_TASKS]
        if len(gpu) == 4 and {ti.state for ti in gpu} <= {"success", "failed"}:
            break
        with engine.connect() as conn:
            terminated += conn.execute(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = :db AND pid <> pg_backend_pid()"
                ),
                {"db": h.results_db},
            ).scalar()
        time.sleep(0.2)
    engine.dispose()
    assert terminated > 0
    assert h.wait_run("pg_kill", RUN_TIMEOUT) == "success"
    assert_placement(h, "pg_kill")
    state = contract_state(h)
    assert state == reference_state(h)  # asked for after the run: see reference_state
