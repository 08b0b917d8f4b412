"""Every named monitoring, report and alert query on Postgres and SQLite, against a constructed
day whose answers are known (earmark_dev.constructed_day), and each one used by the code."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from earmark.config import PROJECT_ROOT
from earmark.store.sql import named_queries
from earmark_dev.constructed_day import DAY, at, build

FILES = ("monitoring", "day_report", "alerts", "review_stats")


def _rows(store, file: str, name: str, **params) -> list[dict]:
    with store.engine.connect() as conn:
        result = conn.execute(sa.text(named_queries(file)[name]), params)
        return [dict(r._mapping) for r in result]


@pytest.mark.parametrize("file", FILES)
def test_every_named_query_is_used_by_the_code(file):
    code = "\n".join(
        p.read_text(encoding="utf-8") for p in (PROJECT_ROOT / "include" / "earmark").rglob("*.py")
    )
    unused = [name for name in named_queries(file) if f'"{name}"' not in code]
    assert not unused, f"{file}.sql: no code runs {unused}"


def test_day_report_queries(store):
    build(store)
    progress = _rows(store, "day_report", "progress", d=DAY)
    assert [float(r["audio_s"]) for r in progress] == [60.0, 120.0, 30.0]
    batches = _rows(store, "day_report", "batches", d=DAY)
    assert [(b["run_id"], b["seq"], b["n_files"]) for b in batches] == [
        ("r1", 1, 2),
        ("r2", 1, 1),
        ("r1", 2, 2),
    ]
    flags = _rows(store, "day_report", "flags_by_policy", d=DAY)
    assert [(f["policy"], int(f["scored"]), int(f["flagged"])) for f in flags] == [
        ("harassment", 3, 2),
        ("self_harm", 3, 1),
    ]
    review = _rows(store, "day_status", "review_item_counts", d=DAY, now=at(12))
    assert [(r["policy"], r["status"], int(r["n"])) for r in review] == [
        ("harassment", "pending", 1),
        ("harassment", "resolved", 1),
        ("self_harm", "claimed", 1),
    ]
    # Once its lease has ended the claim counts as pending again, here and in the backlog.
    lapsed = _rows(store, "day_status", "review_item_counts", d=DAY, now=at(23, 1))
    assert ("self_harm", "pending", 1) in [(r["policy"], r["status"], int(r["n"])) for r in lapsed]
    backlog = {
        r["status"]: int(r["n"]) for r in _rows(store, "monitoring", "review_backlog", now=at(12))
    }
    assert backlog == {"pending": 1, "claimed": 1}
    backlog = {
        r["status"]: int(r["n"])
        for r in _rows(store, "monitoring", "review_backlog", now=at(23, 1))
    }
    assert backlog == {"pending": 2}
    archives = _rows(store, "day_report", "archive_completeness", d=DAY)
    assert [
        (
            a["name"],
            a["status"],
            *(int(a[k]) for k in ("files", "screened", "quarantined", "pending")),
        )
        for a in archives
    ] == [
        ("b.tar", "unpacked", 2, 1, 0, 1),  # incomplete first, then by name
        ("c.tar", "registered", 0, 0, 0, 0),
        ("a.tar", "unpacked", 3, 2, 1, 0),
    ]


def test_monitoring_queries(store):
    build(store)
    units = _rows(store, "monitoring", "unfinished_units")
    assert [(u["run_id"], int(u["units"]), int(u["files"])) for u in units] == [
        ("r2", 1, 1),
        ("r1", 1, 1),
    ]
    screened = _rows(store, "monitoring", "screened_since", since=store.timestamp(at(8, 30)))
    assert (int(screened[0]["files"]), float(screened[0]["audio_s"])) == (2, 150.0)
    refused = _rows(store, "monitoring", "quarantined_since", since=store.timestamp(at(6, 44)))
    assert sorted(r["kind"] for r in refused) == ["delivery", "file"]
    later = _rows(store, "monitoring", "quarantined_since", since=store.timestamp(at(6, 50)))
    assert [r["reason"] for r in later] == ["bad_audio: not a sound file"]
    failures = _rows(store, "monitoring", "task_failures_since", since=store.timestamp(at(11)))
    assert [(f["task_id"], int(f["n"])) for f in failures] == [
        ("gpu_unit.transcribe", 2),
        ("report", 1),
    ]
    none_yet = _rows(
        store, "monitoring", "task_failures_since", since=store.timestamp(at(12) + timedelta(1))
    )
    assert none_yet == []


def test_alert_queries(store):
    build(store)
    run = _rows(store, "alerts", "run_failures", run_id="r1")
    assert [(r["task_id"], r["map_index"], r["reason"]) for r in run] == [
        ("gpu_unit.transcribe", 1, "RuntimeError: try 2"),  # the last try only
        ("report", -1, "RuntimeError: try 1"),
    ]
    assert {str(r["run_date"])[:10] for r in run} == {DAY}
    day = _rows(store, "alerts", "day_failures", d=DAY)
    assert [(r["task_id"], r["try_number"]) for r in day] == [
        ("report", 1),
        ("gpu_unit.transcribe", 2),
        ("gpu_unit.transcribe", 1),
    ]
    with store.begin() as conn:  # the same try recorded twice is kept once
        conn.execute(
            sa.text(named_queries("alerts")["save_failure"]),
            {
                "run_id": "r1",
                "run_date": DAY,
                "task_id": "report",
                "map_index": -1,
                "map_name": None,
                "try_number": 1,
                "reason": "again",
            },
        )
    assert len(_rows(store, "alerts", "day_failures", d=DAY)) == 3
