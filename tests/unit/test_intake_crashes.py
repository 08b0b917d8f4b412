"""Intake stopped dead at every step boundary, then the day run again, on SQLite and Postgres.

A child process runs the day (register, unpack every archive) and exits with ``os._exit`` right
after the k-th step that changed the disk or the DB (``intake.step_done``), for every k; the
test then runs the day again in its own process and checks that the end state is the one a run
that was never interrupted reaches: every delivery with exactly one verdict, no delivered byte
lost, nothing left in ``claimed/`` or half-extracted under ``audio/``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa
from delivery_kit import deliver, tar_bytes, wav, write_then_rename
from earmark.config import Settings
from earmark.ingest import deliveries, intake, unpack
from earmark.store.db import Store

DAY = "2026-11-29"
CRASHED = 77
GOOD = tar_bytes({"rec/one.wav": wav(0.2, 300.0), "rec/bad.wav": b"not audio"})
UNSAFE = tar_bytes({"../escape.wav": wav(0.2, 500.0)})


def _deliveries(settings: Settings, outside: Path) -> dict[str, bytes]:
    """A good archive (one member quarantined), the same bytes under another name, an archive
    refused for its content, one with a wrong marker, a symbolic link to a file outside the
    data root, and a marker of a marker; what was delivered, by name."""
    incoming = settings.incoming
    deliver(incoming, "a.tar", GOOD)
    deliver(incoming, "b.tar", GOOD)
    deliver(incoming, "d.tar", UNSAFE)
    deliver(incoming, "e.tar", tar_bytes({"x.wav": wav(0.2)}), marker="typo")
    (incoming / "f.tar").symlink_to(outside)
    write_then_rename(incoming / "g.tar.sha256.sha256", b"0" * 64 + b"\n")
    return {
        name: (incoming / name).read_bytes()
        for name in sorted(p.name for p in incoming.iterdir())
        if not (incoming / name).is_symlink()
    }


def _run_day(settings: Settings, store: Store) -> None:
    for archive_id in deliveries.register_archives(settings, store, DAY):
        unpack.unpack_archive(settings, store, archive_id, workers=1)


def _outcome(store: Store) -> list[tuple]:
    """Per delivered name: its verdict, its archive's status and the reason's code. a.tar and
    b.tar hold equal bytes: whichever was claimed first is the archive, the other its duplicate
    (an interrupted claim may change the order), so those two are compared without names."""
    rows = store.rows(
        "SELECT d.name, d.status, a.status AS archive, d.reason, a.error FROM deliveries d"
        " LEFT JOIN archives a ON a.id = d.archive_id"
    )
    return sorted(
        (
            "a|b" if r.name in ("a.tar", "b.tar") else r.name,
            r.status,
            r.archive,
            (r.reason or "").split(":")[0] if r.status == "rejected" else "",
            (r.error or "").split(":")[0],
        )
        for r in rows
    )


def _check_settled(settings: Settings, store: Store, sent: dict[str, bytes], outside: Path):
    root = settings.data_root
    assert not list(settings.claimed.iterdir()), "claimed/ holds what no verdict explains"
    assert store.scalar("SELECT count(*) FROM archives WHERE status = 'registered'") == 0
    # No delivered byte lost: each delivered file's bytes are kept somewhere under the root.
    kept: set[str] = set()
    for path in root.rglob("*"):
        info = path.lstat()
        assert not path.is_symlink(), f"{path} is a link under the data root"
        assert not path.is_file() or info.st_nlink == 1, f"{path} has {info.st_nlink} links"
        if path.is_file():
            kept.add(hashlib.sha256(path.read_bytes()).hexdigest())
    for name, data in sent.items():
        assert hashlib.sha256(data).hexdigest() in kept, f"{name} lost"
    assert outside.read_bytes() == b"outside the data root\n"  # untouched
    # Nothing half-done under audio/: only homes of unpacked archives, every file row on disk.
    unpacked = {
        f"archive-{r.id}" for r in store.rows("SELECT id FROM archives WHERE status = 'unpacked'")
    }
    homes = {p.name for p in (settings.audio / DAY).iterdir()} if settings.audio.is_dir() else set()
    assert homes == unpacked, homes
    for row in store.rows("SELECT path, sha256, status FROM audio_files"):
        assert Path(row.path).is_file(), row.path
        if row.status == "ready":
            assert hashlib.sha256(Path(row.path).read_bytes()).hexdigest() == row.sha256


@pytest.fixture
def fresh(store, tmp_path) -> Iterator:
    """A function that gives a new data root and an empty results DB for one attempt."""
    outside = tmp_path / "outside.txt"
    outside.write_text("outside the data root\n")
    tables = [
        r[0]
        for r in store.rows(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
            if store.dialect == "sqlite"
            else "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        )
        if r[0] not in ("schema_migrations", "sqlite_sequence")
    ]

    def make(attempt: str) -> tuple[Settings, dict[str, bytes]]:
        with store.begin() as conn:
            if store.dialect == "postgresql":
                conn.execute(sa.text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
            else:
                conn.execute(sa.text("PRAGMA defer_foreign_keys = ON"))
                for table in tables:
                    conn.execute(sa.text(f"DELETE FROM {table}"))
                conn.execute(sa.text("DELETE FROM sqlite_sequence"))
        root = tmp_path / attempt
        shutil.rmtree(root, ignore_errors=True)
        settings = replace(Settings.from_env(), data_root=root, max_audio_seconds=60)
        settings.ensure_layout()
        return settings, _deliveries(settings, outside)

    make.outside = outside  # type: ignore[attr-defined]
    return make


def _crash_after(step: int, settings: Settings, store: Store) -> int:
    """Run the day in a child process that exits at once after step ``step``; its exit code."""
    url = store.engine.url.render_as_string(hide_password=False)
    store.engine.dispose()  # no connection crosses the fork
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            count = iter(range(10**6))

            def crash(_: str) -> None:
                if next(count) == step:
                    os._exit(CRASHED)

            intake.step_done = crash
            _run_day(settings, Store.from_url(url))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_crash_at_any_step_leaves_a_state_the_next_run_settles(store, fresh, monkeypatch):
    settings, sent = fresh("clean")
    steps: list[str] = []
    monkeypatch.setattr(intake, "step_done", steps.append)
    _run_day(settings, store)
    monkeypatch.undo()
    expected = _outcome(store)
    _check_settled(settings, store, sent, fresh.outside)
    assert len(expected) == 6 and len(steps) > 20
    assert {s.split(".")[0] for s in steps} == {"claim", "register", "settle", "unpack"}

    for step in range(len(steps)):
        settings, sent = fresh(f"crash-{step}")
        assert _crash_after(step, settings, store) == CRASHED, steps[step]
        _run_day(settings, store)
        assert _outcome(store) == expected, f"after a crash at {steps[step]}"
        _check_settled(settings, store, sent, fresh.outside)


def test_what_an_interrupted_claim_left_is_settled(store, tmp_path):
    """An empty claim folder (killed before the rename), a marker whose archive is still in
    incoming/ (killed between the two renames), and a stray file: none wedges the day."""
    settings = replace(Settings.from_env(), data_root=tmp_path / "data", max_audio_seconds=60)
    settings.ensure_layout()
    data = tar_bytes({"rec/one.wav": wav(0.2)})
    deliver(settings.incoming, "a.tar", data)
    deliver(settings.incoming, "b.tar", tar_bytes({"rec/two.wav": wav(0.2, 400.0)}))
    (settings.claimed / "20261129T060000-000000-deadbeef").mkdir()
    half = settings.claimed / "20261129T060000-000001-cafebabe"
    half.mkdir()
    (settings.incoming / "b.tar.sha256").rename(half / "b.tar.sha256")
    (settings.claimed / "stray.bin").write_bytes(b"left by hand")

    ids = deliveries.register_archives(settings, store, DAY)
    verdicts = {
        r.name: (r.status, r.reason)
        for r in store.rows("SELECT name, status, reason FROM deliveries")
    }
    assert verdicts["a.tar"] == ("registered", None)
    assert verdicts["b.tar"] == ("registered", None)  # joined by its archive from incoming/
    assert verdicts["stray.bin"] == (
        "rejected",
        "marker_missing: stray.bin was claimed without a marker",
    )
    assert len(ids) == 2 and not (settings.claimed / "20261129T060000-000000-deadbeef").exists()
    for archive_id in ids:
        unpack.unpack_archive(settings, store, archive_id, workers=1)
    assert not list(settings.claimed.iterdir())
