"""``earmark evaluate``: a candidate model or policy judged against the RA decisions, in shadow.

The reviewers' decisions on flags and below-threshold samples are the best ground truth Earmark
has. Each decided item's transcript (the current ASR model's) is scored twice: under the current
policy and model, and under the candidate (a new version of one policy, or a LoRA adapter on the
same base). Each side is compared with the decisions at ``EARMARK_FLAG_THRESHOLD``: true and
false positives, misses, precision and recall with 95 % Wilson intervals, the decided violations
the candidate would miss and the items only it would flag that reviewers said were not
violations. Nothing is written: no label, no review item.

The figures are over the decided items, not the population (:data:`CAVEAT`). "unclear"
decisions are counted apart; blind second reviews (``qa`` items) are not used; a recording
decided again under a later version counts once, by its latest decision. An item that cannot
be scored (its transcript gone, an erasure under way) is skipped and counted with its reason
(:data:`SKIP_REASONS`).

The models load one after the other, the current one let go before the candidate loads (two
9B models need not fit at once); an empty transcript scores 0 without a forward pass, as in the
GPU stage. Ids and scores only: no transcript text is logged, raised or printed.

Why one module (over 500 lines): it is one command, read top to bottom (the items, their
scoring, the figures, the JSON and the text), and a figure added touches every part; most of the
length is dataclass fields and one-per-line call arguments.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any

from earmark.config import Settings
from earmark.gpu.models import (
    ClassifierLike,
    ModelOnce,
    asr_model_id,
    classifier_model_id,
    load_classifier,
)
from earmark.inference.policies import Policy, load_policies
from earmark.review.stats import wilson
from earmark.store.db import Store
from earmark.store.sql import named_queries

log = logging.getLogger(__name__)

DEFAULT_DAYS = 28  # the command's default range: enough decisions for intervals worth reading
DEFAULT_BATCH_ITEMS = 256  # transcripts per score call; the classifier packs them by length
DECIDED = ("violation", "no_violation")
LISTED_IN_TEXT = 20  # items listed per list in the text output (--json lists all)
TEXT_WIDTH = 100

SKIP_REASONS: dict[str, str] = {
    "decided_later": "decided again later under the same policy (the latest decision is used)",
    "being_erased": "the recording is being erased on request",
    "transcript_retention": "its transcript was removed by retention",
    "no_transcript": "no transcript of the file is left",
    "other_asr_model": "transcribed only by another ASR model than the current one",
}

CAVEAT = (
    "Measured on the RA-decided review items, not on all recordings: every flag is reviewed but"
    " samples are only a share of the scores below the threshold, and an item was queued by the"
    " score of its day's model, so a violation nobody queued is counted nowhere. Compare the"
    " two columns with each other, not with the population."
)


class EvaluationError(Exception):
    """An evaluation that cannot run as asked (exit 2) or failed (exit 1); ids only."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Candidate:
    """What is judged: a new version of one policy file, or a LoRA adapter dir (peft) trained
    on the current base."""

    policy_file: Path | None = None
    adapter_dir: Path | None = None

    def __post_init__(self) -> None:
        if (self.policy_file is None) == (self.adapter_dir is None):
            raise EvaluationError("the candidate is either a policy file or a model adapter dir")

    @property
    def kind(self) -> str:
        return "policy" if self.policy_file is not None else "model"


@dataclass(frozen=True)
class ItemScores:
    """One decided item under both sides: ids, decision and scores, never text."""

    item_id: int
    file_id: int
    day: str
    kind: str  # 'flag' or 'sample'
    violation: bool
    current: float
    candidate: float
    current_flagged: bool
    candidate_flagged: bool


@dataclass(frozen=True)
class Side:
    """One side (current or candidate) of one policy against the decisions."""

    policy_sha: str
    model: str
    decided: int
    violations: int
    true_positives: int
    false_positives: int

    @property
    def false_negatives(self) -> int:
        return self.violations - self.true_positives

    @property
    def flagged(self) -> int:
        return self.true_positives + self.false_positives

    @property
    def precision(self) -> float | None:
        return self.true_positives / self.flagged if self.flagged else None

    @property
    def precision_ci(self) -> tuple[float, float] | None:
        return wilson(self.true_positives, self.flagged)

    @property
    def recall(self) -> float | None:
        return self.true_positives / self.violations if self.violations else None

    @property
    def recall_ci(self) -> tuple[float, float] | None:
        return wilson(self.true_positives, self.violations)


@dataclass(frozen=True)
class PolicyEvaluation:
    """One policy, current and candidate side by side, with the items behind the figures."""

    policy: str
    current: Side
    candidate: Side
    unclear: int
    skipped: dict[str, int]
    items: list[ItemScores]

    @property
    def missed(self) -> list[ItemScores]:
        """Decided violations the candidate scores below the threshold."""
        return [i for i in self.items if i.violation and not i.candidate_flagged]

    @property
    def new_false_flags(self) -> list[ItemScores]:
        """Items reviewers said were not violations that only the candidate flags."""
        return [
            i
            for i in self.items
            if not i.violation and i.candidate_flagged and not i.current_flagged
        ]


@dataclass(frozen=True)
class Evaluation:
    """What ``earmark evaluate`` found, per policy; ``scored``: forward-pass scores computed."""

    first: str
    last: str
    threshold: float
    candidate_kind: str
    policies: list[PolicyEvaluation]
    scored: int
    wall_s: float
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Decided:
    """A decided item to score; ``text`` is only ever handed to a classifier."""

    item_id: int
    file_id: int
    day: str
    kind: str
    violation: bool
    text: str


@dataclass
class _PolicyItems:
    decided: list[_Decided] = field(default_factory=list)
    unclear: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def evaluate(
    settings: Settings,
    store: Store,
    candidate: Candidate,
    first: str,
    last: str,
    *,
    current: ClassifierLike | None = None,
    candidate_model: ClassifierLike | None = None,
    batch_items: int = DEFAULT_BATCH_ITEMS,
) -> Evaluation:
    """Score the decided items of run dates ``first`` to ``last`` under the current policies and
    model and under ``candidate``; write nothing.

    ``current`` is the current classifier (loaded as the GPU stage loads it when not given);
    ``candidate_model`` the candidate adapter's (loaded from ``candidate.adapter_dir`` when not
    given; a policy candidate is scored by the current classifier).
    """
    if date.fromisoformat(first) > date.fromisoformat(last):
        raise EvaluationError(f"the first day {first} is after the last {last}")
    started = time.perf_counter()
    current_policies = load_policies(settings.policies_dir)
    pairs = _policy_pairs(candidate, current_policies)
    current_model_id = candidate_model_id = classifier_model_id(settings)
    notes: list[str] = []
    adapter_dir = candidate.adapter_dir
    if adapter_dir is not None:
        _check_adapter(adapter_dir)
        candidate_model_id = f"{settings.base_model_dir.name}+{adapter_dir.name}"
        notes += _base_notes(settings, adapter_dir)
    items, retired = _decided_items(store, settings, first, last, {cur.name for cur, _ in pairs})
    if retired and candidate.kind == "model":
        notes.append(
            f"{sum(retired.values())} decided item(s) of policies no longer current"
            f" ({', '.join(sorted(retired))}) not evaluated"
        )

    current_runner = ModelOnce(current, lambda: load_classifier(settings))
    current_scores = {
        cur.name: _scores(current_runner, cur, items[cur.name].decided, batch_items, "current")
        for cur, _ in pairs
    }
    if adapter_dir is None:
        candidate_runner = current_runner
    else:
        loaded_here = current_runner.loads
        del current_runner
        if loaded_here:
            _free_model_memory()
        candidate_runner = ModelOnce(
            candidate_model, partial(load_candidate_classifier, settings, adapter_dir)
        )
    candidate_scores = {
        cur.name: _scores(candidate_runner, new, items[cur.name].decided, batch_items, "candidate")
        for cur, new in pairs
    }

    threshold = settings.flag_threshold
    policies = [
        _judge(
            cur.name,
            items[cur.name],
            current_scores[cur.name],
            candidate_scores[cur.name],
            threshold,
            (cur.sha256, current_model_id),
            (new.sha256, candidate_model_id),
        )
        for cur, new in pairs
    ]
    scored = 2 * sum(1 for p in items.values() for d in p.decided if d.text.strip())
    evaluation = Evaluation(
        first,
        last,
        threshold,
        candidate.kind,
        policies,
        scored,
        time.perf_counter() - started,
        notes,
    )
    log.info(
        "evaluated a candidate %s on %d decided item(s) of %d policy(ies), %s to %s, in %.1f s",
        candidate.kind,
        sum(p.current.decided for p in policies),
        len(policies),
        first,
        last,
        evaluation.wall_s,
    )
    return evaluation


def load_candidate_classifier(settings: Settings, adapter_dir: Path) -> ClassifierLike:
    """The current base with the candidate adapter applied by peft at load, in memory (nothing
    prepared or saved), on the device and batch limits the GPU stage would use."""
    return load_classifier(settings, adapter_dir)


def _policy_pairs(candidate: Candidate, current: list[Policy]) -> list[tuple[Policy, Policy]]:
    """(current, candidate) policy per evaluated policy: every policy for a model candidate,
    the one of the file's name for a policy candidate (read by the rules of load_policies)."""
    if candidate.policy_file is None:
        return [(policy, policy) for policy in current]
    path = candidate.policy_file
    if path.suffix != ".md" or not path.is_file():
        raise EvaluationError(f"--policy {path}: not a policy file (*.md)")
    try:
        new = next(p for p in load_policies(path.parent) if p.name == path.stem)
    except ValueError as error:
        raise EvaluationError(f"--policy {path}: {error}") from None
    by_name = {policy.name: policy for policy in current}
    if new.name not in by_name:
        raise EvaluationError(
            f"no current policy named {new.name!r} (a candidate file is named as the policy it"
            f" replaces; current: {', '.join(sorted(by_name))})"
        )
    if by_name[new.name].sha256 == new.sha256:
        raise EvaluationError(
            f"--policy {path} is the current version of {new.name!r} (same sha256):"
            " nothing to compare"
        )
    return [(by_name[new.name], new)]


def _check_adapter(adapter_dir: Path) -> None:
    if not (adapter_dir / "adapter_config.json").is_file():
        raise EvaluationError(
            f"--model {adapter_dir}: not a peft adapter dir (no adapter_config.json)"
        )


def _adapter_base(adapter_dir: Path) -> str | None:
    try:
        config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    return base if isinstance(base, str) else None


def _base_notes(settings: Settings, adapter_dir: Path) -> list[str]:
    """A note when the candidate adapter says it was trained on another base than the current
    adapter says (both are loaded on ``EARMARK_BASE_MODEL_DIR`` regardless)."""
    new, now = _adapter_base(adapter_dir), _adapter_base(settings.adapter_dir)
    if new and now and new != now:
        return [
            f"the candidate adapter names base {new!r}, the current adapter {now!r}; both are"
            f" scored on {settings.base_model_dir}"
        ]
    return []


def _decided_items(
    store: Store, settings: Settings, first: str, last: str, evaluated: set[str]
) -> tuple[dict[str, _PolicyItems], Counter[str]]:
    """Per evaluated policy its decided items with their transcripts, its unclear ones and its
    skipped ones by reason; and the decided items of other policies, per policy."""
    by_policy = {name: _PolicyItems() for name in evaluated}
    others: Counter[str] = Counter()
    rows = store.rows(
        named_queries("evaluate")["decided_items"],
        first=first,
        last=last,
        asr_model=asr_model_id(settings),
    )
    for row in rows:
        decided = row.decision in DECIDED
        if row.policy not in by_policy:
            if decided and not row.decided_later:
                others[row.policy] += 1
            continue
        policy = by_policy[row.policy]
        if row.decided_later:
            policy.skipped["decided_later"] += 1
        elif not decided:
            policy.unclear += 1
        elif reason := _transcript_missing(row):
            policy.skipped[reason] += 1
        else:
            policy.decided.append(
                _Decided(
                    row.item_id,
                    row.file_id,
                    str(row.run_date)[:10],
                    row.kind,
                    row.decision == "violation",
                    row.transcript,
                )
            )
    return by_policy, others


def _transcript_missing(row: Any) -> str:
    """Why the transcript of an item of ``decided_items`` cannot be scored (a key of
    SKIP_REASONS); "" when it can."""
    if row.being_erased:
        return "being_erased"
    if row.transcript is not None:
        return ""
    if row.transcripts:
        return "other_asr_model"
    return "transcript_retention" if row.transcripts_retired else "no_transcript"


def _scores(
    model: ModelOnce[ClassifierLike],
    policy: Policy,
    items: list[_Decided],
    batch_items: int,
    side: str,
) -> list[float]:
    """Each item's score under ``policy``, ``batch_items`` transcripts per call; an empty
    transcript scores 0 without the model (as the GPU stage does)."""
    scores = [0.0] * len(items)
    spoken = [k for k, item in enumerate(items) if item.text.strip()]
    for start in range(0, len(spoken), batch_items):
        chunk = spoken[start : start + batch_items]
        values = _checked_scores(model.get(), policy, [items[k] for k in chunk], side)
        for k, value in zip(chunk, values, strict=True):
            scores[k] = value
    return scores


def _checked_scores(
    classifier: ClassifierLike, policy: Policy, items: list[_Decided], side: str
) -> list[float]:
    """The classifier's scores, refused (naming items, never text) when one is not finite."""
    from earmark.inference.classifier import (  # noqa: PLC0415 - torch, loaded by the model anyway
        NonFiniteScoreError,
    )

    try:
        values = classifier.score(policy, [item.text for item in items])
    except NonFiniteScoreError as error:
        raise _non_finite(policy, side, [items[k] for k in error.positions]) from error
    broken = [item for item, value in zip(items, values, strict=True) if not math.isfinite(value)]
    if broken:
        raise _non_finite(policy, side, broken)
    return [float(value) for value in values]


def _non_finite(policy: Policy, side: str, items: list[_Decided]) -> EvaluationError:
    return EvaluationError(
        f"non-finite score (NaN or inf) under the {side} {policy.name!r} for item(s)"
        f" {', '.join(str(i.item_id) for i in items)} (file(s)"
        f" {', '.join(str(i.file_id) for i in items)}): nothing evaluated",
        exit_code=1,
    )


def _free_model_memory() -> None:
    """Let the current model go before the candidate loads (on a GPU, its memory too)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _judge(
    policy: str,
    items: _PolicyItems,
    current_scores: list[float],
    candidate_scores: list[float],
    threshold: float,
    current: tuple[str, str],
    candidate: tuple[str, str],
) -> PolicyEvaluation:
    """Both sides' figures from the decisions and the scores; ``current`` and ``candidate``
    are each side's (policy sha256, model id)."""
    scored = [
        ItemScores(
            item.item_id,
            item.file_id,
            item.day,
            item.kind,
            item.violation,
            now,
            new,
            now >= threshold,
            new >= threshold,
        )
        for item, now, new in zip(items.decided, current_scores, candidate_scores, strict=True)
    ]
    scored.sort(key=lambda i: (i.day, i.item_id))
    violations = sum(i.violation for i in scored)

    def side(version: tuple[str, str], flagged: list[bool]) -> Side:
        return Side(
            *version,
            len(scored),
            violations,
            sum(f and i.violation for i, f in zip(scored, flagged, strict=True)),
            sum(f and not i.violation for i, f in zip(scored, flagged, strict=True)),
        )

    return PolicyEvaluation(
        policy,
        side(current, [i.current_flagged for i in scored]),
        side(candidate, [i.candidate_flagged for i in scored]),
        items.unclear,
        dict(sorted(items.skipped.items())),
        scored,
    )


def as_json(evaluation: Evaluation) -> dict[str, Any]:
    """The evaluation as plain data, rates and the lists included (``--json``)."""

    def side(s: Side) -> dict[str, Any]:
        return {
            **asdict(s),
            "false_negatives": s.false_negatives,
            "flagged": s.flagged,
            "precision": s.precision,
            "precision_ci": s.precision_ci,
            "recall": s.recall,
            "recall_ci": s.recall_ci,
        }

    return {
        "first": evaluation.first,
        "last": evaluation.last,
        "threshold": evaluation.threshold,
        "candidate_kind": evaluation.candidate_kind,
        "caveat": CAVEAT,
        "notes": evaluation.notes,
        "skip_reasons": SKIP_REASONS,
        "scored": evaluation.scored,
        "wall_s": evaluation.wall_s,
        "policies": [
            {
                "policy": p.policy,
                "unclear": p.unclear,
                "skipped": p.skipped,
                "current": side(p.current),
                "candidate": side(p.candidate),
                "missed": [asdict(i) for i in p.missed],
                "new_false_flags": [asdict(i) for i in p.new_false_flags],
                "items": [asdict(i) for i in p.items],
            }
            for p in evaluation.policies
        ],
    }


def _rate(value: float | None, interval: tuple[float, float] | None) -> str:
    if value is None or interval is None:
        return "-"
    return f"{100 * value:.1f}% [{100 * interval[0]:.1f}-{100 * interval[1]:.1f}%]"


def _item_line(item: ItemScores, note: str = "") -> str:
    return (
        f"    item {item.item_id}  file {item.file_id}  {item.day}  {item.kind:<6}"
        f"  current {item.current:.3f}  candidate {item.candidate:.3f}{note}"
    )


def _listed(items: list[ItemScores], note: Callable[[ItemScores], str] | None = None) -> list[str]:
    lines = [_item_line(i, note(i) if note else "") for i in items[:LISTED_IN_TEXT]]
    if len(items) > LISTED_IN_TEXT:
        lines.append(f"    ... and {len(items) - LISTED_IN_TEXT} more (--json lists all)")
    return lines


def _headline(evaluation: Evaluation) -> str:
    days = f"{evaluation.first} to {evaluation.last}"
    at = f"threshold {evaluation.threshold:g}"
    first = evaluation.policies[0]  # there is always one: a policy candidate's, or every policy
    if evaluation.candidate_kind == "policy":
        return (
            f"Candidate policy {first.policy} (sha256 {first.candidate.policy_sha[:12]}, now"
            f" {first.current.policy_sha[:12]}) on model {first.current.model},"
            f" judged on the RA decisions of {days} at {at}"
        )
    return (
        f"Candidate model {first.candidate.model} (now {first.current.model}),"
        f" judged on the RA decisions of {days} at {at}"
    )


def format_evaluation(evaluation: Evaluation) -> str:
    """The evaluation as plain text (``earmark evaluate``): ids and scores, never text."""
    lines = [_headline(evaluation), textwrap.fill(CAVEAT, TEXT_WIDTH)]
    lines += [f"Note: {note}" for note in evaluation.notes]
    for p in evaluation.policies:
        now, new = p.current, p.candidate
        skipped = sum(p.skipped.values())
        lines += [
            "",
            f"{p.policy}: {now.decided} decided item(s) ({now.violations} violation(s)),"
            f" {p.unclear} unclear left out, {skipped} skipped",
        ]
        lines += [f"  skipped {n}: {SKIP_REASONS[reason]}" for reason, n in p.skipped.items()]
        lines.append(f"  {'':<16}{'current':>24}{'candidate':>24}")
        for label, a, b in (
            ("flagged", now.flagged, new.flagged),
            ("true positives", now.true_positives, new.true_positives),
            ("false positives", now.false_positives, new.false_positives),
            ("missed (FN)", now.false_negatives, new.false_negatives),
            (
                "precision",
                _rate(now.precision, now.precision_ci),
                _rate(new.precision, new.precision_ci),
            ),
            ("recall", _rate(now.recall, now.recall_ci), _rate(new.recall, new.recall_ci)),
        ):
            lines.append(f"  {label:<16}{a!s:>24}{b!s:>24}")
        missed = p.missed
        caught_now = sum(i.current_flagged for i in missed)
        lines.append(
            f"  Decided violations the candidate misses: {len(missed)}"
            f" ({caught_now} of them flagged by the current)"
        )
        lines += _listed(missed, lambda i: "  (current flags it)" if i.current_flagged else "")
        lines.append(f"  Not violations, flagged by the candidate only: {len(p.new_false_flags)}")
        lines += _listed(p.new_false_flags)
    lines.append(
        f"\n{evaluation.scored} score(s) computed in {evaluation.wall_s:.1f} s; nothing written"
    )
    return "\n".join(lines)
