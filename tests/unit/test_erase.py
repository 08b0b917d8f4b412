"""Erasure on request on both backends: a recording, an archive and a delivery name go entirely
(disk and rows), nothing else does; the audit rows say who, why and what; a second run is a
no-op; the dry run changes nothing; a GPU unit holding the recordings refuses it; a crash between
the steps is finished by the next erase; a redelivery of erased bytes is a duplicate saying so."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa
from delivery_kit import deliver, plan_test_units, tar_bytes, wav
from earmark.cli import main
from earmark.config import PROJECT_ROOT, Settings
from earmark.day.status import data_quality_checks
from earmark.ingest.deliveries import register_archives
from earmark.ingest.unpack import unpack_archive
from earmark.lifecycle import erase
from earmark.lifecycle.erase import HeldError, Scope, UnknownTargetError
from earmark.review.listens import record_listen
from earmark.review.queue import ReviewError, claim_next, enqueue, resolve
from earmark.store.sql import named_queries
from earmark.web.queries import held_by, held_item
from store_kit import files_under, rows_by_recording

DAY = "2026-11-29"


@pytest.fixture
def settings(tmp_path):
    s = replace(Settings.from_env(), data_root=tmp_path / "data")
    s.ensure_layout()
    return s


def _deliver_day(settings, store, screened: bool = True) -> dict[str, int]:
    """Archives a.tar (two recordings and one refused file) and b.tar (one recording),
    unpacked and planned; ``screened``: transcribed, labelled and queued as the GPU stage does,
    then reviewed (a decision, a fetch of the audio). Archive ids by name."""
    deliver(settings.incoming, "a.tar", _A)
    deliver(settings.incoming, "b.tar", _B)
    for archive_id in register_archives(settings, store, DAY):
        unpack_archive(settings, store, archive_id)
    plan_test_units(store, "run-1", DAY)
    archives = {r.name: r.id for r in store.rows("SELECT name, id FROM archives")}
    if not screened:
        return archives
    with store.begin() as conn:
        files = conn.execute(sa.text("SELECT id FROM audio_files WHERE status = 'ready'")).all()
        labels = []
        for (file_id,) in files:
            conn.execute(
                sa.text(
                    "INSERT INTO transcripts (file_id, model, text, n_chars)"
                    " VALUES (:f, 'tiny', 'words', 5)"
                ),
                {"f": file_id},
            )
            for policy, score in (("harassment", 0.9), ("spam", 0.1)):
                label = {
                    "f": file_id,
                    "p": policy,
                    "sha": "sha",
                    "m": "tiny",
                    "s": score,
                    "l": int(score > 0.5),
                }
                labels.append(label)
                conn.execute(
                    sa.text(
                        "INSERT INTO labels (file_id, policy, policy_sha, model, score, label)"
                        " VALUES (:f, :p, 'sha', 'tiny', :s, :l)"
                    ),
                    label,
                )
            conn.execute(
                sa.text("UPDATE audio_files SET status = 'classified' WHERE id = :f"),
                {"f": file_id},
            )
        enqueue(conn, labels, sample_share=0.0)
    for _ in files:  # every flag decided by ana, each audio fetched once
        item = claim_next(store, "ana")
        record_listen(store, item.id, "ana", "bytes=0-")
        resolve(store, item.id, "ana", "violation")
    return archives


_A = tar_bytes({"rec/one.wav": wav(0.3, 200.0), "rec/two.wav": wav(0.3, 300.0), "bad.wav": b"x"})
_B = tar_bytes({"x/three.wav": wav(0.3, 400.0)})


def _files(store, archive_id: int) -> dict[int, str]:
    return {
        r.id: r.path
        for r in store.rows("SELECT id, path FROM audio_files WHERE archive_id = :a", a=archive_id)
    }


def _data_quality_fails(store) -> list[str]:
    """The day's data-quality checks that fail (the DAG's data_quality task runs them)."""
    return [n for n, sql in data_quality_checks(DAY).items() if not store.scalar(sql)]


def _without(rows: dict[str, list[int]], gone: set[int]) -> dict[str, list[int]]:
    return {table: [f for f in ids if f not in gone] for table, ids in rows.items()}


def test_one_recording_goes_entirely_and_nothing_else(settings, store):
    archives = _deliver_day(settings, store)
    a = archives["a.tar"]
    one, _two = sorted(f for f, p in _files(store, a).items() if "/audio/" in p)
    one_path = Path(_files(store, a)[one])
    sha = store.scalar("SELECT sha256 FROM audio_files WHERE id = :f", f=one)
    size = one_path.stat().st_size
    before, disk_before = rows_by_recording(store), files_under(settings.data_root)

    outcome = erase.erase(settings, store, Scope.FILE, str(one), "dpo", "withdrawn, ticket 7")

    assert rows_by_recording(store) == _without(before, {one})
    assert before != rows_by_recording(store)
    gone = str(one_path.relative_to(settings.data_root))
    # The delivered archive stays in processed/.
    assert files_under(settings.data_root) == disk_before - {gone}
    [row] = erase.erasures(store)
    assert (row["actor"], row["reason"], row["scope"], row["target"]) == (
        "dpo",
        "withdrawn, ticket 7",
        "file",
        str(one),
    )
    assert (row["file_id"], row["archive_id"], row["sha256"], row["status"]) == (
        one,
        a,
        sha,
        "done",
    )
    assert row["bytes_freed"] == size and row["done_at"] is not None
    assert row["removed"] == {
        "audio_on_disk": 1,
        "audio_fetches": 1,
        "review_events": 2,  # claim and decide
        "review_items": 1,
        "labels": 2,
        "transcripts": 1,
        "work_unit_files": 1,
        "audio_files": 1,
    }
    assert outcome.erasure_ids == (row["id"],)
    assert store.scalar("SELECT count(*) FROM archives WHERE id = :a", a=a) == 1
    assert _data_quality_fails(store) == []  # a past day still checks out

    again = erase.erase(settings, store, Scope.FILE, str(one), "dpo", "withdrawn, ticket 7")
    assert again.erasure_ids == () and f"erasure #{row['id']}" in again.plan.already
    assert len(erase.erasures(store)) == 1 and rows_by_recording(store) == _without(before, {one})

    # The same bytes delivered again: a duplicate that says some of them were erased.
    deliver(settings.incoming, "a-again.tar", _A)
    assert register_archives(settings, store, DAY) == []
    status, reason = store.rows("SELECT status, reason FROM deliveries WHERE name = 'a-again.tar'")[
        0
    ]
    assert status == "duplicate"
    assert reason.startswith(f"erased: same bytes as archive #{a} (unpacked), 1 of whose")
    assert f"erasure #{row['id']} on " in reason and "one.wav" not in reason


def test_a_reviewer_holding_an_erased_item_no_longer_holds_it(settings, store):
    _deliver_day(settings, store, screened=False)
    with store.begin() as conn:
        conn.execute(sa.text("UPDATE audio_files SET status = 'classified'"))
        file_id = conn.execute(sa.text("SELECT min(id) FROM audio_files")).scalar()
        enqueue(
            conn,
            [{"f": file_id, "p": "harassment", "sha": "sha", "m": "tiny", "s": 0.9, "l": 1}],
            0.0,
        )
    item = claim_next(store, "ana")
    record_listen(store, item.id, "ana")
    erase.erase(settings, store, Scope.FILE, str(file_id), "dpo", "withdrawn")
    assert held_item(store, "ana") is None
    for action in (
        lambda: held_by(store, item.id, "ana"),
        lambda: resolve(store, item.id, "ana", "violation"),
    ):
        with pytest.raises(ReviewError, match="not held"):
            action()
    assert claim_next(store, "ben") is None


def test_an_archive_goes_with_its_delivered_bytes_and_copies(settings, store):
    archives = _deliver_day(settings, store)
    deliver(settings.incoming, "a-dup.tar", _A)  # the same bytes again, kept as a duplicate
    assert register_archives(settings, store, DAY) == []
    a, b = archives["a.tar"], archives["b.tar"]
    files_a = _files(store, a)
    assert len(files_a) == 3  # two recordings and one refused file (quarantined)
    before, disk_before = rows_by_recording(store), files_under(settings.data_root)
    assert any(p.startswith(f"processed/{DAY}/duplicate-") for p in disk_before)

    erase.erase(settings, store, Scope.ARCHIVE, str(a), "dpo", "site withdrew")

    assert rows_by_recording(store) == _without(before, set(files_a))
    left = files_under(settings.data_root)
    assert not any(f"archive-{a}" in p or "duplicate-" in p for p in left)
    assert left == {p for p in disk_before if f"archive-{a}" not in p and "duplicate-" not in p}
    assert any(f"archive-{b}" in p for p in left)
    assert _data_quality_fails(store) == []
    rows = erase.erasures(store)
    assert {r["file_id"] for r in rows} == {*files_a, None}
    assert {(r["scope"], r["target"], r["status"], r["archive_id"]) for r in rows} == {
        ("archive", str(a), "done", a)
    }
    [own] = [r for r in rows if r["file_id"] is None]
    assert own["sha256"] == store.scalar("SELECT sha256 FROM archives WHERE id = :a", a=a)
    # The archive and the duplicate, each with its marker, and the refused file's reason file.
    assert own["removed"] == {"archive_homes": 5, "files": 5}
    assert own["bytes_freed"] >= 2 * len(_A)
    refused = [r for r in rows if r["file_id"] is not None and r["sha256"] is None]
    assert len(refused) == 1 and refused[0]["bytes_freed"] == 1  # the 1-byte refused file
    assert erase.erase(settings, store, Scope.ARCHIVE, str(a), "dpo", "again").erasure_ids == ()


def test_a_delivery_name_erases_its_archive_and_a_redelivery_is_a_duplicate_saying_so(
    settings, store
):
    archives = _deliver_day(settings, store)
    b = archives["b.tar"]
    before, files_b = rows_by_recording(store), set(_files(store, b))
    outcome = erase.erase(settings, store, Scope.DELIVERY, "b.tar", "dpo", "consent withdrawn")
    assert rows_by_recording(store) == _without(before, files_b)
    assert len(files_b) == 1 and store.scalar("SELECT count(*) FROM audio_files") == 3
    assert {r["scope"] for r in erase.erasures(store)} == {"delivery"}
    own = max(outcome.erasure_ids)

    deliver(settings.incoming, "b-again.tar", _B)
    assert register_archives(settings, store, DAY) == []
    status, reason = store.rows("SELECT status, reason FROM deliveries WHERE name = 'b-again.tar'")[
        0
    ]
    assert status == "duplicate"
    assert reason.startswith(
        f"erased: same bytes as archive #{b}, erased on request (erasure #{own} on "
    )
    assert "three" not in reason
    assert store.scalar("SELECT count(*) FROM audio_files WHERE archive_id = :b", b=b) == 0
    with pytest.raises(UnknownTargetError):
        erase.plan_erasure(settings, store, Scope.DELIVERY, "never-delivered.tar")


def test_refused_while_a_gpu_unit_holds_the_recordings(settings, store):
    archives = _deliver_day(settings, store, screened=False)  # planned, not yet screened
    before, disk_before = rows_by_recording(store), files_under(settings.data_root)
    unit = store.scalar("SELECT min(id) FROM work_units")
    with pytest.raises(HeldError, match=rf"unit {unit} \(run run-1, #000\).*retry after"):
        erase.erase(settings, store, Scope.ARCHIVE, str(archives["a.tar"]), "dpo", "withdrawn")
    unchanged = (rows_by_recording(store), files_under(settings.data_root), erase.erasures(store))
    assert unchanged == (before, disk_before, [])
    # A refused (quarantined) recording is no unit's work: it can go.
    refused = store.scalar("SELECT id FROM audio_files WHERE status = 'quarantined'")
    assert erase.erase(settings, store, Scope.FILE, str(refused), "dpo", "x").erasure_ids


@pytest.mark.parametrize("step", ["remove_from_disk", "delete_rows"])
def test_a_crash_between_the_steps_is_finished_by_the_next_erase(
    settings, store, monkeypatch, step
):
    archives = _deliver_day(settings, store)
    a, b = archives["a.tar"], archives["b.tar"]
    files_a = _files(store, a)
    before = rows_by_recording(store)

    def crash(*_args):
        raise RuntimeError("power cut")

    monkeypatch.setattr(erase, step, crash)
    with pytest.raises(RuntimeError, match="power cut"):
        erase.erase(settings, store, Scope.ARCHIVE, str(a), "dpo", "withdrawn")
    assert {r["status"] for r in erase.erasures(store)} == {"intended"}
    on_disk = any(f"archive-{a}" in p for p in files_under(settings.data_root))
    assert on_disk == (step == "remove_from_disk")  # a crash after the disk step: files gone
    set_aside = store.rows("SELECT status, error FROM audio_files WHERE archive_id = :a", a=a)
    assert {s for s, _ in set_aside} == {"quarantined"}  # no GPU unit takes them meanwhile
    # The two recordings are set aside as erased; the refused file keeps its own reason.
    assert sum(e.startswith("erased: erasure #") for _, e in set_aside) == 2
    assert store.scalar("SELECT count(*) FROM audio_files WHERE archive_id = :a", a=a) == 3
    assert _data_quality_fails(store) == []
    monkeypatch.undo()

    [b_file] = _files(store, b)
    outcome = erase.erase(settings, store, Scope.FILE, str(b_file), "dpo", "another")
    assert outcome.finished_earlier == 4  # three recordings and the archive's own row
    assert {r["status"] for r in erase.erasures(store)} == {"done"}
    assert rows_by_recording(store) == _without(before, {*files_a, b_file})
    assert not any(f"archive-{a}" in p for p in files_under(settings.data_root))


def test_the_command_dry_run_changes_nothing_then_erases_and_lists(
    settings, store, monkeypatch, capsys
):
    archives = _deliver_day(settings, store)
    monkeypatch.setenv("EARMARK_DATA_ROOT", str(settings.data_root))
    url = store.engine.url.render_as_string(hide_password=False)
    a = str(archives["a.tar"])
    before, disk_before = rows_by_recording(store), files_under(settings.data_root)

    assert main(["--db-url", url, "erase", "--archive", a]) == 2  # no reason
    assert "--reason is required" in capsys.readouterr().out
    assert main(["--db-url", url, "erase", "--archive", a, "--reason", "withdrawn"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith(f"archive {a} ({DAY}): 3 recordings")
    assert out[-1] == "nothing changed: add --yes to erase"
    unchanged = (rows_by_recording(store), files_under(settings.data_root), erase.erasures(store))
    assert unchanged == (before, disk_before, [])

    erase_a = ["--db-url", url, "erase", "--archive", a, "--reason", "withdrawn", "--by", "dpo"]
    assert main([*erase_a, "--yes"]) == 0
    assert "erased 3 recordings" in capsys.readouterr().out
    assert main([*erase_a, "--yes"]) == 0
    assert "erased already" in capsys.readouterr().out
    assert main(["--db-url", url, "erase", "--file", "999", "--reason", "x", "--yes"]) == 2
    capsys.readouterr()
    assert main(["--db-url", url, "erase", "--list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {(r["actor"], r["scope"], r["target"], r["reason"]) for r in listed} == {
        ("dpo", "archive", a, "withdrawn")
    }
    assert main(["--db-url", url, "erase", "--list"]) == 0
    assert f"dpo archive {a} done: withdrawn" in capsys.readouterr().out


def test_every_lifecycle_query_is_used_by_the_code():
    code = "\n".join(
        p.read_text(encoding="utf-8") for p in (PROJECT_ROOT / "include" / "earmark").rglob("*.py")
    )
    assert [n for n in named_queries("lifecycle") if f'"{n}"' not in code] == []


def test_every_table_that_refers_to_a_recording_is_erased(tmp_path):
    """A new table keyed on a recording or its review items must join ``erase.ROW_KINDS``
    (otherwise its rows would outlive the recording, or block the erasure)."""
    from earmark.store.db import Store

    store = Store.from_url(f"sqlite:///{tmp_path / 'r.db'}")
    store.migrate()
    tables = [r[0] for r in store.rows("SELECT name FROM sqlite_master WHERE type = 'table'")]
    referring = {
        table
        for table in tables
        for fk in store.rows(f"PRAGMA foreign_key_list({table})")
        if fk.table in {"audio_files", "review_queue", "review_events"}
    }
    store.dispose()
    erased = {"review_queue" if kind == "review_items" else kind for kind, _ in erase.ROW_KINDS}
    assert referring <= erased


def test_a_readmitted_archive_s_bytes_are_screened_again_and_the_readmission_is_recorded(
    settings, store, monkeypatch, capsys
):
    """The operator's override: bytes erased whole stay refused until `erase --readmit`, which
    records who and why; their next delivery is a new archive whose recordings are unpacked to
    be screened. An archive erased only in part cannot be readmitted; readmitting twice is a
    no-op that says so."""
    archives = _deliver_day(settings, store)
    a, b = archives["a.tar"], archives["b.tar"]
    erase.erase(settings, store, Scope.ARCHIVE, str(b), "dpo", "consent withdrawn")
    deliver(settings.incoming, "b-back.tar", _B)
    assert register_archives(settings, store, DAY) == []
    [refused] = store.rows("SELECT reason FROM deliveries WHERE name = 'b-back.tar'")
    assert refused.reason.endswith(f"`earmark erase --readmit {b}` lets them be screened again")

    monkeypatch.setenv("EARMARK_DATA_ROOT", str(settings.data_root))
    url = ["--db-url", store.engine.url.render_as_string(hide_password=False)]
    readmit = [*url, "erase", "--readmit", str(b), "--reason", "consent given again"]
    assert main(readmit) == 0  # without --yes: says what it would do
    assert "nothing changed: add --yes" in capsys.readouterr().out
    assert erase.readmissions(store) == []
    assert main([*readmit, "--yes", "--by", "dpo"]) == 0
    assert f"archive {b} readmitted (readmission #1)" in capsys.readouterr().out
    [row] = erase.readmissions(store)
    assert (row["archive_id"], row["actor"], row["reason"]) == (b, "dpo", "consent given again")
    assert row["sha256"] == store.scalar("SELECT sha256 FROM deliveries WHERE name = 'b.tar'")
    assert main([*readmit, "--yes"]) == 0
    assert "readmitted already (readmission #1" in capsys.readouterr().out

    deliver(settings.incoming, "b-again.tar", _B)
    [new] = register_archives(settings, store, DAY)
    unpack_archive(settings, store, new)
    assert new != b
    [again] = store.rows("SELECT status, archive_id FROM deliveries WHERE name = 'b-again.tar'")
    assert tuple(again) == ("registered", new)
    assert store.scalar(
        "SELECT count(*) FROM audio_files WHERE archive_id = :n AND status = 'ready'", n=new
    ) == 1  # fmt: skip

    one = store.scalar("SELECT min(id) FROM audio_files WHERE archive_id = :a", a=a)
    erase.erase(settings, store, Scope.FILE, str(one), "dpo", "one recording withdrawn")
    with pytest.raises(erase.ErasureError, match="was not erased whole"):
        erase.readmit(store, a, "dpo", "x")
    with pytest.raises(UnknownTargetError):
        erase.plan_readmission(store, 999)
    assert main([*url, "erase", "--list"]) == 0
    assert "readmission #1 " in capsys.readouterr().out
