"""Archive intake against a real results store (SQLite and Postgres): every archive and every
file ends in a state that can be queried, with a reason when it is not processed."""

from __future__ import annotations

import io
import tarfile
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
from delivery_kit import deliver, sha256, tar_bytes, wav, write_then_rename
from earmark.config import Settings
from earmark.ingest.deliveries import register_archives
from earmark.ingest.destination import InsufficientDisk
from earmark.ingest.homes import audio_home
from earmark.ingest.incoming import sha256_file
from earmark.ingest.unpack import unpack_archive
from earmark_dev.sampledata import generate_day

DAY = "2026-11-29"


@pytest.fixture
def settings(tmp_path) -> Settings:
    s = replace(Settings.from_env(), data_root=tmp_path / "data")
    s.ensure_layout()
    return s


def _write_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    Path(f"{path}.sha256").write_text(sha256_file(path) + "\n")
    return path


def _files(store, **where):
    return store.rows("SELECT member_path, status, error FROM audio_files ORDER BY member_path")


def test_sample_day_registers_and_unpacks(settings, store):
    generate_day(
        settings.incoming,
        date.fromisoformat(DAY),
        archives=2,
        files_per_archive=3,
        minutes=0.5,
        seed=1,
    )
    ids = register_archives(settings, store, DAY)
    assert len(ids) == 2
    for archive_id in ids:
        summary = unpack_archive(settings, store, archive_id, workers=2)
        assert summary.status == "unpacked" and summary.ready == 3 and summary.quarantined == 0
    assert store.scalar("SELECT count(*) FROM audio_files WHERE status = 'ready'") == 6
    assert not list(settings.incoming.iterdir())
    assert not list(settings.claimed.iterdir())
    assert sorted(p.name for p in (settings.processed / DAY).iterdir()) == [
        f"archive-{i}" for i in sorted(ids)
    ]
    for archive_id in ids:
        assert len(list((settings.processed / DAY / f"archive-{archive_id}").iterdir())) == 2
    for row in store.rows("SELECT archive_id, path FROM audio_files"):
        assert Path(row.path).is_file()
        assert Path(row.path).is_relative_to(settings.audio / DAY / f"archive-{row.archive_id}")


def test_unpack_is_idempotent(settings, store):
    generate_day(
        settings.incoming,
        date.fromisoformat(DAY),
        archives=1,
        files_per_archive=2,
        minutes=0.2,
        seed=2,
    )
    [archive_id] = register_archives(settings, store, DAY)
    first = unpack_archive(settings, store, archive_id)
    again = unpack_archive(settings, store, archive_id)
    assert first == again
    assert store.scalar("SELECT count(*) FROM audio_files") == 2


def test_same_bytes_delivered_again_is_a_no_op(settings, store):
    day = date.fromisoformat(DAY)
    generate_day(settings.incoming, day, archives=1, files_per_archive=2, minutes=0.2, seed=3)
    [archive_id] = register_archives(settings, store, DAY)
    unpack_archive(settings, store, archive_id)
    # The same bytes under another name: recognised by sha256, whatever the name.
    [archive] = generate_day(
        settings.incoming, day, archives=1, files_per_archive=2, minutes=0.2, seed=3
    )
    renamed = archive.with_name("renamed.tar")
    archive.rename(renamed)
    Path(f"{archive}.sha256").rename(f"{renamed}.sha256")
    assert register_archives(settings, store, DAY) == []
    assert store.scalar("SELECT count(*) FROM archives") == 1
    duplicate = store.rows("SELECT id, reason FROM deliveries WHERE status = 'duplicate'")[0]
    assert duplicate.reason == f"same bytes as archive #{archive_id} (unpacked)"
    assert (settings.processed / DAY / f"duplicate-{duplicate.id}" / "renamed.tar").exists()
    assert not list(settings.incoming.iterdir())


def test_archive_without_marker_is_not_touched(settings, store):
    partial = settings.incoming / "uploading.tar"
    partial.write_bytes(b"\0" * 1024)
    assert register_archives(settings, store, DAY) == []
    assert partial.exists()
    assert store.scalar("SELECT count(*) FROM archives") == 0


def test_checksum_mismatch_is_rejected_with_reason(settings, store):
    archive = _write_tar(settings.incoming / "cut.tar", {"a.wav": b"x" * 2048})
    Path(f"{archive}.sha256").write_text("0" * 64 + "\n")
    [archive_id] = register_archives(settings, store, DAY)  # the bytes are read by the unpack
    assert unpack_archive(settings, store, archive_id).status == "rejected"
    assert store.scalar("SELECT count(*) FROM archives") == 0  # the bytes are not barred
    assert not audio_home(settings, DAY, archive_id).exists()
    row = store.rows("SELECT id, status, reason, path, sha256 FROM deliveries")[0]
    assert row.status == "rejected" and row.reason.startswith("checksum_mismatch")
    assert row.sha256 == sha256_file(Path(row.path) / "cut.tar")
    assert Path(row.path) == settings.quarantine / DAY / f"delivery-{row.id}"
    assert sorted(p.name for p in Path(row.path).iterdir()) == ["cut.tar", "cut.tar.sha256"]
    assert (settings.quarantine / DAY / f"delivery-{row.id}.reason.json").exists()


def test_unsafe_archive_rejected_nothing_written(settings, store):
    _write_tar(settings.incoming / "evil.tar", {"../../escape.wav": b"RIFF" * 10})
    [archive_id] = register_archives(settings, store, DAY)
    summary = unpack_archive(settings, store, archive_id)
    assert summary.status == "rejected"
    assert store.scalar("SELECT error FROM archives").startswith("path_traversal")
    assert not (settings.data_root / "escape.wav").exists()
    assert not (settings.data_root.parent / "escape.wav").exists()
    assert not [p for p in settings.audio.rglob("*") if not p.is_dir()]
    assert (settings.quarantine / DAY / f"archive-{archive_id}" / "evil.tar").exists()


def test_bad_file_quarantined_rest_of_archive_goes_on(settings, store):
    [good] = generate_day(
        settings.data_root / "scratch",
        date.fromisoformat(DAY),
        archives=1,
        files_per_archive=1,
        minutes=0.1,
        seed=4,
    )
    with tarfile.open(good) as tar:
        member = next(m for m in tar.getmembers() if m.isfile())
        payload = tar.extractfile(member).read()
    _write_tar(
        settings.incoming / "mixed.tar",
        {member.name: payload, "empty.wav": b"", "notes.txt": b"hello"},
    )
    [archive_id] = register_archives(settings, store, DAY)
    summary = unpack_archive(settings, store, archive_id)
    assert (summary.ready, summary.quarantined) == (1, 2)
    rows = {r.member_path: r for r in _files(store)}
    assert rows["empty.wav"].status == "quarantined"
    assert rows["empty.wav"].error.split(":")[0] in {"unreadable", "too_short"}
    assert rows["notes.txt"].error.startswith("unsupported_extension")
    assert rows[member.name].status == "ready"
    assert (settings.quarantine / DAY / f"archive-{archive_id}" / "files" / "empty.wav").exists()


def test_disk_full_raises_and_leaves_archive_for_retry(settings, store, monkeypatch):
    generate_day(
        settings.incoming,
        date.fromisoformat(DAY),
        archives=1,
        files_per_archive=1,
        minutes=0.1,
        seed=5,
    )
    [archive_id] = register_archives(settings, store, DAY)
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1024))
    with pytest.raises(InsufficientDisk):
        unpack_archive(settings, store, archive_id)
    assert store.scalar("SELECT status FROM archives") == "registered"
    assert Path(store.scalar("SELECT path FROM archives")).is_file()  # kept, in claimed/
    assert not (settings.audio / DAY / f"archive-{archive_id}").exists()
    monkeypatch.setattr(shutil, "disk_usage", real)
    assert unpack_archive(settings, store, archive_id).status == "unpacked"


def test_retention_prunes_old_processed_days_only(settings):
    from earmark.ingest.retention import prune_processed

    for day in ("2026-10-01", "2026-11-20", "not-a-date"):
        (settings.processed / day).mkdir(parents=True)
        (settings.processed / day / "x.tar").write_bytes(b"x")
    removed = prune_processed(
        replace(settings, processed_retention_days=30), today=date(2026, 11, 30)
    )
    assert removed == [settings.processed / "2026-10-01"]
    assert (settings.processed / "2026-11-20" / "x.tar").exists()
    assert (settings.processed / "not-a-date" / "x.tar").exists()


def test_archives_are_grouped_only_past_the_task_limit():
    from earmark.ingest.unpack import unpack_groups

    ids = list(range(1, 11))
    assert unpack_groups(ids, 256) == [[k] for k in ids]
    assert unpack_groups(ids, 4) == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10]]
    assert unpack_groups(ids, 1) == [ids]
    assert unpack_groups([], 4) == []
    big = list(range(5000))
    groups = unpack_groups(big, 1024)
    assert len(groups) <= 1024 and [a for g in groups for a in g] == big
    with pytest.raises(ValueError, match="at least 1"):
        unpack_groups(ids, 0)


def test_equal_bytes_in_one_delivery_round_are_judged_by_their_unpacks(settings, store):
    """Both are registered unread; the unpack that records the digest first keeps the archive,
    the other's delivery becomes its duplicate and its extraction goes."""
    data = tar_bytes({"a.wav": wav(0.3)})
    deliver(settings.incoming, "first.tar", data)
    deliver(settings.incoming, "second.tar", data)
    first_id, second_id = register_archives(settings, store, DAY)
    assert unpack_archive(settings, store, second_id).status == "unpacked"
    assert unpack_archive(settings, store, first_id).status == "duplicate"
    assert [tuple(r) for r in store.rows("SELECT id, sha256 FROM archives")] == [
        (second_id, sha256(data))
    ]
    rows = store.rows("SELECT name, status, archive_id, reason, path FROM deliveries ORDER BY id")
    assert [(r.name, r.status, r.archive_id) for r in rows] == [
        ("first.tar", "duplicate", second_id),
        ("second.tar", "registered", second_id),
    ]
    assert rows[0].reason == f"same bytes as archive #{second_id} (unpacked)"
    assert (
        Path(rows[0].path)
        == settings.processed / DAY / f"duplicate-{_delivery_id(store, 'first.tar')}"
    )
    assert not audio_home(settings, DAY, first_id).exists()
    assert store.scalar("SELECT count(*) FROM audio_files") == 1
    assert not list(settings.claimed.iterdir())
    # A task retry for the archive that went finds nothing to do.
    assert unpack_archive(settings, store, first_id).status == "superseded"


def test_a_marker_naming_known_bytes_is_checked_at_registration(settings, store):
    """Such a delivery is never unpacked, so registration reads it: equal bytes are a duplicate,
    others (a copy cut in transit) a checksum mismatch."""
    data = tar_bytes({"a.wav": wav(0.3)})
    deliver(settings.incoming, "day.tar", data)
    [archive_id] = register_archives(settings, store, DAY)
    unpack_archive(settings, store, archive_id)
    deliver(settings.incoming, "again.tar", data)
    write_then_rename(settings.incoming / "cut.tar", data[:-1024])
    (settings.incoming / "cut.tar.sha256").write_text(f"{sha256(data)}  cut.tar\n")
    assert register_archives(settings, store, DAY) == []
    verdicts = {
        r.name: (r.status, r.archive_id, (r.reason or "").split(":")[0], r.sha256)
        for r in store.rows("SELECT name, status, archive_id, reason, sha256 FROM deliveries")
    }
    assert verdicts["again.tar"] == (
        "duplicate",
        archive_id,
        f"same bytes as archive #{archive_id} (unpacked)",
        sha256(data),
    )
    assert verdicts["cut.tar"] == ("rejected", None, "checksum_mismatch", sha256(data[:-1024]))


def _delivery_id(store, name: str) -> int:
    return store.scalar("SELECT id FROM deliveries WHERE name = :n", n=name)
