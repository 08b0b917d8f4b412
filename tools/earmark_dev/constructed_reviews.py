"""A constructed set of review decisions whose figures are known, for the flag-quality tests
and the README's picture of the stats page. The decisions go through the review queue's own
code (claim, decide, blind second review); only the labels and items are inserted.

harassment: 21 flags scored 0.50 .. 0.90; at 0.70 and above a violation, below none, except
0.60, unclear: precision 11 / 20, no samples; every flag reviewed again by ben, who disagrees on
the 4 highest: agreement 17 / 21; the best threshold 0.70 (F1 1.0, 22 / 31 at 0.5).
self_harm: 5 flags (4 violations), 30 scores below 0.5, 10 of them sampled, 2 of those
violations: 2 / 10 of 30 = 6 missed.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

DAY = "2026-11-29"
T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
THRESHOLD = 0.5
HARASSMENT_FLAGS = [k / 100 for k in range(50, 92, 2)]
SELF_HARM_FLAGS = [0.9, 0.91, 0.92, 0.93, 0.94]
SELF_HARM_BELOW = [k / 100 for k in range(17, 47)]
SELF_HARM_SAMPLES = [k / 100 for k in (18, 20, 22, 26, 30, 34, 38, 40, 44, 46)]
QA_FLIPPED = 4


MODEL = "cope-base+cope-a-9b"


def version(policy: str) -> dict[str, str]:
    """A version as the GPU stage records it: a policy text's sha256 (here of a made-up text)
    and the model."""
    return {"sha": hashlib.sha256(f"{policy} policy text".encode()).hexdigest(), "m": MODEL}


def first_decision(item: Any) -> str:
    """ana's decision on an item, from its policy, kind and score."""
    score = round(item.score * 100)  # a REAL is a float4 on Postgres
    if item.policy == "harassment":
        if score == 60:
            return "unclear"
        return "violation" if score >= 70 else "no_violation"
    if item.kind == "sample":
        return "violation" if score in (40, 46) else "no_violation"
    return "no_violation" if score == 94 else "violation"


def build(store: Any) -> None:
    """The constructed day, every item decided: ana first (40 s each), ben the blind second
    reviews (20 s each)."""
    from earmark.review.queue import claim_next, resolve

    with store.begin() as conn:
        archive = conn.execute(
            sa.text(
                "INSERT INTO archives (name, sha256, run_date, path, status)"
                " VALUES ('a.tar', 's', :d, '/p', 'unpacked') RETURNING id"
            ),
            {"d": DAY},
        ).scalar()
        rows = [("harassment", s, "flag") for s in HARASSMENT_FLAGS]
        rows += [("self_harm", s, "flag") for s in SELF_HARM_FLAGS]
        rows += [
            ("self_harm", s, "sample" if s in SELF_HARM_SAMPLES else None) for s in SELF_HARM_BELOW
        ]
        for n, (policy, score, kind) in enumerate(rows):
            file_id = conn.execute(
                sa.text(
                    "INSERT INTO audio_files (archive_id, member_path, path, status)"
                    " VALUES (:a, :m, :p, 'classified') RETURNING id"
                ),
                {"a": archive, "m": f"f{n}.wav", "p": f"/audio/f{n}.wav"},
            ).scalar()
            conn.execute(
                sa.text(
                    "INSERT INTO labels (file_id, policy, policy_sha, model, score, label)"
                    " VALUES (:f, :p, :sha, :m, :s, :l)"
                ),
                version(policy)
                | {"f": file_id, "p": policy, "s": score, "l": int(score >= THRESHOLD)},
            )
            if kind:
                conn.execute(
                    sa.text(
                        "INSERT INTO review_queue (file_id, policy, policy_sha, model, score, kind)"
                        " VALUES (:f, :p, :sha, :m, :s, :k)"
                    ),
                    version(policy) | {"f": file_id, "p": policy, "s": score, "k": kind},
                )
    now = T0
    while (item := claim_next(store, "ana", now=now)) is not None:
        if item.kind == "qa":
            raise AssertionError("a second review was offered to the first reviewer")
        now += timedelta(seconds=40)
        qa = 1.0 if item.policy == "harassment" else 0.0
        resolve(store, item.id, "ana", first_decision(item), now=now, qa_share=qa)
        now += timedelta(seconds=5)
    flipped = 0
    while (item := claim_next(store, "ben", now=now)) is not None:
        if not (item.kind == "qa" and item.blind):
            raise AssertionError(f"ben was offered {item.kind} item {item.id}")
        first = store.scalar(
            "SELECT f.decision FROM review_queue q JOIN review_queue f ON f.id = q.first_item_id"
            " WHERE q.id = :i",
            i=item.id,
        )
        decision = first
        if flipped < QA_FLIPPED:
            decision = "no_violation" if first == "violation" else "violation"
            flipped += 1
        now += timedelta(seconds=20)
        resolve(store, item.id, "ben", decision, now=now)
