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

from collections.abc import Iterator
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
    hundred steps fewer than it would alone). The first piece of a block carries the VAD
    state on from the block before; each other piece first runs ``vad_warmup_s`` of the audio
    before it.
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
    vad_warmup_s: float = 1.0

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
    """silero-vad, stepped batch by batch with the state kept by the caller (``VadState``).

    The model's own wrapper keeps one hidden state; its inner network takes the state as an
    argument, so one detector serves any number of streams. Not thread-safe: one per thread.
    """

    def __init__(self, options: SegmenterOptions) -> None:
        import torch

        threads = torch.get_num_threads()
        from silero_vad import load_silero_vad

        # Importing silero_vad sets torch's thread count to 1 for the whole process.
        torch.set_num_threads(threads)
        self.options = options
        self._net = load_silero_vad()._model  # 16 kHz network: (context + frame, state)
        self._torch = torch

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """Speech probability of each 32 ms frame of a whole waveform."""
        state = VadState()
        return self.step(state, np.concatenate([audio, _frame_pad(len(audio))]))[
            : -(-len(audio) // VAD_FRAME)
        ]

    def step(self, state: VadState, audio: np.ndarray) -> np.ndarray:
        """Probabilities of the frames of ``audio`` (a whole number of frames) that follow
        what ``state`` has seen; ``state`` is carried on to the next call.

        The block is cut into up to ``vad_streams`` pieces run side by side as one batch (a
        step costs about the same for one row or tens); the first piece continues from
        ``state``, each other one first runs ``vad_warmup_s`` of the audio before it.
        """
        torch = self._torch
        frames = len(audio) // VAD_FRAME
        if frames == 0:
            return np.zeros(0, dtype=np.float32)
        opts = self.options
        shortest = int(opts.vad_min_stream_s * SAMPLE_RATE) // VAD_FRAME
        longest = int(opts.vad_max_stream_s * SAMPLE_RATE) // VAD_FRAME
        per = min(frames, max(1, min(longest, max(shortest, -(-frames // opts.vad_streams)))))
        rows = -(-frames // per)
        warm = min(per, int(opts.vad_warmup_s * SAMPLE_RATE) // VAD_FRAME)
        ext = np.zeros(CONTEXT + rows * per * VAD_FRAME, dtype=np.float32)
        ext[:CONTEXT] = state.context
        ext[CONTEXT : CONTEXT + frames * VAD_FRAME] = audio[: frames * VAD_FRAME]
        windows = torch.from_numpy(ext).unfold(0, CONTEXT + VAD_FRAME, VAD_FRAME)
        starts = torch.arange(rows) * per
        out = torch.empty(rows, per)
        with torch.inference_mode():
            hidden = torch.zeros(2, rows - 1, 128)
            for k in range(warm if rows > 1 else 0):
                _, hidden = self._net(windows[starts[1:] - warm + k], hidden)
            hidden = torch.cat([state.hidden, hidden], dim=1)
            last = frames - 1 - (rows - 1) * per  # the last row's last real frame
            for k in range(per):
                prob, hidden = self._net(windows[starts + k], hidden)
                out[:, k] = prob.view(-1)
                if k == last:  # the state carried on: before the zeros that pad the block
                    state.hidden = hidden[:, rows - 1 : rows].clone()
        state.context = ext[
            CONTEXT + frames * VAD_FRAME - CONTEXT : CONTEXT + frames * VAD_FRAME
        ].copy()
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


CONTEXT = 64  # samples of the previous frame silero-vad sees with each frame at 16 kHz


def _frame_pad(n: int) -> np.ndarray:
    return np.zeros(-n % VAD_FRAME, dtype=np.float32)


class VadState:
    """One stream's silero-vad state between blocks: the hidden state and last samples."""

    def __init__(self) -> None:
        import torch

        self.hidden = torch.zeros(2, 1, 128)
        self.context = np.zeros(CONTEXT, dtype=np.float32)


def segment(audio: np.ndarray, options: SegmenterOptions, detector: Any = None) -> list[Span]:
    """The segments of one whole waveform: speech merged into windows (VAD), or fixed windows."""
    if options.mode == "windows":
        return fixed_windows(len(audio), options.max_samples)
    detector = detector or SpeechDetector(options)
    probs = detector.probabilities(audio)
    speech = detector.speech_from(probs, len(audio))
    return merge_spans(speech, options.max_samples, probs)


class FileCutter:
    """One file's segments, found block by block as its 16 kHz audio arrives.

    Holds the audio not yet cut (at most a VAD block plus one window and a guard, whatever the
    file's length) and hands each segment out as a copy once later audio cannot change it: VAD
    state runs on across blocks; speech ending more than ``GUARD_S`` before the audio seen so
    far is final, and the last segment waits while a later span could still join it.
    """

    GUARD_S = 2.0

    def __init__(self, options: SegmenterOptions, detector: SpeechDetector | None = None) -> None:
        self.options = options
        self.detector = detector if options.mode == "vad" else None
        if options.mode == "vad" and self.detector is None:
            self.detector = SpeechDetector(options)
        self.state = VadState() if self.detector is not None else None
        self.block = options.vad_streams * int(options.vad_max_stream_s * SAMPLE_RATE)
        self.block -= self.block % VAD_FRAME
        self.samples = 0  # the file's 16 kHz samples so far
        self.segments = 0  # segments handed out
        self._blocks: list[np.ndarray] = []  # audio from ``_base`` on
        self._held = 0
        self._probs = np.zeros(0, dtype=np.float32)  # of the frames from ``_base`` on

    def feed(self, block: np.ndarray) -> list[np.ndarray]:
        """Take the next stretch of audio; returns the segments it settled."""
        self._blocks.append(block)
        self._held += len(block)
        self.samples += len(block)
        done = len(self._probs) * VAD_FRAME
        if self.options.mode == "windows" or self._held - done < self.block + VAD_FRAME:
            return [] if self.options.mode == "vad" else self._windows(final=False)
        return self._cut(final=False)

    def finish(self) -> list[np.ndarray]:
        """The segments left once the file has ended."""
        if self.options.mode == "windows":
            return self._windows(final=True)
        return self._cut(final=True)

    def _audio(self) -> np.ndarray:
        if len(self._blocks) > 1:
            self._blocks = [np.concatenate(self._blocks)]
        return self._blocks[0] if self._blocks else np.zeros(0, dtype=np.float32)

    def _drop(self, audio: np.ndarray, upto: int) -> None:
        self._blocks = [audio[upto:].copy()]
        self._held = len(self._blocks[0])

    def _windows(self, *, final: bool) -> list[np.ndarray]:
        size = self.options.max_samples
        if not final and self._held < size:
            return []
        audio = self._audio()
        ends = range(size, len(audio) + (size if final else 1), size)
        out = [audio[end - size : min(end, len(audio))].copy() for end in ends]
        self._drop(audio, min(len(out) * size, len(audio)))
        return self._handed(out)

    def _cut(self, *, final: bool) -> list[np.ndarray]:
        assert self.detector is not None and self.state is not None
        audio = self._audio()
        done = len(self._probs) * VAD_FRAME
        todo = len(audio) - done if final else (len(audio) - done) // self.block * self.block
        chunk = audio[done : done + todo]
        if final:
            chunk = np.concatenate([chunk, _frame_pad(len(chunk))])
        self._probs = np.concatenate([self._probs, self.detector.step(self.state, chunk)])
        seen = len(audio) if final else len(self._probs) * VAD_FRAME
        speech = self.detector.speech_from(self._probs, seen)
        merged = merge_spans(speech, self.options.max_samples, self._probs)
        keep = seen
        if not final:
            keep = seen - int(self.GUARD_S * SAMPLE_RATE)
            if merged and merged[-1].start + self.options.max_samples > keep:
                keep = merged[-1].start
            keep -= keep % VAD_FRAME
        out = [audio[s.start : s.end].copy() for s in merged if s.end <= keep or final]
        self._probs = self._probs[keep // VAD_FRAME :].copy()
        self._drop(audio, keep)
        return self._handed(out)

    def _handed(self, out: list[np.ndarray]) -> list[np.ndarray]:
        self.segments += len(out)
        return out


class SegmentStream:
    """Feeds the segments of many files to ``transcribe`` in full batches, in arrival order.

    Segments arrive as they are found (``put``, any number per file, files interleaved); once
    a file is ``close``d and its every segment decoded it is finished, with its text (the
    segments' texts joined in order). Each call returns the files it finished; ``finish``
    decodes the rest. A file closed with no segments (no speech) is finished at once with no
    text and no decode; ``discard`` forgets a file (its audio turned out bad half way).
    """

    def __init__(self, transcribe: Any, batch_size: int) -> None:
        self._transcribe = transcribe
        self._batch_size = batch_size
        self._queue: list[tuple[Any, int, np.ndarray]] = []
        self._pieces: dict[Any, list[str | None]] = {}
        self._open: set[Any] = set()

    def add(self, key: Any, audio: np.ndarray, spans: list[Span]) -> list[tuple[Any, str]]:
        """One whole file at once: its audio and segment spans."""
        finished = self.put(key, [audio[s.start : s.end] for s in spans])
        return finished + self.close(key)

    def put(self, key: Any, segments: list[np.ndarray]) -> list[tuple[Any, str]]:
        """Queue more segments of ``key`` (in order); runs every full batch."""
        pieces = self._pieces.setdefault(key, [])
        self._open.add(key)
        self._queue.extend((key, len(pieces) + k, seg) for k, seg in enumerate(segments))
        pieces.extend([None] * len(segments))
        finished: list[tuple[Any, str]] = []
        while len(self._queue) >= self._batch_size:
            finished.extend(self._run_next())
        return finished

    def close(self, key: Any) -> list[tuple[Any, str]]:
        """No more segments of ``key``: it is finished once they are decoded."""
        self._open.discard(key)
        pieces = self._pieces.setdefault(key, [])
        if any(p is None for p in pieces):
            return []
        del self._pieces[key]
        return [(key, " ".join(p for p in pieces if p))]

    def discard(self, key: Any) -> None:
        """Forget ``key``: its queued segments are dropped and its decoded texts too."""
        self._queue = [item for item in self._queue if item[0] != key]
        self._pieces.pop(key, None)
        self._open.discard(key)

    def finish(self) -> list[tuple[Any, str]]:
        finished: list[tuple[Any, str]] = []
        while self._queue:
            finished.extend(self._run_next())
        return finished

    def _run_next(self) -> list[tuple[Any, str]]:
        batch, self._queue = self._queue[: self._batch_size], self._queue[self._batch_size :]
        texts = self._transcribe([segment for _, _, segment in batch])
        finished = []
        for (key, k, _), text in zip(batch, texts, strict=True):
            pieces = self._pieces[key]
            pieces[k] = text
            if key not in self._open and all(p is not None for p in pieces):
                finished.append((key, " ".join(p for p in pieces if p)))
                del self._pieces[key]
        return finished


def file_segments(
    path: Any, options: SegmenterOptions, detector: SpeechDetector | None = None
) -> Iterator[np.ndarray | int]:
    """The production read of one file: its segments (16 kHz mono float32 copies) as they are
    found, then its length in 16 kHz samples. Decoded block by block: what it holds does not
    grow with the file's length or rate (raises ``AudioDecodeError`` as ``decode_blocks``)."""
    from earmark.inference.audio import decode_blocks

    cutter = FileCutter(options, detector)
    for block in decode_blocks(path):
        yield from cutter.feed(block)
    yield from cutter.finish()
    yield cutter.samples
