"""What the distributed-topology tests share: the sample day, the results DB's contract state
and the checks on a run (tests/integration/test_distributed*.py; the harness fixtures are in
conftest.py). Each test file gets its own harness, so the files run side by side."""

from __future__ import annotations

import os
import pickle
import tempfile
from datetime import date, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from zoneinfo import ZoneInfo

from earmark_dev.harness import DEFAULT_HOSTNAME, GPU_HOSTNAMES, GPU_ROLES, Harness

DAY = "2026-11-29"
LONDON = ZoneInfo("Europe/London")
SEED = 11
GPU_TASKS = ("gpu_unit.transcribe", "gpu_unit.classify")
RUN_TIMEOUT = 420
REFERENCE: dict[str, object] = {}


def deadline_offset(h: Harness) -> timedelta:
    start, deadline = (
        datetime.combine(date.min, dt_time.fromisoformat(h.env[name]))
        for name in ("EARMARK_START_TIME", "EARMARK_DEADLINE_TIME")
    )
    return deadline - start


def deliver(h: Harness, day: str = DAY) -> None:
    from earmark_dev.sampledata import generate_day

    generate_day(
        h.data_root / "incoming",
        date.fromisoformat(day),
        archives=2,
        files_per_archive=2,
        minutes=0.4,
        seed=SEED,
    )


def deliver_late(h: Harness, day: str) -> str:
    """One more archive for ``day``, under a name of its own; its name."""
    from earmark.ingest.incoming import sha256_file
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


def contract_state(h: Harness) -> dict[str, object]:
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


def assert_complete(state: dict[str, object]) -> None:
    """Every file classified, one transcript each, one label per policy, flags queued."""
    files = state["files"]
    assert len(files) == 4 and {f[2] for f in files} == {"classified"}, files
    assert [a[1] for a in state["archives"]] == ["unpacked", "unpacked"]
    assert len(state["transcripts"]) == 4
    policies = {row[2] for row in state["labels"]}
    assert len(policies) >= 2 and len(state["labels"]) == 4 * len(policies)
    flagged = [(r[0], r[1], r[2]) for r in state["labels"] if r[5] == 1]
    assert [(r[0], r[1], r[2]) for r in state["review"]] == flagged


def assert_placement(h: Harness, run_id: str, *, each_gpu: bool = False) -> None:
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
        hosts = [r.transcribe_host for r in units.rows("SELECT transcribe_host FROM work_units")]
        units.dispose()
        assert sorted(hosts) == [f"{GPU_HOSTNAMES[r]} gpu {r[-1]}" for r in sorted(GPU_ROLES)]
    unpack = [ti for ti in tis if ti.task_id == "unpack"]
    assert len(unpack) == 2, tis
    for ti in unpack:
        assert (ti.queue, ti.hostname) == ("unpack", DEFAULT_HOSTNAME), ti
    others = [ti for ti in tis if ti.task_id not in (*GPU_TASKS, "unpack", "wait_for_archives")]
    assert others and {ti.hostname for ti in others} == {DEFAULT_HOSTNAME}


def run(h: Harness, run_id: str, **trigger) -> str:
    h.trigger(run_id, **trigger)
    return h.wait_run(run_id, RUN_TIMEOUT)


def deadline_rows(h: Harness, run_id: str) -> list:
    return h.meta_rows(
        "SELECT d.deadline_time, d.missed FROM deadline d JOIN dag_run r"
        " ON r.id = d.dagrun_id WHERE r.run_id = :r",
        r=run_id,
    )


def _shared_reference() -> Path | None:
    """Where the workers of one xdist run share the reference (None outside xdist)."""
    run_uid = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    return Path(tempfile.gettempdir()) / f"earmark-reference-{run_uid}.pickle" if run_uid else None


def keep_reference(state: dict[str, object]) -> None:
    """Record a clean run's end state as the reference, for this file and the others."""
    REFERENCE["state"] = state
    if (shared := _shared_reference()) is not None:
        partial = shared.with_suffix(f".{os.getpid()}.partial")
        partial.write_bytes(pickle.dumps(state))
        partial.replace(shared)


def reference_state(h: Harness) -> dict[str, object]:
    """The end state of a clean run of the sample day: the manual-run test's (in this process,
    or shared by another worker of this run), or one run here. Every harness runs the same code
    on the same sample day, so any of them gives the same state; the fault tests ask for it
    after their own run, by when the other file's manual run has usually recorded it."""
    if "state" not in REFERENCE:
        shared = _shared_reference()
        if shared is not None and shared.exists():
            REFERENCE["state"] = pickle.loads(shared.read_bytes())
        else:
            h.reset_results()
            deliver(h)
            assert run(h, "reference") == "success"
            keep_reference(contract_state(h))
            h.reset_results()
    return REFERENCE["state"]
