"""What the RA review says: reviewers' counts and times, and how good the flags are.

Flag quality, per policy, version and day (run date), from the reviewers' current decisions.
A version is the policy's sha256 and the classifier model: an item counts under the version it
was queued under, so a reworded policy or a new model is judged on its own, never mixed:

- **precision**: violations / (violations + no violations) among decided flags ("unclear" is
  counted apart, in neither);
- **agreement**: the share of blind second reviews (``qa`` items) that match the first decision;
- **misses**: from decided ``sample`` items (scores below the threshold, sampled by
  ``EARMARK_REVIEW_SAMPLE_SHARE``), the violation rate below the threshold times the number of
  scores below it, an estimate of the violations the threshold lets through;
- **suggested threshold**: the score that maximises F1 over the decided items, each weighted by
  how many items it stands for (every flag is queued, a sample stands for ``below / sampled``).
  Without samples only raising the threshold can be judged, so only those are tried.

Rates come with a 95 % Wilson interval. Ids, names and counts only: nothing here reads a
transcript or a note.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from earmark.names import printable
from earmark.store.db import Store
from earmark.store.sql import as_utc, named_queries

MIN_DECISIONS_FOR_SUGGESTION = 20
Z95 = 1.959964


def wilson(hits: int, n: int) -> tuple[float, float] | None:
    """The 95 % Wilson score interval of ``hits / n``; None when ``n`` is 0."""
    if n == 0:
        return None
    p = hits / n
    denominator = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denominator
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def _ratio(hits: int, n: int) -> float | None:
    return hits / n if n else None


def version_label(policy_sha: str, model: str) -> str:
    """A version as people read it: the policy's short sha256 and the model."""
    return f"{policy_sha[:8]} {printable(model)}"


@dataclass
class FlagQuality:
    """One policy version on one day (or, with ``run_date`` "all", over the whole range)."""

    run_date: str
    policy: str
    version: str
    scored: int = 0
    flagged: int = 0
    below: int = 0
    violations: int = 0
    no_violations: int = 0
    unclear: int = 0
    qa_pairs: int = 0
    qa_agreed: int = 0
    sampled: int = 0
    sample_violations: int = 0
    sample_no_violations: int = 0

    @property
    def decided(self) -> int:
        return self.violations + self.no_violations

    @property
    def precision(self) -> float | None:
        return _ratio(self.violations, self.decided)

    @property
    def precision_ci(self) -> tuple[float, float] | None:
        return wilson(self.violations, self.decided)

    @property
    def agreement(self) -> float | None:
        return _ratio(self.qa_agreed, self.qa_pairs)

    @property
    def sample_decided(self) -> int:
        return self.sample_violations + self.sample_no_violations

    @property
    def miss_rate(self) -> float | None:
        """Violations per score below the threshold, from the decided samples."""
        return _ratio(self.sample_violations, self.sample_decided)

    @property
    def missed_estimate(self) -> float | None:
        """About how many violations scored below the threshold."""
        rate = self.miss_rate
        return None if rate is None else rate * self.below

    @property
    def missed_ci(self) -> tuple[float, float] | None:
        interval = wilson(self.sample_violations, self.sample_decided)
        return None if interval is None else (interval[0] * self.below, interval[1] * self.below)

    def add(self, other: FlagQuality) -> None:
        """Add ``other``'s counts to these (every field but the day, policy and version)."""
        for count in fields(self)[3:]:
            setattr(self, count.name, getattr(self, count.name) + getattr(other, count.name))


@dataclass(frozen=True)
class ThresholdSuggestion:
    """The threshold that maximises weighted F1, and the figures behind it."""

    policy: str
    version: str
    current: float
    threshold: float | None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    current_f1: float | None = None
    decisions: int = 0
    samples_used: bool = False
    reason: str = ""


@dataclass
class ReviewerDay:
    """One reviewer's actions on one local day, and how long their decisions took."""

    day: str
    reviewer: str
    claims: int = 0
    decisions: int = 0
    corrections: int = 0
    skips: int = 0
    releases: int = 0
    decision_seconds: list[float] = field(default_factory=list)

    @property
    def median_seconds(self) -> float | None:
        return statistics.median(self.decision_seconds) if self.decision_seconds else None

    @property
    def total_seconds(self) -> float:
        return sum(self.decision_seconds)


@dataclass
class ReviewStats:
    """Everything the stats page, the CLI and the daily report show."""

    first: str
    last: str
    threshold: float
    quality: list[FlagQuality]
    by_policy: list[FlagQuality]
    suggestions: list[ThresholdSuggestion]
    reviewers: list[ReviewerDay]


def _day(value: object) -> str:
    return str(value)[:10]


def flag_quality(store: Store, first: str, last: str) -> list[FlagQuality]:
    """Per day, policy and version, from ``first`` to ``last`` (run dates, inclusive)."""
    queries = named_queries("review_stats")
    params = {"first": first, "last": last}
    cells: dict[tuple[str, str, str], FlagQuality] = {}

    def cell(row: Any) -> FlagQuality:
        key = (_day(row.run_date), row.policy, version_label(row.policy_sha, row.model))
        return cells.setdefault(key, FlagQuality(*key))

    for row in store.rows(queries["scored"], **params):
        c = cell(row)
        c.scored, c.flagged, c.below = int(row.scored), int(row.flagged), int(row.below)
        c.sampled = int(row.sampled)
    for row in store.rows(queries["decisions"], **params):
        c = cell(row)
        if row.kind == "flag":
            field_name = {"violation": "violations", "no_violation": "no_violations"}.get(
                row.decision, "unclear"
            )
        else:
            field_name = {
                "violation": "sample_violations",
                "no_violation": "sample_no_violations",
            }.get(row.decision, "")
        if field_name:
            setattr(c, field_name, getattr(c, field_name) + 1)
    for row in store.rows(queries["qa_pairs"], **params):
        c = cell(row)
        c.qa_pairs += 1
        c.qa_agreed += int(row.first_decision == row.second_decision)
    return [cells[key] for key in sorted(cells)]


def totals_by_policy(quality: Iterable[FlagQuality]) -> list[FlagQuality]:
    """The days added up, one row per policy and version (``run_date`` "all")."""
    totals: dict[tuple[str, str], FlagQuality] = {}
    for q in quality:
        totals.setdefault((q.policy, q.version), FlagQuality("all", q.policy, q.version)).add(q)
    return [totals[key] for key in sorted(totals)]


def suggest_thresholds(
    store: Store, first: str, last: str, current: float, totals: Iterable[FlagQuality]
) -> list[ThresholdSuggestion]:
    """Per policy version, the threshold that maximises F1 on the decided items, weighted."""
    by_version = {(t.policy, t.version): t for t in totals}
    scored: dict[tuple[str, str], list[tuple[float, bool, str]]] = defaultdict(list)
    for row in store.rows(named_queries("review_stats")["decisions"], first=first, last=last):
        if row.decision in ("violation", "no_violation"):
            key = (row.policy, version_label(row.policy_sha, row.model))
            scored[key].append((float(row.score), row.decision == "violation", row.kind))
    return [
        _suggest(key, current, scored.get(key, []), by_version[key]) for key in sorted(by_version)
    ]


def _suggest(
    key: tuple[str, str], current: float, items: list[tuple[float, bool, str]], total: FlagQuality
) -> ThresholdSuggestion:
    policy, version = key
    flag_items = [i for i in items if i[2] == "flag"]
    sample_items = [i for i in items if i[2] == "sample"]
    if len(items) < MIN_DECISIONS_FOR_SUGGESTION:
        return ThresholdSuggestion(
            policy,
            version,
            current,
            None,
            decisions=len(items),
            reason=f"too few decisions ({len(items)} of {MIN_DECISIONS_FOR_SUGGESTION} needed)",
        )
    # Each decided item stands for the items of its kind that were not decided.
    weight = {
        "flag": total.flagged / len(flag_items) if flag_items else 0.0,
        "sample": total.below / len(sample_items) if sample_items else 0.0,
    }
    use_samples = bool(sample_items)
    candidates = sorted({s for s, _, _ in items} | {current})
    if not use_samples:
        candidates = [t for t in candidates if t >= current]

    def f1_at(t: float) -> tuple[float, float, float]:
        tp = fp = fn = 0.0
        for score, violation, kind in items:
            w = weight[kind]
            if score >= t:
                tp += w * violation
                fp += w * (not violation)
            else:
                fn += w * violation
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        return f1, precision, recall

    # Best F1; on a tie the higher threshold (fewer items to review for the same F1).
    best = max(candidates, key=lambda t: (round(f1_at(t)[0], 9), t))
    f1, precision, recall = f1_at(best)
    return ThresholdSuggestion(
        policy,
        version,
        current,
        best,
        precision=precision,
        recall=recall if use_samples else None,
        f1=f1,
        current_f1=f1_at(current)[0],
        decisions=len(items),
        samples_used=use_samples,
        reason=(
            "weighted F1 over flags and below-threshold samples"
            if use_samples
            else "no below-threshold samples: only raising the threshold is judged"
        ),
    )


def reviewer_days(store: Store, since: datetime, until: datetime, tz: str) -> list[ReviewerDay]:
    """Per reviewer and local day (``tz``): actions and decision times, from ``since`` to
    ``until``. A decision's time runs from its reviewer's last claim of the item."""
    zone = ZoneInfo(tz)
    days: dict[tuple[str, str], ReviewerDay] = {}
    window = {"since": store.timestamp(since), "until": store.timestamp(until)}  # both as UTC
    for row in store.rows(named_queries("review_stats")["reviewer_events"], **window):
        at = as_utc(row.at)
        key = (at.astimezone(zone).date().isoformat(), row.reviewer)
        day = days.setdefault(key, ReviewerDay(*key))
        if row.action == "claim":
            day.claims += 1
        elif row.action == "decide":
            day.decisions += 1
            if row.claimed_at is not None:
                day.decision_seconds.append((at - as_utc(row.claimed_at)).total_seconds())
        elif row.action == "correct":
            day.corrections += 1
        elif row.action == "skip":
            day.skips += 1
        elif row.action == "release":
            day.releases += 1
    return [days[key] for key in sorted(days, reverse=True)]


def local_bounds(first: str, last: str, tz: str) -> tuple[datetime, datetime]:
    """From the start of local day ``first`` to the end of local day ``last``."""
    zone = ZoneInfo(tz)
    start = datetime.combine(date.fromisoformat(first), datetime.min.time(), zone)
    end = datetime.combine(date.fromisoformat(last) + timedelta(days=1), datetime.min.time(), zone)
    return start, end


def review_stats(store: Store, first: str, last: str, threshold: float, tz: str) -> ReviewStats:
    """Flag quality for run dates ``first`` to ``last`` and the reviewers' work on those
    local days."""
    if date.fromisoformat(first) > date.fromisoformat(last):
        raise ValueError(f"the first day {first} is after the last {last}")
    quality = flag_quality(store, first, last)
    totals = totals_by_policy(quality)
    since, until = local_bounds(first, last, tz)
    return ReviewStats(
        first,
        last,
        threshold,
        quality,
        totals,
        suggest_thresholds(store, first, last, threshold, totals),
        reviewer_days(store, since, until, tz),
    )


def as_json(stats: ReviewStats) -> dict[str, object]:
    """The figures as plain data, rates included (``earmark review-stats --json``)."""

    def quality(q: FlagQuality) -> dict[str, object]:
        return {
            **asdict(q),
            "decided": q.decided,
            "precision": q.precision,
            "precision_ci": q.precision_ci,
            "agreement": q.agreement,
            "sample_decided": q.sample_decided,
            "miss_rate": q.miss_rate,
            "missed_estimate": q.missed_estimate,
            "missed_ci": q.missed_ci,
        }

    return {
        "first": stats.first,
        "last": stats.last,
        "threshold": stats.threshold,
        "quality": [quality(q) for q in stats.quality],
        "by_policy": [quality(q) for q in stats.by_policy],
        "suggestions": [asdict(s) for s in stats.suggestions],
        "reviewers": [
            {
                **asdict(r),
                "median_seconds": r.median_seconds,
                "total_seconds": r.total_seconds,
            }
            for r in stats.reviewers
        ],
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _agreement(q: FlagQuality) -> str:
    return "-" if q.agreement is None else f"{_pct(q.agreement)} of {q.qa_pairs}"


def _interval(ci: tuple[float, float] | None, scale: str = "pct") -> str:
    if ci is None:
        return ""
    if scale == "pct":
        return f" [{100 * ci[0]:.0f}-{100 * ci[1]:.0f}%]"
    return f" [{ci[0]:.0f}-{ci[1]:.0f}]"


def format_stats(stats: ReviewStats) -> str:
    """The figures as plain text (``earmark review-stats``)."""
    lines = [f"Flag quality, {stats.first} to {stats.last} (threshold {stats.threshold:g})"]
    header = (
        f"  {'day':<10} {'policy':<20} {'version':<24} {'flags':>5} {'decided':>7}"
        f" {'precision':>16} {'agreement':>13} {'below':>6} {'sampled':>7} {'missed (est.)':>16}"
    )
    lines.append(header)
    for q in [*stats.quality, *stats.by_policy]:
        missed = q.missed_estimate
        lines.append(
            f"  {q.run_date:<10} {q.policy:<20} {q.version:<24} {q.flagged:>5} {q.decided:>7}"
            f" {_pct(q.precision) + _interval(q.precision_ci):>16}"
            f" {_agreement(q):>13} {q.below:>6} {q.sample_decided:>7}"
            f" {('-' if missed is None else f'{missed:.1f}') + _interval(q.missed_ci, 'n'):>16}"
        )
    lines.append("Suggested thresholds")
    for s in stats.suggestions:
        if s.threshold is None:
            lines.append(f"  {s.policy:<20} {s.version:<24} none: {s.reason}")
            continue
        lines.append(
            f"  {s.policy:<20} {s.version:<24} {s.threshold:.3f} (now {s.current:g}): F1 {s.f1:.2f}"
            f" (now {s.current_f1:.2f}), precision {_pct(s.precision)}"
            f", recall {_pct(s.recall)}, {s.decisions} decisions; {s.reason}"
        )
    lines.append("Reviewers")
    if not stats.reviewers:
        lines.append("  no review work on these days")
    for r in stats.reviewers:
        median = "-" if r.median_seconds is None else f"{r.median_seconds:.0f}s"
        lines.append(
            f"  {r.day} {r.reviewer:<16} decided {r.decisions:>4}, corrected {r.corrections},"
            f" skipped {r.skips}, released {r.releases}; median {median} per decision,"
            f" {r.total_seconds / 60:.0f} min in all"
        )
    return "\n".join(lines)
