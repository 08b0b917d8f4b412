"""The checks of `earmark health` against real services (the local Postgres and Redis, a real
data volume); the whole command against the distributed topology is in test_distributed.py."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest
import redis
import sqlalchemy as sa
from delivery_kit import deliver, tar_bytes, wav
from earmark import health
from earmark.config import Settings
from earmark.ingest.intake import register_archives, unpack_archive
from earmark_dev.postgres import PG_ADMIN_URL

DAY = "2026-11-29"
MORNING = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
AFTERNOON = datetime(2026, 11, 29, 13, 0, tzinfo=UTC)  # the deadline is 12:00 London (= UTC)


@pytest.fixture
def settings(tmp_path) -> Settings:
    s = replace(Settings.from_env(), data_root=tmp_path / "data", timezone="Europe/London")
    s.ensure_layout()
    return s


def test_the_worst_check_decides_and_the_line_names_the_others():
    checks = [
        health.Check("disk", health.WARNING, "3.0 GiB free (< 100)"),
        health.Check("broker", health.OK, "default 0"),
        health.Check("workers", health.CRITICAL, "no live worker for gpu"),
    ]
    assert health.verdict(checks) == (
        health.CRITICAL,
        "EARMARK CRITICAL - disk: 3.0 GiB free (< 100); workers: no live worker for gpu",
    )
    assert health.verdict(checks[1:2]) == (health.OK, "EARMARK OK - all checks ok")
    assert health.as_json(checks)["state"] == "CRITICAL"


def test_disk_thresholds(tmp_path):
    assert health.check_disk(tmp_path, warn_gib=0.001, critical_gib=0).state == health.OK
    assert health.check_disk(tmp_path, warn_gib=10**9, critical_gib=0).state == health.WARNING
    assert health.check_disk(tmp_path, warn_gib=10**9, critical_gib=10**9).state == health.CRITICAL
    assert health.check_disk(tmp_path / "gone", 1, 0).state == health.CRITICAL


def test_the_day_against_its_deadline(settings, store):
    assert health.check_day(settings, store, DAY, MORNING).state == health.OK
    nothing = health.check_day(settings, store, DAY, AFTERNOON)
    assert (nothing.state, nothing.summary) == (
        health.CRITICAL,
        f"{DAY}: nothing delivered by the deadline",
    )
    deliver(settings.incoming, "day.tar", tar_bytes({"a.wav": wav(1.0), "b.wav": wav(0.5, 300)}))
    for archive_id in register_archives(settings, store, DAY):
        unpack_archive(settings, store, archive_id)
    assert health.check_day(settings, store, DAY, MORNING).summary == f"{DAY}: 2 files pending"
    missed = health.check_day(settings, store, DAY, AFTERNOON)
    assert (missed.state, missed.summary) == (
        health.CRITICAL,
        f"{DAY}: deadline missed, 2 files pending",
    )


def test_review_backlog_by_count_and_age(settings, store):
    deliver(settings.incoming, "day.tar", tar_bytes({"a.wav": wav(1.0)}))
    [archive_id] = register_archives(settings, store, DAY)
    unpack_archive(settings, store, archive_id)
    with store.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO review_queue (file_id, policy, score, created_at)"
                " SELECT id, 'harassment', 0.9, :at FROM audio_files"
            ),
            {"at": datetime(2026, 11, 27, 9, 0)},
        )
    assert health.check_review(store, MORNING, warn_items=10, warn_hours=72).state == health.OK
    aged = health.check_review(store, MORNING, warn_items=10, warn_hours=24)
    assert (aged.state, aged.figures) == (health.WARNING, {"open": 1, "oldest_hours": 48.0})
    assert health.check_review(store, MORNING, warn_items=0, warn_hours=72).state == health.WARNING


def test_queue_depths_from_the_broker_and_a_broker_that_is_down():
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    queue = f"earmark-test-{uuid.uuid4().hex[:8]}"
    try:
        client.rpush(queue, *range(3))
        client.rpush(queue + "\x06\x166", 1)  # a priority-6 message
        check = health.check_broker("redis://127.0.0.1:6379/0", (queue,), warn_depth=10)
        assert (check.state, check.figures) == (health.OK, {queue: 4})
        deep = health.check_broker("redis://127.0.0.1:6379/0", (queue,), warn_depth=3)
        assert deep.state == health.WARNING and f"{queue} 4" in deep.summary
    finally:
        client.delete(queue, queue + "\x06\x166")
        client.close()
    down = health.check_broker("redis://127.0.0.1:1/0", ("default",), warn_depth=10)
    assert down.state == health.CRITICAL and "Redis unreachable" in down.summary


def test_workers_needed_for_every_queue():
    def replies():
        return {
            "default@coord": [{"name": "default"}, {"name": "unpack"}],
            "gpu0@gpu-1": [{"name": "gpu"}],
        }

    queues = ("default", "unpack", "gpu", "transfer")
    check = health.check_workers(replies, queues)
    assert (check.state, check.summary) == (health.CRITICAL, "no live worker for transfer")
    assert check.figures == {"default": 1, "unpack": 1, "gpu": 1, "transfer": 0}
    assert health.check_workers(replies, queues[:3]).state == health.OK
    assert health.check_workers(lambda: None, ("gpu",)).state == health.CRITICAL


def test_databases_that_cannot_be_reached_are_critical():
    assert health.check_metadata_db(PG_ADMIN_URL).state == health.OK
    gone = "postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2"
    assert health.check_metadata_db(gone).state == health.CRITICAL
    tasks = health.check_long_tasks(gone, MORNING, 60)
    assert tasks.state == health.UNKNOWN


def test_gpu_units_a_finished_run_left_unscreened(store, tmp_path):
    """r1 and r2 each left a unit with a file to screen (constructed_day): only those of a run
    that is over count, and the line says which day to rerun."""
    from earmark_dev.constructed_day import DAY as BUILT_DAY
    from earmark_dev.constructed_day import build

    meta = f"sqlite:///{tmp_path / 'airflow.db'}"
    engine = sa.create_engine(meta)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE dag_run (run_id TEXT, state TEXT)"))
        conn.execute(sa.text("INSERT INTO dag_run VALUES ('r1', 'failed'), ('r2', 'running')"))
    assert health.check_units(store, meta).state == health.OK  # nothing built yet
    build(store)
    check = health.check_units(store, meta)
    assert check.state == health.WARNING, check
    assert check.summary == (
        f"1 files in 1 GPU units left unscreened by finished runs (first r1); rerun {BUILT_DAY}"
    )
    assert check.figures == {
        "left_behind_files": 1,
        "left_behind_units": 1,
        "in_progress_files": 1,
    }
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE dag_run SET state = 'success' WHERE run_id = 'r2'"))
    assert health.check_units(store, meta).figures["left_behind_files"] == 2
    engine.dispose()
    assert health.check_units(store, f"sqlite:///{tmp_path / 'gone' / 'x.db'}").state == (
        health.UNKNOWN
    )
