"""The whole earmark_daily DAG against a real Postgres results DB with the tiny models.

Runs ``airflow dags test`` in a subprocess (SQLite metadata, the results in Postgres), then the
same day again, then once more with reprocess, and checks the contract tables each time.
"""

from __future__ import annotations

import io
import json
import sqlite3
import tarfile
from datetime import date
from pathlib import Path

import pytest
from earmark.store.db import Store
from earmark_dev.localenv import LocalEnv

pytestmark = pytest.mark.integration
DAY = "2026-11-29"


def _add_bad_archive(incoming: Path) -> None:
    """One archive with a garbage .wav beside a good one, and one unsafe archive."""
    from earmark.ingest.incoming import sha256_file
    from earmark_dev.sampledata import generate_day

    scratch = incoming.parent / "scratch"
    good = generate_day(
        scratch, date.fromisoformat(DAY), archives=1, files_per_archive=1, minutes=0.2, seed=99
    )[0]
    with tarfile.open(good) as src:
        member = next(m for m in src.getmembers() if m.isfile())
        payload = src.extractfile(member).read()
    mixed = incoming / f"{DAY}-mixed.tar"
    with tarfile.open(mixed, "w") as tar:
        for name, data in ((member.name, payload), ("bad/garbage.wav", b"not audio" * 50)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    unsafe = incoming / f"{DAY}-unsafe.tar"
    with tarfile.open(unsafe, "w") as tar:
        info = tarfile.TarInfo("../escape.wav")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"RIFF"))
    for archive in (mixed, unsafe):
        Path(f"{archive}.sha256").write_text(f"{sha256_file(archive)}  {archive.name}\n")


def _assert_no_transcript_text_leaked(store: Store, env: LocalEnv, log_file: Path) -> None:
    """Transcripts live in the results DB only: not in logs, XCom or rendered map indexes."""
    texts = [t for t in store.rows("SELECT text FROM transcripts") if len(t.text.strip()) >= 12]
    assert texts, "the tiny ASR model produced no transcript long enough to look for"
    haystacks = {"dags test output": log_file.read_text(errors="replace")}
    for task_log in (env.airflow_home / "logs").rglob("*"):
        if task_log.is_file():
            haystacks[str(task_log)] = task_log.read_text(errors="replace")
    metadata = sqlite3.connect(env.airflow_home / "airflow.db")
    haystacks["xcom"] = " ".join(str(v) for (v,) in metadata.execute("SELECT value FROM xcom"))
    haystacks["map index labels"] = " ".join(
        str(v) for (v,) in metadata.execute("SELECT rendered_map_index FROM task_instance")
    )
    metadata.close()
    for row in texts:
        needle = row.text.strip()[:40]
        for where, text in haystacks.items():
            assert needle not in text, f"transcript text found in {where}"


def _snapshot(store: Store) -> dict[str, object]:
    def q(sql: str) -> object:
        return store.scalar(sql)

    return {
        "archives": q("SELECT count(*) FROM archives"),
        "files": q("SELECT count(*) FROM audio_files"),
        "transcripts": q("SELECT count(*) FROM transcripts"),
        "labels": q("SELECT count(*) FROM labels"),
        "review": q("SELECT count(*) FROM review_queue"),
        "statuses": dict(store.rows("SELECT status, count(*) FROM audio_files GROUP BY status")),
    }


def test_daily_dag_end_to_end_then_rerun(tmp_path, pg_url):
    from earmark_dev.demo import run_day
    from earmark_dev.sampledata import generate_day

    # Airflow maps at most 3 here: the day's 4 archives are unpacked by 2 tasks of 2.
    env = LocalEnv(tmp_path, results_db_url=pg_url, extra={"AIRFLOW__CORE__MAX_MAP_LENGTH": "3"})
    env.prepare()
    incoming = env.data_root / "incoming"
    generate_day(
        incoming, date.fromisoformat(DAY), archives=2, files_per_archive=3, minutes=0.5, seed=7
    )
    _add_bad_archive(incoming)

    log_file = tmp_path / "first-run.log"
    run_day(env, DAY, log_file=log_file)
    store = Store.from_url(pg_url)
    first = _snapshot(store)
    _assert_no_transcript_text_leaked(store, env, log_file)

    # Every archive and every file in a known, terminal state.
    archives = dict(store.rows("SELECT name, status FROM archives"))
    assert archives[f"{DAY}-unsafe.tar"] == "rejected"
    assert archives[f"{DAY}-mixed.tar"] == "unpacked"
    assert sum(s == "unpacked" for s in archives.values()) == 3
    assert set(first["statuses"]) <= {"classified", "quarantined"}
    assert first["statuses"]["quarantined"] == 1
    assert first["files"] == 2 * 3 + 2
    bad = store.rows("SELECT member_path, error FROM audio_files WHERE status = 'quarantined'")
    assert bad[0].member_path == "bad/garbage.wav" and bad[0].error
    unsafe_id = store.scalar("SELECT id FROM archives WHERE name = :n", n=f"{DAY}-unsafe.tar")
    assert (
        env.data_root / "quarantine" / DAY / f"archive-{unsafe_id}" / f"{DAY}-unsafe.tar"
    ).exists()
    assert not (env.data_root / "escape.wav").exists()
    assert not list(incoming.iterdir())
    metadata = sqlite3.connect(env.airflow_home / "airflow.db")
    labels = sorted(
        label
        for (label,) in metadata.execute(
            "SELECT rendered_map_index FROM task_instance WHERE task_id = 'unpack'"
        )
    )
    metadata.close()
    assert len(labels) == 2 and all(label.endswith(" +1 more") for label in labels), labels

    # One transcript per classified file; one label per (file, policy); a review item per flag.
    classified = first["statuses"]["classified"]
    policies = len(list((Path(__file__).parents[2] / "include" / "policies").glob("*.md")))
    assert first["transcripts"] == classified
    assert first["labels"] == classified * policies
    assert (
        store.scalar(
            "SELECT count(*) FROM (SELECT file_id, policy FROM labels"
            " GROUP BY file_id, policy HAVING count(*) > 1) d"
        )
        == 0
    )
    flagged = store.rows("SELECT file_id, policy FROM labels WHERE label = 1 ORDER BY 1, 2")
    queued = store.rows("SELECT file_id, policy FROM review_queue ORDER BY 1, 2")
    assert [tuple(r) for r in flagged] == [tuple(r) for r in queued]
    assert store.scalar("SELECT count(*) FROM labels WHERE score < 0 OR score > 1") == 0
    assert store.scalar("SELECT count(*) FROM work_units WHERE transcribe_wall_s IS NULL") == 0

    # The same day again, the same archives delivered again: nothing new.
    generate_day(
        incoming, date.fromisoformat(DAY), archives=2, files_per_archive=3, minutes=0.5, seed=7
    )
    run_day(env, DAY)
    assert _snapshot(store) == first
    assert len(list((env.data_root / "processed" / DAY).glob("duplicate-*/*.tar"))) == 2
    assert store.scalar("SELECT count(*) FROM deliveries WHERE status = 'duplicate'") == 2

    # Reprocess redoes the GPU work and still leaves one row each.
    before = store.scalar("SELECT max(created_at) FROM transcripts")
    run_day(env, DAY, reprocess=True)
    assert _snapshot(store) == first
    assert store.scalar("SELECT min(created_at) FROM transcripts") > before
    summary = json.dumps(_snapshot(store), default=str)
    assert "classified" in summary
    store.dispose()
