"""The RA review queue: claim the next flagged item, decide, release or skip it, and let
abandoned claims return; second reviews and corrections.

A claim is a lease: ``claimed_until`` passes and the item returns to the queue (a ``lapse`` in
the trail, written when the queue is next read or claimed from), so a reviewer who walks away
blocks nothing. Every change to an item is allowed only to the reviewer holding a live claim on
it, or goes through ``claim_next``'s rules; a decision typed while a lease lapsed claims the item
again only when the caller's was its latest claim. Two reviewers claiming at once get different
items (``FOR UPDATE SKIP LOCKED`` on Postgres; SQLite serialises writers). Decisions are
recorded once: resolving an item that someone else holds, or that is already resolved, is
refused. Every action is appended to ``review_events`` in the same transaction as the change it
records (the audit trail); an item a reviewer skipped is not offered to that reviewer again,
unless they undo the skip soon after.

Items come in three kinds: ``flag`` (a score at or above the threshold), ``qa`` (a blind second
review of a decided flag, for a share of them, never offered to the flag's own reviewer) and
``sample`` (a score below the threshold, sampled to estimate what the threshold misses). Flags
are offered first. A reviewer may correct their own decision for a while after making it; the
correction is an event of its own and the first decision stays in the trail.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from earmark.store.db import Store
from earmark.store.sql import as_utc, named_queries

_Q = named_queries("review_queue")

DECISIONS = ("violation", "no_violation", "unclear")
KINDS = ("flag", "qa", "sample")
DEFAULT_LEASE = timedelta(minutes=30)
DEFAULT_CORRECTION_WINDOW = timedelta(minutes=15)
DEFAULT_UNDO_WINDOW = timedelta(minutes=2)


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


def enqueue(conn: sa.Connection, labels: Sequence[Mapping[str, Any]], sample_share: float) -> int:
    """Queue one policy's new labels for review: every flag, and a sample of the scores below
    the threshold (``sample_share``, to measure what the threshold misses).

    ``labels`` are rows ``{"f": file id, "p": policy, "sha": policy version, "m": model,
    "s": score, "l": 0 or 1}``. One item per file, policy, version, model and kind; a new score
    updates an item only while it is pending, never one a reviewer holds or decided. Items of
    the same file and policy under another version or model that no one decided yet are
    withdrawn (their labels were superseded); decided ones stay, counted under their version.
    Returns how many items were offered.
    """
    if labels:
        conn.execute(sa.text(_Q["withdraw_other_versions"]), list(labels))
    queued = [{**r, "k": "flag"} for r in labels if r["l"] == 1] + [
        {**r, "k": "sample"}
        for r in labels
        if r["l"] == 0 and sampled(f"sample:{r['f']}:{r['p']}", sample_share)
    ]
    if queued:
        conn.execute(sa.text(_Q["enqueue"]), queued)
    return len(queued)


def not_held(item_id: int, reviewer: str) -> ReviewError:
    """The one error for an action on an item the reviewer does not hold (any more)."""
    return ReviewError(f"item {item_id} is not held by {reviewer} (claim expired or taken)")


def _now() -> datetime:
    return datetime.now(UTC)


def held_sql(alias: str = "") -> str:
    """The SQL condition "``:who`` holds a live claim on this item at ``:now``" (on the columns
    of table ``alias`` when given): the one spelling of a held item, for the queue's guards and
    the pages' reads."""
    col = f"{alias}." if alias else ""
    return f"{col}status = 'claimed' AND {col}claimed_by = :who AND {col}claimed_until >= :now"


def _update_item(
    conn: sa.Connection,
    set_clause: str,
    guard: str,
    params: Mapping[str, Any],
    error: ReviewError | None,
) -> bool:
    """``UPDATE review_queue SET <set_clause> WHERE id = :id AND <guard>``: whether it changed
    the item. When it did not, ``error`` is raised (rolling the transaction back), if given."""
    sql = f"UPDATE review_queue SET {set_clause} WHERE id = :id AND {guard}"
    done = conn.execute(sa.text(sql), params).rowcount == 1
    if not done and error is not None:
        raise error
    return done


_BACK_TO_THE_QUEUE = "status = 'pending', claimed_by = NULL, claimed_until = NULL"
_CLAIMED_BY_WHO = "status = 'claimed', claimed_by = :who, claimed_until = :until"
# An item ``:who`` may be offered: not one they skipped (and did not take back), not the blind
# second review of a flag they decided themselves.
_OFFERABLE_TO_WHO = (
    "NOT EXISTS (SELECT 1 FROM review_events e WHERE e.item_id = q.id AND e.reviewer = :who"
    "  AND e.action = 'skip' AND NOT EXISTS (SELECT 1 FROM review_events u"
    "   WHERE u.item_id = e.item_id AND u.reviewer = :who AND u.action = 'unskip'"
    "   AND u.id > e.id))"
    " AND NOT EXISTS (SELECT 1 FROM review_events e WHERE e.item_id = q.first_item_id"
    "  AND e.reviewer = :who AND e.action IN ('decide', 'correct'))"
)


def claim_next(
    store: Store, reviewer: str, lease: timedelta = DEFAULT_LEASE, now: datetime | None = None
) -> ReviewItem | None:
    """Claim the highest-scoring claimable item for ``reviewer``; None when the queue is empty.
    Lapsed claims go back to the queue first (recorded), so they are offered too."""
    if not reviewer:
        raise ReviewError("a reviewer name is required")
    now = now or _now()
    lock = " FOR UPDATE SKIP LOCKED" if store.dialect == "postgresql" else ""
    with store.begin() as conn:
        _return_lapsed(conn, store.dialect, now)
        row = conn.execute(
            sa.text(
                f"UPDATE review_queue SET {_CLAIMED_BY_WHO}"
                " WHERE id = (SELECT q.id FROM review_queue q"
                f"  WHERE q.status = 'pending' AND {_OFFERABLE_TO_WHO}"
                "  ORDER BY CASE q.kind WHEN 'flag' THEN 0 WHEN 'qa' THEN 1 ELSE 2 END,"
                f"  q.score DESC, q.id LIMIT 1{lock})"
                " RETURNING id, file_id, policy, score, kind"
            ),
            {"who": reviewer, "until": now + lease},
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
        _update_item(
            conn,
            "status = 'resolved', decision = :d, note = :n, resolved_at = :now",
            held_sql(),
            {"d": decision, "n": note, "now": now, "id": item_id, "who": reviewer},
            not_held(item_id, reviewer),
        )
        _record(conn, item_id, "decide", reviewer, now, decision=decision, note=note)
        if sampled(f"qa:{item_id}", qa_share):
            conn.execute(
                sa.text(_Q["queue_second_review"]),
                {"id": item_id},
            )


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
    minutes = int(window.total_seconds() // 60)
    refused = ReviewError(
        f"item {item_id} cannot be corrected by {reviewer}: only your own decision,"
        f" within {minutes} min of making it"
    )
    with store.begin() as conn:
        _update_item(
            conn,
            "decision = :d, note = :n",
            "status = 'resolved' AND claimed_by = :who AND resolved_at >= :since",
            {"d": decision, "n": note, "id": item_id, "who": reviewer, "since": now - window},
            refused,
        )
        _record(conn, item_id, "correct", reviewer, now, decision=decision, note=note)


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
        _update_item(
            conn,
            "claimed_until = :until",
            held_sql(),
            {"until": now + lease, "id": item_id, "who": reviewer, "now": now},
            not_held(item_id, reviewer),
        )
    return now + lease


class Reclaim(StrEnum):
    """What became of a decision typed while its lease lapsed."""

    CLAIMED = "claimed"  # the caller's claim was the latest and the item was free: theirs again
    TAKEN = "taken"  # the caller's claim lapsed and another reviewer claimed the item since
    REFUSED = "refused"  # never held by the caller, given back, or not theirs to be offered


def reclaim(
    store: Store,
    item_id: int,
    reviewer: str,
    lease: timedelta = DEFAULT_LEASE,
    now: datetime | None = None,
) -> Reclaim:
    """Claim this very item again after ``reviewer``'s lease on it lapsed, so a decision typed
    meanwhile is not lost. Only when the item's latest claim was the caller's (and they did not
    give it back since), it is free (pending or lapsed), ``claim_next`` would offer it to them,
    and they hold no other live claim: nobody takes an item by posting its id."""
    now = now or _now()
    lock = " FOR UPDATE SKIP LOCKED" if store.dialect == "postgresql" else ""
    with store.begin() as conn:
        _return_lapsed(conn, store.dialect, now)
        own_latest = _latest_event(conn, item_id, reviewer=reviewer)
        if own_latest is None or own_latest.action not in ("claim", "lapse"):
            return Reclaim.REFUSED  # never claimed, or given back or decided since
        latest_claim = _latest_event(conn, item_id, action="claim")
        if latest_claim is None or latest_claim.reviewer != reviewer:
            return Reclaim.TAKEN
        done = _update_item(
            conn,
            _CLAIMED_BY_WHO,
            "id = (SELECT q.id FROM review_queue q"
            f" WHERE q.id = :id AND q.status = 'pending' AND {_OFFERABLE_TO_WHO}"
            f" AND NOT EXISTS (SELECT 1 FROM review_queue h WHERE {held_sql('h')}){lock})",
            {"who": reviewer, "until": now + lease, "id": item_id, "now": now},
            None,  # refused, not an error: the lapses returned above stay recorded
        )
        if done:
            _record(conn, item_id, "claim", reviewer, now)
    return Reclaim.CLAIMED if done else Reclaim.REFUSED


def release(store: Store, item_id: int, reviewer: str, now: datetime | None = None) -> None:
    """Give a held item back to the queue, undecided."""
    _give_back(store, item_id, reviewer, "release", now or _now())


def skip(store: Store, item_id: int, reviewer: str, now: datetime | None = None) -> None:
    """Give a held item back to the queue for someone else; it is not offered to
    ``reviewer`` again."""
    _give_back(store, item_id, reviewer, "skip", now or _now())


def unskip(
    store: Store,
    item_id: int,
    reviewer: str,
    window: timedelta = DEFAULT_UNDO_WINDOW,
    lease: timedelta = DEFAULT_LEASE,
    now: datetime | None = None,
) -> None:
    """Take back ``reviewer``'s skip of an item within ``window`` of it (a stray key): the item
    is theirs again if nobody took it meanwhile, and the item the skip opened for them is
    released, undecided. Recorded as ``release``, ``unskip`` and ``claim``."""
    now = now or _now()
    with store.begin() as conn:
        _return_lapsed(conn, store.dialect, now)
        latest = _latest_event(conn, item_id, reviewer=reviewer)
        if latest is None or latest.action != "skip" or as_utc(latest.at) < now - window:
            seconds = int(window.total_seconds())
            raise ReviewError(
                f"item {item_id}: only your own skip can be undone, within {seconds} s of it"
            )
        held = (
            conn.execute(
                sa.text(
                    f"UPDATE review_queue SET {_BACK_TO_THE_QUEUE}"
                    " WHERE status = 'claimed' AND claimed_by = :who AND id <> :id RETURNING id"
                ),
                {"who": reviewer, "id": item_id},
            )
            .scalars()
            .all()
        )
        _update_item(  # refused: the transaction rolls back, the item the skip opened stays
            conn,
            _CLAIMED_BY_WHO,
            "status = 'pending'",
            {"who": reviewer, "until": now + lease, "id": item_id},
            ReviewError(
                f"item {item_id} was taken by another reviewer meanwhile; your skip stands"
            ),
        )
        for other in held:
            _record(conn, other, "release", reviewer, now)
        _record(conn, item_id, "unskip", reviewer, now)
        _record(conn, item_id, "claim", reviewer, now)


def _give_back(store: Store, item_id: int, reviewer: str, action: str, now: datetime) -> None:
    with store.begin() as conn:
        _update_item(
            conn,
            _BACK_TO_THE_QUEUE,
            held_sql(),
            {"id": item_id, "who": reviewer, "now": now},
            not_held(item_id, reviewer),
        )
        _record(conn, item_id, action, reviewer, now)


def _latest_event(
    conn: sa.Connection, item_id: int, *, reviewer: str | None = None, action: str | None = None
) -> sa.Row | None:
    """The item's newest event in the trail, of ``reviewer`` and/or of ``action`` if given."""
    sql = "SELECT action, reviewer, at FROM review_events WHERE item_id = :id"
    if reviewer is not None:
        sql += " AND reviewer = :who"
    if action is not None:
        sql += " AND action = :action"
    params = {"id": item_id, "who": reviewer, "action": action}
    return conn.execute(sa.text(sql + " ORDER BY id DESC LIMIT 1"), params).one_or_none()


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
    where: list[str] = []
    params: dict[str, int | str] = {}
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
    """Return lapsed claims to ``pending``, each with a ``lapse`` event for the reviewer whose
    lease ended; how many. Called wherever the queue is read, so a lapsed claim never counts
    as work in progress; a read that finds none writes nothing."""
    now = now or _now()
    if store.scalar(_LAPSED_SQL + " LIMIT 1", now=now) is None:
        return 0
    with store.begin() as conn:
        return _return_lapsed(conn, store.dialect, now)


_LAPSED_SQL = "SELECT id FROM review_queue WHERE status = 'claimed' AND claimed_until < :now"


def _return_lapsed(conn: sa.Connection, dialect: str, now: datetime) -> int:
    lock = " FOR UPDATE SKIP LOCKED" if dialect == "postgresql" else ""
    lapsed = conn.execute(
        sa.text(
            "SELECT id, claimed_by, claimed_until FROM review_queue"
            f" WHERE status = 'claimed' AND claimed_until < :now ORDER BY id{lock}"
        ),
        {"now": now},
    ).all()
    for item in lapsed:
        conn.execute(
            sa.text(f"UPDATE review_queue SET {_BACK_TO_THE_QUEUE} WHERE id = :id"),
            {"id": item.id},
        )
        _record(conn, item.id, "lapse", item.claimed_by, as_utc(item.claimed_until))
    return len(lapsed)
