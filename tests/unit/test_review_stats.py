"""Flag quality and reviewers' figures on a constructed set of decisions whose precision,
agreement and misses are known (earmark_dev.constructed_reviews, which says how), on both
backends."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from earmark.cli import main as cli_main
from earmark.review import queue as review
from earmark.review import stats as review_stats
from earmark.review.queue import correct
from earmark_dev.constructed_reviews import DAY, THRESHOLD, build


@pytest.fixture
def decided(store):
    """The constructed set (earmark_dev.constructed_reviews), every item decided."""
    build(store)
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


def test_reviewer_days_are_local_days_far_from_utc(decided):
    """The work was done from 09:00 UTC on 30 November: in Honolulu (UTC-10) that is the
    evening of the 29th, and the 30th there holds none of it."""
    honolulu = "Pacific/Honolulu"
    on_29th = review_stats.review_stats(decided, DAY, DAY, THRESHOLD, honolulu).reviewers
    assert {(r.day, r.reviewer, r.decisions) for r in on_29th} == {
        ("2026-11-29", "ana", 36),
        ("2026-11-29", "ben", 21),
    }
    assert (
        review_stats.review_stats(
            decided, "2026-11-30", "2026-11-30", THRESHOLD, honolulu
        ).reviewers
        == []
    )
