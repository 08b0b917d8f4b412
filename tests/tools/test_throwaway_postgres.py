"""The tests' own Postgres: a throwaway cluster starts, serves, and leaves nothing behind,
whether the run it serves passes, fails or is interrupted with Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from earmark_dev.postgres import ThrowawayPostgres, answers

pytestmark = pytest.mark.postgres

# The run under test: it records where its cluster lives, then passes, fails or waits to be
# interrupted, as EARMARK_INNER says.
INNER = """
import json, os, time
from pathlib import Path

import sqlalchemy as sa


def test_inner():
    url = os.environ["EARMARK_TEST_PG_URL"]
    with sa.create_engine(url).connect() as conn:
        pid = conn.execute(sa.text("SELECT pg_postmaster_start_time() IS NOT NULL")).scalar()
        data = conn.execute(sa.text("SHOW data_directory")).scalar()
        server = conn.execute(sa.text("SELECT pid FROM pg_stat_activity WHERE backend_type"
                                      " = 'checkpointer'")).scalar()
    Path(os.environ["EARMARK_INNER_OUT"]).write_text(json.dumps([url, data, server, pid]))
    if os.environ["EARMARK_INNER"] == "fail":
        raise AssertionError("this run fails on purpose")
    if os.environ["EARMARK_INNER"] == "wait":
        time.sleep(120)
"""


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A folder the cluster may live in: as root the server runs as ``postgres``, which cannot
    enter pytest's own (root-only) temporary folders."""
    folder = Path(tempfile.mkdtemp(prefix="earmark-pg-test-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_cluster_starts_serves_and_goes(scratch):
    with ThrowawayPostgres(parent=scratch) as cluster:
        assert answers(cluster.url)
        engine = sa.create_engine(cluster.url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text("CREATE DATABASE earmark_lifecycle"))
        engine.dispose()
        pid, folder = cluster.server_pid(), cluster.folder
        assert pid is not None and folder is not None and folder.is_dir()
    assert _gone(pid) and not folder.exists()
    assert not answers(cluster.url, timeout_s=1)
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize("ending", ["pass", "fail", "wait"])
def test_a_run_on_its_own_cluster_leaves_nothing_behind(tmp_path, scratch, ending):
    """A pytest run with EARMARK_TEST_PG=throwaway (as on a machine with no server running):
    its test reaches the run's own cluster; afterwards neither its process nor its folder is
    left, after a pass, a failure or a Ctrl-C alike."""
    (tmp_path / "test_inner.py").write_text(INNER)
    out = tmp_path / "inner.json"
    env = {
        **os.environ,
        "EARMARK_TEST_PG": "throwaway",
        "EARMARK_INNER": ending,
        "EARMARK_INNER_OUT": str(out),
        "TMPDIR": str(scratch),
    }
    env.pop("EARMARK_TEST_PG_URL", None)
    inner = subprocess.Popen(
        [
            *(sys.executable, "-m", "pytest", "-q", "-p", "earmark_dev.pytest_postgres"),
            *("-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)),
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if ending == "wait":
        deadline = time.monotonic() + 60
        while not out.exists():
            assert inner.poll() is None and time.monotonic() < deadline, inner.stdout.read()
            time.sleep(0.1)
        inner.send_signal(signal.SIGINT)
    output, _ = inner.communicate(timeout=120)
    assert inner.returncode == {"pass": 0, "fail": 1, "wait": 2}[ending], output
    url, data, server, _ = json.loads(out.read_text())
    assert ":5432/" not in url and Path(data).is_relative_to(scratch)
    assert _gone(server), "the cluster's processes are still running"
    assert list(scratch.iterdir()) == [], "the cluster's folder is still there"
    assert not answers(url, timeout_s=1)
