"""A day with nothing delivered, run by ``airflow dags test`` with a real SMTP server: the run
fails at the day's deadline (at once for a past day), every failed task records why, the day's
report is stored, and the "nothing arrived" alert names the day, the tasks and their reasons."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from earmark.store.db import Store
from earmark_dev.localenv import LocalEnv

pytestmark = pytest.mark.integration
DAY = "2026-11-29"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def smtp() -> Any:
    """An SMTP server in this process (aiosmtpd); the messages it received, as a list."""
    from aiosmtpd.controller import Controller

    received: list[email.message.EmailMessage] = []

    class Keep:
        async def handle_DATA(self, server, session, envelope) -> str:
            received.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
            return "250 OK"

    controller = Controller(Keep(), hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        yield controller.port, received
    finally:
        controller.stop()


def test_nothing_delivered_fails_the_run_with_its_own_alert(tmp_path: Path, smtp) -> None:
    port, received = smtp
    connection = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": port,
        "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "earmark@localhost"},
    }
    env = LocalEnv(
        tmp_path,
        extra={
            "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(connection),
            "AIRFLOW__API__BASE_URL": "https://airflow.example.org",
        },
    )
    env.prepare()
    run = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "dags", "test", "earmark_daily", DAY],
        env=env.environ(EARMARK_DEADLINE_ALERTS="false"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode != 0, run.stdout[-3000:]

    metadata = sqlite3.connect(env.airflow_home / "airflow.db")
    [(run_id, state)] = metadata.execute("SELECT run_id, state FROM dag_run").fetchall()
    tries = dict(
        metadata.execute(
            "SELECT task_id, state || ' ' || try_number FROM task_instance"
            " WHERE task_id IN ('wait_for_archives', 'register_archives', 'report')"
        ).fetchall()
    )
    metadata.close()
    assert state == "failed"
    assert tries == {  # a verdict that cannot change is not retried
        "wait_for_archives": "failed 1",
        "register_archives": "upstream_failed 0",
        "report": "failed 1",
    }

    store = Store.from_url(env.store_url())
    reasons = dict(
        store.rows("SELECT task_id, reason FROM task_failures WHERE run_id = :r", r=run_id)
    )
    report = store.scalar("SELECT html FROM day_reports WHERE run_date = :d", d=DAY)
    store.dispose()
    nothing = f"nothing arrived in incoming/ for {DAY} by its deadline 2026-11-29 12:00 GMT"
    assert reasons == {
        "wait_for_archives": f"AirflowSensorTimeout: {nothing}",
        "report": f"AirflowFailException: nothing arrived for {DAY} by its deadline"
        " 2026-11-29 12:00 GMT",
    }
    assert "Nothing delivered" in report and report.count("<svg") == 5

    [mail] = received
    assert mail["to"] == "ops@example.org"
    assert mail["subject"] == (
        f"[earmark] nothing arrived: {DAY}, no archive by the deadline 12:00 GMT (run {run_id})"
    )
    body = mail.get_body(("html",)).get_content()
    for expected in (
        f"Nothing arrived for {DAY} by its deadline",
        "wait_for_archives",
        nothing,
        "report",
        f'href="https://airflow.example.org/dags/earmark_daily/runs/{quote(run_id, safe="")}"',
        f'href="https://airflow.example.org/earmark/report/{DAY}"',
    ):
        assert expected in body, expected
