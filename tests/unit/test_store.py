from __future__ import annotations

import pytest
import sqlalchemy as sa
from earmark.store.db import Store, migrations
from store_kit import archive_7_with_file_3, store_before

CONTRACT_TABLES = {"archives", "audio_files", "transcripts", "labels", "review_queue"}


def test_migrations_are_numbered_and_ordered():
    versions = [v for v, _ in migrations()]
    assert versions == sorted(versions)
    assert versions[0].startswith("0001_")


def test_migrate_creates_contract_tables_once(store):
    assert store.migrate() == []  # the fixture already migrated
    names = set(sa.inspect(store.engine).get_table_names())
    assert names >= CONTRACT_TABLES
    assert store.schema_version() == migrations()[-1][0]


def test_status_values_are_enforced(store):
    with pytest.raises(sa.exc.IntegrityError), store.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO archives (name, sha256, run_date, status, path)"
                " VALUES ('a.tar', 'x', '2026-11-29', 'lost', '/x')"
            )
        )


def test_unique_keys_make_inserts_idempotent(store):
    insert = sa.text(
        "INSERT INTO archives (name, sha256, run_date, path)"
        " VALUES (:n, 'same', '2026-11-29', '/x') ON CONFLICT (sha256) DO NOTHING RETURNING id"
    )
    with store.begin() as conn:
        first = conn.execute(insert, {"n": "a.tar"}).scalar()
        second = conn.execute(insert, {"n": "b.tar"}).scalar()
    assert first is not None and second is None
    assert store.scalar("SELECT count(*) FROM archives") == 1


def test_score_outside_unit_interval_is_rejected(store):
    with store.begin() as conn:
        archive = conn.execute(
            sa.text(
                "INSERT INTO archives (name, sha256, run_date, path)"
                " VALUES ('a', 's', '2026-11-29', '/') RETURNING id"
            )
        ).scalar()
        file_id = conn.execute(
            sa.text(
                "INSERT INTO audio_files (archive_id, member_path, path, status)"
                " VALUES (:a, 'x.wav', '/x.wav', 'ready') RETURNING id"
            ),
            {"a": archive},
        ).scalar()
    with pytest.raises(sa.exc.IntegrityError), store.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO labels (file_id, policy, policy_sha, model, score, label)"
                " VALUES (:f, 'p', 's', 'm', 1.5, 1)"
            ),
            {"f": file_id},
        )


def test_a_failed_migration_leaves_nothing_behind(tmp_path, monkeypatch):
    from earmark.store import db

    broken = [*migrations(), ("9999_broken", "CREATE TABLE half (id INTEGER); SELECT nonsense(")]
    monkeypatch.setattr(db, "migrations", lambda _dialect: broken)
    store = Store.from_url(f"sqlite:///{tmp_path / 'r.db'}")
    with pytest.raises(sa.exc.OperationalError):
        store.migrate()
    assert "half" not in sa.inspect(store.engine).get_table_names()
    assert "archives" not in sa.inspect(store.engine).get_table_names()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_0003_frees_bytes_barred_by_a_marker_or_name_rejection(backend, tmp_path, request):
    """Rows an older intake wrote for marker or name rejections become rejected deliveries, so
    the same bytes can be delivered again; content rejections stay barred."""
    store = store_before("0003", backend, tmp_path, request)
    rows = [
        ("typo.tar", "s1", "bad_marker: typo.tar.sha256 does not hold a sha256 hex digest"),
        ("cut.tar", "s2", "checksum_mismatch: marker says 0123…, archive is 4567…"),
        ("x.zip", "s3", "not_a_tar: x.zip: expected one of .tar, .tar.gz, .tgz"),
        ("evil.tar", "s4", "path_traversal: member '../x' contains '..'"),
        ("odd.tar", "s5", "not_a_tar: file could not be opened successfully"),
    ]
    with store.begin() as conn:
        for name, sha, error in rows:
            conn.execute(
                sa.text(
                    "INSERT INTO archives (name, sha256, run_date, status, path, error)"
                    " VALUES (:n, :s, '2026-11-29', 'rejected', '/q', :e)"
                ),
                {"n": name, "s": sha, "e": error},
            )
    assert store.migrate() == [v for v, _ in migrations() if v >= "0003"]
    assert sorted(store.rows("SELECT name FROM archives")) == [("evil.tar",), ("odd.tar",)]
    assert sorted(tuple(r) for r in store.rows("SELECT name, status, sha256 FROM deliveries")) == [
        ("cut.tar", "rejected", "s2"),
        ("typo.tar", "rejected", "s1"),
        ("x.zip", "rejected", "s3"),
    ]
    store.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_0005_keeps_every_row_and_constraint_while_the_digest_becomes_optional(
    backend, tmp_path, request
):
    """SQLite rebuilds `archives` for this one: ids, rows and the keys pointing at them stay."""
    store = store_before("0005", backend, tmp_path, request)
    with store.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO archives (name, sha256, run_date, status, path)"
                " VALUES ('old.tar', 'd6', '2026-11-28', 'unpacked', '/o')"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO archives (id, name, sha256, run_date, status, path)"
                " VALUES (7, 'day.tar', 'd7', '2026-11-29', 'unpacked', '/p')"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO audio_files (archive_id, member_path, path, status)"
                " VALUES (7, 'a.wav', '/a', 'ready')"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO deliveries (token, name, run_date, status, sha256, archive_id, path)"
                " VALUES ('t', 'day.tar', '2026-11-29', 'registered', 'd7', 7, '/p')"
            )
        )
    assert store.migrate()[0] == "0005_digest_read_at_unpack"  # then any later ones
    assert [
        tuple(r) for r in store.rows("SELECT id, name, sha256, status FROM archives ORDER BY id")
    ] == [(1, "old.tar", "d6", "unpacked"), (7, "day.tar", "d7", "unpacked")]
    with store.begin() as conn:  # an archive whose digest is not read yet
        new_id = conn.execute(
            sa.text(
                "INSERT INTO archives (name, run_date, path) VALUES ('n.tar', '2026-11-30', '/n')"
                " RETURNING id"
            )
        ).scalar()
    assert new_id not in (1, 7)
    with pytest.raises(sa.exc.IntegrityError), store.begin() as conn:
        conn.execute(sa.text("UPDATE archives SET sha256 = 'd7' WHERE id = :i"), {"i": new_id})
    with pytest.raises(sa.exc.IntegrityError), store.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO audio_files (archive_id, member_path, path, status)"
                " VALUES (999, 'b.wav', '/b', 'ready')"
            )
        )
    with pytest.raises(sa.exc.IntegrityError), store.begin() as conn:
        conn.execute(sa.text("DELETE FROM archives WHERE id = 7"))
    store.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_0008_keeps_the_queue_and_its_trail_and_adds_kinds_and_corrections(
    backend, tmp_path, request
):
    """Existing items become flags with their ids and events; a second review needs its first;
    one item per file, policy and kind; a correction is an event with a decision."""
    store = store_before("0008", backend, tmp_path, request)
    archive_7_with_file_3(store, "classified")
    with store.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO review_queue (id, file_id, policy, score, status, claimed_by,"
                " decision) VALUES (5, 3, 'harassment', 0.9, 'resolved', 'ana', 'violation')"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO review_events (item_id, action, reviewer, decision)"
                " VALUES (5, 'decide', 'ana', 'violation')"
            )
        )
    assert store.migrate()[0] == "0008_review_qa_and_corrections"
    assert tuple(store.rows("SELECT id, kind, first_item_id, decision FROM review_queue")[0]) == (
        5,
        "flag",
        None,
        "violation",
    )
    assert store.scalar("SELECT count(*) FROM review_events WHERE item_id = 5") == 1
    insert = sa.text(
        "INSERT INTO review_queue (file_id, policy, policy_sha, model, score, kind, first_item_id)"
        " VALUES (3, 'harassment', 'sha', 'm', 0.9, :k, :f)"
    )
    with store.begin() as conn:
        conn.execute(insert, {"k": "qa", "f": 5})
        conn.execute(insert, {"k": "sample", "f": None})
        conn.execute(
            sa.text(
                "INSERT INTO review_events (item_id, action, reviewer, decision)"
                " VALUES (5, 'correct', 'ana', 'unclear')"
            )
        )
    for bad in ({"k": "qa", "f": None}, {"k": "flag", "f": 5}, {"k": "qa", "f": 5}):
        with pytest.raises(sa.exc.IntegrityError), store.begin() as conn:
            conn.execute(insert, bad)
    with pytest.raises(sa.exc.IntegrityError), store.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO review_events (item_id, action, reviewer) VALUES (5, 'correct', 'ana')"
            )
        )
    with pytest.raises(sa.exc.IntegrityError), store.begin() as conn:
        conn.execute(sa.text("DELETE FROM review_queue WHERE id = 5"))
    store.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_0010_renames_gpu_batches_to_work_units_keeping_rows_keys_and_ids(
    backend, tmp_path, request
):
    """A unit planned before the rename keeps its row, its files and its id; the foreign keys
    follow the new names, and new units number on from the old ones."""
    store = store_before("0010", backend, tmp_path, request)
    archive_7_with_file_3(store, "ready")
    with store.begin() as conn:
        unit = conn.execute(
            sa.text(
                "INSERT INTO gpu_batches (run_id, run_date, seq, n_files, audio_s)"
                " VALUES ('r1', '2026-11-29', 0, 1, 60) RETURNING id"
            )
        ).scalar_one()
        conn.execute(
            sa.text("INSERT INTO batch_files (batch_id, file_id) VALUES (:u, 3)"), {"u": unit}
        )
    assert store.migrate()[0] == "0010_work_units"
    assert tuple(store.rows("SELECT unit_id, file_id FROM work_unit_files")[0]) == (unit, 3)
    with store.begin() as conn:
        later = conn.execute(
            sa.text(
                "INSERT INTO work_units (run_id, run_date, seq, n_files, audio_s)"
                " VALUES ('r2', '2026-11-30', 0, 1, 60) RETURNING id"
            )
        ).scalar_one()
    assert later > unit
    with pytest.raises(sa.exc.IntegrityError), store.begin() as conn:
        conn.execute(sa.text("INSERT INTO work_unit_files (unit_id, file_id) VALUES (999, 3)"))
    with store.begin() as conn:
        conn.execute(sa.text("DELETE FROM work_units WHERE id = :u"), {"u": unit})
    assert store.scalar("SELECT count(*) FROM work_unit_files") == 0  # ON DELETE CASCADE
    store.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_0014_gives_each_review_item_its_version_keeping_ids_decisions_and_trail(
    backend, tmp_path, request
):
    """Of labels scored under several versions the newest stays current, the others are marked
    superseded; an item takes the version of the newest label made before it (a qa item its
    first's), and an undecided one of a superseded version is withdrawn; ids, decisions and the
    trail stay; afterwards one item per version and kind."""
    store = store_before("0014", backend, tmp_path, request)
    archive_7_with_file_3(store, "classified")
    label = sa.text(
        "INSERT INTO labels (file_id, policy, policy_sha, model, score, label, created_at)"
        " VALUES (3, :p, :sha, 'cope', 0.9, 1, :at)"
    )
    item = sa.text(
        "INSERT INTO review_queue (id, file_id, policy, score, status, decision, kind,"
        " first_item_id, created_at) VALUES (:id, 3, :p, 0.9, :status, :decision, :kind,"
        " :first, :at)"
    )
    with store.begin() as conn:  # both policies edited once already: two labels each
        for policy in ("harassment", "self_harm"):
            conn.execute(label, {"p": policy, "sha": "old", "at": "2026-11-01 10:00:00"})
            conn.execute(label, {"p": policy, "sha": "new", "at": "2026-11-20 10:00:00"})
        for row in (
            (5, "harassment", "resolved", "violation", "flag", None, "2026-11-02 09:00:00"),
            (6, "harassment", "pending", None, "qa", 5, "2026-11-25 09:00:00"),
            (7, "self_harm", "pending", None, "flag", None, "2026-11-02 09:00:00"),
            (8, "self_harm", "pending", None, "sample", None, "2026-10-01 09:00:00"),
        ):
            keys = ("id", "p", "status", "decision", "kind", "first", "at")
            conn.execute(item, dict(zip(keys, row, strict=True)))
        conn.execute(
            sa.text(
                "INSERT INTO review_events (item_id, action, reviewer, decision)"
                " VALUES (5, 'decide', 'ana', 'violation')"
            )
        )
    assert store.migrate()[0] == "0014_label_versions"
    items = [
        tuple(r)
        for r in store.rows(
            "SELECT id, status, decision, policy_sha, model FROM review_queue ORDER BY id"
        )
    ]
    assert items == [
        (5, "resolved", "violation", "old", "cope"),  # decided under the text of its day
        (6, "pending", None, "old", "cope"),  # its first item's, made later
        (7, "withdrawn", None, "old", "cope"),  # undecided, of a superseded version
        (8, "pending", None, "new", "cope"),  # before any label: the newest
    ]
    superseded = store.rows("SELECT policy, policy_sha FROM labels WHERE superseded_at IS NOT NULL")
    assert sorted(tuple(r) for r in superseded) == [("harassment", "old"), ("self_harm", "old")]
    assert store.scalar("SELECT count(*) FROM review_events WHERE item_id = 5") == 1
    insert = sa.text(
        "INSERT INTO review_queue (file_id, policy, policy_sha, model, score, kind, status)"
        " VALUES (3, 'harassment', :sha, 'cope', 0.9, 'flag', :status)"
    )
    with store.begin() as conn:  # the new version's flag beside the decided old one
        conn.execute(insert, {"sha": "new", "status": "pending"})
    with pytest.raises(sa.exc.IntegrityError), store.begin() as conn:
        conn.execute(insert, {"sha": "new", "status": "pending"})  # the same version twice
    with pytest.raises(sa.exc.IntegrityError), store.begin() as conn:
        conn.execute(insert, {"sha": "newer", "status": "lost"})
    store.dispose()
