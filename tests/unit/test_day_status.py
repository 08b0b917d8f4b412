"""The noon check names deliveries still waiting in incoming/, and says what becomes of them."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, time
from zoneinfo import ZoneInfo

from earmark.config import Settings
from earmark.day.status import day_status, format_summary

LONDON = ZoneInfo("Europe/London")


def _settings(tmp_path) -> Settings:
    return replace(
        Settings.from_env(),
        data_root=tmp_path / "data",
        timezone="Europe/London",
        start_time=time(6, 0),
        intake_cutoff=time(10, 0),
        deadline_time=time(12, 0),
    )


def test_late_deliveries_are_named_with_what_becomes_of_them(store, tmp_path):
    settings = _settings(tmp_path)
    settings.ensure_layout()
    (settings.incoming / "2026-11-30-late.tar").write_bytes(b"x")
    (settings.incoming / "2026-11-30-late.tar.sha256").write_text("0" * 64)
    (settings.incoming / "2026-11-30-still-arriving.tar").write_bytes(b"x")  # no marker yet

    before = day_status(settings, store, "2026-11-30", datetime(2026, 11, 30, 9, 0, tzinfo=LONDON))
    assert before.waiting == ["2026-11-30-late.tar"]
    assert "catch-up run today (before the 10:00 cut-off)" in before.waiting_for

    after = day_status(settings, store, "2026-11-30", datetime(2026, 11, 30, 11, 0, tzinfo=LONDON))
    assert after.waiting == ["2026-11-30-late.tar"]
    assert "next day's run (arrived after the 10:00 cut-off)" in after.waiting_for
    summary = format_summary(after)
    assert "waiting       1 in incoming/ for the next day's run" in summary
    assert "2026-11-30-late.tar" in summary

    # Another day's status does not claim today's incoming/.
    other = day_status(settings, store, "2026-11-29", datetime(2026, 11, 30, 11, 0, tzinfo=LONDON))
    assert other.waiting == [] and "waiting" not in format_summary(other)
