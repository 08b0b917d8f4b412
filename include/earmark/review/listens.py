"""Who listened: every fetch of an item's recording by a reviewer's browser, with its claim.

The access audit, apart from the decisions' trail (``review_events``): a player seeking through
a recording makes many fetches, which would crowd an item's history.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from earmark.review.queue import held_sql, not_held
from earmark.store.db import Store

_RANGE_CHARS = 64  # a Range header as the audit keeps it (clients choose its length)


def record_listen(
    store: Store,
    item_id: int,
    reviewer: str,
    byte_range: str | None = None,
    now: datetime | None = None,
) -> None:
    """Record that ``reviewer``'s browser fetched item ``item_id``'s audio (``byte_range``: the
    Range header, when the player asked for a part), with the claim it was fetched under, so
    "who listened to this" has an answer; ReviewError when they do not hold the item."""
    now = now or datetime.now(UTC)
    with store.begin() as conn:
        held = conn.execute(
            sa.text(f"SELECT file_id FROM review_queue WHERE id = :id AND {held_sql()}"),
            {"id": item_id, "who": reviewer, "now": now},
        ).one_or_none()
        if held is None:
            raise not_held(item_id, reviewer)
        claim = conn.execute(
            sa.text(
                "SELECT max(id) FROM review_events"
                " WHERE item_id = :id AND reviewer = :who AND action = 'claim'"
            ),
            {"id": item_id, "who": reviewer},
        ).scalar()
        conn.execute(
            sa.text(
                "INSERT INTO audio_fetches (item_id, file_id, claim_event_id, reviewer,"
                " byte_range, at) VALUES (:i, :f, :c, :r, :b, :at)"
            ),
            {
                "i": item_id,
                "f": held.file_id,
                "c": claim,
                "r": reviewer,
                "b": None if byte_range is None else byte_range[:_RANGE_CHARS],
                "at": now,
            },
        )
