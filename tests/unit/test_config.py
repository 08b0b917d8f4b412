from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest
from earmark.config import PROJECT_ROOT, Settings, settings_table_markdown


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
