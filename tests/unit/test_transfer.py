"""earmark.ingest.transfer: settled archives reach incoming/ marker last, once, on both backends."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from earmark.config import Settings
from earmark.ingest import transfer, transfer_source

NOW = time.time()


@pytest.fixture
def dirs(tmp_path):
    source = tmp_path / "dropbox"
    source.mkdir()
    return source, tmp_path / "data"


def make_settings(source: Path, data_root: Path, settle: int = 120) -> Settings:
    return dataclasses.replace(
        Settings.from_env(),
        data_root=data_root,
        transfer_source=source.as_uri(),
        transfer_settle_seconds=settle,
    )


def put(
    source: Path, name: str, payload: bytes, age: float = 600, companion: str | None = None
) -> str:
    path = source / name
    path.write_bytes(payload)
    os.utime(path, (NOW - age, NOW - age))
    digest = hashlib.sha256(payload).hexdigest()
    if companion is not None:
        (source / f"{name}.sha256").write_text(
            f"{digest if companion == 'right' else companion}  {name}\n"
        )
    return digest


def run_all(settings: Settings, store, now: float = NOW) -> list[transfer.CopyResult]:
    return [
        transfer.copy_one(settings, store, i) for i in transfer.discover(settings, store, now=now)
    ]


def ledger(store) -> dict[str, tuple[str, str | None]]:
    return {
        r.name: (r.status, r.error) for r in store.rows("SELECT name, status, error FROM transfers")
    }


def test_copies_settled_archives_marker_last(store, dirs):
    source, data = dirs
    settings = make_settings(source, data)
    a = put(source, "a.tar", b"alpha" * 1000)
    b = put(source, "b.tar.gz", b"beta", age=0, companion="right")  # fresh but complete
    results = run_all(settings, store)
    assert {r.name: r.action for r in results} == {"a.tar": "copied", "b.tar.gz": "copied"}
    for name, digest in (("a.tar", a), ("b.tar.gz", b)):
        archive, marker = data / "incoming" / name, data / "incoming" / f"{name}.sha256"
        assert hashlib.sha256(archive.read_bytes()).hexdigest() == digest
        assert marker.read_text() == f"{digest}  {name}\n"
        assert marker.stat().st_mtime_ns >= archive.stat().st_mtime_ns
    assert sorted(p.name for p in (data / "incoming").iterdir()) == [
        "a.tar",
        "a.tar.sha256",
        "b.tar.gz",
        "b.tar.gz.sha256",
    ]  # no partials left
    rows = store.rows("SELECT name, sha256, status, copied_at FROM transfers ORDER BY name")
    assert [(r.name, r.sha256, r.status) for r in rows] == [
        ("a.tar", a, "copied"),
        ("b.tar.gz", b, "copied"),
    ]
    assert all(r.copied_at is not None for r in rows)


def test_unsettled_archive_without_companion_waits(store, dirs):
    source, data = dirs
    settings = make_settings(source, data, settle=120)
    put(source, "uploading.tar", b"half", age=5)
    assert transfer.discover(settings, store, now=NOW) == []
    assert not (data / "incoming" / "uploading.tar").exists()
    assert ledger(store) == {}
    # Once it has stayed unchanged for the settle time it is taken.
    assert [r.action for r in run_all(settings, store, now=NOW + 120)] == ["copied"]
    assert (data / "incoming" / "uploading.tar.sha256").exists()


def test_companion_mismatch_fails_with_reason(store, dirs):
    source, data = dirs
    settings = make_settings(source, data)
    put(source, "bad.tar", b"payload", companion="0" * 64)
    put(source, "junk.tar", b"payload2", companion="not-a-digest")
    results = run_all(settings, store)
    assert {r.action for r in results} == {"failed"}
    rows = ledger(store)
    assert rows["bad.tar"][0] == "failed" and rows["bad.tar"][1].startswith("checksum_mismatch")
    assert rows["junk.tar"][0] == "failed" and rows["junk.tar"][1].startswith("bad_companion")
    assert list((data / "incoming").iterdir()) == []
    # A failed row is not retried while the source file stays the same.
    assert transfer.discover(settings, store, now=NOW) == []


def test_failed_row_retried_after_reupload(store, dirs):
    source, data = dirs
    settings = make_settings(source, data)
    put(source, "fix.tar", b"payload", companion="0" * 64)
    run_all(settings, store)
    put(source, "fix.tar", b"payload, fixed", age=300, companion="right")
    assert [r.action for r in run_all(settings, store)] == ["copied"]
    assert ledger(store) == {"fix.tar": ("copied", None)}


def test_rerun_copies_nothing_even_after_archive_moved_on(store, dirs):
    source, data = dirs
    settings = make_settings(source, data)
    put(source, "a.tar", b"alpha")
    ids = transfer.discover(settings, store, now=NOW)
    assert [transfer.copy_one(settings, store, i).action for i in ids] == ["copied"]
    # The daily DAG takes it: incoming/ is empty again.
    processed = data / "processed" / "2026-11-29"
    processed.mkdir(parents=True)
    for path in (data / "incoming").iterdir():
        path.replace(processed / path.name)
    assert run_all(settings, store) == []
    # A redelivered copy task for the same id is a no-op too.
    assert transfer.copy_one(settings, store, ids[0]).action == "already_done"
    assert list((data / "incoming").iterdir()) == []
    assert store.scalar("SELECT count(*) FROM transfers") == 1


def test_crash_between_rename_and_marker_recovers(store, dirs):
    source, data = dirs
    settings = make_settings(source, data)
    digest = put(source, "a.tar", b"alpha" * 100)
    [transfer_id] = transfer.discover(settings, store, now=NOW)
    incoming = data / "incoming"
    incoming.mkdir(parents=True)
    # First attempt: streamed and renamed, then the worker died before the marker.
    partial = incoming / ".a.tar.partial"
    assert transfer_source.stream_to_partial((source / "a.tar").as_uri(), partial)[0] == digest
    partial.replace(incoming / "a.tar")
    assert not (incoming / "a.tar.sha256").exists()
    # The retry ends in the state of a clean run.
    assert transfer.copy_one(settings, store, transfer_id).action == "copied"
    assert (incoming / "a.tar.sha256").read_text() == f"{digest}  a.tar\n"
    assert sorted(p.name for p in incoming.iterdir()) == ["a.tar", "a.tar.sha256"]
    assert ledger(store) == {"a.tar": ("copied", None)}


def test_crash_after_marker_before_ledger_is_not_recopied(store, dirs):
    source, data = dirs
    settings = make_settings(source, data)
    digest = put(source, "a.tar", b"alpha")
    [transfer_id] = transfer.discover(settings, store, now=NOW)
    incoming = data / "incoming"
    incoming.mkdir(parents=True)
    # An attempt recorded the digest, published archive and marker, then died.
    with store.begin() as conn:
        conn.execute(
            sa.text("UPDATE transfers SET sha256 = :s WHERE id = :id"),
            {"s": digest, "id": transfer_id},
        )
    partial = incoming / ".a.tar.partial"
    transfer_source.stream_to_partial((source / "a.tar").as_uri(), partial)
    transfer.publish(incoming, partial, "a.tar", digest)
    # The daily DAG already took it away; the retry must not deliver it again.
    processed = data / "processed"
    processed.mkdir()
    for path in incoming.iterdir():
        path.replace(processed / path.name)
    with store.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO archives (name, sha256, run_date, path) VALUES ('a.tar', :s,"
                " '2026-11-29', 'x')"
            ),
            {"s": digest},
        )
    assert transfer.copy_one(settings, store, transfer_id).action == "recovered"
    assert list(incoming.iterdir()) == []
    assert ledger(store) == {"a.tar": ("copied", None)}


def test_every_source_archive_in_the_ledger(store, dirs):
    source, data = dirs
    settings = make_settings(source, data)
    names = [f"day-{i}.tar" for i in range(5)]
    for name in names:
        put(source, name, name.encode())
    put(source, "wrong.tar", b"x", companion="1" * 64)
    (source / "README.txt").write_text("not an archive")
    run_all(settings, store)
    rows = ledger(store)
    assert set(rows) == {*names, "wrong.tar"}
    assert {n: s for n, (s, _) in rows.items()} == {
        **dict.fromkeys(names, "copied"),
        "wrong.tar": "failed",
    }
    assert transfer.ledger_counts(store) == {"copied": 5, "failed": 1}


def test_vanished_source_file_fails(store, dirs):
    source, data = dirs
    settings = make_settings(source, data)
    put(source, "gone.tar", b"x")
    assert len(transfer.discover(settings, store, now=NOW)) == 1
    (source / "gone.tar").unlink()
    assert transfer.discover(settings, store, now=NOW) == []
    assert ledger(store)["gone.tar"][0] == "failed"


def test_occupied_incoming_name_raises_for_retry(store, dirs):
    source, data = dirs
    settings = make_settings(source, data)
    put(source, "a.tar", b"new bytes")
    incoming = data / "incoming"
    incoming.mkdir(parents=True)
    (incoming / "a.tar").write_bytes(b"older delivery")
    (incoming / "a.tar.sha256").write_text(f"{'2' * 64}  a.tar\n")
    [transfer_id] = transfer.discover(settings, store, now=NOW)
    with pytest.raises(FileExistsError):
        transfer.copy_one(settings, store, transfer_id)
    assert (incoming / "a.tar").read_bytes() == b"older delivery"
    assert ledger(store) == {"a.tar": ("pending", None)}


def test_source_unreachable_raises(store, tmp_path):
    settings = make_settings(tmp_path / "missing", tmp_path / "data")
    with pytest.raises(
        transfer_source.TransferSourceError, match="cannot list the transfer source"
    ):
        transfer.discover(settings, store, now=NOW)
    assert transfer.ledger_counts(store) == {}


def test_empty_source_does_nothing(store, tmp_path, caplog):
    settings = dataclasses.replace(Settings.from_env(), data_root=tmp_path, transfer_source="")
    with caplog.at_level("INFO", logger="earmark.ingest.transfer"):
        assert transfer.discover(settings, store) == []
    assert "EARMARK_TRANSFER_SOURCE is empty" in caplog.text


def test_a_failure_of_our_own_disk_is_not_blamed_on_the_source(store, dirs):
    """The partial file cannot be written (here: a folder in its place): the error propagates
    for Airflow's retry and the row stays pending, not failed as if the source were at fault."""
    source, data_root = dirs
    settings = make_settings(source, data_root)
    put(source, "day.tar", b"x" * 1000)
    [transfer_id] = transfer.discover(settings, store, now=NOW)
    (settings.incoming / ".day.tar.partial").mkdir(parents=True)
    with pytest.raises(IsADirectoryError):
        transfer.copy_one(settings, store, transfer_id)
    assert transfer.ledger_counts(store) == {"pending": 1}
