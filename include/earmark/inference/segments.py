"""Cut audio into the <= 30 s segments Whisper decodes, so one batch can mix many files.

Why: Whisper's encoder always sees a 30 s window. Decoding each file window after window
(long-form) leaves the batch shrinking towards one row as short files finish, and pads every
file of a batch to the longest. Cut into independent segments instead, the day's audio is one
stream of equal-cost rows: the batch stays full, padding is only the tail of each segment, and
silence is never decoded at all.

Segments are speech found by silero-vad (its model ships inside the package, so this works
offline), joined while they fit one window, or fixed windows when VAD is off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from earmark.inference import SAMPLE_RATE

WINDOW_S = 30.0
VAD_FRAME = 512  # silero-vad's frame at 16 kHz (32 ms)
SEGMENTERS = ("vad", "windows")


@dataclass(frozen=True)
class Span:
    """Samples ``start`` (inclusive) to ``end`` (exclusive) of one file's 16 kHz audio."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class SegmenterOptions:
    """How audio becomes segments.

    ``mode`` is ``vad`` (speech only) or ``windows`` (every sample, fixed 30 s windows).
    VAD runs on pieces of a file side by side as one batch: a step of the model costs about
    the same for one piece or hundreds, so a file is cut into at least ``vad_streams`` pieces
    of ``vad_min_stream_s`` to ``vad_max_stream_s`` (a 2 h file costs seconds, a 6 s file a few
    hundred steps fewer than it would alone). Each piece starts from a fresh VAD state.
    """

    mode: str = "vad"
    max_segment_s: float = WINDOW_S
    vad_threshold: float = 0.5
    min_speech_ms: int = 250
    min_silence_ms: int = 300
    speech_pad_ms: int = 200
    vad_streams: int = 16
    vad_min_stream_s: float = 2.0
    vad_max_stream_s: float = 10.0

    def __post_init__(self) -> None:
        if self.mode not in SEGMENTERS:
            raise ValueError(f"unknown segmenter {self.mode!r}; use one of {SEGMENTERS}")
        if not 0 < self.max_segment_s <= WINDOW_S:
            raise ValueError(f"max_segment_s must be in (0, {WINDOW_S:g}]")

    @property
    def max_samples(self) -> int:
        return int(self.max_segment_s * SAMPLE_RATE)


def fixed_windows(n_samples: int, window_samples: int) -> list[Span]:
    """Consecutive windows covering every sample; the last one may be shorter."""
    return [
        Span(a, min(a + window_samples, n_samples)) for a in range(0, n_samples, window_samples)
    ]


def merge_spans(
    speech: list[Span],
    max_samples: int,
    probs: np.ndarray | None = None,
    *,
    pause_below: float = 0.35,
    min_fill: int = 3 * SAMPLE_RATE,
) -> list[Span]:
    """Join neighbouring speech spans into segments of at most ``max_samples``.

    A span joins the current segment while the whole stretch (the silence between included)
    still fits one window. When it does not and ``probs`` (the VAD's per-frame speech
    probabilities) are given, the span is cut at its quietest frame that still fits — a pause
    between words, where the probability falls below ``pause_below`` — if that fills at least
    ``min_fill`` more samples of the window; otherwise it starts a new segment. Speech longer
    than a window is cut into window-sized pieces.
    """
    segments: list[Span] = []
    pending = sorted(speech, key=lambda s: s.start)
    k = 0
    while k < len(pending):
        span = pending[k]
        k += 1
        if segments and span.end - segments[-1].start <= max_samples:
            segments[-1] = Span(segments[-1].start, span.end)
            continue
        if segments and probs is not None:
            cut = _pause_before(probs, span.start + min_fill, segments[-1].start + max_samples)
            if cut is not None and probs[cut // VAD_FRAME] < pause_below:
                segments[-1] = Span(segments[-1].start, cut)
                pending.insert(k, Span(cut, span.end))
                continue
        position = span.start
        while position < span.end:
            end = min(span.end, position + max_samples)
            segments.append(Span(position, end))
            position = end
    return segments


def _pause_before(probs: np.ndarray, earliest: int, latest: int) -> int | None:
    """The sample at the start of the quietest frame between two sample positions."""
    first, last = earliest // VAD_FRAME, min(latest // VAD_FRAME, len(probs)) - 1
    if last < first:
        return None
    frame = first + int(np.argmin(probs[first : last + 1]))
    return frame * VAD_FRAME


class SpeechDetector:
    """silero-vad over whole files. Not thread-safe (the model keeps state): one per thread."""

    def __init__(self, options: SegmenterOptions) -> None:
        import torch

        threads = torch.get_num_threads()
        from silero_vad import load_silero_vad

        # Importing silero_vad sets torch's thread count to 1 for the whole process.
        torch.set_num_threads(threads)
        self.options = options
        self._model = load_silero_vad()
        self._torch = torch

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """Speech probability of each 32 ms frame."""
        torch = self._torch
        frames = -(-len(audio) // VAD_FRAME)
        shortest = int(self.options.vad_min_stream_s * SAMPLE_RATE) // VAD_FRAME
        longest = int(self.options.vad_max_stream_s * SAMPLE_RATE) // VAD_FRAME
        per_stream = max(1, min(longest, max(shortest, -(-frames // self.options.vad_streams))))
        streams = -(-frames // per_stream)
        padded = np.zeros(streams * per_stream * VAD_FRAME, dtype=np.float32)
        padded[: len(audio)] = audio
        x = torch.from_numpy(padded).view(streams, per_stream, VAD_FRAME)
        self._model.reset_states()
        out = torch.empty(streams, per_stream)
        with torch.inference_mode():
            for step in range(per_stream):
                out[:, step] = self._model(x[:, step, :], SAMPLE_RATE).view(-1)
        return out.reshape(-1)[:frames].numpy()

    def speech(self, audio: np.ndarray) -> list[Span]:
        """Speech spans of a 16 kHz mono waveform."""
        return self.speech_from(self.probabilities(audio), len(audio))

    def speech_from(self, probs: np.ndarray, n_samples: int) -> list[Span]:
        """Speech spans from per-frame probabilities (see ``probabilities``)."""
        from silero_vad.utils_vad import get_speech_timestamps_from_probs

        stamps = get_speech_timestamps_from_probs(
            probs.tolist(),
            sampling_rate=SAMPLE_RATE,
            threshold=self.options.vad_threshold,
            min_speech_duration_ms=self.options.min_speech_ms,
            min_silence_duration_ms=self.options.min_silence_ms,
            speech_pad_ms=self.options.speech_pad_ms,
            audio_length_samples=n_samples,
        )
        return [Span(int(s["start"]), int(s["end"])) for s in stamps]


def segment(audio: np.ndarray, options: SegmenterOptions, detector: Any = None) -> list[Span]:
    """The segments of one file: speech merged into windows (VAD), or fixed windows."""
    if options.mode == "windows":
        return fixed_windows(len(audio), options.max_samples)
    detector = detector or SpeechDetector(options)
    probs = detector.probabilities(audio)
    speech = detector.speech_from(probs, len(audio))
    return merge_spans(speech, options.max_samples, probs)


class SegmentStream:
    """Feeds the segments of many files to ``transcribe`` in full batches, in arrival order.

    ``add`` queues one file's segments and returns the files whose every segment has been
    decoded, with their text (the segments' texts joined in order); ``finish`` decodes the
    rest. A file with no segments (no speech) is finished at once with no text and no decode.
    """

    def __init__(self, transcribe: Any, batch_size: int) -> None:
        self._transcribe = transcribe
        self._batch_size = batch_size
        self._queue: list[tuple[Any, int, np.ndarray]] = []
        self._pieces: dict[Any, list[str | None]] = {}

    def add(self, key: Any, audio: np.ndarray, spans: list[Span]) -> list[tuple[Any, str]]:
        if not spans:
            return [(key, "")]
        self._pieces[key] = [None] * len(spans)
        self._queue.extend((key, k, audio[s.start : s.end]) for k, s in enumerate(spans))
        finished: list[tuple[Any, str]] = []
        while len(self._queue) >= self._batch_size:
            batch, self._queue = self._queue[: self._batch_size], self._queue[self._batch_size :]
            finished.extend(self._run(batch))
        return finished

    def finish(self) -> list[tuple[Any, str]]:
        finished: list[tuple[Any, str]] = []
        while self._queue:
            batch, self._queue = self._queue[: self._batch_size], self._queue[self._batch_size :]
            finished.extend(self._run(batch))
        return finished

    def _run(self, batch: list[tuple[Any, int, np.ndarray]]) -> list[tuple[Any, str]]:
        texts = self._transcribe([segment for _, _, segment in batch])
        finished = []
        for (key, k, _), text in zip(batch, texts, strict=True):
            pieces = self._pieces[key]
            pieces[k] = text
            if all(p is not None for p in pieces):
                finished.append((key, " ".join(p for p in pieces if p)))
                del self._pieces[key]
        return finished
