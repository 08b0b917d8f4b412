"""Deliveries as they really arrive: odd entries in incoming/, marker typos, names that collide,
interrupted attempts. Each delivery ends in one recorded state, and the good archives of the same
day are screened (with the tiny real models) whatever else arrived beside them."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
from delivery_kit import (
    deliver,
    plan_test_units,
    run_bounded,
    sha256,
    tar_bytes,
    wav,
    write_then_rename,
)
from earmark.gpu.classify import classify_unit
from earmark.gpu.transcribe import transcribe_unit
from earmark.ingest import deliveries, unpack
from earmark.ingest.deliveries import register_archives
from earmark.ingest.incoming import sha256_file
from earmark.ingest.unpack import unpack_archive

DAY = "2026-11-29"


@pytest.fixture
def settings(tmp_path, tiny_settings):
    s = replace(tiny_settings, data_root=tmp_path / "data")
    s.ensure_layout()
    return s


def _screen(settings, store, models, run_id: str) -> None:
    """What the DAG does after registration: unpack, plan, transcribe, classify."""
    for archive_id in store.rows("SELECT id FROM archives WHERE status = 'registered'"):
        unpack_archive(settings, store, archive_id.id)
    transcriber, classifier = models["transcriber"], models["classifier"]
    for unit_id in plan_test_units(store, run_id, DAY):
        transcribe_unit(settings, store, unit_id, transcriber=transcriber)
        classify_unit(settings, store, unit_id, classifier=classifier)


def _deliveries(store) -> dict[str, tuple[str, str | None]]:
    return {
        r.name: (r.status, r.reason.split(":")[0] if r.reason else None)
        for r in store.rows("SELECT name, status, reason FROM deliveries")
    }


def _marker_for(incoming: Path, name: str, data: bytes) -> None:
    write_then_rename(incoming / f"{name}.sha256", f"{sha256(data)}  {name}\n".encode())


def test_odd_entries_are_recorded_while_the_day_is_screened(settings, store, models, tmp_path):
    incoming = settings.incoming
    good = tar_bytes({"a.wav": wav(0.5), "b.wav": wav(0.4, 330.0)})
    deliver(incoming, "good.tar", good)
    # Links with correct markers, to a file inside the data root and to one outside it:
    # following either would screen bytes nobody delivered.
    inside, outside = settings.data_root / "elsewhere" / "in.tar", tmp_path / "outside.tar"
    inside.parent.mkdir()
    for target, freq in ((inside, 440.0), (outside, 550.0)):
        target.write_bytes(tar_bytes({"x.wav": wav(0.3, freq)}))
    (incoming / "inside-link.tar").symlink_to(inside)
    _marker_for(incoming, "inside-link.tar", inside.read_bytes())
    (incoming / "outside-link.tar").symlink_to(outside)
    _marker_for(incoming, "outside-link.tar", outside.read_bytes())
    os.mkfifo(incoming / "pipe.tar")  # opened for reading, it would block for ever
    _marker_for(incoming, "pipe.tar", b"")
    (incoming / "folder.tar").mkdir()
    _marker_for(incoming, "folder.tar", b"")
    locked = tar_bytes({"l.wav": wav(0.3, 660.0)})
    deliver(incoming, "locked.tar", locked)
    (incoming / "locked.tar").chmod(0)
    deliver(incoming, "linked-marker.tar", good + b"", marker=None)
    (tmp_path / "real.sha256").write_text(sha256(good))
    (incoming / "linked-marker.tar.sha256").symlink_to(tmp_path / "real.sha256")
    os.mkfifo(incoming / "bare-pipe")
    (incoming / "bare-dir").mkdir()
    (incoming / "bare-link").symlink_to("/etc/hostname")
    (incoming / "still-arriving.tar").write_bytes(b"\0" * 512)  # no marker yet: not touched

    ids = run_bounded(lambda: register_archives(settings, store, DAY), seconds=60)

    odd = ("not_a_regular_file", None)
    assert _deliveries(store) == {
        "good.tar": ("registered", None),
        "inside-link.tar": ("rejected", odd[0]),
        "outside-link.tar": ("rejected", odd[0]),
        "pipe.tar": ("rejected", odd[0]),
        "folder.tar": ("rejected", odd[0]),
        "locked.tar": ("rejected", "unreadable"),
        "linked-marker.tar": ("rejected", odd[0]),
        "bare-pipe": ("rejected", odd[0]),
        "bare-dir": ("rejected", odd[0]),
        "bare-link": ("rejected", odd[0]),
    }
    reasons = {r.name: r.reason for r in store.rows("SELECT name, reason FROM deliveries")}
    assert "a symbolic link" in reasons["outside-link.tar"]
    assert "a FIFO" in reasons["pipe.tar"] and "a directory" in reasons["folder.tar"]
    assert "marker" in reasons["linked-marker.tar"]
    assert [p.name for p in incoming.iterdir()] == ["still-arriving.tar"]
    # Only the registered archive waits in claimed/, for its unpack.
    assert [p.name for p in settings.claimed.iterdir()] == [
        store.scalar("SELECT token FROM deliveries WHERE status = 'registered'")
    ]
    for row in store.rows("SELECT id, status, path FROM deliveries WHERE status = 'rejected'"):
        assert Path(row.path) == settings.quarantine / DAY / f"delivery-{row.id}"
        assert os.path.lexists(row.path)
        assert (settings.quarantine / DAY / f"delivery-{row.id}.reason.json").is_file()
    # The links were moved, never followed: their targets are where they were, unregistered.
    assert inside.is_file() and outside.is_file()
    # Its digest is known once the unpack has read it: the marker's, until then.
    assert [tuple(r) for r in store.rows("SELECT sha256 FROM archives")] == [(None,)]
    assert store.scalar(
        "SELECT declared_sha256 FROM deliveries WHERE status = 'registered'"
    ) == sha256(good)

    _screen(settings, store, models, "run-1")
    assert [r.sha256 for r in store.rows("SELECT sha256 FROM archives")] == [sha256(good)]
    assert len(ids) == 1
    files = store.rows("SELECT status, path FROM audio_files")
    assert sorted(r.status for r in files) == ["classified", "classified"]
    assert all(
        Path(r.path).is_relative_to(settings.audio / DAY / f"archive-{ids[0]}") for r in files
    )
    assert not list(settings.claimed.iterdir())


def test_marker_typo_then_corrected_delivery_is_screened(settings, store, models):
    data = tar_bytes({"talk.wav": wav(0.6)})
    deliver(settings.incoming, "day.tar", data, marker="typo")
    [typo_id] = register_archives(settings, store, DAY)  # judged on its bytes by the unpack
    assert unpack_archive(settings, store, typo_id).status == "rejected"
    deliver(settings.incoming, "day.tar", data, marker="junk")
    assert register_archives(settings, store, DAY) == []
    assert store.scalar("SELECT count(*) FROM archives") == 0  # the bytes are not barred

    deliver(settings.incoming, "day.tar", data)  # the producer corrects the marker
    [archive_id] = register_archives(settings, store, DAY)
    _screen(settings, store, models, "run-1")
    assert store.scalar("SELECT status FROM audio_files") == "classified"
    assert store.scalar("SELECT sha256 FROM archives WHERE id = :i", i=archive_id) == sha256(data)
    assert [
        tuple(r)
        for r in store.rows(
            "SELECT status, substr(coalesce(reason, ''), 1, 17) FROM deliveries ORDER BY id"
        )
    ] == [("rejected", "checksum_mismatch"), ("rejected", "bad_marker: the m"), ("registered", "")]


def test_content_rejection_bars_the_bytes_and_says_so(settings, store):
    evil = tar_bytes({"../escape.wav": wav()})
    deliver(settings.incoming, "evil.tar", evil)
    [archive_id] = register_archives(settings, store, DAY)
    assert unpack_archive(settings, store, archive_id).status == "rejected"
    deliver(settings.incoming, "evil-again.tar", evil)
    assert register_archives(settings, store, DAY) == []
    reason = store.scalar("SELECT reason FROM deliveries WHERE name = 'evil-again.tar'")
    assert reason.startswith(
        f"same bytes as archive #{archive_id} (rejected), rejected for its content: path_traversal"
    )


def test_colliding_names_never_touch_screened_recordings(settings, store, models):
    first = tar_bytes({"rec/one.wav": wav(0.5), "rec/two.wav": wav(0.5, 300.0)})
    deliver(settings.incoming, "a.tar", first)
    register_archives(settings, store, DAY)
    _screen(settings, store, models, "run-1")
    screened = {
        r.id: (r.path, r.sha256)
        for r in store.rows("SELECT id, path, sha256 FROM audio_files WHERE status = 'classified'")
    }
    assert len(screened) == 2

    # Same name with new bytes, the same stem compressed, a case variant, empty and dot stems,
    # and a name holding a right-to-left override.
    deliveries = {
        "a.tar": tar_bytes({"rec/one.wav": wav(0.5, 700.0)}),
        "a.tar.gz": tar_bytes({"rec/one.wav": wav(0.5, 710.0)}, gz=True),
        "A.tar": tar_bytes({"rec/two.wav": wav(0.5, 720.0)}),
        ".tar": tar_bytes({"x.wav": wav(0.5, 730.0)}),
        "..tar": tar_bytes({"x.wav": wav(0.5, 740.0)}),
        "a\u202e.tar": tar_bytes({"x.wav": wav(0.5, 750.0)}),
    }
    for name, data in deliveries.items():
        deliver(settings.incoming, name, data)
    ids = register_archives(settings, store, DAY)
    for archive_id in ids:
        assert unpack_archive(settings, store, archive_id).status == "unpacked"
    _screen(settings, store, models, "run-2")

    for file_id, (path, digest) in screened.items():
        assert store.rows("SELECT status, path, sha256 FROM audio_files WHERE id = :i", i=file_id)[
            0
        ] == ("classified", path, digest)
        assert sha256_file(Path(path)) == digest
    states = _deliveries(store)
    assert states.pop(".tar") == ("rejected", "invalid_name")
    assert states.pop("..tar") == ("rejected", "invalid_name")
    assert states.pop("a\\u202e.tar") == ("rejected", "invalid_name")  # stored escaped
    assert set(states.values()) == {("registered", None)}
    assert store.scalar("SELECT count(*) FROM deliveries WHERE status = 'registered'") == 1 + 3
    assert store.scalar("SELECT count(*) FROM audio_files WHERE status = 'classified'") == 5
    assert not list(settings.incoming.iterdir()) and not list(settings.claimed.iterdir())


def test_one_failing_delivery_does_not_stop_the_others_and_resumes(settings, store, monkeypatch):
    for i in range(3):
        deliver(settings.incoming, f"d{i}.tar", tar_bytes({"x.wav": wav(0.3, 200.0 + i)}))
    real = deliveries._record
    calls = {"n": 0}

    def cut_once(store_, folder, verdict, run_date):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ConnectionError("connection to the results DB lost")
        return real(store_, folder, verdict, run_date)

    monkeypatch.setattr(deliveries, "_record", cut_once)
    with pytest.raises(ConnectionError):
        register_archives(settings, store, DAY)
    assert store.scalar("SELECT count(*) FROM deliveries") == 2
    assert not list(settings.incoming.iterdir())  # the third is claimed, not lost
    assert len(register_archives(settings, store, DAY)) == 3
    assert store.scalar("SELECT count(*) FROM deliveries") == 3


def test_interrupted_unpack_is_redone_from_its_own_home_only(settings, store, monkeypatch):
    deliver(settings.incoming, "one.tar", tar_bytes({"x.wav": wav(0.3), "bad.wav": b"junk"}))
    deliver(settings.incoming, "two.tar", tar_bytes({"y.wav": wav(0.3, 400.0)}))
    one, two = register_archives(settings, store, DAY)
    unpack_archive(settings, store, two)
    two_files = {
        Path(r.path): sha256_file(Path(r.path))
        for r in store.rows("SELECT path FROM audio_files WHERE archive_id = :a", a=two)
    }

    def killed(*_args, **_kwargs):
        raise OSError("killed before registering the files")

    monkeypatch.setattr(unpack, "register_files", killed)
    with pytest.raises(OSError, match="killed"):
        unpack_archive(settings, store, one)
    assert (settings.audio / DAY / f"archive-{one}" / "x.wav").exists()  # left by the attempt
    monkeypatch.undo()
    summary = unpack_archive(settings, store, one)
    assert (summary.ready, summary.quarantined) == (1, 1)
    assert {
        Path(r.path): sha256_file(Path(r.path))
        for r in store.rows("SELECT path FROM audio_files WHERE archive_id = :a", a=two)
    } == two_files
    for row in store.rows("SELECT path FROM audio_files"):
        assert Path(row.path).is_file()
    assert not list(settings.data_root.rglob(".tmp-*"))


def test_sha256sum_output_is_a_valid_marker_even_when_it_escapes_the_name(
    settings, store, tmp_path
):
    import subprocess

    name = "odd\\name.tar"  # sha256sum escapes the backslash and starts the line with one
    data = tar_bytes({"x.wav": wav(0.3)})
    (tmp_path / name).write_bytes(data)
    line = subprocess.run(
        ["sha256sum", name], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    assert line.startswith("\\")
    write_then_rename(settings.incoming / name, data)
    write_then_rename(settings.incoming / f"{name}.sha256", line.encode())
    assert len(register_archives(settings, store, DAY)) == 1
