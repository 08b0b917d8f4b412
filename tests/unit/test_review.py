"""The RA review queue on both backends: distinct claims under concurrency, leases expire."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from earmark.review.queue import ReviewError, claim_next, release_expired, resolve, sampled

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


@pytest.fixture
def queue(store):
    """Six flagged items with distinct scores."""
    with store.begin() as conn:
        archive = conn.execute(
            sa.text(
                "INSERT INTO archives (name, sha256, run_date, path, status)"
                " VALUES ('a.tar', 's', '2026-11-29', '/p', 'unpacked') RETURNING id"
            )
        ).scalar()
        for i in range(6):
            file_id = conn.execute(
                sa.text(
                    "INSERT INTO audio_files (archive_id, member_path, path, status)"
                    " VALUES (:a, :m, :p, 'classified') RETURNING id"
                ),
                {"a": archive, "m": f"f{i}.wav", "p": f"/audio/f{i}.wav"},
            ).scalar()
            conn.execute(
                sa.text(
                    "INSERT INTO review_queue (file_id, policy, policy_sha, model, score)"
                    " VALUES (:f, 'harassment', 'sha', 'tiny', :s)"
                ),
                {"f": file_id, "s": 0.5 + i / 100},
            )
    return store


def test_claims_highest_score_first_and_never_twice(queue):
    first = claim_next(queue, "ana", now=NOW)
    second = claim_next(queue, "ben", now=NOW)
    assert first.score > second.score
    assert first.id != second.id
    assert first.audio_path.startswith("/audio/")


def test_concurrent_claims_get_different_items(queue):
    with ThreadPoolExecutor(max_workers=6) as pool:
        items = list(pool.map(lambda i: claim_next(queue, f"ra{i}", now=NOW), range(8)))
    claimed = [item.id for item in items if item is not None]
    assert len(claimed) == 6 == len(set(claimed))
    assert items.count(None) == 2


def test_expired_claim_returns_to_the_queue(queue):
    item = claim_next(queue, "ana", lease=timedelta(minutes=5), now=NOW)
    later = NOW + timedelta(minutes=10)
    with pytest.raises(ReviewError, match="not held"):
        resolve(queue, item.id, "ana", "violation", now=later)
    assert release_expired(queue, now=later) == 1
    again = claim_next(queue, "ben", now=later)
    assert again.id == item.id and again.claimed_by == "ben"


def test_only_the_holder_resolves_once(queue):
    item = claim_next(queue, "ana", now=NOW)
    with pytest.raises(ReviewError):
        resolve(queue, item.id, "ben", "violation", now=NOW)
    resolve(queue, item.id, "ana", "no_violation", note="music, no speech", now=NOW)
    with pytest.raises(ReviewError):
        resolve(queue, item.id, "ana", "violation", now=NOW)
    row = queue.rows("SELECT status, decision, note FROM review_queue WHERE id = :i", i=item.id)[0]
    assert tuple(row) == ("resolved", "no_violation", "music, no speech")


def test_bad_decision_refused(queue):
    item = claim_next(queue, "ana", now=NOW)
    with pytest.raises(ReviewError, match="decision"):
        resolve(queue, item.id, "ana", "maybe", now=NOW)


def test_every_action_is_recorded_once_in_order(queue):
    from earmark.review.queue import history, release, skip

    top = claim_next(queue, "ana", now=NOW)
    skip(queue, top.id, "ana", now=NOW + timedelta(minutes=1))
    second = claim_next(queue, "ana", now=NOW + timedelta(minutes=2))
    assert second.id != top.id  # a skipped item is not offered to the same reviewer again
    release(queue, second.id, "ana", now=NOW + timedelta(minutes=3))
    again = claim_next(queue, "ana", now=NOW + timedelta(minutes=4))
    assert again.id == second.id  # a released one is
    resolve(queue, again.id, "ana", "violation", "clear", now=NOW + timedelta(minutes=5))
    by_ben = claim_next(queue, "ben", now=NOW + timedelta(minutes=6))
    assert by_ben.id == top.id  # the skipped item goes to someone else
    with pytest.raises(ReviewError):
        release(queue, by_ben.id, "ana", now=NOW + timedelta(minutes=7))  # not ana's
    with pytest.raises(ReviewError):
        skip(queue, again.id, "ana", now=NOW + timedelta(minutes=7))  # already decided

    trail = [(e.item_id, e.action, e.reviewer, e.decision, e.note) for e in history(queue)]
    assert trail == [
        (top.id, "claim", "ana", None, None),
        (top.id, "skip", "ana", None, None),
        (second.id, "claim", "ana", None, None),
        (second.id, "release", "ana", None, None),
        (second.id, "claim", "ana", None, None),
        (second.id, "decide", "ana", "violation", "clear"),
        (top.id, "claim", "ben", None, None),
    ]
    times = [e.at for e in history(queue)]
    assert times == sorted(times) and times[0] == NOW
    assert [e.action for e in history(queue, item_id=top.id)] == ["claim", "skip", "claim"]
    assert [e.action for e in history(queue, reviewer="ben")] == ["claim"]
    row = queue.rows("SELECT status, claimed_by FROM review_queue WHERE id = :i", i=top.id)[0]
    assert tuple(row) == ("claimed", "ben")


def test_a_policy_is_rendered_from_markdown_and_nothing_raw_gets_through():
    from earmark.web.queries import policy_html

    html = policy_html(
        "# Harassment\n\n- **Threat**: intent to harm\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
        "<script>alert(1)</script>\n\n[x](javascript:alert(1)) <img src=x onerror=alert(1)>"
    )
    assert "<h1>Harassment</h1>" in html and "<strong>Threat</strong>" in html
    assert "<table>" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'href="javascript' not in html and "<img" not in html


def test_second_reviews_are_blind_and_never_offered_to_the_first_reviewer(queue):
    decided = []
    while (item := claim_next(queue, "ana", now=NOW)) is not None:
        assert item.kind == "flag" and not item.blind
        resolve(queue, item.id, "ana", "violation", now=NOW, qa_share=0.5)
        decided.append(item.id)
    chosen = [i for i in decided if sampled(f"qa:{i}", 0.5)]
    assert 0 < len(chosen) < len(decided)  # the stable hash picks some, not all
    qa = queue.rows("SELECT first_item_id, kind, status FROM review_queue WHERE kind = 'qa'")
    assert sorted(r.first_item_id for r in qa) == sorted(chosen)
    assert {(r.kind, r.status) for r in qa} == {("qa", "pending")}
    second = claim_next(queue, "ben", now=NOW)
    assert second.kind == "qa" and second.blind and second.claimed_by == "ben"
    resolve(queue, second.id, "ben", "no_violation", now=NOW)
    assert claim_next(queue, "ana", now=NOW) is None  # the rest are ana's own decisions
    from earmark.day.status import review_items

    listed = {item["id"] for item in review_items(queue, "2026-11-29", limit=100)}
    assert listed == set(decided)  # the operators' list names flags only


def test_sampled_is_stable_and_near_its_share():
    keys = [f"qa:{i}" for i in range(10_000)]
    picked = [k for k in keys if sampled(k, 0.1)]
    assert picked == [k for k in keys if sampled(k, 0.1)]
    assert 900 < len(picked) < 1100
    assert not any(sampled(k, 0.0) for k in keys[:100])
    assert all(sampled(k, 1.0) for k in keys[:100])


def _trail(store, item_id):
    from earmark.review.queue import history

    return [(e.action, e.reviewer) for e in history(store, item_id=item_id)]


def test_a_decision_needs_the_callers_own_latest_claim(queue):
    """Posting a decision to an item never claimed is refused; a lapsed claim is taken back
    only by the reviewer whose claim it was, while the item is free and they hold no other."""
    from earmark.review.queue import Reclaim, reclaim

    mine = claim_next(queue, "ana", lease=timedelta(minutes=5), now=NOW)
    free = queue.scalar("SELECT max(id) FROM review_queue WHERE status = 'pending'")
    assert reclaim(queue, free, "ana", now=NOW) is Reclaim.REFUSED  # never hers
    assert reclaim(queue, free, "ben", now=NOW) is Reclaim.REFUSED
    assert queue.scalar("SELECT status FROM review_queue WHERE id = :i", i=free) == "pending"
    assert _trail(queue, free) == []
    assert reclaim(queue, mine.id, "ben", now=NOW + timedelta(minutes=6)) is Reclaim.REFUSED
    later = NOW + timedelta(minutes=6)
    assert reclaim(queue, mine.id, "ana", now=later) is Reclaim.CLAIMED
    resolve(queue, mine.id, "ana", "violation", now=later)
    assert _trail(queue, mine.id) == [
        ("claim", "ana"),
        ("lapse", "ana"),
        ("claim", "ana"),
        ("decide", "ana"),
    ]
    from earmark.review.queue import history

    lapse = history(queue, item_id=mine.id)[1]
    assert lapse.at == NOW + timedelta(minutes=5)  # when the lease ended, not when seen

    # Taken by someone else after the lapse: the caller learns that, not who.
    other = claim_next(queue, "ana", lease=timedelta(minutes=5), now=later)
    ben = claim_next(queue, "ben", now=later + timedelta(minutes=6))
    assert ben.id == other.id
    assert reclaim(queue, other.id, "ana", now=later + timedelta(minutes=7)) is Reclaim.TAKEN

    # Holding a live claim already: a lapsed one is not taken back as a second.
    third = claim_next(queue, "cleo", lease=timedelta(minutes=5), now=later)
    fresh = claim_next(queue, "cleo", lease=timedelta(minutes=60), now=later)
    assert fresh is not None and fresh.id != third.id
    assert reclaim(queue, third.id, "cleo", now=later + timedelta(minutes=7)) is Reclaim.REFUSED


def test_a_blind_second_review_of_ones_own_flag_cannot_be_taken(queue):
    from earmark.review.queue import Reclaim, reclaim

    flag = claim_next(queue, "ana", now=NOW)
    resolve(queue, flag.id, "ana", "violation", now=NOW, qa_share=1.0)
    qa = queue.scalar("SELECT id FROM review_queue WHERE first_item_id = :i", i=flag.id)
    # Even with a claim event of her own on record, the rules of claim_next still hold.
    with queue.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO review_events (item_id, action, reviewer, at)"
                " VALUES (:i, 'claim', 'ana', :t)"
            ),
            {"i": qa, "t": NOW},
        )
    assert reclaim(queue, qa, "ana", now=NOW) is Reclaim.REFUSED
    with pytest.raises(ReviewError):
        resolve(queue, qa, "ana", "violation", now=NOW)
    assert queue.scalar("SELECT status FROM review_queue WHERE id = :i", i=qa) == "pending"


def test_lapsed_claims_return_with_a_lapse_in_the_trail(queue):
    a = claim_next(queue, "ana", lease=timedelta(minutes=5), now=NOW)
    b = claim_next(queue, "ben", lease=timedelta(minutes=20), now=NOW)
    assert release_expired(queue, now=NOW + timedelta(minutes=4)) == 0
    assert release_expired(queue, now=NOW + timedelta(minutes=6)) == 1
    rows = {
        r.id: (r.status, r.claimed_by)
        for r in queue.rows("SELECT id, status, claimed_by FROM review_queue")
    }
    assert rows[a.id] == ("pending", None) and rows[b.id] == ("claimed", "ben")
    assert _trail(queue, a.id) == [("claim", "ana"), ("lapse", "ana")]
    assert release_expired(queue, now=NOW + timedelta(minutes=7)) == 0  # nothing twice
    # Claiming sweeps too: ben's lapsed item is back, recorded, and offered by score again.
    assert claim_next(queue, "cleo", now=NOW + timedelta(minutes=21)).id == a.id
    assert _trail(queue, b.id) == [("claim", "ben"), ("lapse", "ben")]
    assert claim_next(queue, "cleo", now=NOW + timedelta(minutes=21)).id == b.id


def test_a_skip_can_be_undone_for_a_moment(queue):
    from earmark.review.queue import DEFAULT_UNDO_WINDOW, skip, unskip

    top = claim_next(queue, "ana", now=NOW)
    skip(queue, top.id, "ana", now=NOW)
    opened = claim_next(queue, "ana", now=NOW)
    unskip(queue, top.id, "ana", now=NOW + timedelta(seconds=30))
    rows = {
        r.id: (r.status, r.claimed_by)
        for r in queue.rows("SELECT id, status, claimed_by FROM review_queue")
    }
    assert rows[top.id] == ("claimed", "ana") and rows[opened.id] == ("pending", None)
    assert _trail(queue, top.id)[-3:] == [("skip", "ana"), ("unskip", "ana"), ("claim", "ana")]
    assert _trail(queue, opened.id) == [("claim", "ana"), ("release", "ana")]
    resolve(queue, top.id, "ana", "unclear", now=NOW + timedelta(minutes=1))

    # Too late, or not one's own skip: refused, nothing changes.
    second = claim_next(queue, "ana", now=NOW + timedelta(minutes=2))
    skip(queue, second.id, "ana", now=NOW + timedelta(minutes=2))
    with pytest.raises(ReviewError, match="undone"):
        unskip(queue, second.id, "ben", now=NOW + timedelta(minutes=2))
    late = NOW + timedelta(minutes=2) + DEFAULT_UNDO_WINDOW + timedelta(seconds=1)
    with pytest.raises(ReviewError, match="undone"):
        unskip(queue, second.id, "ana", now=late)
    # Taken by another meanwhile: the skip stands and the item the skip opened stays hers.
    third = claim_next(queue, "ana", now=NOW + timedelta(minutes=3))
    skip(queue, third.id, "ana", now=NOW + timedelta(minutes=3))
    kept = claim_next(queue, "ana", now=NOW + timedelta(minutes=3))
    assert claim_next(queue, "ben", now=NOW + timedelta(minutes=3)).id == second.id
    assert claim_next(queue, "ben2", now=NOW + timedelta(minutes=3)).id == third.id
    with pytest.raises(ReviewError, match="taken by another reviewer"):
        unskip(queue, third.id, "ana", now=NOW + timedelta(minutes=3, seconds=10))
    row = queue.rows("SELECT status, claimed_by FROM review_queue WHERE id = :i", i=kept.id)[0]
    assert tuple(row) == ("claimed", "ana")


def test_every_audio_fetch_is_recorded_with_its_claim(queue, capsys):
    from earmark.review.listens import record_listen
    from earmark.store.sql import named_queries

    item = claim_next(queue, "ana", now=NOW)
    record_listen(queue, item.id, "ana", now=NOW + timedelta(seconds=5))
    record_listen(queue, item.id, "ana", "bytes=1000-" + "9" * 200, now=NOW + timedelta(seconds=9))
    with pytest.raises(ReviewError, match="not held"):
        record_listen(queue, item.id, "ben", now=NOW + timedelta(seconds=9))
    with pytest.raises(ReviewError, match="not held"):  # a lapsed claim fetches nothing
        record_listen(queue, item.id, "ana", now=NOW + timedelta(hours=2))
    listens = queue.rows(named_queries("audit")["listens"], file_id=item.file_id)
    assert [(r.reviewer, r.item_id, r.byte_range) for r in listens] == [
        ("ana", item.id, "bytes=1000-" + "9" * 53),
        ("ana", item.id, None),
    ]
    claimed_at = queue.scalar(
        "SELECT at FROM review_events WHERE item_id = :i AND action = 'claim'", i=item.id
    )
    assert {str(r.claimed_at) for r in listens} == {str(claimed_at)}

    from earmark.cli import main

    url = str(queue.engine.url.render_as_string(hide_password=False))
    capsys.readouterr()
    assert main(["--db-url", url, "listens", "--file", str(item.file_id), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [(r["reviewer"], r["item_id"]) for r in printed] == [("ana", item.id)] * 2
    assert main(["--db-url", url, "listens", "--file", "999999"]) == 0
    assert "no reviewer fetched the audio of file 999999" in capsys.readouterr().out
