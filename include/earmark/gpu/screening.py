"""The GPU stage of one work unit: transcribe its files, then screen them against policies.

Each task loads its model once and streams the whole unit through it. Every write is an upsert
keyed on the contract's unique keys with guarded status transitions, so a retried or redelivered
task ends in the same state as a clean one. A file that cannot be decoded is quarantined; the rest
of the unit goes on. Transcript text goes to the results DB only, never to logs or XCom.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa

from earmark.config import Settings
from earmark.review.queue import enqueue
from earmark.statuses import FileStatus
from earmark.store.db import Store

if TYPE_CHECKING:  # the inference modules load torch: imported inside the tasks that run them
    from earmark.inference.budget import BatchFits
    from earmark.inference.policies import Policy
    from earmark.inference.transcriber import AsrCounters

log = logging.getLogger(__name__)


class TranscriberLike(Protocol):
    counters: AsrCounters

    def transcribe_segments(self, segments: list[Any]) -> list[str]: ...


class ClassifierLike(Protocol):
    def score(self, policy: Policy | str, contents: list[str]) -> list[float]: ...


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


def resolve_device(setting: str) -> str:
    if setting != "auto":
        return setting
    import torch  # noqa: PLC0415 - heavy; only inside tasks

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(setting: str, device: str) -> str:
    """bfloat16 on a GPU that supports it, float16 on one that does not, float32 on the CPU."""
    if setting != "auto":
        return setting
    if not device.startswith("cuda"):
        return "float32"
    import torch  # noqa: PLC0415

    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def worker_name() -> str:
    """Which worker and GPU ran a stage, for gpu_batches (never anything from the audio)."""
    from earmark.hostname import node_name  # noqa: PLC0415

    gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
    return f"{node_name()} gpu {gpus}" if gpus else node_name()


def asr_model_id(settings: Settings) -> str:
    return settings.asr_model_dir.name


def classifier_model_id(settings: Settings) -> str:
    return f"{settings.base_model_dir.name}+{settings.adapter_dir.name}"


# A typical CoPE prompt: a ~1,050-token policy prefix (cached) and ~250 tokens of transcript.
TYPICAL_PREFIX_TOKENS = 1050
TYPICAL_PROMPT_TOKENS = 1300


@dataclass(frozen=True)
class StagePlan:
    """Device, dtype and batch limits of the GPU stage: the settings, capped by the budget."""

    device: str
    dtype: str
    asr_batch: int
    classify_batch: int
    classify_max_batch_tokens: int | None = None
    classify_max_context_tokens: int = 8192
    classify_fits: BatchFits | None = None  # fits(rows, prompt tokens, prefix tokens), on a GPU


def stage_plan(settings: Settings) -> StagePlan:
    """On a GPU, batch sizes are the smaller of the settings and what the memory budget fits."""
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    if not device.startswith("cuda"):
        return StagePlan(device, dtype, settings.asr_batch_size, settings.classify_batch_size)
    from earmark.inference.budget import batch_sizes, classifier_fits  # noqa: PLC0415

    fits = batch_sizes(
        settings.gpu_memory_gib,
        classifier_prompt_tokens=TYPICAL_PROMPT_TOKENS,
        prefix_tokens=TYPICAL_PREFIX_TOKENS,
        attn_implementation=settings.classifier_attention,
        max_classify_batch=settings.classify_batch_size,
    )
    return StagePlan(
        device,
        dtype,
        min(settings.asr_batch_size, fits.asr_batch),
        settings.classify_batch_size,
        None,  # the memory estimate closes batches, for each policy's real prefix length
        fits.classify_max_context_tokens,
        classifier_fits(settings.gpu_memory_gib, attn_implementation=settings.classifier_attention),
    )


def load_transcriber(settings: Settings) -> TranscriberLike:
    from earmark.inference.transcriber import Transcriber, TranscriberOptions  # noqa: PLC0415

    plan = stage_plan(settings)
    return Transcriber(
        TranscriberOptions(
            model_dir=settings.asr_model_dir,
            device=plan.device,
            dtype=plan.dtype,
            batch_size=plan.asr_batch,
            language=settings.language,
            max_new_tokens=settings.asr_max_new_tokens,
        )
    )


def segmenter_options(settings: Settings) -> Any:
    from earmark.inference.segments import SegmenterOptions  # noqa: PLC0415

    return SegmenterOptions(mode=settings.asr_segmenter)


def load_classifier(settings: Settings) -> ClassifierLike:
    from earmark.inference.classifier import Classifier, ClassifierOptions  # noqa: PLC0415
    from earmark.inference.prepared import check_prepared  # noqa: PLC0415

    plan = stage_plan(settings)
    prepared = check_prepared(
        settings.base_model_dir, settings.adapter_dir, settings.prepared_model_dir
    )
    return Classifier(
        ClassifierOptions(
            base_dir=prepared.path,
            adapter_dir=None,
            device=plan.device,
            dtype=plan.dtype,
            batch_size=plan.classify_batch,
            max_batch_tokens=plan.classify_max_batch_tokens,
            max_context_tokens=plan.classify_max_context_tokens,
            attn_implementation=settings.classifier_attention,
            fits=plan.classify_fits,
            max_cached_prefixes=1 if plan.device.startswith("cuda") else 8,
        )
    )


def _unit_files(store: Store, unit_id: int) -> list[sa.Row]:
    return store.rows(
        "SELECT f.id, f.path, f.duration_s, f.status, f.silent FROM batch_files b"
        " JOIN audio_files f ON f.id = b.file_id WHERE b.batch_id = :b ORDER BY f.id",
        b=unit_id,
    )


def _quarantine_file(store: Store, file_id: int, reason: str) -> None:
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
    from earmark.inference.audio import AudioMissingError  # noqa: PLC0415

    present = [f for f in silent if Path(f.path).is_file()]
    for file in silent:
        if file not in present:
            _quarantine_file(store, file.id, f"vanished: {AudioMissingError()}")
    return present, len(silent) - len(present)


def _write_transcripts(store: Store, model: str, items: Sequence[tuple[int, str]]) -> None:
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
    from earmark.inference.audio import AudioDecodeError, AudioMissingError, load_many  # noqa: PLC0415
    from earmark.inference.segments import SegmentStream, SpeechDetector, segment  # noqa: PLC0415

    started = time.perf_counter()
    model = asr_model_id(settings)
    unit = _unit_files(store, unit_id)
    done_ids = (
        set()
        if reprocess
        else {
            row.file_id
            for row in store.rows(
                "SELECT t.file_id FROM transcripts t JOIN batch_files b ON b.file_id = t.file_id"
                " WHERE b.batch_id = :b AND t.model = :m",
                b=unit_id,
                m=model,
            )
        }
    )
    files = [f for f in unit if f.status != FileStatus.QUARANTINED and f.id not in done_ids]
    skipped = len(unit) - len(files)
    silent, quarantined = _silent_still_there(store, [f for f in files if f.silent])
    spoken = sorted((f for f in files if not f.silent), key=lambda f: -(f.duration_s or 0.0))
    if silent:
        _write_transcripts(store, model, [(f.id, "") for f in silent])
    audio_s = sum(float(f.duration_s or 0.0) for f in silent)
    load_s, loads = 0.0, 0
    before: AsrCounters | None = None  # set when spoken files are decoded
    if spoken:
        if transcriber is None:
            loading = time.perf_counter()
            transcriber = load_transcriber(settings)
            load_s, loads = time.perf_counter() - loading, 1
        before = replace(transcriber.counters)
        options = segmenter_options(settings)
        local = threading.local()

        def cut(audio: Any) -> tuple[Any, list]:
            # Runs in the decode threads, overlapping the GPU; silero-vad keeps state, so
            # each thread has its own detector.
            if options.mode == "vad" and not hasattr(local, "detector"):
                local.detector = SpeechDetector(options)
            return audio, segment(audio, options, getattr(local, "detector", None))

        stream = SegmentStream(transcriber.transcribe_segments, _batch_size(transcriber))
        paths = [Path(f.path) for f in spoken]
        workers = min(8, os.cpu_count() or 1)
        for index, decoded in load_many(paths, 16000, workers, prefetch=2 * workers, then=cut):
            file = spoken[index]
            if isinstance(decoded, AudioDecodeError):
                gone = isinstance(decoded, AudioMissingError)
                reason = f"vanished: {decoded}" if gone else f"undecodable: {decoded}"
                _quarantine_file(store, file.id, reason)
                quarantined += 1
                continue
            audio, spans = decoded
            audio_s += len(audio) / 16000
            finished = stream.add(file.id, audio, spans)
            if finished:
                _write_transcripts(store, model, finished)
        finished = stream.finish()
        if finished:
            _write_transcripts(store, model, finished)
    counters = transcriber.counters if spoken and transcriber is not None else None
    result = StageResult(
        unit_id,
        len(files) - quarantined,
        skipped,
        quarantined,
        audio_s,
        time.perf_counter() - started,
        load_s=load_s,
        model_loads=loads,
        silent_files=len(silent),
        asr_forwards=counters.forwards - before.forwards if counters and before else 0,
        asr_rows=counters.rows - before.rows if counters and before else 0,
        asr_batch_size=_batch_size(transcriber) if counters else 0,
        asr_fed_s=counters.fed_s - before.fed_s if counters and before else 0.0,
        asr_padded_s=counters.padded_s - before.padded_s if counters and before else 0.0,
    )
    with store.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE gpu_batches SET transcribe_wall_s = :w, transcribed_files = :n,"
                " transcribe_load_s = :load, asr_batch_size = :bs, asr_forwards = :fw,"
                " asr_rows = :rows, asr_fed_s = :fed, asr_padded_s = :pad, transcribe_host = :h"
                " WHERE id = :b"
            ),
            {
                "w": result.wall_s,
                "n": result.items,
                "load": result.load_s,
                "bs": result.asr_batch_size,
                "fw": result.asr_forwards,
                "rows": result.asr_rows,
                "fed": result.asr_fed_s,
                "pad": result.asr_padded_s,
                "h": worker_name(),
                "b": unit_id,
            },
        )
    log.info("unit %s transcribed: %s", unit_id, result)
    return result


def _batch_size(transcriber: Any) -> int:
    return int(transcriber.options.batch_size)


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
    from earmark.inference.policies import load_policies  # noqa: PLC0415

    started = time.perf_counter()
    policies = load_policies(settings.policies_dir)
    model = classifier_model_id(settings)
    transcripts = store.rows(
        "SELECT t.file_id, t.text, f.duration_s FROM batch_files b"
        " JOIN audio_files f ON f.id = b.file_id"
        " JOIN transcripts t ON t.file_id = f.id AND t.model = :asr"
        " WHERE b.batch_id = :b AND f.status IN ('transcribed', 'classified') ORDER BY f.id",
        b=unit_id,
        asr=asr_model_id(settings),
    )
    current_sha = {p.name: p.sha256 for p in policies}
    labelled = (
        set()
        if reprocess
        else {
            (r.file_id, r.policy)
            for r in store.rows(
                "SELECT l.file_id, l.policy, l.policy_sha FROM labels l"
                " JOIN batch_files b ON b.file_id = l.file_id"
                " WHERE b.batch_id = :b AND l.model = :m",
                b=unit_id,
                m=model,
            )
            if current_sha.get(r.policy) == r.policy_sha
        }
    )
    items = 0
    load_s, loads = 0.0, 0
    for policy in policies:
        todo = [t for t in transcripts if (t.file_id, policy.name) not in labelled]
        if not todo:
            continue
        spoken = [t for t in todo if t.text.strip()]
        scored = [(t.file_id, 0.0) for t in todo if not t.text.strip()]
        if spoken:
            if classifier is None:
                loading = time.perf_counter()
                classifier = load_classifier(settings)
                load_s, loads = time.perf_counter() - loading, 1
            scores = classifier.score(policy, [t.text for t in spoken])
            scored.extend((t.file_id, s) for t, s in zip(spoken, scores, strict=True))
        _write_labels(store, policy, model, settings, scored)
        items += len(todo)
    with store.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE audio_files SET status = 'classified', updated_at = CURRENT_TIMESTAMP"
                " WHERE status = 'transcribed' AND id IN (SELECT file_id FROM batch_files"
                " WHERE batch_id = :b)"
                " AND (SELECT count(*) FROM labels l WHERE l.file_id = audio_files.id"
                " AND l.model = :m) >= :n"
            ),
            {"b": unit_id, "m": model, "n": len(policies)},
        )
    result = StageResult(
        unit_id,
        items,
        len(transcripts) * len(policies) - items,
        0,
        sum(float(t.duration_s or 0.0) for t in transcripts),
        time.perf_counter() - started,
        load_s=load_s,
        model_loads=loads,
    )
    with store.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE gpu_batches SET classify_wall_s = :w, classified_items = :n,"
                " classify_load_s = :load, classify_host = :h WHERE id = :b"
            ),
            {"w": result.wall_s, "n": items, "load": load_s, "h": worker_name(), "b": unit_id},
        )
    log.info("unit %s classified: %s", unit_id, result)
    return result


def _write_labels(
    store: Store, policy: Any, model: str, settings: Settings, scored: Sequence[tuple[int, float]]
) -> None:
    """Labels for one policy; flags go to the review queue, and so does a sample of the
    scores below the threshold (``EARMARK_REVIEW_SAMPLE_SHARE``), to measure what it misses."""
    rows = [
        {
            "f": f,
            "p": policy.name,
            "sha": policy.sha256,
            "m": model,
            "s": min(1.0, max(0.0, float(s))),
            "l": int(s >= settings.flag_threshold),
        }
        for f, s in scored
    ]
    with store.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO labels (file_id, policy, policy_sha, model, score, label)"
                " VALUES (:f, :p, :sha, :m, :s, :l)"
                " ON CONFLICT (file_id, policy, policy_sha, model) DO UPDATE SET"
                " score = excluded.score, label = excluded.label, created_at = CURRENT_TIMESTAMP"
            ),
            rows,
        )
        enqueue(conn, rows, settings.review_sample_share)
