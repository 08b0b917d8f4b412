"""A GPU stage's figures for one work unit: the counts it returns, and their row in work_units.

Both stages record the same way — wall time, items, model load seconds and the worker that ran
them (transcription adds Whisper's batch figures) — so work-unit planning can measure the GPU
rate from them. Figures hold counts and seconds only, never anything from the audio.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum

import sqlalchemy as sa

from earmark.store.db import Store


@dataclass(frozen=True)
class StageResult:
    """Counts and timing of one stage of one work unit: safe for XCom and logs.

    ``model_loads``/``load_s``: models this task loaded and the seconds it took. The ``asr_*``
    figures are Whisper's forwards, the segments decoded, the batch size, and the audio and
    padding seconds fed (transcribe only; zero for classify).
    """

    unit_id: int
    items: int
    skipped: int
    quarantined: int
    audio_s: float
    wall_s: float
    load_s: float = 0.0
    model_loads: int = 0
    silent_files: int = 0
    asr_forwards: int = 0
    asr_rows: int = 0
    asr_batch_size: int = 0
    asr_fed_s: float = 0.0
    asr_padded_s: float = 0.0
    asr_host_s: float = 0.0  # main thread outside model calls, within short-form batches
    asr_batch_s: float = 0.0  # wall time of those batches: host_s / batch_s = feature wait
    no_speech_files: int = 0
    nonfinite_scores: int = 0


class Stage(Enum):
    """The two stages of a unit; each value names the work_units column of its worker."""

    TRANSCRIBE = "transcribe_host"
    CLASSIFY = "classify_host"


# The work_units column each stage writes, and the StageResult field it takes.
STAGE_COLUMNS: dict[Stage, dict[str, str]] = {
    Stage.TRANSCRIBE: {
        "transcribe_wall_s": "wall_s",
        "transcribed_files": "items",
        "transcribe_load_s": "load_s",
        "asr_batch_size": "asr_batch_size",
        "asr_forwards": "asr_forwards",
        "asr_rows": "asr_rows",
        "asr_fed_s": "asr_fed_s",
        "asr_padded_s": "asr_padded_s",
    },
    Stage.CLASSIFY: {
        "classify_wall_s": "wall_s",
        "classified_items": "items",
        "classify_load_s": "load_s",
    },
}


def worker_name() -> str:
    """Which worker and GPU ran a stage, for work_units (never anything from the audio)."""
    from earmark.hostname import node_name

    gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
    return f"{node_name()} gpu {gpus}" if gpus else node_name()


def _update_statement(stage: Stage) -> sa.TextClause:
    """``UPDATE work_units`` of the stage's columns (the constants above, never input)."""
    columns = [*STAGE_COLUMNS[stage], stage.value]
    assignments = ", ".join(f"{column} = :{column}" for column in columns)
    return sa.text(f"UPDATE work_units SET {assignments} WHERE id = :unit_id")


UPDATES = {stage: _update_statement(stage) for stage in Stage}


def record_figures(store: Store, stage: Stage, result: StageResult) -> None:
    """Write the stage's figures and this worker's name onto the unit's work_units row."""
    values = {column: getattr(result, field) for column, field in STAGE_COLUMNS[stage].items()}
    with store.begin() as conn:
        conn.execute(
            UPDATES[stage], {**values, stage.value: worker_name(), "unit_id": result.unit_id}
        )
