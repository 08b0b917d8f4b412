"""The review load benchmark: a small run end to end (a real api-server, three reviewers), and
its invariant checks catching a trail that breaks them."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from earmark.store.db import Store
from earmark_dev.bench import review_load
from earmark_dev.postgres import admin_url
from earmark_dev.review_server import seed_items

pytestmark = pytest.mark.bench


@pytest.mark.timeout(240)
def test_small_run_prints_figures_per_route_and_the_invariants_hold(capsys):
    code = review_load.main(
        [
            "--reviewers",
            "3",
            "--items",
            "12",
            "--seconds",
            "60",
            "--qa-share",
            "0.5",
            "--pg-url",
            admin_url(),
            "--json",
        ]
    )
    out = capsys.readouterr().out
    assert review_load.TRANSCRIPT_MARK not in out
    report = json.loads(out.strip().splitlines()[-1])
    assert code == 0, report
    assert report["ok"] and report["errors"] == {}
    assert not report["cut"]  # the queue drained well within the bound
    assert [c["name"] for c in report["checks"] if not c["ok"]] == []
    assert len(report["checks"]) == 8
    # Every flag and every second review decided once, each through the whole flow.
    assert report["second_reviews"] > 0
    assert report["decisions"] == 12 + report["second_reviews"]
    for route in review_load.ROUTES:
        figures = report["routes"][route]
        assert figures["count"] >= 1, route
        assert 0 < figures["p50_ms"] <= figures["p95_ms"] <= figures["max_ms"], route
    for route in ("item page", "audio", "decide"):
        assert report["routes"][route]["count"] == report["decisions"], route
    # One worker's pooled engine: at least one connection, never more than pool + overflow.
    # The pages' pool bounds the connections at 4 + 4 overflow (earmark.web.shared.POOL_*): a
    # request that opened a connection of its own, as before the pool, would pass 8.
    assert 1 <= report["connections_peak"] <= 8


def _events(store: Store, rows: list[tuple[int, str, str, str | None]]) -> None:
    with store.begin() as conn:
        for item, action, who, decision in rows:
            conn.execute(
                sa.text(
                    "INSERT INTO review_events (item_id, action, reviewer, decision)"
                    " VALUES (:i, :a, :r, :d)"
                ),
                {"i": item, "a": action, "r": who, "d": decision},
            )
            if action == "decide":
                conn.execute(
                    sa.text(
                        "UPDATE review_queue SET status = 'resolved', claimed_by = :r,"
                        " decision = :d, note = '' WHERE id = :i"
                    ),
                    {"i": item, "r": who, "d": decision},
                )


def test_the_checks_catch_a_trail_that_breaks_them(tmp_path):
    rows = [
        (f"x/{n}.wav", "harassment", 0.9 - n / 10, f"{review_load.TRANSCRIPT_MARK} {n}")
        for n in range(3)
    ]
    good, bad = (Store.from_url(f"sqlite:///{tmp_path / name}.db") for name in ("good", "bad"))
    for store in (good, bad):
        store.migrate()
    one, two, three = seed_items(good, tmp_path / "audio", "2026-11-29", rows).values()
    assert (one, two, three) == tuple(
        seed_items(bad, tmp_path / "audio", "2026-11-29", rows).values()
    )

    _events(
        good,
        [
            (one, "claim", "ana", None),
            (two, "claim", "ben", None),
            (one, "decide", "ana", "violation"),
            (two, "decide", "ben", "unclear"),
            (three, "claim", "ana", None),
            (three, "decide", "ana", "no_violation"),
        ],
    )
    sent = [
        (one, "ana", "violation", ""),
        (two, "ben", "unclear", ""),
        (three, "ana", "no_violation", ""),
    ]
    assert all(c.ok for c in review_load.check_invariants(good, sent, False, "clean log"))

    # ana claims two at once; ben decides ana's item without a claim; an item decided twice;
    # a decision answered 303 never recorded; three left claimed; the log shows a transcript.
    _events(
        bad,
        [
            (one, "claim", "ana", None),
            (two, "claim", "ana", None),
            (one, "decide", "ben", "violation"),
            (two, "decide", "ana", "unclear"),
            (two, "decide", "ana", "violation"),
            (three, "claim", "cleo", None),
        ],
    )
    with bad.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE review_queue SET status = 'claimed', claimed_by = 'cleo' WHERE id = :i"
            ),
            {"i": three},
        )
    log = f"... {review_load.TRANSCRIPT_MARK} 1 ..."
    checks = {c.name: c for c in review_load.check_invariants(bad, sent, False, log)}
    failed = {name for name, c in checks.items() if not c.ok}
    assert failed == set(checks) - {
        "no blind second review decided by the flag's own reviewer",
        "every resolved item's holder, decision and note are its decide event's",
    }, failed
    assert "decided more than once: " in checks["no item decided twice"].detail
    assert f"ana claimed item {two} while holding item {one}" in (
        checks["nobody held two live claims at once"].detail
    )
    # The same trail, cut by --seconds: an undrained queue is no violation then.
    cut = {c.name: c for c in review_load.check_invariants(bad, sent, True, "")}
    assert all(c.ok for name, c in cut.items() if name.startswith("queue drained"))
