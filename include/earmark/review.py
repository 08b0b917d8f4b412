"""The RA review queue: claim the next flagged item, decide, and let abandoned claims return.

A claim is a lease: ``claimed_until`` passes and the item is claimable again, so a reviewer who
walks away blocks nothing. Two reviewers claiming at once get different items (``FOR UPDATE SKIP
LOCKED`` on Postgres; SQLite serialises writers). Decisions are recorded once: resolving an item
that someone else holds, or that is already resolved, is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from earmark.store.db import Store

DECISIONS = ("violation", "no_violation", "unclear")
DEFAULT_LEASE = timedelta(minutes=30)


class ReviewError(Exception):
    """A review action that cannot be done (wrong reviewer, expired claim, bad decision)."""


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
                " WHERE id = (SELECT id FROM review_queue"
                "  WHERE status = 'pending' OR (status = 'claimed' AND claimed_until < :now)"
                f"  ORDER BY score DESC, id LIMIT 1{lock})"
                " RETURNING id, file_id, policy, score"
            ),
            {"who": reviewer, "until": now + lease, "now": now},
        ).one_or_none()
        if row is None:
            return None
        path = conn.execute(
            sa.text("SELECT path FROM audio_files WHERE id = :f"), {"f": row.file_id}
        ).scalar_one()
    return ReviewItem(row.id, row.file_id, row.policy, row.score, reviewer, now + lease, path)


def resolve(
    store: Store,
    item_id: int,
    reviewer: str,
    decision: str,
    note: str = "",
    now: datetime | None = None,
) -> None:
    """Record ``reviewer``'s decision on an item they hold; refused otherwise."""
    if decision not in DECISIONS:
        raise ReviewError(f"decision must be one of {', '.join(DECISIONS)}")
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
    if done != 1:
        raise ReviewError(f"item {item_id} is not held by {reviewer} (claim expired or taken)")


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
