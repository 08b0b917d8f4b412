"""earmark_daily on the real distributed topology: Celery workers, Redis, Postgres, SMTP.

One harness (``earmark_dev.harness``, fixtures in conftest.py) serves the module: api-server,
scheduler, dag-processor, triggerer, a ``default,unpack,transfer`` worker and two ``gpu`` workers
(one per GPU of a pretend two-GPU host, concurrency 1 each, the ``gpu`` pool and
``EARMARK_GPU_SLOTS`` 2), a private Redis with AOF, fresh metadata and results databases and an
SMTP sink. The results DB and the data root are emptied before each test. Runs, mails and health
here; the faults in test_distributed_faults.py (a harness of its own). Tests run in file order:
the manual run's end state is the reference.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from distributed_kit import (
    DAY,
    LONDON,
    RUN_TIMEOUT,
    assert_complete,
    assert_placement,
    contract_state,
    deadline_offset,
    deadline_rows,
    deliver,
    deliver_late,
    keep_reference,
    reference_state,
    run,
)
from earmark_dev.harness import GPU_ROLES, Harness
from earmark_dev.runs import DAG_ID

pytestmark = pytest.mark.distributed


# ---- runs -----------------------------------------------------------------------------------
def test_scheduled_run(scheduled):
    """Unpausing made the scheduler create the latest scheduled run: today's."""
    _, day, tick_day = scheduled
    assert day == tick_day


def test_manual_trigger_then_rerun_then_a_late_archive(fresh):
    """The operator's command; the same day again changes nothing; an archive that arrives
    after the run is screened by the catch-up DAG's run for the same day."""
    h = fresh
    deliver(h)
    assert run(h, "manual", conf={"date": DAY}) == "success"
    assert_placement(h, "manual", each_gpu=True)
    state = contract_state(h)
    assert_complete(state)
    keep_reference(state)

    store = h.results_store()
    created = store.scalar("SELECT max(created_at) FROM transcripts")
    # Same day again, the same archives delivered again, with a logical date (so a deadline,
    # six hours away): nothing new, and no deadline mail once it finishes in time.
    deliver(h)
    assert run(h, "rerun", conf={"date": DAY}, logical_date=datetime.now(UTC)) == "success"
    assert contract_state(h) == state
    assert store.scalar("SELECT max(created_at) FROM transcripts") == created
    assert len(list((h.data_root / "processed" / DAY).glob("duplicate-*/*.tar"))) == 2
    assert not [m for m in h.mails() if "rerun" in m["subject"]]
    assert all(not row.missed for row in deadline_rows(h, "rerun"))
    store.dispose()
    # "reprocess": true is the same code on any executor: test_daily_dag_postgres.py runs it.

    # A late archive after the day's run took its deliveries: earmark_catchup's tick before the
    # cut-off triggers earmark_daily for the day, which screens it alone.
    late = deliver_late(h, DAY)
    tick = datetime.combine(date.fromisoformat(DAY), dt_time(6, 10), tzinfo=LONDON)
    h.airflow("dags", "test", "earmark_catchup", tick.isoformat())
    runs = h.meta_rows("SELECT run_id FROM dag_run WHERE run_id LIKE 'catch_up__%'")
    assert len(runs) == 1, runs
    assert h.wait_run(runs[0].run_id, RUN_TIMEOUT) == "success"
    caught_up = contract_state(h)
    assert [a for a in caught_up["archives"] if a[0] != late] == state["archives"]
    assert (late, "unpacked", 1) in caught_up["archives"]
    late_files = [f for f in caught_up["files"] if f[0] == late]
    assert late_files and {f[2] for f in late_files} == {"classified"}
    assert not list((h.data_root / "incoming").iterdir())


def test_deadline_missed_mail_then_failure_mail(fresh):
    """GPU workers frozen (SIGSTOP): the deadline mail arrives, says the GPU units are only
    queued and gives no ETA; the stuck units are failed, the run fails and the failure mail
    arrives; the day rerun afterwards, already past a deadline, ends in the reference state and
    sends a "done late" mail."""
    h = fresh
    reference = reference_state(h)
    deliver(h)
    for role in GPU_ROLES:
        h.pause(role)
    # The deadline is the logical date + (deadline - start time): an hour away at first. Once
    # the GPU units wait (the archives are unpacked), it is moved to a second ago, as if the
    # hour had passed, so the mail says what is pending however long the run took to get there.
    logical = datetime.now(UTC) - deadline_offset(h) + timedelta(hours=1)
    h.trigger("late", conf={"date": DAY}, logical_date=logical)
    waited = time.monotonic() + 180
    while [ti.state for ti in h.task_instances("late") if ti.task_id == "gpu_unit.transcribe"] != [
        "queued",
        "queued",
    ]:  # both units handed to Celery, where no GPU worker takes them
        assert time.monotonic() < waited, h.task_instances("late")
        time.sleep(0.5)
    passed = datetime.now(UTC) - timedelta(seconds=1)
    moved = h.meta_execute(
        "UPDATE deadline SET deadline_time = :t"
        " WHERE dagrun_id = (SELECT id FROM dag_run WHERE run_id = 'late')",
        t=passed,
    )
    assert moved == 1
    mail = h.wait_mail(
        lambda m: "deadline missed" in m["subject"] and "late" in m["subject"], timeout=180
    )
    body = mail.get_body(("html", "plain")).get_content()
    assert mail["subject"].startswith(f"[earmark] deadline missed: {DAY}, 4 files pending")
    deadline = passed.astimezone(LONDON).strftime("%Y-%m-%d %H:%M")
    for expected in (DAY, "late", deadline, "ready 4", f"/earmark/report/{DAY}"):
        assert expected in body, expected
    # What the run is doing, from Airflow's task states (asked through the triggerer) and the
    # results DB; no ETA, since nothing moves.
    assert "stalled, no ETA: nothing has progressed since " in mail["subject"], mail["subject"]
    for expected in (
        ">transcribe</th><td>0 running, 2 queued (waiting for a GPU worker since ",
        ">unpack</th><td>0 running, 0 queued, 2 done</td>",
        "Stalled: no task running (2 queued or waiting for a slot)",
        ">ETA</th><td>no ETA: nothing has progressed since ",
    ):
        assert expected in body, expected
    assert mail["to"] == "ops@example.org"
    assert h.run_state("late") == "running"
    assert [row.missed for row in deadline_rows(h, "late")] == [True]

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
    # The rerun is given a deadline that passed a minute before it starts: once it succeeds,
    # a short "done late" mail says when.
    logical = datetime.now(UTC) - deadline_offset(h) - timedelta(minutes=1)
    assert run(h, "late_rerun", conf={"date": DAY}, logical_date=logical) == "success"
    assert contract_state(h) == reference
    done = h.wait_mail(
        lambda m: "done late" in m["subject"] and "late_rerun" in m["subject"], timeout=120
    )
    assert done["subject"].startswith(f"[earmark] done late: {DAY} finished "), done["subject"]
    assert " after its deadline " in done["subject"]
    body = done.get_body(("html",)).get_content()
    for expected in (">Late by</th><td>", "/dags/earmark_daily/runs/late_rerun", "classified 4"):
        assert expected in body, expected


def test_conf_typo_is_refused_and_a_cli_run_for_today_has_today_s_deadline(fresh):
    """Operators' manual runs: a conf key with a typo fails the run at its first task, saying
    which keys exist, with nothing touched; a run for today triggered from the CLI (no logical
    date) is due at today's local deadline like the scheduled run."""
    h = fresh
    deliver(h)
    delivered = sorted(p.name for p in (h.data_root / "incoming").iterdir())
    assert run(h, "typo", conf={"dat": DAY}) == "failed"
    states = {ti.task_id: ti.state for ti in h.task_instances("typo")}
    assert states.pop("check_run_conf") == "failed", states
    assert set(states.values()) == {"upstream_failed"}, states
    log = h.airflow_home / "logs" / f"dag_id={DAG_ID}" / "run_id=typo" / "task_id=check_run_conf"
    text = "".join(p.read_text() for p in log.rglob("*.log"))
    assert "unknown key 'dat' (did you mean 'date'?)" in text
    assert sorted(p.name for p in (h.data_root / "incoming").iterdir()) == delivered
    assert not deadline_rows(h, "typo")

    h.reset_results()  # nothing to screen: the run for today waits in its sensor
    tz = ZoneInfo("Europe/London")
    today = datetime.now(tz).date()
    h.trigger("today_cli", conf={"date": today.isoformat()})
    rows = deadline_rows(h, "today_cli")
    due = dt_time.fromisoformat(h.env["EARMARK_DEADLINE_TIME"])
    assert [row.deadline_time for row in rows] == [datetime.combine(today, due, tzinfo=tz)], rows
    h.wait_ti("today_cli", "wait_for_archives", ("deferred",), timeout=120)
    h.fail_active_runs()


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
    """Healthy; low disk, a review backlog and one of the two GPU workers stopped are warnings;
    no GPU worker, a deadline passed with nothing delivered and Redis down are critical. Last
    in the file: it stops workers and Redis for good."""
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
    assert line.endswith("; review: 0 open"), line  # no item, so no age
    assert _health(h, morning, **roomy) == (0, "EARMARK OK - all checks ok")

    # The gpu pool and EARMARK_GPU_SLOTS are 2: one GPU worker (concurrency 1) is half of them.
    h.stop(GPU_ROLES[1])
    code, line = _health(h, morning, **roomy)
    assert (code, line) == (
        1,
        "EARMARK WARNING - workers: GPU slots: 1 of 2 live (expected 2 from the gpu pool;"
        " live: gpu0@earmark-gpu-1 x1)",
    )
    h.stop(GPU_ROLES[0])
    assert _health(h, afternoon, EARMARK_DEADLINE_TIME="12:00", **roomy) == (
        2,
        f"EARMARK CRITICAL - workers: no live worker for gpu (0 of 2 GPU slots live);"
        f" day: {today}: nothing delivered by the deadline",
    )

    h.kill("redis")
    code, line = _health(h, morning, **roomy)
    assert code == 2 and "broker: Redis unreachable" in line, line
