"""The screening stage of one work unit: score its transcripts against every policy.

The task loads the classifier once (only if something needs scoring) and scores the unit policy
by policy. Labels are upserts keyed on the contract's unique keys (file, policy, policy version,
model), so a retried task ends in the same state as a clean one. A file scored under a policy by
another version or model marks its earlier label superseded (kept, never overwritten), and that
version's undecided review items are withdrawn. Flags, and a sample of the scores below the
threshold, go to the review queue through :func:`earmark.review.queue.enqueue`. Transcript text
is never logged.

A score that is not finite fails the task with
:class:`~earmark.inference.classifier.NonFiniteScoreError` naming the files and the policy:
nothing is written for that policy's batch (no label, no review item), so no file is recorded
as "not flagged" for a score nobody computed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import sqlalchemy as sa

from earmark.config import Settings
from earmark.gpu.figures import Stage, StageResult, record_figures
from earmark.gpu.models import (
    ClassifierLike,
    ModelOnce,
    asr_model_id,
    classifier_model_id,
    load_classifier,
)
from earmark.gpu.unit_inputs import labelled_pairs, unit_transcripts
from earmark.review.queue import enqueue
from earmark.store.db import Store
from earmark.store.sql import named_queries

if TYPE_CHECKING:
    from earmark.inference.policies import Policy

log = logging.getLogger(__name__)
_Q = named_queries("labels")


def classify_unit(
    settings: Settings,
    store: Store,
    unit_id: int,
    *,
    reprocess: bool = False,
    classifier: ClassifierLike | None = None,
) -> StageResult:
    """Score every transcribed file of the unit against every policy; flag into the RA queue.

    A file with no speech (an empty transcript) has nothing to match: it scores 0 under every
    policy without a forward pass.
    """
    from earmark.inference.policies import load_policies

    started = time.perf_counter()
    policies = load_policies(settings.policies_dir)
    model = classifier_model_id(settings)
    transcripts = unit_transcripts(store, unit_id, asr_model_id(settings))
    labelled = set() if reprocess else labelled_pairs(store, unit_id, model, policies)
    cope = ModelOnce(classifier, lambda: load_classifier(settings))
    items = 0
    for policy in policies:
        todo = [t for t in transcripts if (t.file_id, policy.name) not in labelled]
        if todo:
            _write_labels(store, policy, model, settings, _scores(cope, policy, todo))
            items += len(todo)
    _mark_classified(store, unit_id, model, [p.name for p in policies])
    result = StageResult(
        unit_id,
        items,
        len(transcripts) * len(policies) - items,
        0,
        sum(float(t.duration_s or 0.0) for t in transcripts),
        time.perf_counter() - started,
        load_s=cope.load_s,
        model_loads=cope.loads,
        nonfinite_scores=0,  # one would have failed the task (NonFiniteScoreError)
    )
    record_figures(store, Stage.CLASSIFY, result)
    log.info("unit %s classified: %s", unit_id, result)
    return result


def _scores(
    classifier: ModelOnce[ClassifierLike], policy: Policy, todo: list[sa.Row]
) -> list[tuple[int, float]]:
    """Each file's score under the policy; an empty transcript scores 0 without the model.

    Raises ``NonFiniteScoreError`` naming the files whose score is NaN or inf, whichever
    classifier computed it.
    """
    spoken = [t for t in todo if t.text.strip()]
    scored = [(t.file_id, 0.0) for t in todo if not t.text.strip()]
    if spoken:
        from earmark.inference.classifier import NonFiniteScoreError

        file_ids = [t.file_id for t in spoken]
        try:
            scores = classifier.get().score(policy, [t.text for t in spoken])
        except NonFiniteScoreError as error:
            raise error.for_files(file_ids) from error
        broken = [k for k, s in enumerate(scores) if not math.isfinite(s)]
        if broken:
            raise NonFiniteScoreError(policy.name, broken).for_files(file_ids)
        scored.extend(zip(file_ids, scores, strict=True))
    return scored


def _mark_classified(store: Store, unit_id: int, model: str, policies: list[str]) -> None:
    """Move the unit's transcribed files labelled under every current policy to classified."""
    query = sa.text(_Q["mark_classified"]).bindparams(sa.bindparam("policies", expanding=True))
    with store.begin() as conn:
        conn.execute(query, {"b": unit_id, "m": model, "n": len(policies), "policies": policies})


def _write_labels(
    store: Store,
    policy: Policy,
    model: str,
    settings: Settings,
    scored: Sequence[tuple[int, float]],
) -> None:
    """Labels for one policy, with its text kept by version (``policy_versions``); flags go to
    the review queue, and so does a sample of the scores below the threshold
    (``EARMARK_REVIEW_SAMPLE_SHARE``), to measure what it misses."""
    rows = [
        {
            "f": f,
            "p": policy.name,
            "sha": policy.sha256,
            "m": model,
            "s": min(1.0, max(0.0, float(s))),  # finite (checked in _scores): rounding only
            "l": int(s >= settings.flag_threshold),
        }
        for f, s in scored
    ]
    with store.begin() as conn:
        conn.execute(
            sa.text(_Q["record_policy_version"]),
            {"sha": policy.sha256, "p": policy.name, "text": policy.text},
        )
        conn.execute(sa.text(_Q["supersede_other_versions"]), rows)
        conn.execute(sa.text(_Q["upsert_label"]), rows)
        enqueue(conn, rows, settings.review_sample_share)
