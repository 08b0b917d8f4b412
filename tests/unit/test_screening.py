"""The GPU stage's orchestration with the tiny real models: idempotent writes, a bad file does
not lose the batch, flagged labels land in the review queue, the budget caps batch sizes."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
import torch
from delivery_kit import plan_test_units
from earmark.config import Settings
from earmark.gpu.classify import classify_unit
from earmark.gpu.models import resolve_dtype, stage_plan
from earmark.gpu.transcribe import transcribe_unit
from earmark.gpu.work_units import UnitOverBudget, unit_budget, unit_deadline
from earmark.inference.classifier import NonFiniteScoreError, classifier_dtype
from earmark.inference.policies import load_policies
from earmark.ingest.deliveries import register_archives
from earmark.ingest.unpack import unpack_archive
from earmark.orchestration.alerts import reason_line
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


def test_the_classifier_never_gets_float16_on_a_card_without_bfloat16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_dtype("auto", "cuda") == "float16"  # Whisper's
    assert classifier_dtype(resolve_dtype("auto", "cuda")) == "float32"
    assert classifier_dtype("bfloat16") == "bfloat16"


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


def test_a_nan_score_fails_the_task_naming_file_and_policy_with_nothing_written(
    day, models, monkeypatch
):
    """One file's classifier forward yields NaN: no label (no 0 for a score never computed),
    no review item, the files stay unclassified, and the failure line names file and policy."""
    settings, store, unit_id = day
    transcribe(settings, store, unit_id, models)
    clf = models["classifier"]
    marker = set(clf.tokenizer.encode("zzz", add_special_tokens=False))
    victim, *_ = [r.id for r in store.rows("SELECT id FROM audio_files ORDER BY id")]
    with store.begin() as conn:  # known texts, so only the victim's row holds the marker
        conn.execute(
            sa.text("UPDATE transcripts SET text = 'zzz zzz' WHERE file_id = :f"), {"f": victim}
        )
        conn.execute(
            sa.text("UPDATE transcripts SET text = 'you are rude' WHERE file_id != :f"),
            {"f": victim},
        )
    assert not marker & set(clf.tokenizer.encode("you are rude", add_special_tokens=False))
    real = clf.decoder.forward

    def nan_for_the_victim(*args, **kwargs):
        out = real(*args, **kwargs)
        victim_rows = torch.isin(kwargs["input_ids"], torch.tensor(sorted(marker))).any(dim=1)
        out.last_hidden_state[victim_rows] = torch.nan
        return out

    monkeypatch.setattr(clf.decoder, "forward", nan_for_the_victim)
    with pytest.raises(NonFiniteScoreError) as caught:
        classify(settings, store, unit_id, models)
    first_policy = load_policies(settings.policies_dir)[0].name
    assert caught.value.file_ids == [victim]
    line = reason_line(caught.value)  # what the failure mail carries
    assert line.startswith(f"NonFiniteScoreError: non-finite score (NaN or inf) for file {victim}")
    assert f"policy {first_policy!r}" in line and "zzz" not in line
    assert _counts(store)["labels"] == 0 and _counts(store)["review_queue"] == 0
    assert "classified" not in {r.status for r in store.rows("SELECT status FROM audio_files")}


def test_a_gpu_task_over_its_unit_budget_fails_naming_the_unit(day, models):
    settings, store, unit_id = day
    transcribe(settings, store, unit_id, models)
    budget = replace(unit_budget(store, unit_id, fallback_s=7500), seconds=0.001)
    with pytest.raises(UnitOverBudget) as caught, unit_deadline(budget, "classify"):
        classify(settings, store, unit_id, models)
    line = reason_line(caught.value)
    assert line.startswith(f"UnitOverBudget: unit {unit_id} ({DAY} unit 000 (4 files)) classify")
    assert classify(settings, store, unit_id, models).items == 8  # a retry finishes the unit


def test_a_file_with_no_speech_is_recorded_as_such(day, models):
    """Quiet room noise (not silent by peak level: intake passed it) is decoded, VAD finds no
    speech, and the file is marked ``no_speech`` with its empty transcript and counted; the
    spoken files are not marked."""
    import soundfile as sf
    from earmark_dev.speech import noise_floor

    settings, store, unit_id = day
    quiet = store.rows("SELECT id, path FROM audio_files ORDER BY id LIMIT 1")[0]
    info = sf.info(quiet.path)
    sf.write(quiet.path, noise_floor(20.0, seed=9), 16000, format=info.format)

    result = transcribe(settings, store, unit_id, models)
    assert (result.items, result.no_speech_files, result.silent_files) == (4, 1, 0)
    marks = dict(store.rows("SELECT id, no_speech FROM audio_files"))
    assert marks.pop(quiet.id) == 1 and set(marks.values()) == {0}
    assert store.scalar("SELECT text FROM transcripts WHERE file_id = :f", f=quiet.id) == ""
    assert store.scalar("SELECT status FROM audio_files WHERE id = :f", f=quiet.id) == "transcribed"
