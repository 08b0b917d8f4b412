"""The GPU-stage benchmark's baselines: what production is compared with.

The fair baseline is the batched chunked design of WhisperX and faster-whisper's batched
pipeline, without their VAD filter: every file cut into fixed 30 s chunks, the chunks decoded
in batches of production's size (across files, which favours the baseline: those pipelines
batch within one file), then each file's transcript scored with full classifier passes (no
policy prefix cache) in batches closed by the same memory budget as production's. It loads
the models with production's loaders and decodes with production's Whisper code and loop
guard; what differs is only the design: no speech detection (silence is decoded too), no
packing of speech into windows, no shared policy prefix, one load of each model.

The batch-1 footnote is what the benchmark compared with before: Whisper's sequential
long-form decode one file at a time, and one full classifier pass per prompt, on the shortest
files only (the figure is per audio second). It borrows the fair baseline's loaded models, so
its figure has no load time.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class BaselineFigures:
    """One baseline's run: audio, seconds (model loads included), Whisper windows."""

    audio_s: float
    wall_s: float
    windows: int
    forwards: int

    @property
    def realtime_x(self) -> float:
        return self.audio_s / self.wall_s if self.wall_s else 0.0


def _decoded(paths: list[Path], workers: int) -> Iterator[np.ndarray]:
    """Each file as 16 kHz mono, in order, decoded ``workers`` files ahead in threads."""
    from earmark.inference.audio import load_audio

    with ThreadPoolExecutor(workers) as pool:
        ahead: deque[Future[np.ndarray]] = deque()
        for path in paths:
            ahead.append(pool.submit(load_audio, path))
            if len(ahead) > workers:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()


def _chunk_batches(
    paths: list[Path], size: int, window: int, workers: int, owners: deque[list[int]]
) -> Iterator[list[np.ndarray]]:
    """Fixed ``window``-sample chunks of every file, ``size`` to a batch across files; each
    batch's file indices go to ``owners`` as it is handed out."""
    from earmark.inference.segments import fixed_windows

    chunks: list[np.ndarray] = []
    of: list[int] = []
    for index, audio in enumerate(_decoded(paths, workers)):
        for span in fixed_windows(len(audio), window):
            chunks.append(audio[span.start : span.end])
            of.append(index)
            if len(chunks) == size:
                owners.append(of)
                yield chunks
                chunks, of = [], []
    if chunks:
        owners.append(of)
        yield chunks


def _transcribe_chunked(transcriber: Any, paths: list[Path], workers: int) -> list[str]:
    batches = deque[list[int]]()
    size = int(transcriber.options.batch_size)
    chunks = _chunk_batches(paths, size, transcriber.window_samples, workers, batches)
    texts: list[list[str]] = [[] for _ in paths]
    run = getattr(transcriber, "transcribe_batches", None)  # features made one batch ahead
    decoded = run(chunks) if run else (transcriber.transcribe_segments(b) for b in chunks)
    for batch_texts in decoded:
        for owner, text in zip(batches.popleft(), batch_texts, strict=True):
            texts[owner].append(text)
    return [" ".join(t for t in parts if t).strip() for parts in texts]


def footnote_corpus(corpus: list[tuple[Path, float]], max_s: float) -> list[tuple[Path, float]]:
    """The shortest files, up to ``max_s`` seconds of audio (the batch-1 baseline is slow)."""
    chosen: list[tuple[Path, float]] = []
    for path, seconds in sorted(corpus, key=lambda f: f[1]):
        if sum(s for _, s in chosen) + seconds > max_s:
            break
        chosen.append((path, seconds))
    return chosen


@dataclass
class _Clock:
    """Seconds spent on each baseline: the two interleave so one model is on the card."""

    fair: float = 0.0
    footnote: float = 0.0

    def add(self, name: str, began: float) -> None:
        setattr(self, name, getattr(self, name) + time.perf_counter() - began)


def run_baselines(
    settings: Any,
    corpus: list[tuple[Path, float]],
    footnote: list[tuple[Path, float]],
    workers: int,
    tally: Any,
) -> tuple[BaselineFigures, Any, BaselineFigures | None]:
    """The fair baseline on ``corpus`` (module docstring), its windows' growth of the decode
    ``tally``, and the batch-1 footnote on ``footnote`` (None if empty).

    Whisper is let go before the classifier loads, as in production's stages: the memory
    budget that sizes the classifier's batches counts on the card holding one model. Each
    baseline's figure counts its own steps (the fair one its model loads too).
    """
    from earmark.gpu.models import load_classifier, load_transcriber
    from earmark.inference.audio import load_audio
    from earmark.inference.policies import load_policies
    from earmark_dev.bench.models import free_memory

    clock = _Clock()
    began = time.perf_counter()
    before = replace(tally)
    transcriber: Any = load_transcriber(settings)
    texts = _transcribe_chunked(transcriber, [path for path, _ in corpus], workers)
    windows, forwards = transcriber.counters.rows, transcriber.counters.forwards
    fair_tally = tally.since(before)
    clock.add("fair", began)
    began = time.perf_counter()
    transcriber.options = replace(transcriber.options, batch_size=1)
    noted = transcriber.transcribe_longform([load_audio(path) for path, _ in footnote])
    clock.add("footnote", began)
    del transcriber
    free_memory(settings.device)

    began = time.perf_counter()
    classifier: Any = load_classifier(settings)
    classifier.options = replace(classifier.options, use_prefix_cache=False)
    policies = load_policies(settings.policies_dir)
    for policy in policies:
        classifier.score(policy, [text for text in texts if text])
    clock.add("fair", began)
    began = time.perf_counter()
    classifier.options = replace(classifier.options, batch_size=1, fits=None)
    for policy in policies:
        classifier.score(policy, [text for text in noted if text.strip()])
    clock.add("footnote", began)
    del classifier
    free_memory(settings.device)
    fair = BaselineFigures(sum(s for _, s in corpus), clock.fair, windows, forwards)
    noted_s = sum(s for _, s in footnote)
    return fair, fair_tally, BaselineFigures(noted_s, clock.footnote, 0, 0) if footnote else None
