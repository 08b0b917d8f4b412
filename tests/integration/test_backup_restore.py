"""The results DB backed up, dropped and restored with ``deploy/backup-results.sh`` and
``deploy/restore-results.sh`` (pg_dump and pg_restore of this machine) against a throwaway
Postgres database: every table's row count and checksum are equal after the round trip."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from earmark.config import PROJECT_ROOT
from earmark.store.db import Store, migrations
from earmark_dev import constructed_day, constructed_reviews

pytestmark = pytest.mark.integration

BACKUP = PROJECT_ROOT / "deploy" / "backup-results.sh"
RESTORE = PROJECT_ROOT / "deploy" / "restore-results.sh"


def _libpq(url: str) -> str:
    """The SQLAlchemy URL as pg_dump and psql take it."""
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _fingerprint(url: str) -> dict[str, tuple[int, str]]:
    """Per table of the results DB: rows, and an md5 over every row in a fixed order."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        tables = conn.execute(
            sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
        ).scalars()
        prints = {
            table: tuple(
                conn.execute(
                    sa.text(
                        f"SELECT count(*), coalesce(md5(string_agg(t::text, chr(10)"
                        f" ORDER BY t::text)), '') FROM \"{table}\" t"
                    )
                ).one()
            )
            for table in list(tables)
        }
    engine.dispose()
    return prints


def _script(script: Path, *args: str, url: str | None, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "EARMARK_"))}
    if url is not None:
        environ["EARMARK_BACKUP_DB_URL"] = _libpq(url)
    return subprocess.run(
        ["bash", str(script), *args],
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _recreate(url: str) -> None:
    """Drop the database and create it empty, as after losing it (setup-coordinator.sh's
    CREATE DATABASE)."""
    name = sa.make_url(url).database
    admin = sa.make_url(url).set(database="postgres")
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()


def test_backup_drop_restore_round_trip(pg_url: str, tmp_path: Path) -> None:
    store = Store.from_url(pg_url)
    store.migrate()
    constructed_day.build(store)
    constructed_reviews.build(store)  # labels, flags, second reviews, the audit trail
    with store.begin() as conn:  # text beyond ASCII survives too
        conn.execute(
            sa.text(
                "INSERT INTO transcripts (file_id, model, text, n_chars)"
                " SELECT id, 'w', 'Grüße, שלום, 😀', 13 FROM audio_files ORDER BY id LIMIT 1"
            )
        )
    store.dispose()
    before = _fingerprint(pg_url)
    assert before["review_events"][0] > 50 and before["transcripts"][0] == 1
    backups = tmp_path / "backups"

    planned = _script(BACKUP, "--dry-run", "--dir", str(backups), url=pg_url)
    assert planned.returncode == 0, planned.stderr
    assert "+ pg_dump --format=custom" in planned.stdout and not backups.exists()

    old = backups / "earmark-results-20200101T000000Z.dump"
    backups.mkdir()
    for path in (old, Path(f"{old}.sha256")):
        path.write_text("old")
        month_ago = time.time() - 30 * 86400
        os.utime(path, (month_ago, month_ago))
    made = _script(BACKUP, "--dir", str(backups), "--keep-days", "14", url=pg_url)
    assert made.returncode == 0, made.stderr
    dumps = sorted(backups.glob("earmark-results-*.dump"))
    assert len(dumps) == 1 and dumps[0] != old, "the month-old dump was not pruned"
    dump = dumps[0]
    assert Path(f"{dump}.sha256").read_text().split()[0]
    assert oct(backups.stat().st_mode & 0o777) == "0o700"

    # The database lost: created again, empty; the dump restores every row.
    _recreate(pg_url)
    refused = _script(RESTORE, str(dump), url=pg_url)
    assert refused.returncode != 0 and "add --yes" in refused.stderr
    tampered = tmp_path / dump.name
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte changed on the way
    tampered.write_bytes(bytes(data))
    Path(f"{tampered}.sha256").write_text(Path(f"{dump}.sha256").read_text())
    corrupt = _script(RESTORE, "--yes", str(tampered), url=pg_url)
    assert corrupt.returncode != 0 and "checksum mismatch" in corrupt.stderr
    restored = _script(RESTORE, "--yes", str(dump), url=pg_url)
    assert restored.returncode == 0, restored.stderr
    assert f"schema at {migrations()[-1][0]}" in restored.stdout
    assert _fingerprint(pg_url) == before

    # Restoring over a database that moved on puts it back as it was at the backup.
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM review_events WHERE id > 10"))
    engine.dispose()
    assert _fingerprint(pg_url) != before
    again = _script(RESTORE, "--yes", str(dump), url=pg_url)
    assert again.returncode == 0, again.stderr
    assert _fingerprint(pg_url) == before


def test_clear_errors_without_a_database_or_a_dump(tmp_path: Path) -> None:
    nodb = _script(BACKUP, "--dir", str(tmp_path), url=None)
    assert nodb.returncode == 1 and "no database: set EARMARK_BACKUP_DB_URL" in nodb.stderr
    days = _script(BACKUP, "--keep-days", "two", url="postgresql://x@127.0.0.1/x")
    assert days.returncode == 1 and "whole number of days" in days.stderr
    failed = _script(
        BACKUP,
        "--dir",
        str(tmp_path / "dumps"),
        url="postgresql://postgres:s3cretPW@127.0.0.1:5432/earmark_no_such_db",
    )
    assert failed.returncode != 0 and "earmark_no_such_db" in failed.stderr
    assert "s3cretPW" not in failed.stdout + failed.stderr  # the password is never echoed
    assert list((tmp_path / "dumps").iterdir()) == []  # the failed dump left nothing behind
    missing = _script(RESTORE, "--yes", str(tmp_path / "nope.dump"), url=None)
    assert missing.returncode == 1 and "no such dump" in missing.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["dumps"]
