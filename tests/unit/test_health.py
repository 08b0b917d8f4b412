"""The checks of `earmark health` against real services (the local Postgres and Redis, a real
data volume); the whole command against the distributed topology is in test_distributed.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest
import redis
import sqlalchemy as sa
from delivery_kit import deliver, tar_bytes, wav
from earmark.config import Settings
from earmark.day.status import format_duration
from earmark.ingest.deliveries import register_archives
from earmark.ingest.unpack import unpack_archive
from earmark.ops import health
from earmark_dev.postgres import admin_url

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
                "INSERT INTO review_queue (file_id, policy, policy_sha, model, score, created_at)"
                " SELECT id, 'harassment', 'sha', 'tiny', 0.9, :at FROM audio_files"
            ),
            {"at": datetime(2026, 11, 27, 9, 0)},
        )
    assert health.check_review(store, MORNING, warn_items=10, warn_hours=72).state == health.OK
    aged = health.check_review(store, MORNING, warn_items=10, warn_hours=24)
    assert (aged.state, aged.figures) == (health.WARNING, {"open": 1, "oldest_hours": 48.0})
    assert aged.summary == "1 open, oldest 2.0 days"
    assert health.check_review(store, MORNING, warn_items=0, warn_hours=72).state == health.WARNING
    # Ages are rounded honestly: 0.2 h is 12 min, not "0 h".
    young = health.check_review(
        store, datetime(2026, 11, 27, 9, 12, tzinfo=UTC), warn_items=0, warn_hours=72
    )
    assert (young.summary, young.figures["oldest_hours"]) == ("1 open, oldest 12 min", 0.2)
    assert health.check_review(store, datetime(2026, 11, 28, 1, 9, tzinfo=UTC), 0, 72).summary == (
        "1 open, oldest 16.1 h"
    )


def test_durations_are_rounded_honestly():
    assert [
        format_duration(s) for s in (0, 40, 89, 720, 3569, 3600, 0.2 * 3600, 47.9 * 3600, 2 * 86400)
    ] == ["0 s", "40 s", "1 min", "12 min", "59 min", "1.0 h", "12 min", "47.9 h", "2.0 days"]


def test_no_open_review_item_has_no_age(store):
    empty = health.check_review(store, MORNING, warn_items=-1, warn_hours=24)
    assert (empty.state, empty.summary) == (health.WARNING, "0 open")


def test_queue_depths_from_the_broker_and_a_broker_that_is_down(redis_url):
    client = redis.Redis.from_url(redis_url)
    queue = f"earmark-test-{uuid.uuid4().hex[:8]}"
    try:
        client.rpush(queue, *range(3))
        client.rpush(queue + "\x06\x166", 1)  # a priority-6 message
        check = health.check_broker(redis_url, (queue,), warn_depth=10)
        assert (check.state, check.figures) == (health.OK, {queue: 4})
        deep = health.check_broker(redis_url, (queue,), warn_depth=3)
        assert deep.state == health.WARNING and f"{queue} 4" in deep.summary
    finally:
        client.delete(queue, queue + "\x06\x166")
        client.close()
    down = health.check_broker("redis://127.0.0.1:1/0", ("default",), warn_depth=10)
    assert down.state == health.CRITICAL and "Redis unreachable" in down.summary


QUEUES = ("default", "unpack", "gpu")
TWO_GPUS = health.GpuSlots(pool=2, setting=2)


def _workers(*gpu_concurrency: int | None, transfer: bool = False) -> dict[str, health.Worker]:
    """The default worker and one gpu worker per given concurrency (None: did not say)."""
    found = {"default@coord": health.Worker(("default", "unpack"), 2)}
    if transfer:
        found["transfer@vm"] = health.Worker(("transfer",), 1)
    for n, concurrency in enumerate(gpu_concurrency):
        found[f"gpu{n}@gpu-1"] = health.Worker(("gpu",), concurrency)
    return found


def test_workers_needed_for_every_queue():
    queues = (*QUEUES, "transfer")
    check = health.check_workers(_workers(1, 1), queues, TWO_GPUS)
    assert (check.state, check.summary) == (health.CRITICAL, "no live worker for transfer")
    assert {q: check.figures[q] for q in queues} == {
        "default": 1,
        "unpack": 1,
        "gpu": 2,
        "transfer": 0,
    }
    ok = health.check_workers(_workers(1, 1, transfer=True), queues, TWO_GPUS)
    assert (ok.state, ok.summary) == (
        health.OK,
        "default 1, unpack 1, gpu 2 of 2 slots, transfer 1",
    )


def test_live_gpu_slots_against_the_gpu_pool():
    """Fewer live GPU slots than the gpu pool's is a warning with both numbers; none is
    critical; slots are workers times their concurrency, so one worker of 2 serves a pool of 2."""
    one = health.check_workers(_workers(1), QUEUES, TWO_GPUS)
    assert one.state == health.WARNING
    assert one.summary == (
        "GPU slots: 1 of 2 live (expected 2 from the gpu pool; live: gpu0@gpu-1 x1)"
    )
    assert (one.figures["gpu_slots_live"], one.figures["gpu_slots_expected"]) == (1, 2)
    none = health.check_workers(_workers(), QUEUES, TWO_GPUS)
    assert (none.state, none.summary) == (
        health.CRITICAL,
        "no live worker for gpu (0 of 2 GPU slots live)",
    )
    wide = health.check_workers(_workers(2), QUEUES, TWO_GPUS)
    assert (wide.state, wide.summary) == (health.OK, "default 1, unpack 1, gpu 2 of 2 slots")
    unsaid = health.check_workers(_workers(None), QUEUES, TWO_GPUS)  # counts as one slot
    assert unsaid.state == health.WARNING and "GPU slots: 1 of 2 live" in unsaid.summary
    assert "gpu0@gpu-1 x?" in unsaid.summary


def test_without_a_gpu_pool_the_setting_is_expected_and_a_mismatch_is_named():
    by_setting = health.check_workers(_workers(1), QUEUES, health.GpuSlots(pool=None, setting=3))
    assert by_setting.state == health.WARNING
    assert "GPU slots: 1 of 3 live (expected 3 from EARMARK_GPU_SLOTS" in by_setting.summary
    mismatch = health.check_workers(_workers(1, 1), QUEUES, health.GpuSlots(pool=2, setting=1))
    assert (mismatch.state, mismatch.summary) == (
        health.WARNING,
        "gpu pool has 2 slots but EARMARK_GPU_SLOTS is 1",
    )


def test_a_short_answer_is_asked_again_before_it_is_reported():
    """The first broadcast missed a slow GPU worker: asked again, waiting longer, it answers,
    and the check is ok. A broker error is critical with its name."""
    waits: list[float] = []

    def ask(wait_s: float) -> dict[str, health.Worker]:
        waits.append(wait_s)
        return _workers(1) if len(waits) == 1 else {"gpu1@gpu-1": health.Worker(("gpu",), 1)}

    check = health.WorkerQuestion(ask, 0.5).check(QUEUES, TWO_GPUS)
    assert (check.state, check.figures["gpu_workers"]) == (
        health.OK,
        ["gpu0@gpu-1", "gpu1@gpu-1"],
    )
    assert waits == [0.5, 2.0]
    full = health.WorkerQuestion(lambda wait_s: waits.append(wait_s) or _workers(1, 1), 0.5)
    assert full.check(QUEUES, TWO_GPUS).state == health.OK
    assert waits == [0.5, 2.0, 0.5]  # a full answer is not asked again

    def broken(wait_s: float) -> dict[str, health.Worker]:
        raise ConnectionError("refused")

    failed = health.WorkerQuestion(broken, 0.5).check(QUEUES, TWO_GPUS)
    assert (failed.state, failed.summary) == (
        health.CRITICAL,
        "cannot ask the workers (ConnectionError)",
    )


@pytest.mark.postgres
def test_the_workers_are_not_asked_when_the_broker_is_down(settings, store):
    asked: list[float] = []
    checks = health.run_checks(
        replace(settings, health_disk_warn_gib=0, health_disk_critical_gib=0),
        store,
        meta_url=admin_url(),
        broker_url="redis://127.0.0.1:1/0",
        workers=lambda wait_s: asked.append(wait_s) or {},
        now=MORNING,
        run_date=DAY,
    )
    by_name = {c.name: c for c in checks}
    assert asked == []
    assert by_name["workers"].summary == "cannot ask the workers: the broker is unreachable"
    assert [c.name for c in checks][:5] == [
        "results_db",
        "metadata_db",
        "broker",
        "workers",
        "disk",
    ]


def test_celery_is_asked_once_and_answers_within_its_wait(tmp_path, redis_url):
    """The real Celery app of Airflow's provider against a real Redis with no worker: one
    broadcast that ends its wait after 0.3 s, not the 2 s and more of before."""
    script = (
        "import json, time\n"
        "import airflow.providers.celery.executors.celery_executor_utils\n"
        "from earmark.orchestration.airflow_seam import celery_workers\n"
        "started = time.perf_counter()\n"
        "found = celery_workers(0.3)\n"
        "print(json.dumps([len(found), time.perf_counter() - started]))\n"
    )
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CELERY__BROKER_URL": redis_url.rsplit("/", 1)[0] + "/15",
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "3600",
    }
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    found, seconds = json.loads(out.stdout.strip().splitlines()[-1])
    assert found == 0
    assert 0.3 <= seconds < 10, seconds  # bounded by its wait, not Celery's default


@pytest.mark.postgres
def test_databases_that_cannot_be_reached_are_critical():
    assert health.check_metadata_db(admin_url()).state == health.OK
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
