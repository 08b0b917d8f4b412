"""The GPU stage's orchestration with the tiny real models: idempotent writes, a bad file does
not lose the batch, flagged labels land in the review queue, the budget caps batch sizes."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from delivery_kit import plan_test_units
from earmark.config import Settings
from earmark.gpu.classify import classify_unit
from earmark.gpu.models import stage_plan
from earmark.gpu.transcribe import transcribe_unit
from earmark.ingest.deliveries import register_archives
from earmark.ingest.unpack import unpack_archive
from earmark_dev.sampledata import generate_day

DAY = "2026-11-29"


def test_budget_caps_gpu_batches():
    base = replace(Settings.from_env(), device="cuda", dtype="bfloat16")
    small = stage_plan(replace(base, gpu_memory_gib=22))
    large = stage_plan(replace(base, gpu_memory_gib=139))
    assert small.classify_fits(6, 1300, 1050)  # a typical prompt with its policy prefix cached
    assert not small.classify_fits(64, 1300, 1050)
    assert large.classify_fits(64, 1300, 1050)
    assert small.classify_max_context_tokens < large.classify_max_context_tokens
    assert large.asr_batch <= base.asr_batch_size


def test_cpu_plan_uses_the_settings():
    plan = stage_plan(replace(Settings.from_env(), device="cpu", dtype="auto"))
    assert (plan.device, plan.dtype) == ("cpu", "float32")


def transcribe(settings, store, unit_id, models, **kw):
    return transcribe_unit(settings, store, unit_id, transcriber=models["transcriber"], **kw)


def classify(settings, store, unit_id, models, **kw):
    return classify_unit(settings, store, unit_id, classifier=models["classifier"], **kw)


@pytest.fixture
def day(tmp_path, store, tiny_settings):
    settings = replace(tiny_settings, data_root=tmp_path / "data")
    settings.ensure_layout()
    generate_day(
        settings.incoming,
        date.fromisoformat(DAY),
        archives=1,
        files_per_archive=4,
        minutes=0.5,
        seed=11,
    )
    for archive_id in register_archives(settings, store, DAY):
        unpack_archive(settings, store, archive_id)
    [unit_id] = plan_test_units(store, "run-1", DAY)
    return settings, store, unit_id


def _counts(store):
    return {
        t: store.scalar(f"SELECT count(*) FROM {t}")
        for t in ("transcripts", "labels", "review_queue")
    }


def test_batch_with_a_bad_file_keeps_the_others(day, models):
    settings, store, unit_id = day
    victim = store.rows("SELECT id, path FROM audio_files ORDER BY id LIMIT 1")[0]
    with Path(victim.path).open("r+b") as handle:  # damaged on the volume after validation
        handle.truncate(20)

    result = transcribe(settings, store, unit_id, models)
    assert (result.items, result.quarantined) == (3, 1)
    status = dict(store.rows("SELECT id, status FROM audio_files"))
    assert status.pop(victim.id) == "quarantined"
    assert set(status.values()) == {"transcribed"}
    assert store.scalar("SELECT error FROM audio_files WHERE id = :i", i=victim.id).startswith(
        "undecodable"
    )

    classify(settings, store, unit_id, models)
    assert set(dict(store.rows("SELECT id, status FROM audio_files")).values()) == {
        "classified",
        "quarantined",
    }
    counts = _counts(store)
    assert counts["transcripts"] == 3 and counts["labels"] == 3 * 2  # two policies
    flagged = store.rows("SELECT file_id, policy, score FROM labels WHERE label = 1 ORDER BY 1, 2")
    queued = store.rows("SELECT file_id, policy, score FROM review_queue ORDER BY 1, 2")
    assert [tuple(r) for r in flagged] == [tuple(r) for r in queued]
    assert all(r.score >= settings.flag_threshold for r in queued)


def test_rerun_and_reprocess_leave_one_row_each(day, models):
    settings, store, unit_id = day
    transcribe(settings, store, unit_id, models)
    classify(settings, store, unit_id, models)
    first = _counts(store)

    again = transcribe(settings, store, unit_id, models)
    assert (again.items, again.skipped) == (0, 4)
    assert classify(settings, store, unit_id, models).items == 0
    assert _counts(store) == first

    redo = transcribe(settings, store, unit_id, models, reprocess=True)
    assert redo.items == 4
    assert classify(settings, store, unit_id, models, reprocess=True).items == 8
    assert _counts(store) == first
    assert store.scalar("SELECT count(*) FROM work_units WHERE transcribe_wall_s > 0") == 1


def test_changed_policy_is_scored_again(day, models, tmp_path):
    settings, store, unit_id = day
    transcribe(settings, store, unit_id, models)
    classify(settings, store, unit_id, models)
    policies = tmp_path / "policies"
    policies.mkdir()
    for source in sorted(settings.policies_dir.glob("*.md")):
        (policies / source.name).write_text(source.read_text() + "\nRevised.\n")
    revised = replace(settings, policies_dir=policies)
    assert classify(revised, store, unit_id, models).items == 8
    assert store.scalar("SELECT count(DISTINCT policy_sha) FROM labels") == 4


def test_silence_is_not_decoded_or_scored_and_the_unit_records_its_figures(day, models):
    settings, store, unit_id = day
    silent = store.rows("SELECT id FROM audio_files ORDER BY id LIMIT 1")[0].id
    with store.begin() as conn:  # intake found it silent
        conn.exec_driver_sql(f"UPDATE audio_files SET silent = 1 WHERE id = {silent}")
    rows_before = models["transcriber"].counters.rows

    result = transcribe(settings, store, unit_id, models)
    assert (result.items, result.silent_files) == (4, 1)
    assert store.scalar("SELECT text FROM transcripts WHERE file_id = :f", f=silent) == ""
    assert result.asr_rows == models["transcriber"].counters.rows - rows_before > 0
    assert result.asr_forwards >= 1 and result.asr_batch_size == settings.asr_batch_size
    unit = store.rows("SELECT * FROM work_units WHERE id = :b", b=unit_id)[0]
    assert (unit.asr_rows, unit.asr_forwards) == (result.asr_rows, result.asr_forwards)
    assert unit.asr_fed_s > 0 and unit.asr_padded_s >= 0 and unit.transcribe_host
    assert unit.transcribe_load_s == 0  # the model was handed in, not loaded

    classify(settings, store, unit_id, models)
    scores = store.rows("SELECT score, label FROM labels WHERE file_id = :f", f=silent)
    assert len(scores) == 2 and all((r.score, r.label) == (0.0, 0) for r in scores)
    assert not store.scalar("SELECT count(*) FROM review_queue WHERE file_id = :f", f=silent)
    assert store.scalar("SELECT classify_host FROM work_units WHERE id = :b", b=unit_id)


def test_a_share_of_scores_below_the_threshold_is_queued_as_samples(day, models):
    settings, store, unit_id = day
    transcribe(settings, store, unit_id, models)
    classify(replace(settings, review_sample_share=1.0), store, unit_id, models)
    below = store.scalar("SELECT count(*) FROM labels WHERE label = 0")
    flagged = store.scalar("SELECT count(*) FROM labels WHERE label = 1")
    kinds = dict(store.rows("SELECT kind, count(*) FROM review_queue GROUP BY kind ORDER BY kind"))
    assert kinds == {k: n for k, n in (("flag", flagged), ("sample", below)) if n}
    assert below + flagged == 8
    classify(replace(settings, review_sample_share=0.0), store, unit_id, models, reprocess=True)
    assert store.scalar("SELECT count(*) FROM review_queue WHERE kind = 'sample'") == below


def test_audio_gone_since_intake_is_set_aside_as_vanished(day, models):
    """A spoken file and a file intake found silent, both deleted after the unpack: each ends
    quarantined as ``vanished`` (not ``undecodable``, and the silent one not classified
    unopened); the others are screened."""
    settings, store, unit_id = day
    spoken, silent, *_ = store.rows("SELECT id, path FROM audio_files ORDER BY id")
    with store.begin() as conn:
        conn.execute(sa.text("UPDATE audio_files SET silent = 1 WHERE id = :i"), {"i": silent.id})
    Path(spoken.path).unlink()
    Path(silent.path).unlink()

    result = transcribe(settings, store, unit_id, models)
    assert (result.items, result.quarantined) == (2, 2)
    classify(settings, store, unit_id, models)
    rows = {
        r.id: (r.status, r.error) for r in store.rows("SELECT id, status, error FROM audio_files")
    }
    for gone in (spoken.id, silent.id):
        status, error = rows.pop(gone)
        assert status == "quarantined" and error.startswith("vanished: "), error
    assert {status for status, _ in rows.values()} == {"classified"}
    assert (
        store.scalar(
            "SELECT count(*) FROM transcripts WHERE file_id IN (:a, :b)", a=spoken.id, b=silent.id
        )
        == 0
    )
