"""Flag quality and reviewers' figures on a constructed set of decisions whose precision,
agreement and misses are known, on both backends. The decisions go through the review queue's
own code (claim, decide, blind second review); only the labels and items are inserted."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from earmark import review, review_stats
from earmark.cli import main as cli_main
from earmark.review import claim_next, correct, resolve

DAY = "2026-11-29"
T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
THRESHOLD = 0.5
# harassment: 21 flags scored 0.50 .. 0.90; at 0.70 and above a violation, below none, except
# 0.60, unclear. Precision 11 / 20. No samples.
HARASSMENT_FLAGS = [k / 100 for k in range(50, 92, 2)]
# self_harm: 5 flags (0.9: 4 violations, 1 no), 30 scores below 0.5, 10 of them queued as
# samples (0.18 .. 0.46), of which 0.40 and 0.46 are violations: 2 / 10 of 30 = 6 missed.
SELF_HARM_FLAGS = [0.9, 0.91, 0.92, 0.93, 0.94]
SELF_HARM_BELOW = [k / 100 for k in range(17, 47)]
SELF_HARM_SAMPLES = [k / 100 for k in (18, 20, 22, 26, 30, 34, 38, 40, 44, 46)]
QA_FLIPPED = 4  # ben disagrees on the 4 highest-scored harassment second reviews: 17 / 21 agree


def _first_decision(item: review.ReviewItem) -> str:
    score = round(item.score * 100)  # a REAL is a float4 on Postgres
    if item.policy == "harassment":
        if score == 60:
            return "unclear"
        return "violation" if score >= 70 else "no_violation"
    if item.kind == "sample":
        return "violation" if score in (40, 46) else "no_violation"
    return "no_violation" if score == 94 else "violation"


@pytest.fixture
def decided(store):
    """The constructed day, every item decided: ana first (40 s each), ben the blind second
    reviews (20 s each)."""
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
                    " VALUES (:f, :p, 'sha', 'm', :s, :l)"
                ),
                {"f": file_id, "p": policy, "s": score, "l": int(score >= THRESHOLD)},
            )
            if kind:
                conn.execute(
                    sa.text(
                        "INSERT INTO review_queue (file_id, policy, score, kind)"
                        " VALUES (:f, :p, :s, :k)"
                    ),
                    {"f": file_id, "p": policy, "s": score, "k": kind},
                )
    now = T0
    while (item := claim_next(store, "ana", now=now)) is not None:
        assert item.kind != "qa", "a second review was offered to the first reviewer"
        now += timedelta(seconds=40)
        qa = 1.0 if item.policy == "harassment" else 0.0
        resolve(store, item.id, "ana", _first_decision(item), now=now, qa_share=qa)
        now += timedelta(seconds=5)
    flipped = 0
    while (item := claim_next(store, "ben", now=now)) is not None:
        assert item.kind == "qa" and item.blind
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
    return store


def test_precision_agreement_and_misses_per_policy_and_day(decided):
    quality = {q.policy: q for q in review_stats.flag_quality(decided, DAY, DAY)}
    harassment, self_harm = quality["harassment"], quality["self_harm"]
    assert (harassment.flagged, harassment.violations, harassment.no_violations) == (21, 11, 9)
    assert harassment.unclear == 1
    assert harassment.precision == pytest.approx(11 / 20)
    lo, hi = harassment.precision_ci
    assert lo < 11 / 20 < hi and lo > 0 and hi < 1
    assert (harassment.qa_pairs, harassment.qa_agreed) == (21, 17)
    assert harassment.agreement == pytest.approx(17 / 21)
    assert harassment.missed_estimate is None  # no samples: nothing known below
    assert self_harm.precision == pytest.approx(4 / 5)
    assert self_harm.qa_pairs == 0 and self_harm.agreement is None
    assert (self_harm.below, self_harm.sampled, self_harm.sample_decided) == (30, 10, 10)
    assert self_harm.miss_rate == pytest.approx(0.2)
    assert self_harm.missed_estimate == pytest.approx(6.0)
    lo, hi = self_harm.missed_ci
    assert lo < 6.0 < hi <= 30


def test_suggested_thresholds(decided):
    stats = review_stats.review_stats(decided, DAY, DAY, THRESHOLD, "Europe/London")
    suggestion = {s.policy: s for s in stats.suggestions}
    harassment = suggestion["harassment"]
    # every violation at 0.70 and above, none below: F1 1.0 there, 22 / 31 at 0.5
    assert harassment.threshold == pytest.approx(0.70)
    assert harassment.f1 == pytest.approx(1.0) and harassment.precision == pytest.approx(1.0)
    assert harassment.current_f1 == pytest.approx(22 / 31)
    assert harassment.recall is None and not harassment.samples_used
    assert harassment.decisions == 20
    self_harm = suggestion["self_harm"]
    assert self_harm.threshold is None and "too few decisions (15 of 20" in self_harm.reason


def test_reviewer_counts_and_times(decided):
    stats = review_stats.review_stats(decided, DAY, "2026-11-30", THRESHOLD, "Europe/London")
    by_reviewer = {r.reviewer: r for r in stats.reviewers}
    ana, ben = by_reviewer["ana"], by_reviewer["ben"]
    assert ana.day == ben.day == "2026-11-30"
    assert (ana.claims, ana.decisions) == (36, 36)
    assert ana.median_seconds == pytest.approx(40) and ana.total_seconds == pytest.approx(36 * 40)
    assert (ben.claims, ben.decisions, ben.median_seconds) == (21, 21, pytest.approx(20))


def test_a_correction_changes_the_figures_and_keeps_the_first_decision(decided):
    item_id = decided.scalar(
        "SELECT id FROM review_queue WHERE kind = 'flag' AND policy = 'self_harm'"
        " AND score > 0.935 AND score < 0.945"
    )
    decided_at = review.history(decided, item_id=item_id)[-1].at
    with pytest.raises(review.ReviewError, match="only your own decision"):
        correct(decided, item_id, "ben", "violation", now=decided_at + timedelta(minutes=1))
    with pytest.raises(review.ReviewError, match="within 15 min"):
        correct(decided, item_id, "ana", "violation", now=decided_at + timedelta(minutes=16))
    correct(decided, item_id, "ana", "violation", note="heard it again", now=decided_at)
    quality = {q.policy: q for q in review_stats.flag_quality(decided, DAY, DAY)}
    assert quality["self_harm"].precision == pytest.approx(1.0)
    trail = [(e.action, e.decision) for e in review.history(decided, item_id=item_id)]
    assert trail == [("claim", None), ("decide", "no_violation"), ("correct", "violation")]


def test_cli_prints_the_figures(decided, capsys):
    url = decided.engine.url.render_as_string(hide_password=False)
    assert cli_main(["--db-url", url, "review-stats", "--from", DAY, "--to", DAY]) == 0
    text = capsys.readouterr().out
    assert "harassment" in text and "55% [" in text  # 11 / 20
    assert "0.700 (now 0.5): F1 1.00 (now 0.71)" in text
    assert cli_main(["--db-url", url, "review-stats", "--from", DAY, "--to", DAY, "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    by_policy = {q["policy"]: q for q in figures["by_policy"]}
    assert by_policy["self_harm"]["missed_estimate"] == pytest.approx(6.0)
    assert cli_main(["--db-url", url, "review-stats", "--from", DAY, "--to", "2026-11-01"]) == 2
