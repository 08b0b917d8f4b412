"""Screening past days again under the current policy versions and model: ``earmark rescreen``.

A policy file edited today, or a new classifier, applies to files screened from now on; a
rescreen brings past days up to it. It finds the days' screened recordings whose current label
under a policy (every policy, or ``--policy``) is not of the current version (the policy's
sha256 and the model), sends them back to the GPU stage in one transaction ('transcribed' when
the transcript by the current Whisper model is kept, so only the classifier runs; 'ready'
otherwise) and records who asked in ``rescreens``. The day's next ``earmark_daily`` run plans
them into work units with the same planner as any day and screens them: a file is screened
under every current policy, and a pair already labelled under its current version is never
scored again. Each new label marks the earlier one superseded (kept, never overwritten), and the
earlier version's undecided review items are withdrawn (:mod:`earmark.gpu.classify`).

A recording whose audio is gone (retention removed it) is not screened again, even when its
transcript is kept: a new flag would reach reviewers with nothing to listen to. Nor is one whose
transcript or labels retention removed (screening would bring them back), or one an erasure or a
retention intent is under way for. Each is counted, never sent back; `send_back` checks again.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from earmark.config import Settings
from earmark.gpu.models import asr_model_id, classifier_model_id
from earmark.inference.policies import load_policies
from earmark.statuses import FileStatus
from earmark.store.db import Store
from earmark.store.sql import named_queries

_Q = named_queries("rescreen")


class RescreenError(Exception):
    """A rescreen that cannot be done as asked (an unknown policy, days in the wrong order)."""


@dataclass
class DayPlan:
    """One day of a rescreen: the recordings sent back, and why."""

    run_date: str
    to_classify: list[int] = field(default_factory=list)  # transcript kept
    to_transcribe: list[int] = field(default_factory=list)  # audio kept, transcript not
    unavailable: list[int] = field(default_factory=list)  # held back by its lifecycle
    stale: dict[str, int] = field(default_factory=dict)  # policy -> labels not current

    @property
    def files(self) -> int:
        return len(self.to_classify) + len(self.to_transcribe)


@dataclass(frozen=True)
class RescreenPlan:
    """What ``earmark rescreen`` would send back to the GPU stage."""

    first: str
    last: str
    policy: str | None
    model: str
    versions: dict[str, str]  # policy -> current sha256
    days: tuple[DayPlan, ...]

    @property
    def files(self) -> int:
        return sum(d.files for d in self.days)


def plan_rescreen(
    settings: Settings, store: Store, first: str, last: str, policy: str | None = None
) -> RescreenPlan:
    """The screened recordings of ``first``..``last`` (run dates) with a label under ``policy``
    (or any policy) that is not of its current version, or no label under it at all."""
    if date.fromisoformat(first) > date.fromisoformat(last):
        raise RescreenError(f"the first day {first} is after the last {last}")
    policies = {p.name: p.sha256 for p in load_policies(settings.policies_dir)}
    if policy is not None and policy not in policies:
        known = ", ".join(sorted(policies)) or "none"
        raise RescreenError(f"no policy {policy!r} in EARMARK_POLICIES_DIR (policies: {known})")
    chosen = {policy: policies[policy]} if policy is not None else policies
    model = classifier_model_id(settings)
    rows = store.rows(
        _Q["screened_files"], first=first, last=last, asr_model=asr_model_id(settings)
    )
    by_file: dict[int, list[Any]] = defaultdict(list)
    for row in rows:
        by_file[row.id].append(row)
    days: dict[str, DayPlan] = {}
    for file_id, labels in by_file.items():
        current = {r.policy: (r.policy_sha, r.model) for r in labels if r.policy is not None}
        stale = [p for p, sha in chosen.items() if current.get(p) != (sha, model)]
        if not stale:
            continue
        row = labels[0]
        day = days.setdefault(str(row.run_date)[:10], DayPlan(str(row.run_date)[:10]))
        if int(row.held_back) or row.audio_erased_at is not None or not Path(row.path).is_file():
            day.unavailable.append(file_id)  # gone, or going: retention, erasure
            continue
        if int(row.transcripts):
            day.to_classify.append(file_id)
        else:
            day.to_transcribe.append(file_id)
        for p in stale:
            day.stale[p] = day.stale.get(p, 0) + 1
    return RescreenPlan(
        first, last, policy, model, dict(chosen), tuple(days[d] for d in sorted(days))
    )


def send_back(store: Store, plan: RescreenPlan, actor: str) -> int:
    """One transaction: the plan's recordings back to the GPU stage, and the ``rescreens`` row
    that says who asked. Returns the rescreen's id. A recording that is no longer 'classified'
    (a GPU unit took it meanwhile) is left as it is."""
    if not actor.strip():
        raise RescreenError("who asks for the rescreen is required")
    with store.begin() as conn:
        for day in plan.days:
            for status, ids in (
                (FileStatus.TRANSCRIBED, day.to_classify),
                (FileStatus.READY, day.to_transcribe),
            ):
                if ids:
                    conn.execute(
                        sa.text(_Q["send_back"]),
                        [{"status": status, "file_id": i} for i in ids],
                    )
        return int(
            conn.execute(
                sa.text(_Q["record_rescreen"]),
                {
                    "actor": actor.strip(),
                    "first": plan.first,
                    "last": plan.last,
                    "policy": plan.policy,
                    "model": plan.model,
                    "versions": json.dumps(plan.versions, sort_keys=True),
                    "files": plan.files,
                },
            ).scalar_one()
        )


def trigger_commands(plan: RescreenPlan) -> list[list[str]]:
    """The ``airflow dags trigger`` command (argv) that screens each day with files sent back."""
    return [
        ["airflow", "dags", "trigger", "earmark_daily", "--conf", json.dumps({"date": d.run_date})]
        for d in plan.days
        if d.files
    ]


def describe(plan: RescreenPlan) -> list[str]:
    """The plan for people: days, counts and versions (ids and hashes, never names)."""
    scope = f"policy {plan.policy}" if plan.policy else "every policy"
    versions = ", ".join(f"{p} {sha[:8]}" for p, sha in sorted(plan.versions.items()))
    lines = [
        f"rescreen {plan.first} to {plan.last}, {scope}, under model {plan.model}"
        f" and policy versions {versions or 'none'}"
    ]
    if not plan.days:
        lines.append("nothing to screen again: every label on these days is of the current version")
    for day in plan.days:
        stale = ", ".join(f"{p} {n}" for p, n in sorted(day.stale.items()))
        lines.append(
            f"  {day.run_date}: {day.files} recordings ({len(day.to_classify)} classified again,"
            f" {len(day.to_transcribe)} transcribed again); labels not current: {stale or 'none'}"
        )
        if day.unavailable:
            ids = ", ".join(str(i) for i in day.unavailable)
            lines.append(
                f"    {len(day.unavailable)} not screened again: their audio, transcript or"
                f" labels removed by retention, or an erasure under way (ids {ids})"
            )
    lines.append(f"in all {plan.files} recordings")
    return lines


def rescreens(store: Store) -> list[dict[str, Any]]:
    """The audit: every rescreen, oldest first (``versions`` as a dict)."""
    out = [dict(r._mapping) for r in store.rows(_Q["rescreens"])]
    for row in out:
        row["versions"] = json.loads(row["versions"])
    return out
