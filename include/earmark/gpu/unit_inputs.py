"""What one work unit's stages read: its files and transcripts, and what is already done.

A stage does only the work still missing (all of it, when reprocessing), so a retried or
redelivered task picks up where the last try stopped. Audio gone from the volume since intake
is set aside here as ``vanished``, with the reason in ``audio_files.error``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from earmark.statuses import FileStatus
from earmark.store.db import Store

if TYPE_CHECKING:
    from earmark.inference.policies import Policy


@dataclass(frozen=True)
class TranscriptionInputs:
    """The unit's files to transcribe: ``silent`` ones still on disk, and ``spoken`` ones,
    longest first; ``skipped`` were done or quarantined before, ``vanished`` silent files
    were quarantined just now."""

    files: list[sa.Row]
    skipped: int
    silent: list[sa.Row]
    vanished: int
    spoken: list[sa.Row]


def transcription_inputs(
    store: Store, unit_id: int, model: str, *, reprocess: bool
) -> TranscriptionInputs:
    """The live files of the unit with no transcript by ``model`` yet (all, if reprocess)."""
    unit = _unit_files(store, unit_id)
    done_ids = set() if reprocess else _transcribed_ids(store, unit_id, model)
    files = [f for f in unit if f.status != FileStatus.QUARANTINED and f.id not in done_ids]
    silent, vanished = _silent_still_there(store, [f for f in files if f.silent])
    spoken = sorted((f for f in files if not f.silent), key=lambda f: -(f.duration_s or 0.0))
    return TranscriptionInputs(files, len(unit) - len(files), silent, vanished, spoken)


def _unit_files(store: Store, unit_id: int) -> list[sa.Row]:
    return store.rows(
        "SELECT f.id, f.path, f.duration_s, f.status, f.silent FROM work_unit_files b"
        " JOIN audio_files f ON f.id = b.file_id WHERE b.unit_id = :b ORDER BY f.id",
        b=unit_id,
    )


def _transcribed_ids(store: Store, unit_id: int, model: str) -> set[int]:
    return {
        row.file_id
        for row in store.rows(
            "SELECT t.file_id FROM transcripts t JOIN work_unit_files b ON b.file_id = t.file_id"
            " WHERE b.unit_id = :b AND t.model = :m",
            b=unit_id,
            m=model,
        )
    }


def quarantine_file(store: Store, file_id: int, reason: str) -> None:
    """Set one file aside; the rest of its unit goes on."""
    with store.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE audio_files SET status = 'quarantined', error = :e,"
                " updated_at = CURRENT_TIMESTAMP WHERE id = :id"
            ),
            {"e": reason, "id": file_id},
        )


def _silent_still_there(store: Store, silent: list[Any]) -> tuple[list[Any], int]:
    """The files found silent at intake that are still on disk; the others are set aside as
    ``vanished`` (a silent file is never decoded here, so nothing else would notice)."""
    from earmark.inference.audio import AudioMissingError

    present = [f for f in silent if Path(f.path).is_file()]
    for file in silent:
        if file not in present:
            quarantine_file(store, file.id, f"vanished: {AudioMissingError()}")
    return present, len(silent) - len(present)


def unit_transcripts(store: Store, unit_id: int, asr_model: str) -> list[sa.Row]:
    """The transcripts of the unit's transcribed (or already classified) files."""
    return store.rows(
        "SELECT t.file_id, t.text, f.duration_s FROM work_unit_files b"
        " JOIN audio_files f ON f.id = b.file_id"
        " JOIN transcripts t ON t.file_id = f.id AND t.model = :asr"
        " WHERE b.unit_id = :b AND f.status IN ('transcribed', 'classified') ORDER BY f.id",
        b=unit_id,
        asr=asr_model,
    )


def labelled_pairs(
    store: Store, unit_id: int, model: str, policies: list[Policy]
) -> set[tuple[int, str]]:
    """(file, policy) pairs of the unit whose current label is by ``model`` under the policy's
    current text; a changed policy is scored again, and so is a policy edited back to an
    earlier text (its label of that text was superseded meanwhile)."""
    current_sha = {p.name: p.sha256 for p in policies}
    return {
        (r.file_id, r.policy)
        for r in store.rows(
            "SELECT l.file_id, l.policy, l.policy_sha FROM labels l"
            " JOIN work_unit_files b ON b.file_id = l.file_id"
            " WHERE b.unit_id = :b AND l.model = :m AND l.superseded_at IS NULL",
            b=unit_id,
            m=model,
        )
        if current_sha.get(r.policy) == r.policy_sha
    }
