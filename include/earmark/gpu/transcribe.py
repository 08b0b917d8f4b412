"""The transcription stage of one work unit: Whisper over every file still waiting for it.

The task loads its model once and streams the whole unit through it. Every write is an upsert
keyed on the contract's unique keys with guarded status transitions, so a retried or redelivered
task ends in the same state as a clean one. A file that cannot be decoded is quarantined; the rest
of the unit goes on. Transcript text goes to the results DB only, never to logs or XCom.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
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
    host_s: float = 0.0
    batch_s: float = 0.0
    speech: dict[int, bool] = field(default_factory=dict)  # file -> VAD found speech


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
    Files found silent at intake get an empty transcript without decoding anything; files in
    which VAD finds no speech get one too, marked ``no_speech`` (and counted).
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
        asr_host_s=spoken.host_s,
        asr_batch_s=spoken.batch_s,
        no_speech_files=list(spoken.speech.values()).count(False),
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
    """Decode and segment the files in threads, block by block, feeding each segment to Whisper
    as it is found (full batches across files), and write each file's text once its last
    segment is done. A file whose audio turns out bad half way is dropped and quarantined."""
    from earmark.inference.segments import SegmentStream

    before = replace(transcriber.counters)
    stream = SegmentStream(transcriber.transcribe_segments, _batch_size(transcriber))
    figures = SpokenFigures()
    heard: set[int] = set()  # files with at least one segment
    for index, kind, item in read_segments(settings, [Path(f.path) for f in spoken]):
        file = spoken[index]
        if kind == "segments":
            heard.add(file.id)
            write_transcripts(store, model, stream.put(file.id, [item]))
        elif kind == "samples":
            figures.audio_seconds.append(item / SAMPLE_RATE)
            figures.speech[file.id] = file.id in heard
            record_speech(store, {file.id: file.id in heard})  # before its empty transcript
            write_transcripts(store, model, stream.close(file.id))
        else:
            stream.discard(file.id)
            quarantine_file(store, file.id, _quarantine_reason(item))
            figures.quarantined += 1
    write_transcripts(store, model, stream.finish())
    _count_whisper_work(figures, before, transcriber)
    return figures


def read_segments(settings: Settings, paths: list[Path]) -> Iterator[tuple[int, str, Any]]:
    """The production read of the unit's audio: ``(index, kind, item)`` in arrival order, where
    ``kind`` is ``segments`` (one 16 kHz mono float32 segment), ``samples`` (the file ended:
    its length in 16 kHz samples) or ``error`` (an ``AudioDecodeError``; the file is done).

    One decode thread per core this process may use, each with one torch intra-op thread and
    its own VAD (whose state runs on across a file's blocks); segments found but not yet taken
    hold at most ``EARMARK_DECODE_HELD_MIB``.
    """
    import numpy as np
    import torch

    from earmark.inference.audio import host_threads, stream_many
    from earmark.inference.segments import SpeechDetector, file_segments

    options = segmenter_options(settings)
    local = threading.local()
    threads = torch.get_num_threads()

    def init() -> None:  # in each decode thread, while the caller waits (see below)
        torch.set_num_threads(1)
        local.detector = SpeechDetector(options) if options.mode == "vad" else None

    def produce(path: Path) -> Iterator[Any]:
        return file_segments(path, options, local.detector)

    released = False

    def started() -> None:
        # torch.set_num_threads is also the default for threads started later: once every
        # decode thread has its one thread, the rest of the process gets its count back.
        nonlocal released
        torch.set_num_threads(threads)
        released = True
        _THREAD_SETUP.release()

    _THREAD_SETUP.acquire()
    try:
        for index, kind, item in stream_many(
            paths,
            produce,
            workers=host_threads(),
            max_held_bytes=settings.decode_held_mib << 20,
            size_of=lambda item: int(item.nbytes) if isinstance(item, np.ndarray) else 0,
            init=init,
            started=started,
        ):
            if kind == "item":
                yield index, "segments" if isinstance(item, np.ndarray) else "samples", item
            elif kind == "error":
                yield index, "error", item
    finally:
        if not released:
            started()


_THREAD_SETUP = threading.Lock()


def record_speech(store: Store, speech: dict[int, bool]) -> None:
    """Record, per decoded file, whether any segment was found: ``no_speech`` marks an empty
    transcript as "nothing was said" (VAD found no speech), not a clean empty transcript of
    speech; the day's report counts them. A reprocessed file is marked afresh."""
    if not speech:
        return
    with store.begin() as conn:
        conn.execute(
            sa.text("UPDATE audio_files SET no_speech = :n WHERE id = :f"),
            [{"f": f, "n": int(not found)} for f, found in speech.items()],
        )


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
    figures.host_s = after.host_s - before.host_s
    figures.batch_s = after.batch_s - before.batch_s


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
