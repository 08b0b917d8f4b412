"""The day's HTML report: its plots and tables from a constructed day on both backends, stored
with the day, and nothing of a transcript in it."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest
import sqlalchemy as sa
from earmark.config import Settings
from earmark.day.report import read_figures, stored_report, write_day_report
from earmark_dev.constructed_day import DAY, at, build

SECRET = "SECRET-TRANSCRIPT-IN-REPORT"


@pytest.fixture
def settings(tmp_path) -> Settings:
    return replace(Settings.from_env(), data_root=tmp_path / "data", timezone="Europe/London")


def _svgs(html: str) -> list[ET.Element]:
    found, start = [], 0
    while (start := html.find("<svg", start)) >= 0:
        end = html.index("</svg>", start) + len("</svg>")
        found.append(ET.fromstring(html[start:end]))  # each plot is well-formed SVG
        start = end
    return found


def test_the_report_of_a_constructed_day(settings, store):
    ids = build(store)
    with store.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO transcripts (file_id, model, text, n_chars) VALUES (:f, 'w', :t, 9)"
            ),
            {"f": ids["x1.wav"], "t": SECRET},
        )
    figures = read_figures(settings, store, DAY, now=at(11, 40))
    assert sum(s for _, s in figures.progress) == 210.0
    assert dict(figures.quarantine_by_reason) == {
        "delivery: checksum_mismatch": 1,
        "file: bad_audio": 1,
    }
    assert figures.review == {  # per policy version: the constructed day has one, "p" by "m"
        "harassment p m": {"pending": 1, "resolved": 1},
        "self_harm p m": {"claimed": 1},
    }

    html = write_day_report(settings, store, DAY, "r1", now=at(11, 40))
    assert stored_report(store, DAY) == html
    assert len(_svgs(html)) == 5
    for plot in ("progress", "batches", "quarantine", "flags", "review"):
        assert f'id="plot-{plot}"' in html
    assert "In progress, on time" in html  # 90 s pending at 60x real time, before noon
    assert "deadline 12:00" in html and "ETA 11:40" in html
    assert "RuntimeError: try 2" in html and "unit 2 of r1" in html  # the failed tasks
    assert html.index("b.tar") < html.index("c.tar") < html.index("a.tar")  # incomplete first
    assert "checksum_mismatch: marker says 1234" in html
    assert SECRET not in html
    harassment = next(q for q in figures.quality if q.policy == "harassment")
    assert (harassment.decided, harassment.violations, harassment.precision) == (1, 1, 1.0)
    assert 'id="flag-quality"' in html and "100% (21–100%)" in html

    again = write_day_report(settings, store, DAY, "r2", now=at(12, 30))
    assert store.scalar("SELECT count(*) FROM day_reports") == 1
    assert stored_report(store, DAY) == again and "by run r2" in again


def test_a_day_with_nothing_delivered(settings, store):
    html = write_day_report(settings, store, "2026-11-27", "empty", now=at(13))
    assert len(_svgs(html)) == 5
    assert "Nothing delivered" in html
    for empty in ("nothing screened yet", "no GPU work unit finished", "nothing quarantined"):
        assert empty in html
    assert stored_report(store, "2026-11-26") is None


def test_the_report_counts_files_with_no_speech(settings, store):
    """VAD's "no speech" (set when a file is transcribed) is counted apart from intake's
    "silent"; a quarantined file counts for neither."""
    ids = build(store)
    with store.begin() as conn:
        for member, column in (("x2.wav", "no_speech"), ("bad.wav", "no_speech")):
            conn.execute(
                sa.text(f"UPDATE audio_files SET {column} = 1 WHERE id = :f"), {"f": ids[member]}
            )
        conn.execute(
            sa.text("UPDATE audio_files SET silent = 1 WHERE id = :f"), {"f": ids["y1.wav"]}
        )
    figures = read_figures(settings, store, DAY, now=at(11, 40))
    assert (figures.no_speech, figures.silent) == (1, 1)
    html = write_day_report(settings, store, DAY, "r1", now=at(11, 40))
    assert '<dd id="no-speech">1 file (VAD found none), 1 silent at intake</dd>' in html
    empty = write_day_report(settings, store, "2026-11-27", "empty", now=at(13))
    assert '<dd id="no-speech">0 files (VAD found none)</dd>' in empty
