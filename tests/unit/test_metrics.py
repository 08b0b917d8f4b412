"""Earmark's Prometheus metrics: read from a real results DB (both backends), served by
`earmark metrics` over HTTP and parsed with Prometheus's own text parser."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from delivery_kit import deliver, tar_bytes, wav
from earmark.config import PROJECT_ROOT, Settings
from earmark.ingest.deliveries import register_archives
from earmark.ingest.unpack import unpack_archive
from earmark.ops.metrics import METRIC_NAMES, EarmarkCollector
from earmark.store.db import Store
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

DAY = "2026-11-29"
NOON = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path) -> Settings:
    s = replace(Settings.from_env(), data_root=tmp_path / "data", timezone="Europe/London")
    s.ensure_layout()
    return s


def _a_day(settings: Settings, store: Store) -> None:
    """Two archives unpacked (one file refused), one review item an hour old."""
    deliver(settings.incoming, "a.tar", tar_bytes({"x.wav": wav(1.0), "y.wav": wav(2.0, 300)}))
    deliver(settings.incoming, "b.tar", tar_bytes({"z.wav": wav(0.5, 500), "bad.wav": b"RIFF?"}))
    for archive_id in register_archives(settings, store, DAY):
        unpack_archive(settings, store, archive_id)
    file_id = store.scalar("SELECT min(id) FROM audio_files WHERE status = 'ready'")
    with store.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO review_queue (file_id, policy, policy_sha, model, score, created_at)"
                " VALUES (:f, 'harassment', 'sha', 'tiny', 0.9, :at)"
            ),
            {"f": file_id, "at": datetime(2026, 11, 29, 11, 0)},
        )


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _scrape(settings: Settings, store: Store) -> dict:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EarmarkCollector(settings, store, clock=lambda: NOON))
    return _samples(generate_latest(registry).decode())


def test_the_day_and_its_backlogs_as_gauges(settings, store):
    _a_day(settings, store)
    got = _scrape(settings, store)
    assert got[("earmark_up", ())] == 1
    assert got[("earmark_day_files", (("status", "ready"),))] == 3
    assert got[("earmark_day_files", (("status", "quarantined"),))] == 1
    assert got[("earmark_day_archives", (("status", "unpacked"),))] == 2
    assert got[("earmark_day_deliveries", (("status", "registered"),))] == 2
    assert got[("earmark_day_quarantined", (("kind", "file"), ("reason", "unreadable")))] == 1
    assert got[("earmark_day_audio_seconds", (("part", "pending"),))] == pytest.approx(3.5, 0.01)
    assert got[("earmark_files_in_flight", (("status", "ready"),))] == 3
    assert got[("earmark_audio_in_flight_seconds", (("status", "ready"),))] == pytest.approx(3.5)
    assert got[("earmark_review_backlog_items", (("status", "pending"),))] == 1
    assert got[("earmark_review_oldest_open_age_seconds", ())] == pytest.approx(3600)
    assert got[("earmark_day_complete", ())] == 0
    assert got[("earmark_day_deadline_timestamp_seconds", ())] == NOON.timestamp()
    # Labels are statuses and reason codes: no file or archive name anywhere.
    assert not [key for key in got if any(v.endswith((".wav", ".tar")) for _, v in key[1])]
    assert {name for name, _ in got} <= METRIC_NAMES


def test_the_last_hour_throughput_quarantines_and_failures(settings, store):
    from earmark_dev.constructed_day import at, build

    build(store)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EarmarkCollector(settings, store, clock=lambda: at(7, 30)))
    got = _samples(generate_latest(registry).decode())
    assert (
        got[
            (
                "earmark_quarantined_last_hour",
                (("kind", "delivery"), ("reason", "checksum_mismatch")),
            )
        ]
        == 1
    )
    assert got[("earmark_quarantined_last_hour", (("kind", "file"), ("reason", "bad_audio")))] == 1
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EarmarkCollector(settings, store, clock=lambda: at(11, 10)))
    got = _samples(generate_latest(registry).decode())
    assert got[("earmark_screened_last_hour_files", ())] == 1
    assert got[("earmark_screened_last_hour_audio_seconds", ())] == 30
    assert got[("earmark_task_failures_last_hour", (("task", "gpu_unit.transcribe"),))] == 2
    assert got[("earmark_task_failures_last_hour", (("task", "report"),))] == 1
    assert not [key for key in got if key[0] == "earmark_quarantined_last_hour"]
    assert {name for name, _ in got} <= METRIC_NAMES


def test_the_grafana_dashboard_uses_only_metrics_earmark_serves():
    dashboard = json.loads(
        (PROJECT_ROOT / "deploy" / "grafana" / "earmark-dashboard.json").read_text()
    )
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\bearmark_[a-z_]+", expr)}
    assert used and used <= METRIC_NAMES, used - METRIC_NAMES


def test_an_unreadable_results_db_is_earmark_up_0_and_nothing_else(settings):
    down = Store.from_url("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2")
    assert _scrape(settings, down) == {("earmark_up", ()): 0}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_earmark_metrics_serves_them_over_http(settings, pg_url):
    store = Store.from_url(pg_url)
    store.migrate()
    _a_day(settings, store)
    port = _free_port()
    env = {
        **os.environ,
        "EARMARK_DATA_ROOT": str(settings.data_root),
        "EARMARK_METRICS_PORT": str(port),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "earmark.cli", "--db-url", pg_url, "metrics"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    text = r.read().decode()
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "earmark metrics never answered"
                time.sleep(0.3)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        store.dispose()
    got = _samples(text)
    assert got[("earmark_up", ())] == 1
    assert got[("earmark_files_in_flight", (("status", "ready"),))] == 3
    assert got[("earmark_review_backlog_items", (("status", "pending"),))] == 1
