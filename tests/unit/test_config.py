from __future__ import annotations

import logging
from dataclasses import fields
from datetime import time
from pathlib import Path

import pytest
from earmark import config
from earmark.config import PROJECT_ROOT, Setting, Settings, declared, settings_table_markdown


def test_defaults(monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("EARMARK_"):
            monkeypatch.delenv(name)
    s = Settings.from_env()
    assert s.deadline_time == time(12, 0)
    assert s.db_conn_id == "earmark_db"
    assert s.policies_dir == PROJECT_ROOT / "include" / "policies"
    assert s.incoming == Path("/mnt/data/incoming")


def test_read_at_call_time(monkeypatch):
    monkeypatch.setenv("EARMARK_DEADLINE_TIME", "11:30")
    monkeypatch.setenv("EARMARK_POLICIES_DIR", "/srv/policies")
    s = Settings.from_env()
    assert s.deadline_time == time(11, 30)
    assert s.policies_dir == Path("/srv/policies")


def test_readme_configuration_table_is_current():
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert settings_table_markdown() in readme


def test_a_bad_local_time_names_its_variable(monkeypatch):
    monkeypatch.setenv("EARMARK_INTAKE_CUTOFF", "25:00")
    with pytest.raises(
        ValueError, match=r"EARMARK_INTAKE_CUTOFF must be a local time HH:MM, got '25:00'"
    ):
        Settings.from_env()


def test_a_share_outside_zero_to_one_names_its_variable(monkeypatch):
    monkeypatch.setenv("EARMARK_REVIEW_QA_SHARE", "1.5")
    with pytest.raises(
        ValueError, match=r"EARMARK_REVIEW_QA_SHARE must be a share from 0 to 1, got '1.5'"
    ):
        Settings.from_env()


def test_a_bad_number_names_its_variable(monkeypatch):
    monkeypatch.setenv("EARMARK_GPU_SLOTS", "two")
    with pytest.raises(ValueError, match=r"EARMARK_GPU_SLOTS must be a whole number, got 'two'"):
        Settings.from_env()


def test_each_attribute_is_named_after_its_variable():
    for settings_field in fields(Settings):
        assert declared(settings_field).env == "EARMARK_" + settings_field.name.upper()


def test_typed_attributes(monkeypatch):
    monkeypatch.setenv("EARMARK_DEADLINE_ALERTS", "off")
    monkeypatch.setenv("EARMARK_GPU_SLOTS", "3")
    monkeypatch.setenv("EARMARK_TRANSFER_KNOWN_HOSTS", "/etc/kh")
    s = Settings.from_env()
    assert s.deadline_alerts is False
    assert s.gpu_slots == 3
    assert s.transfer_known_hosts == Path("/etc/kh")
    assert isinstance(s.flag_threshold, float)


@pytest.fixture
def fresh_deprecations(monkeypatch):
    """Forget which old names this process has already warned about."""
    monkeypatch.setattr(config, "_warned_old_names", set())
    monkeypatch.delenv("EARMARK_UNIT_MAX_FILES", raising=False)
    monkeypatch.delenv("EARMARK_BATCH_MAX_FILES", raising=False)


@pytest.mark.usefixtures("fresh_deprecations")
def test_an_old_name_is_read_while_the_new_one_is_unset_warning_once(monkeypatch, caplog):
    monkeypatch.setenv("EARMARK_BATCH_MAX_FILES", "12")
    with caplog.at_level(logging.WARNING, logger="earmark.config"):
        assert Settings.from_env().unit_max_files == 12
        assert Settings.from_env().unit_max_files == 12
    warnings = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert len(warnings) == 1
    assert "EARMARK_BATCH_MAX_FILES" in warnings[0]
    assert "EARMARK_UNIT_MAX_FILES" in warnings[0]


@pytest.mark.usefixtures("fresh_deprecations")
def test_the_new_name_wins_over_the_old(monkeypatch):
    monkeypatch.setenv("EARMARK_BATCH_MAX_FILES", "12")
    monkeypatch.setenv("EARMARK_UNIT_MAX_FILES", "34")
    assert Settings.from_env().unit_max_files == 34


@pytest.mark.usefixtures("fresh_deprecations")
def test_no_warning_without_the_old_name(caplog):
    with caplog.at_level(logging.WARNING, logger="earmark.config"):
        assert Settings.from_env().unit_max_files == 2000
    assert not [r for r in caplog.records if "deprecated" in r.getMessage()]


def test_any_declared_old_name_is_read_and_documented(monkeypatch):
    """The mechanism is general: a Setting with ``old`` falls back to it, and the README says so."""
    renamed = Setting("EARMARK_NEW_X", "1", "X.", int, old="EARMARK_OLD_X")
    monkeypatch.setattr(config, "_warned_old_names", set())
    monkeypatch.setenv("EARMARK_OLD_X", "5")
    assert renamed.read() == 5
    monkeypatch.setenv("EARMARK_NEW_X", "6")
    assert renamed.read() == 6
    assert "Formerly `EARMARK_BATCH_MAX_FILES`" in settings_table_markdown()
