"""Reads the pages need beyond ``earmark.review.queue``: the held item, its transcript, policy.

The transcript is returned to the caller only; nothing here logs it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from earmark.review.queue import ReviewItem, held_sql, not_held
from earmark.store.db import Store
from earmark.store.sql import as_utc

_ITEM_SQL = (
    "SELECT r.id, r.file_id, r.policy, r.policy_sha, r.score, r.kind, r.claimed_by,"
    " r.claimed_until, f.path,"
    " f.format,"
    " f.duration_s, f.member_path, a.name AS archive, a.run_date"
    " FROM review_queue r JOIN audio_files f ON f.id = r.file_id"
    " JOIN archives a ON a.id = f.archive_id"
)


@dataclass(frozen=True)
class HeldItem:
    """A claimed item as its holder sees it (``transcript`` is filled in by ``item_detail``)."""

    item: ReviewItem
    audio_format: str | None
    duration_s: float | None
    source: str
    run_date: str = ""
    transcript: str | None = None
    policy_sha: str = ""


def _held(row: sa.Row) -> HeldItem:
    item = ReviewItem(
        row.id,
        row.file_id,
        row.policy,
        float(row.score),
        row.claimed_by,
        as_utc(row.claimed_until),
        row.path,
        row.kind,
    )
    return HeldItem(
        item,
        row.format,
        row.duration_s,
        f"{row.archive}:{row.member_path}",
        str(row.run_date)[:10],
        policy_sha=row.policy_sha,
    )


def _now() -> datetime:
    return datetime.now(UTC)


def held_item(store: Store, reviewer: str, now: datetime | None = None) -> HeldItem | None:
    """The item ``reviewer`` holds an unexpired claim on, if any (the oldest claim first)."""
    rows = store.rows(
        f"{_ITEM_SQL} WHERE {held_sql('r')} ORDER BY r.claimed_until, r.id LIMIT 1",
        who=reviewer,
        now=now or _now(),
    )
    return _held(rows[0]) if rows else None


def held_by(store: Store, item_id: int, reviewer: str, now: datetime | None = None) -> HeldItem:
    """Item ``item_id`` if ``reviewer`` holds an unexpired claim on it; ReviewError otherwise."""
    rows = store.rows(
        f"{_ITEM_SQL} WHERE r.id = :id AND {held_sql('r')}",
        id=item_id,
        who=reviewer,
        now=now or _now(),
    )
    if not rows:
        raise not_held(item_id, reviewer)
    return _held(rows[0])


def item_detail(store: Store, item_id: int, reviewer: str) -> HeldItem:
    """``held_by`` plus the file's newest transcript: for the claim holder's page only."""
    held = held_by(store, item_id, reviewer)
    text = store.scalar(
        "SELECT text FROM transcripts WHERE file_id = :f ORDER BY created_at DESC, id DESC LIMIT 1",
        f=held.item.file_id,
    )
    return replace(held, transcript=text)


def policy_text(policies_dir: Path, policy: str) -> str | None:
    """The text of policy ``policy`` (``<policies_dir>/<policy>.md``); None when absent."""
    path = policies_dir / f"{policy}.md"
    if path.parent != policies_dir or not path.is_file():
        return None
    return path.read_text(encoding="utf-8").strip()


@dataclass(frozen=True)
class PolicyShown:
    """The policy text an item's page shows, and why it may not be the one it was scored under."""

    text: str | None
    note: str | None = None


def item_policy(store: Store, policies_dir: Path, held: HeldItem) -> PolicyShown:
    """The text of the version the item was scored under (``policy_versions``); for an item
    from before versions were kept, the policy file, saying so when it has changed since."""
    kept = store.scalar(
        "SELECT text FROM policy_versions WHERE sha256 = :sha AND policy = :p",
        sha=held.policy_sha,
        p=held.item.policy,
    )
    if kept is not None:
        return PolicyShown(kept.strip())
    text = policy_text(policies_dir, held.item.policy)
    if text is None:
        return PolicyShown(None)
    current = hashlib.sha256((policies_dir / f"{held.item.policy}.md").read_bytes()).hexdigest()
    if current == held.policy_sha:
        return PolicyShown(text)
    return PolicyShown(
        text,
        "This item was scored under an earlier text of the policy, which was not kept:"
        " the text below is the current one.",
    )


def policy_html(text: str) -> str:
    """A policy's Markdown as HTML (markdown-it-py, CommonMark and tables). Raw HTML in the
    file is escaped, not passed through, and unsafe link targets (``javascript:``) are not
    linked: the output is safe to put in the page as is."""
    from markdown_it import MarkdownIt  # noqa: PLC0415

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def left_for_day(store: Store, run_date: str) -> dict[str, int]:
    """The day's review items still open (pending or claimed), per policy."""
    rows = store.rows(
        "SELECT r.policy, count(*) AS n FROM review_queue r"
        " JOIN audio_files f ON f.id = r.file_id JOIN archives a ON a.id = f.archive_id"
        " WHERE a.run_date = :d AND r.status IN ('pending', 'claimed')"
        " GROUP BY r.policy ORDER BY r.policy",
        d=run_date,
    )
    return {r.policy: int(r.n) for r in rows}


def queue_counts(store: Store) -> dict[str, int]:
    """The whole review queue by status (all days)."""
    return {
        r.status: int(r.n)
        for r in store.rows("SELECT status, count(*) AS n FROM review_queue GROUP BY status")
    }


@dataclass(frozen=True)
class PastDecision:
    """One item a reviewer decided, as their history page shows it."""

    item_id: int
    policy: str
    run_date: str
    decided_at: datetime
    decision: str
    note: str
    corrected: bool
    correctable_until: datetime | None


def reviewer_history(
    store: Store,
    reviewer: str,
    window: timedelta,
    limit: int = 50,
    now: datetime | None = None,
) -> list[PastDecision]:
    """``reviewer``'s decided items, newest first, each with its current decision and until
    when they may still correct it (None once the window has passed)."""
    now = now or _now()
    rows = store.rows(
        "SELECT r.id, r.policy, a.run_date, r.decision, r.note, r.resolved_at,"
        " (SELECT count(*) FROM review_events c WHERE c.item_id = r.id"
        "  AND c.action = 'correct') AS corrections"
        " FROM review_queue r JOIN audio_files f ON f.id = r.file_id"
        " JOIN archives a ON a.id = f.archive_id"
        " WHERE r.status = 'resolved' AND r.claimed_by = :who"
        " ORDER BY r.resolved_at DESC, r.id DESC LIMIT :limit",
        who=reviewer,
        limit=limit,
    )
    history = []
    for row in rows:
        decided_at = as_utc(row.resolved_at)
        until = decided_at + window
        history.append(
            PastDecision(
                row.id,
                row.policy,
                str(row.run_date)[:10],
                decided_at,
                row.decision,
                row.note or "",
                int(row.corrections) > 0,
                until if until > now else None,
            )
        )
    return history


@dataclass(frozen=True)
class LastAction:
    """What the reviewer last did to an item (shown on the next page: a decision recorded by
    Enter is confirmed, a skip can be undone while ``undo_until`` has not passed)."""

    item_id: int
    action: str
    decision: str | None
    at: datetime
    undo_until: datetime | None


def last_action(
    store: Store,
    reviewer: str,
    undo_window: timedelta,
    recent: timedelta = timedelta(minutes=10),
    now: datetime | None = None,
) -> LastAction | None:
    """``reviewer``'s latest action other than a claim, when it is ``recent``."""
    now = now or _now()
    rows = store.rows(
        "SELECT item_id, action, decision, at FROM review_events WHERE reviewer = :who"
        " AND action IN ('decide', 'correct', 'skip', 'release', 'unskip', 'lapse')"
        " ORDER BY id DESC LIMIT 1",
        who=reviewer,
    )
    if not rows or as_utc(rows[0].at) < now - recent:
        return None
    row = rows[0]
    at = as_utc(row.at)
    undo = at + undo_window if row.action == "skip" and at + undo_window > now else None
    return LastAction(int(row.item_id), row.action, row.decision, at, undo)
