"""Integration-test markers (pyproject's list is shared; these are registered here), and the
distributed topology's fixtures: one harness per test file (module scope), so the topology's test
files run side by side on separate workers."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from datetime import time as dt_time
from zoneinfo import ZoneInfo

import pytest
from earmark_dev.harness import GPU_ROLES, Harness


def pytest_configure(config):
    config.addinivalue_line("markers", "seed(rows): the review UI test's items (test_review_ui.py)")
    config.addinivalue_line(
        "markers", "ui_env(**env): extra environment for the review UI's api-server"
    )
    config.addinivalue_line(
        "markers",
        "distributed: starts the whole distributed topology (api-server, scheduler, dag-processor,"
        " triggerer, two Celery workers, Redis, SMTP sink) via earmark_dev.harness; minutes",
    )


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    h = Harness(tmp_path_factory.mktemp("harness"))
    started = time.monotonic()
    try:
        h.up(unpause=False)
        print(f"\nharness up in {time.monotonic() - started:.0f}s ({h.home})")
        yield h
    finally:
        h.down()


@pytest.fixture(scope="module")
def scheduled(harness):
    """Unpause with nothing delivered: the scheduler creates the latest scheduled run
    (EARMARK_START_TIME, London). That run waiting in its sensor and then screening a delivery
    is what test_readme_harness.py runs; here it is set aside (failed) at once, so the manual
    runs below do not queue behind it."""
    h = harness
    tz = ZoneInfo("Europe/London")
    now = datetime.now(tz)
    start = dt_time.fromisoformat(h.env["EARMARK_START_TIME"])
    tick = now.replace(hour=start.hour, minute=start.minute, second=0, microsecond=0)
    if tick > now:
        tick -= timedelta(days=1)
    h.reset_results()
    h.unpause()
    deadline = time.monotonic() + 120
    while not (
        runs := h.meta_rows("SELECT run_id, logical_date FROM dag_run WHERE run_type = 'scheduled'")
    ):
        assert time.monotonic() < deadline, "no scheduled run created after unpausing"
        time.sleep(1)
    run_id, logical_date = runs[0]
    assert h.fail_active_runs() == [run_id]
    return run_id, logical_date.astimezone(tz).date(), tick.date()


@pytest.fixture
def fresh(harness, scheduled):
    """Empty results DB and data root; every process running and resumed."""
    for role in ("redis", *GPU_ROLES):
        proc = harness.procs.get(role)
        if proc is None or not proc.alive():
            harness.start(role)
        else:
            harness.resume(role)
    for role in GPU_ROLES:
        harness.wait_worker(role)
    harness.fail_active_runs()  # left over by a failed test
    harness.reset_results()
    return harness
