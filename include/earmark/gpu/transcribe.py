"""The transcription stage of one work unit: Whisper over every file still waiting for it.

The task loads its model once and streams the whole unit through it. Every write is an upsert
keyed on the contract's unique keys with guarded status transitions, so a retried or redelivered
task ends in the same state as a clean one. A file that cannot be decoded is quarantined; the rest
of the unit goes on. Transcript text goes to the results DB only, never to logs or XCom.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from earmark.config import Settings
from earmark.gpu.figures import Stage, StageResult, record_figures
from earmark.gpu.models import (
    ModelOnce,
    TranscriberLike,
    asr_model_id,
    load_transcriber,
    segmenter_options,
)
from earmark.gpu.unit_inputs import quarantine_file, transcription_inputs
from earmark.inference import SAMPLE_RATE
from earmark.store.db import Store

if TYPE_CHECKING:  # the inference modules load torch: imported inside the tasks that run them
    from earmark.inference.audio import AudioDecodeError
    from earmark.inference.transcriber import AsrCounters

log = logging.getLogger(__name__)

MAX_DECODE_THREADS = 8


@dataclass
class SpokenFigures:
    """What decoding the unit's spoken files came to: each decoded file's seconds, the files
    quarantined, and Whisper's work on them (its counters' growth, and its batch size)."""

    audio_seconds: list[float] = field(default_factory=list)
    quarantined: int = 0
    forwards: int = 0
    rows: int = 0
    batch_size: int = 0
    fed_s: float = 0.0
    padded_s: float = 0.0


def transcribe_unit(
    settings: Settings,
    store: Store,
    unit_id: int,
    *,
    reprocess: bool = False,
    transcriber: TranscriberLike | None = None,
) -> StageResult:
    """Transcribe every live file of the unit that has no transcript yet (all, if reprocess).

    The unit's audio becomes one stream of <= 30 s segments (speech only, by default) decoded
    in full batches across files; each file's text is written once its last segment is done.
    Files found silent at intake, and files with no speech, get an empty transcript without
    decoding anything.
    """
    started = time.perf_counter()
    model = asr_model_id(settings)
    inputs = transcription_inputs(store, unit_id, model, reprocess=reprocess)
    write_transcripts(store, model, [(f.id, "") for f in inputs.silent])
    whisper = ModelOnce(transcriber, lambda: load_transcriber(settings))
    spoken = SpokenFigures()
    if inputs.spoken:
        spoken = _transcribe_spoken(settings, store, model, inputs.spoken, whisper.get())
    quarantined = inputs.vanished + spoken.quarantined
    silent_seconds = [float(f.duration_s or 0.0) for f in inputs.silent]
    result = StageResult(
        unit_id,
        len(inputs.files) - quarantined,
        inputs.skipped,
        quarantined,
        sum([*silent_seconds, *spoken.audio_seconds]),
        time.perf_counter() - started,
        load_s=whisper.load_s,
        model_loads=whisper.loads,
        silent_files=len(inputs.silent),
        asr_forwards=spoken.forwards,
        asr_rows=spoken.rows,
        asr_batch_size=spoken.batch_size,
        asr_fed_s=spoken.fed_s,
        asr_padded_s=spoken.padded_s,
    )
    record_figures(store, Stage.TRANSCRIBE, result)
    log.info("unit %s transcribed: %s", unit_id, result)
    return result


def _transcribe_spoken(
    settings: Settings,
    store: Store,
    model: str,
    spoken: list[sa.Row],
    transcriber: TranscriberLike,
) -> SpokenFigures:
    """Decode and segment the files in threads, feed the segments to Whisper in full batches
    across files, and write each file's text once its last segment is done."""
    from earmark.inference.audio import AudioDecodeError, load_many
    from earmark.inference.segments import SegmentStream

    before = replace(transcriber.counters)
    cut = _segmenter(segmenter_options(settings))
    stream = SegmentStream(transcriber.transcribe_segments, _batch_size(transcriber))
    figures = SpokenFigures()
    paths = [Path(f.path) for f in spoken]
    workers = min(MAX_DECODE_THREADS, os.cpu_count() or 1)
    for index, decoded in load_many(paths, SAMPLE_RATE, workers, prefetch=2 * workers, then=cut):
        file = spoken[index]
        if isinstance(decoded, AudioDecodeError):
            quarantine_file(store, file.id, _quarantine_reason(decoded))
            figures.quarantined += 1
            continue
        audio, spans = decoded
        figures.audio_seconds.append(len(audio) / SAMPLE_RATE)
        write_transcripts(store, model, stream.add(file.id, audio, spans))
    write_transcripts(store, model, stream.finish())
    _count_whisper_work(figures, before, transcriber)
    return figures


def _segmenter(options: Any) -> Callable[[Any], tuple[Any, list]]:
    """The cut run on each decoded file in the decode threads, overlapping the GPU."""
    from earmark.inference.segments import SpeechDetector, segment

    local = threading.local()

    def cut(audio: Any) -> tuple[Any, list]:
        # silero-vad keeps state, so each thread has its own detector.
        if options.mode == "vad" and not hasattr(local, "detector"):
            local.detector = SpeechDetector(options)
        return audio, segment(audio, options, getattr(local, "detector", None))

    return cut


def _quarantine_reason(error: AudioDecodeError) -> str:
    from earmark.inference.audio import AudioMissingError

    gone = isinstance(error, AudioMissingError)
    return f"vanished: {error}" if gone else f"undecodable: {error}"


def _count_whisper_work(
    figures: SpokenFigures, before: AsrCounters, transcriber: TranscriberLike
) -> None:
    after = transcriber.counters
    figures.forwards = after.forwards - before.forwards
    figures.rows = after.rows - before.rows
    figures.batch_size = _batch_size(transcriber)
    figures.fed_s = after.fed_s - before.fed_s
    figures.padded_s = after.padded_s - before.padded_s


def _batch_size(transcriber: Any) -> int:
    return int(transcriber.options.batch_size)


def write_transcripts(store: Store, model: str, items: Sequence[tuple[int, str]]) -> None:
    """Upsert finished files' texts and move them from ready to transcribed (none: no write)."""
    if not items:
        return
    with store.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO transcripts (file_id, model, text, n_chars) VALUES (:f, :m, :t, :n)"
                " ON CONFLICT (file_id, model) DO UPDATE SET text = excluded.text,"
                " n_chars = excluded.n_chars, created_at = CURRENT_TIMESTAMP"
            ),
            [{"f": f, "m": model, "t": t, "n": len(t)} for f, t in items],
        )
        conn.execute(
            sa.text(
                "UPDATE audio_files SET status = 'transcribed', updated_at = CURRENT_TIMESTAMP"
                " WHERE id = :f AND status = 'ready'"
            ),
            [{"f": f} for f, _ in items],
        )
