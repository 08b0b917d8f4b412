"""Versions never mixed, on both backends: a policy is edited, two past days are rescreened
(planned and screened by the GPU stage's own code, on the tiny real models), the old labels are
kept and superseded, the new ones current; a decided item stays under its version, undecided
ones are withdrawn; the day's counts, the data-quality check and the review stats speak per
version; and the command's plan, audit and refusals."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from delivery_kit import plan_test_units
from earmark.cli import main
from earmark.day.status import day_status
from earmark.gpu.classify import classify_unit
from earmark.gpu.transcribe import transcribe_unit
from earmark.inference.policies import load_policies
from earmark.ingest.deliveries import register_archives
from earmark.ingest.unpack import unpack_archive
from earmark.review.queue import claim_next, resolve
from earmark.review.stats import flag_quality, version_label
from earmark.store.sql import named_queries
from earmark.versions import rescreen
from earmark_dev.sampledata import generate_day

DAYS = ("2026-11-27", "2026-11-28")


def _screen(settings, store, models, run_id: str, day: str) -> list[int]:
    units = plan_test_units(store, run_id, day)
    for unit_id in units:
        transcribe_unit(settings, store, unit_id, transcriber=models["transcriber"])
        classify_unit(settings, store, unit_id, classifier=models["classifier"])
    return units


@pytest.fixture
def screened(tmp_path, store, tiny_settings, models):
    """Two days of two recordings each, screened under two policies with every score flagged
    (threshold 0), one flag of the first day decided."""
    policies = tmp_path / "policies"
    shutil.copytree(tiny_settings.policies_dir, policies)
    settings = replace(
        tiny_settings, data_root=tmp_path / "data", policies_dir=policies, flag_threshold=0.0
    )
    settings.ensure_layout()
    for n, day in enumerate(DAYS):
        generate_day(
            settings.incoming, date.fromisoformat(day), archives=1, files_per_archive=2,
            minutes=0.2, seed=20 + n,
        )  # fmt: skip
        for archive_id in register_archives(settings, store, day):
            unpack_archive(settings, store, archive_id)
        _screen(settings, store, models, f"run-{day}", day)
    item = claim_next(store, "ana")
    resolve(store, item.id, "ana", "violation")
    return settings, store, item


def _edit(settings, name: str) -> tuple[str, str]:
    """Reword policy ``name``; its (old, new) sha256."""
    old = next(p for p in load_policies(settings.policies_dir) if p.name == name)
    path = next(settings.policies_dir.glob(f"{name}.*"))
    path.write_text(path.read_text(encoding="utf-8") + "\nAlso covers threats made in jest.\n")
    new = next(p for p in load_policies(settings.policies_dir) if p.name == name)
    assert new.sha256 != old.sha256
    return old.sha256, new.sha256


def test_a_rescreen_after_a_policy_edit_supersedes_and_splits_by_version(screened, models):
    settings, store, decided = screened
    edited, other = (p.name for p in load_policies(settings.policies_dir))
    before = {tuple(r) for r in store.rows("SELECT id, policy, score, created_at FROM labels")}
    old_sha, new_sha = _edit(settings, edited)

    plan = rescreen.plan_rescreen(settings, store, *DAYS)
    assert [d.run_date for d in plan.days] == list(DAYS)
    assert [(d.files, len(d.to_classify), d.stale) for d in plan.days] == [(2, 2, {edited: 2})] * 2
    assert plan.versions[edited] == new_sha
    rescreen_id = rescreen.send_back(store, plan, "ops-lead")
    assert store.scalar("SELECT count(*) FROM audio_files WHERE status = 'transcribed'") == 4

    for day in DAYS:  # each day's next run: planned and screened as any day
        _screen(settings, store, models, f"rescreen-{day}", day)

    labels = store.rows("SELECT * FROM labels ORDER BY id")
    old = [r for r in labels if r.policy == edited and r.policy_sha == old_sha]
    new = [r for r in labels if r.policy == edited and r.policy_sha == new_sha]
    untouched = [r for r in labels if r.policy == other]
    assert len(old) == len(new) == len(untouched) == 4
    assert all(r.superseded_at is not None for r in old)  # kept, marked
    assert all(r.superseded_at is None for r in new + untouched)
    assert {tuple(r) for r in store.rows("SELECT id, policy, score, created_at FROM labels")} >= (
        before  # nothing overwritten: every earlier label as it was, apart from its mark
    )
    assert {r.status for r in store.rows("SELECT status FROM audio_files")} == {"classified"}

    items = store.rows("SELECT * FROM review_queue WHERE kind = 'flag' ORDER BY id")
    by_version = {(r.policy, r.policy_sha): [] for r in items}
    for r in items:
        by_version[(r.policy, r.policy_sha)].append(r.status)
    [kept] = store.rows("SELECT status, policy_sha FROM review_queue WHERE id = :i", i=decided.id)
    assert tuple(kept) == ("resolved", old_sha if decided.policy == edited else kept.policy_sha)
    if decided.policy == edited:
        assert sorted(by_version[(edited, old_sha)]) == ["resolved"] + ["withdrawn"] * 3
    else:
        assert by_version[(edited, old_sha)] == ["withdrawn"] * 4
    assert by_version[(edited, new_sha)] == ["pending"] * 4  # the new version's flags, queued

    for day in DAYS:
        status = day_status(settings, store, day)
        assert (status.labels, status.flagged) == (4, 4)  # current labels only
        check = named_queries("data_quality")["every_flag_in_review_queue"]
        assert store.scalar(check.replace("{{ run_date }}", day))

    quality = flag_quality(store, *DAYS)
    versions = {(q.policy, q.version) for q in quality}
    model = new[0].model
    assert {(edited, version_label(old_sha, model)), (edited, version_label(new_sha, model))} <= (
        versions
    )
    assert sum(q.scored for q in quality if q.version == version_label(new_sha, model)) == 4
    decided_under = version_label(kept.policy_sha, model)
    assert sum(q.violations for q in quality if q.version == decided_under) == 1

    kept = dict(store.rows("SELECT sha256, text FROM policy_versions WHERE policy = :p", p=edited))
    assert kept.keys() == {old_sha, new_sha}  # each version's text, for pages and auditors
    assert kept[new_sha].endswith("Also covers threats made in jest.")  # as the model read it

    again = rescreen.plan_rescreen(settings, store, *DAYS)
    assert again.files == 0 and "nothing to screen again" in rescreen.describe(again)[1]
    [audit] = rescreen.rescreens(store)
    assert (audit["id"], audit["actor"], audit["files"]) == (rescreen_id, "ops-lead", 4)
    assert audit["versions"][edited] == new_sha


def test_an_edit_reverted_makes_the_earlier_version_current_again(screened, models):
    settings, store, _ = screened
    name = load_policies(settings.policies_dir)[0].name
    path = next(settings.policies_dir.glob(f"{name}.*"))
    original = path.read_text(encoding="utf-8")
    _edit(settings, name)
    rescreen.send_back(store, rescreen.plan_rescreen(settings, store, DAYS[0], DAYS[0]), "ops")
    _screen(settings, store, models, "edit", DAYS[0])
    path.write_text(original, encoding="utf-8")
    plan = rescreen.plan_rescreen(settings, store, DAYS[0], DAYS[0], policy=name)
    assert plan.files == 2
    rescreen.send_back(store, plan, "ops")
    _screen(settings, store, models, "revert", DAYS[0])
    current = store.rows(
        "SELECT l.policy_sha FROM labels l JOIN audio_files f ON f.id = l.file_id"
        " JOIN archives a ON a.id = f.archive_id"
        " WHERE a.run_date = :d AND l.policy = :p AND l.superseded_at IS NULL",
        d=DAYS[0],
        p=name,
    )
    assert {r.policy_sha for r in current} == {load_policies(settings.policies_dir)[0].sha256}
    assert len(current) == 2
    pending = store.scalar(
        "SELECT count(*) FROM review_queue WHERE policy = :p AND status = 'pending'"
        " AND policy_sha = :s AND kind = 'flag'",
        p=name,
        s=current[0].policy_sha,
    )
    assert pending >= 1  # the earlier version's withdrawn flags are offered again


def test_the_command_plans_sends_back_and_lists(screened, monkeypatch, capsys):
    settings, store, _ = screened
    for variable, value in (
        ("EARMARK_POLICIES_DIR", settings.policies_dir),
        ("EARMARK_ASR_MODEL_DIR", settings.asr_model_dir),
        ("EARMARK_BASE_MODEL_DIR", settings.base_model_dir),
        ("EARMARK_ADAPTER_DIR", settings.adapter_dir),
    ):
        monkeypatch.setenv(variable, str(value))
    url = ["--db-url", store.engine.url.render_as_string(hide_password=False)]
    name = load_policies(settings.policies_dir)[1].name
    assert main([*url, "rescreen", "--from", DAYS[0], "--to", DAYS[1]]) == 0
    assert "in all 0 recordings" in capsys.readouterr().out
    _, new_sha = _edit(settings, name)

    assert main([*url, "rescreen", "--from", DAYS[0], "--to", DAYS[1], "--policy", name]) == 0
    dry = capsys.readouterr().out
    assert f"{name} {new_sha[:8]}" in dry and "in all 4 recordings" in dry
    assert "add --yes" in dry
    assert store.scalar("SELECT count(*) FROM audio_files WHERE status = 'transcribed'") == 0

    assert (
        main([*url, "rescreen", "--from", DAYS[0], "--policy", name, "--yes", "--by", "dpo"]) == 0
    )
    sent = capsys.readouterr().out
    assert "rescreen #1" in sent
    assert "airflow dags trigger earmark_daily --conf" in sent
    assert json.dumps({"date": DAYS[0]}) in sent and DAYS[1] not in sent.split("start them")[1]
    assert store.scalar("SELECT count(*) FROM audio_files WHERE status = 'transcribed'") == 2
    for row in store.rows("SELECT member_path FROM audio_files"):
        assert row.member_path not in dry + sent  # ids only, never names

    assert main([*url, "rescreen", "--list", "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert (listed["actor"], listed["policy"], listed["files"]) == ("dpo", name, 2)

    assert main([*url, "rescreen", "--from", DAYS[0], "--policy", "no-such"]) == 2
    assert "no policy 'no-such'" in capsys.readouterr().out
    assert main([*url, "rescreen", "--from", DAYS[1], "--to", DAYS[0]]) == 2
    assert "is after the last" in capsys.readouterr().out


def test_a_recording_whose_audio_retention_removed_is_not_screened_again(screened):
    """Its transcript is kept, but a new flag would have nothing to listen to: counted, left
    out, and its labels stay as they are."""
    settings, store, _ = screened
    gone = store.rows("SELECT id, path FROM audio_files ORDER BY id LIMIT 1")[0]
    with store.begin() as conn:
        conn.execute(
            sa.text("UPDATE audio_files SET audio_erased_at = CURRENT_TIMESTAMP WHERE id = :i"),
            {"i": gone.id},
        )
    Path(gone.path).unlink()
    _edit(settings, load_policies(settings.policies_dir)[0].name)
    plan = rescreen.plan_rescreen(settings, store, *DAYS)
    assert [d.unavailable for d in plan.days] == [[gone.id], []]
    assert plan.files == 3 and gone.id not in plan.days[0].to_classify
    assert "1 not screened again: their audio, transcript or labels removed" in "\n".join(
        rescreen.describe(plan)
    )
    rescreen.send_back(store, plan, "ops")
    assert store.scalar("SELECT status FROM audio_files WHERE id = :i", i=gone.id) == "classified"
