"""Building blocks for tests of what the results DB and the data root hold: each table's rows
by recording, the files under the data root, and a DB an older release left (for upgrade
tests)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from earmark.store.db import Store

RECORDING_TABLES = {  # table -> how its rows name their recording
    "audio_files": "id",
    "transcripts": "file_id",
    "labels": "file_id",
    "review_queue": "file_id",
    "work_unit_files": "file_id",
    "audio_fetches": "file_id",
    "review_events": "(SELECT file_id FROM review_queue r WHERE r.id = item_id)",
}


def rows_by_recording(store: Store) -> dict[str, list[int]]:
    """Per table that refers to a recording, the recording each of its rows belongs to."""
    return {
        table: sorted(r[0] for r in store.rows(f"SELECT {key} FROM {table}"))
        for table, key in RECORDING_TABLES.items()
    }


def files_under(root: Path) -> set[str]:
    """Every file under ``root``, as a path relative to it."""
    return {
        str(Path(parent, name).relative_to(root))
        for parent, _dirs, names in os.walk(root)
        for name in names
    }


def store_before(
    version: str, backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Store:
    """A results DB on ``backend`` migrated up to, not including, migration ``version``: the
    state an older release left, for an upgrade test to fill and then migrate."""
    from earmark.store import db

    url = (
        request.getfixturevalue("pg_url")
        if backend == "postgres"
        else f"sqlite:///{tmp_path / 'r.db'}"
    )
    store = Store.from_url(url)
    with pytest.MonkeyPatch.context() as patch:
        every = db.migrations
        patch.setattr(
            db, "migrations", lambda dialect: [m for m in every(dialect) if m[0] < version]
        )
        store.migrate()
    return store


def archive_7_with_file_3(store: Store, status: str) -> None:
    """Archive 7 holding audio file 3 in ``status``: what the upgrade tests fill around."""
    with store.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO archives (id, name, sha256, run_date, status, path)"
                " VALUES (7, 'day.tar', 'd7', '2026-11-29', 'unpacked', '/p')"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO audio_files (id, archive_id, member_path, path, status)"
                " VALUES (3, 7, 'a.wav', '/a', :s)"
            ),
            {"s": status},
        )
