"""Retention per kind of data on both backends: each rule takes exactly what is past its time
(disk and rows) and keeps the rest, `forever` and an open review item included; a crash between
the steps is finished by the next run with the same end state; the audit rows say which rule
took what; the dry run changes nothing; erasure on request is not misled by retention's rows;
the migration keeps the erasures an older release recorded."""

from __future__ import annotations

import json
from dataclasses import fields, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from delivery_kit import deliver, plan_test_units, tar_bytes, wav
from earmark.cli import main
from earmark.config import PROJECT_ROOT, Settings, declared
from earmark.ingest.deliveries import register_archives
from earmark.ingest.unpack import unpack_archive
from earmark.lifecycle import erase, retention
from earmark.lifecycle.erase import Scope
from earmark.lifecycle.retention import Kind
from earmark.review.listens import record_listen
from earmark.review.queue import claim_next, enqueue, resolve
from earmark.store.db import Store
from earmark.store.sql import named_queries
from store_kit import archive_7_with_file_3, files_under, rows_by_recording, store_before

DAY = "2026-11-29"
DECIDED = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)  # the flagged recording's decision
_A = tar_bytes({"rec/one.wav": wav(0.3, 200.0), "rec/two.wav": wav(0.3, 300.0), "bad.wav": b"x"})
_B = tar_bytes({"x/three.wav": wav(0.3, 400.0)})


@pytest.fixture
def settings(tmp_path) -> Settings:
    s = replace(
        Settings.from_env(),
        data_root=tmp_path / "data",
        timezone="Europe/London",
        processed_retention_days=30,
        retain_unflagged_audio_days=30,
        retain_flagged_audio_days=90,
        retain_transcripts_days=365,
        retain_labels_days=None,
        retain_reviews_days=730,
    )
    s.ensure_layout()
    return s


def _deliver_day(settings: Settings, store: Store) -> dict[str, int]:
    """Archive a.tar (one.wav never flagged, two.wav flagged and decided on DECIDED, a refused
    bad.wav in quarantine/) and b.tar (three.wav flagged, its item still pending): transcribed,
    labelled and queued as the GPU stage does. File ids by short name (one, two, bad, three)."""
    deliver(settings.incoming, "a.tar", _A)
    deliver(settings.incoming, "b.tar", _B)
    for archive_id in register_archives(settings, store, DAY):
        unpack_archive(settings, store, archive_id)
    plan_test_units(store, "run-1", DAY)
    ids = {
        Path(r.member_path).stem: r.id
        for r in store.rows("SELECT id, member_path FROM audio_files")
    }
    scores = {"one": 0.1, "two": 0.95, "three": 0.9}
    labels = []
    with store.begin() as conn:
        for name, score in scores.items():
            conn.execute(
                sa.text(
                    "INSERT INTO transcripts (file_id, model, text, n_chars)"
                    " VALUES (:f, 'tiny', 'words', 5)"
                ),
                {"f": ids[name]},
            )
            for policy, s in (("harassment", score), ("spam", 0.1)):
                label = {"f": ids[name], "p": policy, "sha": "sha", "m": "tiny", "s": s}
                label["l"] = int(s > 0.5)
                labels.append(label)
                conn.execute(
                    sa.text(
                        "INSERT INTO labels (file_id, policy, policy_sha, model, score, label)"
                        " VALUES (:f, :p, :sha, :m, :s, :l)"
                    ),
                    label,
                )
            conn.execute(
                sa.text("UPDATE audio_files SET status = 'classified' WHERE id = :f"),
                {"f": ids[name]},
            )
        enqueue(conn, labels, sample_share=0.0)
    item = claim_next(store, "ana", now=DECIDED - timedelta(minutes=5))
    assert item is not None and item.file_id == ids["two"]
    record_listen(store, item.id, "ana", "bytes=0-", now=DECIDED - timedelta(minutes=4))
    resolve(store, item.id, "ana", "violation", now=DECIDED)
    return ids


def _state(settings: Settings, store: Store) -> dict[str, object]:
    """Everything retention may change, without ids or times: files on disk, each table's rows
    by recording, the recordings whose audio is marked gone, the audit rows."""
    disk = files_under(settings.data_root)
    rows = rows_by_recording(store)
    gone = sorted(
        r[0] for r in store.rows("SELECT id FROM audio_files WHERE audio_erased_at IS NOT NULL")
    )
    audit = sorted(
        (
            r["target"],
            r["file_id"] or 0,
            r["archive_id"],
            r["status"],
            r["bytes_freed"],
            json.dumps(r["removed"], sort_keys=True),
        )
        for r in erase.erasures(store)
    )
    return {"disk": disk, "rows": rows, "gone": gone, "audit": audit}


def _on_disk(store: Store, file_id: int) -> bool:
    return Path(store.scalar("SELECT path FROM audio_files WHERE id = :f", f=file_id)).is_file()


def _taken(outcome: retention.RetentionOutcome) -> dict[str, int]:
    return {k.kind.value: k.count for k in outcome.kinds if k.count}


def _run(settings: Settings, store: Store, today: date) -> retention.RetentionOutcome:
    """A run on ``today``, after its dry run, which must have said exactly what it took."""
    planned = retention.plan_retention(settings, store, today)
    outcome = retention.apply_retention(settings, store, today)
    assert planned.kinds == outcome.kinds
    return outcome


def test_each_rule_takes_exactly_what_is_due_and_keeps_the_rest(settings, store):
    ids = _deliver_day(settings, store)
    one, two, bad, three = ids["one"], ids["two"], ids["bad"], ids["three"]
    before = _state(settings, store)
    assert any(p.startswith(f"processed/{DAY}/archive-") for p in before["disk"])

    # 30 days after the run date nothing is past its time yet; the day after, the delivered
    # archives and the audio of the recordings never flagged (the refused one too) are.
    assert _taken(_run(settings, store, date(2026, 12, 29))) == {}
    assert _state(settings, store) == before
    stray = settings.processed / "2026-10-01" / "left-by-hand"  # no archive accounts for it
    stray.parent.mkdir()
    stray.write_bytes(b"?")
    outcome = _run(settings, store, date(2026, 12, 30))
    assert _taken(outcome) == {"delivered_archives": 2, "unflagged_audio": 2}
    assert outcome.leftover_folders == 1 and not stray.parent.exists()  # pruned whole
    after = _state(settings, store)
    assert not any(p.startswith("processed/") for p in after["disk"])
    assert not (settings.processed / DAY).exists()  # the emptied day folder went too
    assert (not _on_disk(store, one), not _on_disk(store, bad)) == (True, True)
    assert _on_disk(store, two) and _on_disk(store, three)
    assert after["rows"] == before["rows"]  # rows stay: only the audio of those two went
    assert after["gone"] == sorted([one, bad])
    rows = erase.erasures(store)
    assert {(r["scope"], r["actor"], r["status"]) for r in rows} == {
        ("retention", "retention", "done")
    }
    [row_one] = [r for r in rows if r["file_id"] == one]
    assert row_one["reason"] == (
        "unflagged_audio older than 30 days (EARMARK_RETAIN_UNFLAGGED_AUDIO_DAYS)"
    )
    assert row_one["sha256"] == store.scalar("SELECT sha256 FROM audio_files WHERE id = :f", f=one)
    assert row_one["bytes_freed"] == len(wav(0.3, 200.0))
    assert row_one["removed"] == {"audio_on_disk": 1, "audio_marked_gone": 1}
    delivered = [r for r in rows if r["target"] == "delivered_archives"]
    assert {r["file_id"] for r in delivered} == {None} and len(delivered) == 2
    assert sum(r["bytes_freed"] for r in delivered) >= len(_A) + len(_B)
    assert all(r["removed"]["day"] == DAY and r["removed"]["files"] == 2 for r in delivered)
    assert _taken(_run(settings, store, date(2026, 12, 30))) == {}

    # The flagged audio counts from its decision (2026-12-01 10:00 UTC): 90 days after it.
    assert _taken(_run(settings, store, date(2027, 3, 1))) == {}
    assert _taken(_run(settings, store, date(2027, 3, 2))) == {"flagged_audio": 1}
    assert not _on_disk(store, two)
    assert _on_disk(store, three)  # its item is open: kept whatever its age

    # Transcripts: a year from the run date, or from the decision when there is one.
    assert _taken(_run(settings, store, date(2027, 11, 29))) == {}
    assert _taken(_run(settings, store, date(2027, 11, 30))) == {"transcripts": 1}
    assert _state(settings, store)["rows"]["transcripts"] == sorted([two, three])
    assert _taken(_run(settings, store, date(2027, 12, 2))) == {"transcripts": 1}
    # Reviews: two years from the decision, the audio gone; labels: kept forever.
    last_kept = date(2026, 12, 1) + timedelta(days=730)
    assert _taken(_run(settings, store, last_kept)) == {}
    outcome = _run(settings, store, last_kept + timedelta(days=1))
    assert _taken(outcome) == {"reviews": 1}
    [reviews] = [r for r in erase.erasures(store) if r["target"] == "reviews"]
    assert reviews["removed"] == {
        "audio_fetches": 1,
        "review_events": 2,  # the claim and the decision
        "review_items": 1,
    }
    assert _taken(_run(settings, store, date(2040, 1, 1))) == {}
    end = _state(settings, store)
    assert end["rows"] == {
        "audio_files": sorted([one, two, bad, three]),
        "transcripts": [three],
        "labels": before["rows"]["labels"],  # forever
        "review_queue": [three],
        "work_unit_files": sorted([one, two, three]),
        "audio_fetches": [],
        "review_events": [],
    }
    assert end["gone"] == sorted([one, two, bad])


def test_forever_keeps_a_kind_and_the_plan_says_so(settings, store):
    ids = _deliver_day(settings, store)
    kept = replace(settings, retain_unflagged_audio_days=None, processed_retention_days=10_000)
    plan = retention.plan_retention(kept, store, date(2040, 1, 1))
    unflagged = next(k for k in plan.kinds if k.kind is Kind.UNFLAGGED_AUDIO)
    assert (unflagged.days, unflagged.count) == (None, 0)
    assert {d.kind for d in plan.due} == {Kind.FLAGGED_AUDIO, Kind.TRANSCRIPTS}
    retention.apply_retention(kept, store, date(2040, 1, 1))
    assert _on_disk(store, ids["one"]) and not _on_disk(store, ids["two"])
    lines = retention.describe(plan.kinds, "due")
    assert any(line.startswith("unflagged_audio") and "kept forever" in line for line in lines)
    assert not any("one.wav" in line for line in lines)


def _clean_run_state(settings: Settings, tmp_path: Path, today: date) -> dict[str, object]:
    """The state a run on ``today`` without a crash leaves, on a day delivered the same way
    (a store and data root of its own)."""
    clean_settings = replace(settings, data_root=tmp_path / "clean")
    clean_settings.ensure_layout()
    clean = Store.from_url(f"sqlite:///{tmp_path / 'clean.db'}")
    clean.migrate()
    try:
        _deliver_day(clean_settings, clean)
        retention.apply_retention(clean_settings, clean, today)
        return _state(clean_settings, clean)
    finally:
        clean.dispose()


@pytest.mark.parametrize("step", ["remove_from_disk", "mark_done"])
def test_a_crash_between_the_steps_is_finished_by_the_next_run(
    settings, store, monkeypatch, tmp_path, step
):
    ids = _deliver_day(settings, store)
    today = date(2027, 12, 2)  # delivered archives, both audio rules and transcripts are due
    planned = retention.plan_retention(settings, store, today)
    assert len(planned.due) == 7  # 2 archives, 2 + 1 audio files, 2 recordings' transcripts

    def crash(*_args: object) -> None:
        raise RuntimeError("power cut")

    monkeypatch.setattr(retention, step, crash)
    with pytest.raises(RuntimeError, match="power cut"):
        retention.apply_retention(settings, store, today)
    intended = erase.erasures(store)
    assert len(intended) == 2 and {r["status"] for r in intended} == {"intended"}  # the archives
    assert (settings.processed / DAY).exists() == (step == "remove_from_disk")
    assert _state(settings, store)["gone"] == []
    assert retention.plan_retention(settings, store, today).unfinished == 2
    assert erase.finish_unfinished(settings, store) == 0  # erasure on request leaves them alone
    assert {r["status"] for r in erase.erasures(store)} == {"intended"}
    monkeypatch.undo()

    outcome = retention.apply_retention(settings, store, today)
    assert outcome.finished_earlier == 2
    end = _state(settings, store)
    assert end == _clean_run_state(settings, tmp_path, today)
    assert end["gone"] == sorted([ids["one"], ids["two"], ids["bad"]])
    assert end["rows"]["transcripts"] == [ids["three"]]
    assert not any(p.startswith(("processed/", "quarantine/")) for p in end["disk"])
    assert len(end["audit"]) == 7 and {row[3] for row in end["audit"]} == {"done"}
    assert retention.plan_retention(settings, store, today).due == ()


def test_an_item_opened_after_the_intent_keeps_the_rows(settings, store):
    ids = _deliver_day(settings, store)
    recorded, refused, _last = retention.record_intents(
        settings, store, Kind.TRANSCRIPTS, date(2027, 11, 30)
    )
    assert [d.file_id for d in recorded] == [ids["one"]] and refused == 0
    with store.begin() as conn:  # a rescreen flags it again meanwhile
        enqueue(
            conn,
            [{"f": ids["one"], "p": "harassment", "sha": "new", "m": "tiny", "s": 0.9, "l": 1}],
            0.0,
        )
    assert retention.finish_unfinished(settings, store) == 1
    [row] = erase.erasures(store)
    assert (row["status"], row["removed"]) == ("done", {"kept_not_settled": 1})
    assert ids["one"] in _state(settings, store)["rows"]["transcripts"]


def test_erasure_on_request_is_not_misled_by_retention_rows(settings, store):
    ids = _deliver_day(settings, store)
    retention.apply_retention(settings, store, date(2026, 12, 30))  # one's audio, the archives
    one = ids["one"]
    plan = erase.plan_erasure(settings, store, Scope.FILE, str(one))
    assert plan.already is None and [r.id for r in plan.recordings] == [one]
    outcome = erase.erase(settings, store, Scope.FILE, str(one), "dpo", "withdrawn")
    assert (
        outcome.erasure_ids
        and store.scalar("SELECT count(*) FROM audio_files WHERE id = :f", f=one) == 0
    )
    # The same bytes again: a plain duplicate of the archive, not "erased" (only one recording
    # of it was, on request).
    deliver(settings.incoming, "a-again.tar", _A)
    assert register_archives(settings, store, DAY) == []
    [reason] = [
        r.reason for r in store.rows("SELECT reason FROM deliveries WHERE name = 'a-again.tar'")
    ]
    assert "1 of whose" in reason and f"erasure #{outcome.erasure_ids[0]} " in reason


def test_the_command_dry_run_changes_nothing_then_applies(settings, store, monkeypatch, capsys):
    _deliver_day(settings, store)
    for f in fields(Settings):  # the command reads the settings of this test's day
        if f.name in ("data_root", "timezone") or "retention" in f.name or "retain" in f.name:
            value = getattr(settings, f.name)
            monkeypatch.setenv(declared(f).env, "forever" if value is None else str(value))
    url = store.engine.url.render_as_string(hide_password=False)
    before = _state(settings, store)

    assert main(["--db-url", url, "retention", "--dry-run", "--date", "2026-12-30"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "retention on 2026-12-30: a dry run, nothing changed"
    assert any(line.startswith("unflagged_audio") and "2 recordings due" in line for line in out)
    assert any(line.startswith("labels") and "kept forever" in line for line in out)
    assert not any(".wav" in line or ".tar" in line for line in out)
    assert main(["--db-url", url, "retention", "--dry-run", "--json", "--date", "2026-12-30"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["dry_run"] is True
    assert {k["kind"]: k["count"] for k in shown["kinds"]}["delivered_archives"] == 2
    assert _state(settings, store) == before

    assert main(["--db-url", url, "retention", "--json", "--date", "2026-12-30"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert done["dry_run"] is False
    assert {k["kind"]: k["count"] for k in done["kinds"]} == {
        k["kind"]: k["count"] for k in shown["kinds"]
    }
    assert _state(settings, store) != before
    assert main(["--db-url", url, "retention", "--date", "2026-12-30"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("in all 0 removed")


def test_held_per_kind_and_what_the_next_run_takes(settings, store):
    ids = _deliver_day(settings, store)
    today = date(2026, 12, 29)  # tomorrow the archives and the unflagged audio are due
    held = {h.kind: h for h in retention.held_per_kind(settings, store, today)}
    tomorrow = retention.plan_retention(settings, store, today + timedelta(days=1))
    for figures in tomorrow.kinds:
        assert (held[figures.kind].next_count, held[figures.kind].next_bytes) == (
            figures.count,
            figures.bytes,
        ), figures.kind
    sizes = {
        name: store.scalar("SELECT bytes FROM audio_files WHERE id = :f", f=file_id)
        for name, file_id in ids.items()
    }
    assert (held[Kind.UNFLAGGED_AUDIO].count, held[Kind.UNFLAGGED_AUDIO].bytes) == (
        2,
        sizes["one"] + sizes["bad"],
    )
    assert held[Kind.FLAGGED_AUDIO].count == 2
    assert (held[Kind.TRANSCRIPTS].count, held[Kind.LABELS].count) == (3, 3)
    assert (held[Kind.REVIEWS].count, held[Kind.LABELS].days) == (2, None)
    assert held[Kind.DELIVERED_ARCHIVES].count == 2
    assert held[Kind.DELIVERED_ARCHIVES].next_bytes == held[Kind.DELIVERED_ARCHIVES].bytes
    assert held[Kind.UNFLAGGED_AUDIO].next_count == 2


def test_the_metrics_and_the_report_show_what_is_held(settings, store):
    from earmark.day.report import write_day_report
    from earmark.ops.metrics import METRIC_NAMES, EarmarkCollector
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    _deliver_day(settings, store)
    now = datetime(2026, 12, 29, 12, 0, tzinfo=UTC)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EarmarkCollector(settings, store, clock=lambda: now))
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }
    assert got[("earmark_retention_held_items", (("kind", "unflagged_audio"),))] == 2
    assert got[("earmark_retention_next_run_items", (("kind", "delivered_archives"),))] == 2
    assert got[("earmark_retention_next_run_bytes", (("kind", "flagged_audio"),))] == 0
    assert got[("earmark_retention_held_bytes", (("kind", "delivered_archives"),))] > len(_A)
    assert {name for name, _ in got} <= METRIC_NAMES

    html = write_day_report(settings, store, DAY, "r1", now=now)
    start = html.index('id="retention"')
    section = html[start : html.index("</div>", start)]
    assert "unflagged_audio" in section and "kept forever" in section
    assert "one.wav" not in section


def test_every_retention_query_is_used_by_the_code():
    code = "\n".join(
        p.read_text(encoding="utf-8") for p in (PROJECT_ROOT / "include" / "earmark").rglob("*.py")
    )
    per_kind = {f"due_{k.value}" for k in Kind if k is not Kind.DELIVERED_ARCHIVES}
    unused = [n for n in named_queries("retention") if f'"{n}"' not in code and n not in per_kind]
    assert unused == []
    assert 'f"due_{kind.value}"' in code


def test_retention_settings_take_days_or_forever(monkeypatch):
    monkeypatch.setenv("EARMARK_RETAIN_REVIEWS_DAYS", " Forever ")
    monkeypatch.setenv("EARMARK_RETAIN_TRANSCRIPTS_DAYS", "0")
    s = Settings.from_env()
    assert (s.retain_reviews_days, s.retain_transcripts_days) == (None, 0)
    for bad in ("-1", "a year", "1.5"):
        monkeypatch.setenv("EARMARK_RETAIN_LABELS_DAYS", bad)
        with pytest.raises(ValueError, match="EARMARK_RETAIN_LABELS_DAYS must be a whole number"):
            Settings.from_env()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_0015_keeps_the_erasures_and_allows_retention(backend, tmp_path, request):
    """An erasure recorded under 0013/0014 keeps its row and id; retention rows are allowed,
    other scopes still refused; the audio of every recording is held."""
    store = store_before("0015", backend, tmp_path, request)
    archive_7_with_file_3(store, "classified")
    with store.begin() as conn:
        old = conn.execute(
            sa.text(
                "INSERT INTO erasures (actor, reason, scope, target, file_id, archive_id,"
                " sha256, bytes_freed, removed, status)"
                " VALUES ('dpo', 'withdrawn', 'file', '9', 9, 7, 's9', 10, '{}', 'done')"
                " RETURNING id"
            )
        ).scalar_one()
    assert store.migrate()[0] == "0015_retention"
    assert [
        tuple(r) for r in store.rows("SELECT id, actor, scope, target, status FROM erasures")
    ] == [(old, "dpo", "file", "9", "done")]
    assert store.scalar("SELECT audio_erased_at FROM audio_files WHERE id = 3") is None
    insert = sa.text(
        "INSERT INTO erasures (actor, reason, scope, target, archive_id)"
        " VALUES ('retention', 'r', :scope, 'unflagged_audio', 7) RETURNING id"
    )
    with store.begin() as conn:
        assert conn.execute(insert, {"scope": "retention"}).scalar_one() > old
    with pytest.raises(sa.exc.IntegrityError), store.begin() as conn:
        conn.execute(insert, {"scope": "janitor"})
    store.dispose()


def test_the_daily_run_applies_retention_after_its_report(dagbag):
    """After the report whatever became of it, as the run's teardown: the report's failure
    still fails the run (a teardown is no leaf), the conf check's still stops it."""
    daily = dagbag.dags["earmark_daily"]
    task = daily.get_task("retention")
    assert {"report", "check_run_conf"} <= task.upstream_task_ids
    assert task.is_teardown and not task.on_failure_fail_dagrun
    assert daily.get_task("check_run_conf").is_setup
    assert "prune_processed" not in daily.task_ids  # retention prunes processed/, recorded


def test_a_recording_sent_back_after_its_intent_keeps_its_audio(settings, store):
    """A rescreen sent it back to the GPU stage between the intent and the removal: its audio
    stays (the next screening needs it), the intent is done saying why."""
    ids = _deliver_day(settings, store)
    recorded, _, _ = retention.record_intents(
        settings, store, Kind.UNFLAGGED_AUDIO, date(2027, 1, 1)
    )
    assert ids["one"] in [d.file_id for d in recorded]
    with store.begin() as conn:
        conn.execute(
            sa.text("UPDATE audio_files SET status = 'transcribed' WHERE id = :i"),
            {"i": ids["one"]},
        )
    retention.finish_unfinished(settings, store)
    kept = next(r for r in erase.erasures(store) if r["file_id"] == ids["one"])
    assert (kept["status"], kept["removed"].get("kept_not_settled")) == ("done", 1)
    path = store.scalar("SELECT path FROM audio_files WHERE id = :i", i=ids["one"])
    assert Path(path).is_file()
    assert (
        store.scalar("SELECT audio_erased_at FROM audio_files WHERE id = :i", i=ids["one"]) is None
    )


def test_an_intent_naming_what_intake_never_made_is_refused_and_the_rest_go_on(
    settings, store, caplog
):
    """A delivered-archives intent whose homes are not intake's (a tampered row): refused and
    logged by its id, never its paths, and the run still finishes the other intents."""
    _deliver_day(settings, store)
    today = date(2027, 12, 2)
    with store.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO erasures (actor, reason, scope, target, archive_id, removed)"
                " VALUES ('retention', 'x', 'retention', 'delivered_archives',"
                " (SELECT min(id) FROM archives), :removed)"
            ),
            {"removed": json.dumps({"day": DAY, "homes": ["../../etc-secret"], "files": 1})},
        )
    outcome = retention.apply_retention(settings, store, today)
    assert outcome.finished_earlier == 1
    audit = erase.erasures(store)
    tampered = next(r for r in audit if r["removed"].get("homes") == ["../../etc-secret"])
    assert (tampered["status"], tampered["removed"].get("refused")) == ("done", 1)
    assert {r["status"] for r in audit} == {"done"} and len(audit) == 8
    assert "etc-secret" not in caplog.text
    assert f"retention intent #{tampered['id']} refused (ValueError)" in caplog.text


def test_the_day_s_data_quality_checks_still_hold_after_every_rule_ran(settings, store):
    """A rerun or a rescreen of an old day runs its data-quality checks: what retention removed
    (audio, transcripts, decided reviews; the recordings' rows stay) is not a fault."""
    from earmark.day.status import data_quality_checks

    _deliver_day(settings, store)
    took = set()
    for _ in range(2):  # reviews go on the run after the audio they outlive
        outcome = retention.apply_retention(settings, store, date(2029, 12, 31))
        took |= {k.kind for k in outcome.kinds if k.count}
        failing = [n for n, sql in data_quality_checks(DAY).items() if not store.scalar(sql)]
        assert failing == []
    assert took >= {Kind.UNFLAGGED_AUDIO, Kind.FLAGGED_AUDIO, Kind.TRANSCRIPTS, Kind.REVIEWS}
