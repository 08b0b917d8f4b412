"""earmark_daily on the real distributed topology: Celery workers, Redis, Postgres, SMTP.

One harness (``earmark_dev.harness``) serves the whole module: api-server, scheduler, dag-processor,
triggerer, a ``default,unpack,transfer`` worker and two ``gpu`` workers (one per GPU of a pretend
two-GPU host, concurrency 1 each, the ``gpu`` pool and ``EARMARK_GPU_SLOTS`` 2), a private Redis
with AOF, fresh metadata and results databases and an SMTP sink. The results DB and the data root
are emptied before each test. Tests run in file order: the manual run's end state is the
reference the fault tests must reproduce.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from earmark_dev.harness import DEFAULT_HOSTNAME, GPU_HOSTNAMES, GPU_ROLES, Harness, admin_engine
from earmark_dev.runs import DAG_ID

pytestmark = pytest.mark.distributed

DAY = "2026-11-29"
LONDON = ZoneInfo("Europe/London")
SEED = 11
GPU_TASKS = ("gpu_unit.transcribe", "gpu_unit.classify")
RUN_TIMEOUT = 420
REFERENCE: dict[str, object] = {}


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


def _deadline_offset(h: Harness) -> timedelta:
    start, deadline = (
        datetime.combine(date.min, dt_time.fromisoformat(h.env[name]))
        for name in ("EARMARK_START_TIME", "EARMARK_DEADLINE_TIME")
    )
    return deadline - start


def _deliver(h: Harness, day: str = DAY) -> None:
    from earmark_dev.sampledata import generate_day

    generate_day(
        h.data_root / "incoming",
        date.fromisoformat(day),
        archives=2,
        files_per_archive=2,
        minutes=0.4,
        seed=SEED,
    )


def _deliver_late(h: Harness, day: str) -> str:
    """One more archive for ``day``, under a name of its own; its name."""
    from earmark.incoming import sha256_file
    from earmark_dev.sampledata import generate_day

    scratch = h.home / "late"
    generated = generate_day(
        scratch, date.fromisoformat(day), archives=1, files_per_archive=1, minutes=0.2, seed=77
    )[0]
    name = f"{day}-late.tar"
    target = h.data_root / "incoming" / name
    generated.rename(target)
    target.with_name(f"{name}.sha256").write_text(f"{sha256_file(target)}  {name}\n")
    return name


def _state(h: Harness) -> dict[str, object]:
    """The results DB's contract tables, without ids, paths and timestamps."""
    store = h.results_store()
    try:
        key = "FROM audio_files f JOIN archives a ON a.id = f.archive_id"
        state = {
            "archives": [
                tuple(r)
                for r in store.rows("SELECT name, status, n_files FROM archives ORDER BY name")
            ],
            "files": [
                tuple(r)
                for r in store.rows(f"SELECT a.name, f.member_path, f.status {key} ORDER BY 1, 2")
            ],
            "transcripts": [
                tuple(r)
                for r in store.rows(
                    f"SELECT a.name, f.member_path, t.model, t.text {key}"
                    " JOIN transcripts t ON t.file_id = f.id ORDER BY 1, 2"
                )
            ],
            "labels": [
                tuple(r)
                for r in store.rows(
                    f"SELECT a.name, f.member_path, l.policy, l.model, round(l.score::numeric, 4),"
                    f" l.label {key} JOIN labels l ON l.file_id = f.id ORDER BY 1, 2, 3"
                )
            ],
            "review": [
                tuple(r)
                for r in store.rows(
                    f"SELECT a.name, f.member_path, r.policy, r.status {key}"
                    " JOIN review_queue r ON r.file_id = f.id ORDER BY 1, 2, 3"
                )
            ],
        }
    finally:
        store.dispose()
    return state


def _assert_complete(state: dict[str, object]) -> None:
    """Every file classified, one transcript each, one label per policy, flags queued."""
    files = state["files"]
    assert len(files) == 4 and {f[2] for f in files} == {"classified"}, files
    assert [a[1] for a in state["archives"]] == ["unpacked", "unpacked"]
    assert len(state["transcripts"]) == 4
    policies = {row[2] for row in state["labels"]}
    assert len(policies) >= 2 and len(state["labels"]) == 4 * len(policies)
    flagged = [(r[0], r[1], r[2]) for r in state["labels"] if r[5] == 1]
    assert [(r[0], r[1], r[2]) for r in state["review"]] == flagged


def _assert_placement(h: Harness, run_id: str, *, each_gpu: bool = False) -> None:
    """Every task succeeded; GPU work on the gpu workers, the rest on the other one. With
    ``each_gpu`` (both GPU workers idle when the run started) one unit landed on each GPU."""
    tis = h.task_instances(run_id)
    states = {(ti.task_id, ti.map_index): ti.state for ti in tis}
    assert {s for (task, _), s in states.items() if task != "wait_for_archives"} == {"success"}, (
        states
    )
    gpu = [ti for ti in tis if ti.task_id in GPU_TASKS]
    assert len(gpu) == 4, tis  # 4 short files: one unit per GPU slot (2), two stages
    for ti in gpu:
        assert (ti.queue, ti.pool) == ("gpu", "gpu"), ti
        assert ti.hostname in GPU_HOSTNAMES.values(), ti
    if each_gpu:
        transcribed_on = sorted(ti.hostname for ti in gpu if ti.task_id == "gpu_unit.transcribe")
        assert transcribed_on == sorted(GPU_HOSTNAMES.values()), tis
        units = h.results_store()
        hosts = [r.transcribe_host for r in units.rows("SELECT transcribe_host FROM gpu_batches")]
        units.dispose()
        assert sorted(hosts) == [f"{GPU_HOSTNAMES[r]} gpu {r[-1]}" for r in sorted(GPU_ROLES)]
    unpack = [ti for ti in tis if ti.task_id == "unpack"]
    assert len(unpack) == 2, tis
    for ti in unpack:
        assert (ti.queue, ti.hostname) == ("unpack", DEFAULT_HOSTNAME), ti
    others = [ti for ti in tis if ti.task_id not in (*GPU_TASKS, "unpack", "wait_for_archives")]
    assert others and {ti.hostname for ti in others} == {DEFAULT_HOSTNAME}


def _run(h: Harness, run_id: str, **trigger) -> str:
    h.trigger(run_id, **trigger)
    return h.wait_run(run_id, RUN_TIMEOUT)


def _deadline_rows(h: Harness, run_id: str) -> list:
    return h.meta_rows(
        "SELECT d.deadline_time, d.missed FROM deadline d JOIN dag_run r"
        " ON r.id = d.dagrun_id WHERE r.run_id = :r",
        r=run_id,
    )


def _reference(h: Harness) -> dict[str, object]:
    if "state" not in REFERENCE:  # the manual-run test did not run first (e.g. -k)
        h.reset_results()
        _deliver(h)
        assert _run(h, "reference") == "success"
        REFERENCE["state"] = _state(h)
        h.reset_results()
    return REFERENCE["state"]


# ---- runs -----------------------------------------------------------------------------------
def test_scheduled_run(scheduled):
    """Unpausing made the scheduler create the latest scheduled run: today's."""
    _, day, tick_day = scheduled
    assert day == tick_day


def test_manual_trigger_then_rerun_then_a_late_archive(fresh):
    """The operator's command; the same day again changes nothing; an archive that arrives
    after the run is screened by the catch-up DAG's run for the same day."""
    h = fresh
    _deliver(h)
    assert _run(h, "manual", conf={"date": DAY}) == "success"
    _assert_placement(h, "manual", each_gpu=True)
    state = _state(h)
    _assert_complete(state)
    REFERENCE["state"] = state

    store = h.results_store()
    created = store.scalar("SELECT max(created_at) FROM transcripts")
    # Same day again, the same archives delivered again, with a logical date (so a deadline,
    # six hours away): nothing new, and no deadline mail once it finishes in time.
    _deliver(h)
    assert _run(h, "rerun", conf={"date": DAY}, logical_date=datetime.now(UTC)) == "success"
    assert _state(h) == state
    assert store.scalar("SELECT max(created_at) FROM transcripts") == created
    assert len(list((h.data_root / "processed" / DAY).glob("duplicate-*/*.tar"))) == 2
    assert not [m for m in h.mails() if "rerun" in m["subject"]]
    assert all(not row.missed for row in _deadline_rows(h, "rerun"))
    store.dispose()
    # "reprocess": true is the same code on any executor: test_daily_dag_postgres.py runs it.

    # A late archive after the day's run took its deliveries: earmark_catchup's tick before the
    # cut-off triggers earmark_daily for the day, which screens it alone.
    late = _deliver_late(h, DAY)
    tick = datetime.combine(date.fromisoformat(DAY), dt_time(6, 10), tzinfo=LONDON)
    h.airflow("dags", "test", "earmark_catchup", tick.isoformat())
    runs = h.meta_rows("SELECT run_id FROM dag_run WHERE run_id LIKE 'catch_up__%'")
    assert len(runs) == 1, runs
    assert h.wait_run(runs[0].run_id, RUN_TIMEOUT) == "success"
    caught_up = _state(h)
    assert [a for a in caught_up["archives"] if a[0] != late] == state["archives"]
    assert (late, "unpacked", 1) in caught_up["archives"]
    late_files = [f for f in caught_up["files"] if f[0] == late]
    assert late_files and {f[2] for f in late_files} == {"classified"}
    assert not list((h.data_root / "incoming").iterdir())


def test_deadline_missed_mail_then_failure_mail(fresh):
    """GPU workers frozen (SIGSTOP): the deadline mail arrives; the stuck units are failed, the
    run fails and the failure mail arrives; the day rerun afterwards ends in the reference state."""
    h = fresh
    reference = _reference(h)
    _deliver(h)
    for role in GPU_ROLES:
        h.pause(role)
    # The deadline is the logical date + (deadline - start time): put it 8 s from now.
    logical = datetime.now(UTC) - _deadline_offset(h) + timedelta(seconds=8)
    h.trigger("late", conf={"date": DAY}, logical_date=logical)
    mail = h.wait_mail(
        lambda m: "deadline missed" in m["subject"] and "late" in m["subject"], timeout=180
    )
    body = mail.get_body(("html", "plain")).get_content()
    assert mail["subject"].startswith(f"[earmark] deadline missed: {DAY}, 4 files pending")
    deadline = (logical + _deadline_offset(h)).astimezone(LONDON).strftime("%Y-%m-%d %H:%M")
    for expected in (DAY, "late", deadline, "ready 4", f"/earmark/report/{DAY}"):
        assert expected in body, expected
    assert mail["to"] == "ops@example.org"
    assert h.run_state("late") == "running"
    assert [row.missed for row in _deadline_rows(h, "late")] == [True]

    # The operator gives up on the stuck GPU units; `report` then finds the day incomplete and
    # fails at once: a verdict that cannot change is not retried.
    h.wait_ti("late", "gpu_unit.transcribe", ("queued", "scheduled"))
    h.mark_failed("late", "gpu_unit.transcribe")
    assert h.wait_run("late", 120) == "failed"
    [report] = [ti for ti in h.task_instances("late") if ti.task_id == "report"]
    assert (report.state, report.try_number) == ("failed", 1)
    failed = h.wait_mail(
        lambda m: "run failed" in m["subject"] and "late" in m["subject"], timeout=120
    )
    # The failure mail names the day, each failed task and why: the units marked failed by
    # hand have no reason of their own, report has its verdict.
    assert failed["subject"].startswith(f"[earmark] run failed: {DAY}, gpu_unit.transcribe [")
    body = failed.get_body(("html",)).get_content()
    for expected in (
        "gpu_unit.transcribe",
        "no reason recorded: marked failed by hand",
        f"AirflowFailException: day {DAY} incomplete",
        "4 files pending",
        "/dags/earmark_daily/runs/late",
        f"/earmark/?date={DAY}",
    ):
        assert expected in body, expected

    for role in GPU_ROLES:
        h.resume(role)
    assert _run(h, "late_rerun", conf={"date": DAY}) == "success"
    assert _state(h) == reference
    assert not [m for m in h.mails() if "late_rerun" in m["subject"]]


def test_conf_typo_is_refused_and_a_cli_run_for_today_has_today_s_deadline(fresh):
    """Operators' manual runs: a conf key with a typo fails the run at its first task, saying
    which keys exist, with nothing touched; a run for today triggered from the CLI (no logical
    date) is due at today's local deadline like the scheduled run."""
    h = fresh
    _deliver(h)
    delivered = sorted(p.name for p in (h.data_root / "incoming").iterdir())
    assert _run(h, "typo", conf={"dat": DAY}) == "failed"
    states = {ti.task_id: ti.state for ti in h.task_instances("typo")}
    assert states.pop("check_run_conf") == "failed", states
    assert set(states.values()) == {"upstream_failed"}, states
    log = h.airflow_home / "logs" / f"dag_id={DAG_ID}" / "run_id=typo" / "task_id=check_run_conf"
    text = "".join(p.read_text() for p in log.rglob("*.log"))
    assert "unknown key 'dat' (did you mean 'date'?)" in text
    assert sorted(p.name for p in (h.data_root / "incoming").iterdir()) == delivered
    assert not _deadline_rows(h, "typo")

    h.reset_results()  # nothing to screen: the run for today waits in its sensor
    tz = ZoneInfo("Europe/London")
    today = datetime.now(tz).date()
    h.trigger("today_cli", conf={"date": today.isoformat()})
    rows = _deadline_rows(h, "today_cli")
    due = dt_time.fromisoformat(h.env["EARMARK_DEADLINE_TIME"])
    assert [row.deadline_time for row in rows] == [datetime.combine(today, due, tzinfo=tz)], rows
    h.wait_ti("today_cli", "wait_for_archives", ("deferred",), timeout=120)
    h.fail_active_runs()


# ---- faults ---------------------------------------------------------------------------------
def test_gpu_task_process_killed_mid_batch(fresh):
    h = fresh
    reference = _reference(h)
    _deliver(h)
    h.trigger("kill_task", conf={"date": DAY})
    ti = h.wait_ti("kill_task", "gpu_unit.transcribe", ("running",))
    _, pid = h.task_process(str(ti.id))
    os.kill(pid, signal.SIGKILL)
    assert h.wait_run("kill_task", RUN_TIMEOUT) == "success"
    tries = {(t.task_id, t.map_index): t.try_number for t in h.task_instances("kill_task")}
    assert tries[(ti.task_id, ti.map_index)] == 2, tries
    _assert_placement(h, "kill_task")
    assert _state(h) == reference


def test_gpu_worker_killed_and_restarted(fresh):
    h = fresh
    reference = _reference(h)
    _deliver(h)
    h.trigger("kill_worker", conf={"date": DAY})
    ti = h.wait_ti("kill_worker", "gpu_unit.transcribe", ("running",))
    role, _ = h.task_process(str(ti.id))  # the worker that really started it
    assert role in GPU_ROLES
    h.kill(role)
    h.start(role)
    assert h.wait_run("kill_worker", RUN_TIMEOUT) == "success"
    tries = {(t.task_id, t.map_index): t.try_number for t in h.task_instances("kill_worker")}
    assert tries[(ti.task_id, ti.map_index)] >= 2, tries
    _assert_placement(h, "kill_worker")
    assert _state(h) == reference


def test_redis_restarted_with_tasks_queued(fresh):
    h = fresh
    reference = _reference(h)
    _deliver(h)
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
    _assert_placement(h, "redis")
    assert _state(h) == reference


def test_results_db_connections_terminated_mid_write(fresh):
    """Every results-DB connection is cut every 0.2 s while the GPU units run."""
    h = fresh
    reference = _reference(h)
    _deliver(h)
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
    _assert_placement(h, "pg_kill")
    assert _state(h) == reference


def _health(h: Harness, at: datetime, **settings: str) -> tuple[int, str]:
    """`earmark health` as a monitoring system runs it on the coordinator: exit code, line."""
    out = subprocess.run(
        [str(Path(sys.executable).parent / "earmark"), "health", "--at", at.isoformat()],
        env={**h.env, **settings},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.stdout.startswith("EARMARK "), out.stdout + out.stderr
    return out.returncode, out.stdout.strip()


def test_health_ok_warning_critical_with_nagios_exit_codes(fresh):
    """Healthy; low disk and a review backlog are warnings; no GPU worker, a deadline passed
    with nothing delivered and Redis down are critical. Last in the file: it stops workers and
    Redis for good."""
    h = fresh
    today = datetime.now(LONDON).date()
    morning = datetime.combine(today, dt_time(8, 0), tzinfo=LONDON)
    afternoon = datetime.combine(today, dt_time(13, 0), tzinfo=LONDON)
    roomy = {"EARMARK_HEALTH_DISK_WARN_GIB": "0.01", "EARMARK_HEALTH_DISK_CRITICAL_GIB": "0"}

    low_disk = {"EARMARK_HEALTH_DISK_WARN_GIB": "1000000"}
    backlog = {"EARMARK_HEALTH_REVIEW_WARN_ITEMS": "-1"}  # any open item is too many
    code, line = _health(h, morning, **low_disk)  # the results DB was just emptied
    assert code == 2, line
    assert line.startswith("EARMARK CRITICAL - results_db: reachable but not migrated"), line
    assert "; disk: " in line  # every check that is not ok is named
    store = h.results_store()
    store.migrate()
    store.dispose()
    code, line = _health(h, morning, **low_disk, **backlog)
    assert code == 1 and line.startswith("EARMARK WARNING - disk: "), line
    assert "; review: 0 open, oldest 0 h" in line, line
    assert _health(h, morning, **roomy) == (0, "EARMARK OK - all checks ok")

    for role in GPU_ROLES:
        h.stop(role)
    assert _health(h, afternoon, EARMARK_DEADLINE_TIME="12:00", **roomy) == (
        2,
        f"EARMARK CRITICAL - workers: no live worker for gpu;"
        f" day: {today}: nothing delivered by the deadline",
    )

    h.kill("redis")
    code, line = _health(h, morning, **roomy)
    assert code == 2 and "broker: Redis unreachable" in line, line
