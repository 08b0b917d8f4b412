"""The RA review queue: claim the next flagged item, decide, release or skip it, and let
abandoned claims return; second reviews and corrections.

A claim is a lease: ``claimed_until`` passes and the item is claimable again, so a reviewer who
walks away blocks nothing. Two reviewers claiming at once get different items (``FOR UPDATE SKIP
LOCKED`` on Postgres; SQLite serialises writers). Decisions are recorded once: resolving an item
that someone else holds, or that is already resolved, is refused. Every action is appended to
``review_events`` in the same transaction as the change it records (the audit trail); an item a
reviewer skipped is not offered to that reviewer again.

Items come in three kinds: ``flag`` (a score at or above the threshold), ``qa`` (a blind second
review of a decided flag, for a share of them, never offered to the flag's own reviewer) and
``sample`` (a score below the threshold, sampled to estimate what the threshold misses). Flags
are offered first. A reviewer may correct their own decision for a while after making it; the
correction is an event of its own and the first decision stays in the trail.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from earmark.day_status import as_utc
from earmark.store.db import Store

DECISIONS = ("violation", "no_violation", "unclear")
KINDS = ("flag", "qa", "sample")
DEFAULT_LEASE = timedelta(minutes=30)
DEFAULT_CORRECTION_WINDOW = timedelta(minutes=15)


class ReviewError(Exception):
    """A review action that cannot be done (wrong reviewer, expired claim, bad decision)."""


@dataclass(frozen=True)
class ReviewEvent:
    """One entry of the audit trail."""

    item_id: int
    action: str
    reviewer: str
    decision: str | None
    note: str | None
    at: datetime


@dataclass(frozen=True)
class ReviewItem:
    """What a reviewer needs to open an item: ids and where the audio is, not its text."""

    id: int
    file_id: int
    policy: str
    score: float
    claimed_by: str
    claimed_until: datetime
    audio_path: str
    kind: str = "flag"

    @property
    def blind(self) -> bool:
        """Shown without the score and any earlier decision (second reviews and samples)."""
        return self.kind != "flag"


def sampled(key: str, share: float) -> bool:
    """Whether ``key`` falls in a ``share`` (0-1) sample: a stable hash, so the same item is
    chosen on every run and host, and a test can tell which."""
    if share <= 0:
        return False
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) < share * 2**32


def not_held(item_id: int, reviewer: str) -> ReviewError:
    """The one error for an action on an item the reviewer does not hold (any more)."""
    return ReviewError(f"item {item_id} is not held by {reviewer} (claim expired or taken)")


def _now() -> datetime:
    return datetime.now(UTC)


def claim_next(
    store: Store, reviewer: str, lease: timedelta = DEFAULT_LEASE, now: datetime | None = None
) -> ReviewItem | None:
    """Claim the highest-scoring claimable item for ``reviewer``; None when the queue is empty."""
    if not reviewer:
        raise ReviewError("a reviewer name is required")
    now = now or _now()
    lock = " FOR UPDATE SKIP LOCKED" if store.dialect == "postgresql" else ""
    with store.begin() as conn:
        row = conn.execute(
            sa.text(
                "UPDATE review_queue SET status = 'claimed', claimed_by = :who,"
                " claimed_until = :until"
                " WHERE id = (SELECT q.id FROM review_queue q"
                "  WHERE (q.status = 'pending'"
                "   OR (q.status = 'claimed' AND q.claimed_until < :now))"
                "  AND NOT EXISTS (SELECT 1 FROM review_events e WHERE e.item_id = q.id"
                "   AND e.reviewer = :who AND e.action = 'skip')"
                "  AND NOT EXISTS (SELECT 1 FROM review_events e WHERE e.item_id = q.first_item_id"
                "   AND e.reviewer = :who AND e.action IN ('decide', 'correct'))"
                "  ORDER BY CASE q.kind WHEN 'flag' THEN 0 WHEN 'qa' THEN 1 ELSE 2 END,"
                f"  q.score DESC, q.id LIMIT 1{lock})"
                " RETURNING id, file_id, policy, score, kind"
            ),
            {"who": reviewer, "until": now + lease, "now": now},
        ).one_or_none()
        if row is None:
            return None
        _record(conn, row.id, "claim", reviewer, now)
        path = conn.execute(
            sa.text("SELECT path FROM audio_files WHERE id = :f"), {"f": row.file_id}
        ).scalar_one()
    return ReviewItem(
        row.id, row.file_id, row.policy, row.score, reviewer, now + lease, path, row.kind
    )


def resolve(
    store: Store,
    item_id: int,
    reviewer: str,
    decision: str,
    note: str = "",
    now: datetime | None = None,
    qa_share: float = 0.0,
) -> None:
    """Record ``reviewer``'s decision on an item they hold; refused otherwise. A decided flag
    in the ``qa_share`` sample gets its blind second review queued in the same transaction."""
    _check_decision(decision)
    now = now or _now()
    with store.begin() as conn:
        done = conn.execute(
            sa.text(
                "UPDATE review_queue SET status = 'resolved', decision = :d, note = :n,"
                " resolved_at = :now WHERE id = :id AND status = 'claimed' AND claimed_by = :who"
                " AND claimed_until >= :now"
            ),
            {"d": decision, "n": note, "now": now, "id": item_id, "who": reviewer},
        ).rowcount
        if done == 1:
            _record(conn, item_id, "decide", reviewer, now, decision=decision, note=note)
            if sampled(f"qa:{item_id}", qa_share):
                conn.execute(
                    sa.text(
                        "INSERT INTO review_queue (file_id, policy, score, kind, first_item_id)"
                        " SELECT file_id, policy, score, 'qa', id FROM review_queue"
                        " WHERE id = :id AND kind = 'flag'"
                        " ON CONFLICT (file_id, policy, kind) DO NOTHING"
                    ),
                    {"id": item_id},
                )
    if done != 1:
        raise not_held(item_id, reviewer)


def correct(
    store: Store,
    item_id: int,
    reviewer: str,
    decision: str,
    note: str = "",
    window: timedelta = DEFAULT_CORRECTION_WINDOW,
    now: datetime | None = None,
) -> None:
    """Change ``reviewer``'s own decision on an item within ``window`` of making it. The queue
    row takes the new decision; the trail keeps both (a ``correct`` event)."""
    _check_decision(decision)
    now = now or _now()
    with store.begin() as conn:
        done = conn.execute(
            sa.text(
                "UPDATE review_queue SET decision = :d, note = :n WHERE id = :id"
                " AND status = 'resolved' AND claimed_by = :who AND resolved_at >= :since"
            ),
            {"d": decision, "n": note, "id": item_id, "who": reviewer, "since": now - window},
        ).rowcount
        if done == 1:
            _record(conn, item_id, "correct", reviewer, now, decision=decision, note=note)
    if done != 1:
        minutes = int(window.total_seconds() // 60)
        raise ReviewError(
            f"item {item_id} cannot be corrected by {reviewer}: only your own decision,"
            f" within {minutes} min of making it"
        )


def _check_decision(decision: str) -> None:
    if decision not in DECISIONS:
        raise ReviewError(f"decision must be one of {', '.join(DECISIONS)}")


def extend(
    store: Store,
    item_id: int,
    reviewer: str,
    lease: timedelta = DEFAULT_LEASE,
    now: datetime | None = None,
) -> datetime:
    """Renew ``reviewer``'s unexpired claim for another lease (the page is in use); the new
    end. Not an audit event: the claim is the same claim."""
    now = now or _now()
    with store.begin() as conn:
        done = conn.execute(
            sa.text(
                "UPDATE review_queue SET claimed_until = :until WHERE id = :id"
                " AND status = 'claimed' AND claimed_by = :who AND claimed_until >= :now"
            ),
            {"until": now + lease, "id": item_id, "who": reviewer, "now": now},
        ).rowcount
    if done != 1:
        raise not_held(item_id, reviewer)
    return now + lease


def reclaim(
    store: Store,
    item_id: int,
    reviewer: str,
    lease: timedelta = DEFAULT_LEASE,
    now: datetime | None = None,
) -> bool:
    """Claim this very item again after a lapsed lease, if it is still free (pending, or its
    claim lapsed too); False when someone else holds it or it is decided."""
    now = now or _now()
    with store.begin() as conn:
        done = conn.execute(
            sa.text(
                "UPDATE review_queue SET status = 'claimed', claimed_by = :who,"
                " claimed_until = :until WHERE id = :id AND (status = 'pending'"
                " OR (status = 'claimed' AND claimed_until < :now))"
            ),
            {"who": reviewer, "until": now + lease, "id": item_id, "now": now},
        ).rowcount
        if done == 1:
            _record(conn, item_id, "claim", reviewer, now)
    return done == 1


def holder(store: Store, item_id: int) -> str | None:
    """Who holds the item now (None when nobody, or it is decided)."""
    return store.scalar(
        "SELECT claimed_by FROM review_queue WHERE id = :id AND status = 'claimed'", id=item_id
    )


def release(store: Store, item_id: int, reviewer: str, now: datetime | None = None) -> None:
    """Give a held item back to the queue, undecided."""
    _give_back(store, item_id, reviewer, "release", now or _now())


def skip(store: Store, item_id: int, reviewer: str, now: datetime | None = None) -> None:
    """Give a held item back to the queue for someone else; it is not offered to
    ``reviewer`` again."""
    _give_back(store, item_id, reviewer, "skip", now or _now())


def _give_back(store: Store, item_id: int, reviewer: str, action: str, now: datetime) -> None:
    with store.begin() as conn:
        done = conn.execute(
            sa.text(
                "UPDATE review_queue SET status = 'pending', claimed_by = NULL,"
                " claimed_until = NULL WHERE id = :id AND status = 'claimed'"
                " AND claimed_by = :who AND claimed_until >= :now"
            ),
            {"id": item_id, "who": reviewer, "now": now},
        ).rowcount
        if done == 1:
            _record(conn, item_id, action, reviewer, now)
    if done != 1:
        raise not_held(item_id, reviewer)


def _record(
    conn: sa.Connection,
    item_id: int,
    action: str,
    reviewer: str,
    now: datetime,
    *,
    decision: str | None = None,
    note: str | None = None,
) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO review_events (item_id, action, reviewer, decision, note, at)"
            " VALUES (:i, :a, :r, :d, :n, :at)"
        ),
        {"i": item_id, "a": action, "r": reviewer, "d": decision, "n": note, "at": now},
    )


def history(
    store: Store, item_id: int | None = None, reviewer: str | None = None
) -> list[ReviewEvent]:
    """The audit trail, oldest first: of one item, of one reviewer, or all of it."""
    where, params = [], {}
    if item_id is not None:
        where.append("item_id = :item")
        params["item"] = item_id
    if reviewer is not None:
        where.append("reviewer = :who")
        params["who"] = reviewer
    rows = store.rows(
        "SELECT item_id, action, reviewer, decision, note, at FROM review_events"
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + " ORDER BY id",
        **params,
    )
    return [
        ReviewEvent(r.item_id, r.action, r.reviewer, r.decision, r.note, as_utc(r.at)) for r in rows
    ]


def release_expired(store: Store, now: datetime | None = None) -> int:
    """Return lapsed claims to ``pending``; how many. Claiming also takes lapsed items."""
    with store.begin() as conn:
        return conn.execute(
            sa.text(
                "UPDATE review_queue SET status = 'pending', claimed_by = NULL,"
                " claimed_until = NULL"
                " WHERE status = 'claimed' AND claimed_until < :now"
            ),
            {"now": now or _now()},
        ).rowcount
