"""Audio decoding for ASR: any soundfile-readable file to 16 kHz mono float32, in blocks.

A file is read in blocks of source frames, each downmixed and fed to soxr's streaming
resampler, so decoding holds a few blocks whatever the file's length or rate (a whole 4 h
192 kHz stereo read would be 20 GiB). ``stream_many`` runs one generator per file in threads
(libsndfile, soxr and torch release the GIL) and bounds what they hand over and the consumer
has not taken yet in bytes, not files.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from earmark.inference import SAMPLE_RATE

BLOCK_FRAMES = 1 << 16  # source frames read at once: 0.5 MiB for 192 kHz stereo float32
_READ_ERRORS = (sf.LibsndfileError, RuntimeError, TypeError, ValueError)


class AudioDecodeError(Exception):
    """A file could not be turned into usable audio; the message is a short reason."""


class AudioMissingError(AudioDecodeError):
    """The file is not where intake put it (deleted or moved since): nothing was decoded."""

    def __init__(self, message: str = "the file is no longer where intake put it") -> None:
        super().__init__(message)


def decode_blocks(
    path: Path, target_sr: int = SAMPLE_RATE, block_frames: int = BLOCK_FRAMES
) -> Iterator[np.ndarray]:
    """Yield ``path`` as consecutive float32 mono blocks at ``target_sr``.

    Raises ``AudioDecodeError`` (possibly after some blocks were yielded) for an unreadable
    file, NaN/Inf samples or no frames at all; ``AudioMissingError`` if the file is gone.
    """
    if not Path(path).is_file():
        raise AudioMissingError()
    try:
        handle = sf.SoundFile(str(path))
    except _READ_ERRORS as exc:
        raise AudioDecodeError(f"undecodable audio ({type(exc).__name__})") from exc
    except OSError as exc:
        raise AudioDecodeError(f"unreadable file ({type(exc).__name__})") from exc
    with handle:
        rate, channels = handle.samplerate, handle.channels
        resampler = (
            soxr.ResampleStream(rate, target_sr, 1, dtype="float32", quality="HQ")
            if rate != target_sr
            else None
        )
        frames = np.empty((block_frames, channels), dtype=np.float32)
        mono = np.empty(block_frames, dtype=np.float32)
        total = 0
        while True:
            try:
                data = handle.read(block_frames, dtype="float32", always_2d=True, out=frames)
            except _READ_ERRORS as exc:
                raise AudioDecodeError(f"undecodable audio ({type(exc).__name__})") from exc
            n = len(data)
            if n == 0:
                break
            total += n
            if not np.isfinite(data).all():
                raise AudioDecodeError("audio contains NaN or Inf samples")
            block = np.mean(data, axis=1, dtype=np.float32, out=mono[:n])
            out = resampler.resample_chunk(block) if resampler is not None else block.copy()
            if out.size:
                yield out
        if total == 0:
            raise AudioDecodeError("no audio frames")
        if resampler is not None:
            tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            if tail.size:
                yield tail


def load_audio(path: Path, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Decode ``path``, downmix to mono and resample to ``target_sr``; returns float32 1-D.

    One array of the result's size (plus a block) is allocated: the blocks are copied into it.
    """
    info = _info(path)
    out = np.empty(int(np.ceil(info.frames * target_sr / info.samplerate)) + 64, np.float32)
    filled = 0
    for block in decode_blocks(path, target_sr):
        if filled + len(block) > len(out):  # soxr's length differs by a sample or so
            out = np.concatenate([out[:filled], np.empty(len(block), np.float32)])
        out[filled : filled + len(block)] = block
        filled += len(block)
    if filled == 0:
        raise AudioDecodeError("no audio frames after resampling")
    return out[:filled]


def _info(path: Path) -> Any:
    if not Path(path).is_file():
        raise AudioMissingError()
    try:
        return sf.info(str(path))
    except _READ_ERRORS as exc:
        raise AudioDecodeError(f"undecodable audio ({type(exc).__name__})") from exc


def host_threads() -> int:
    """The CPU cores this process may run on (its affinity, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class ByteBudget:
    """At most ``limit`` bytes held at once; one item larger than the limit passes alone."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.held = 0
        self.peak = 0
        self._closed = False
        self._cond = threading.Condition()

    def acquire(self, n: int) -> bool:
        """Wait until ``n`` bytes fit; False once the budget is closed (stop producing)."""
        with self._cond:
            while not self._closed and self.held and self.held + n > self.limit:
                self._cond.wait()
            if self._closed:
                return False
            self.held += n
            self.peak = max(self.peak, self.held)
            return True

    def release(self, n: int) -> None:
        with self._cond:
            self.held -= n
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def stream_many(
    paths: Iterable[Path],
    produce: Callable[[Path], Iterator[Any]],
    *,
    workers: int,
    max_held_bytes: int,
    size_of: Callable[[Any], int],
    init: Callable[[], None] | None = None,
    started: Callable[[], None] | None = None,
) -> Iterator[tuple[int, str, Any]]:
    """Run ``produce(path)`` for every path in ``workers`` threads; yield its items as they come.

    Yields ``(index, "item", item)`` for each item, then ``(index, "done", None)`` or
    ``(index, "error", AudioDecodeError)`` once per path, in arrival order. Items produced but
    not yet yielded hold at most ``max_held_bytes`` (by ``size_of``): a worker waits for room,
    so a slow consumer bounds the producers whatever the files. ``init`` runs once in each
    worker thread before any work, then ``started`` in the caller's thread (per-thread torch
    settings: see ``earmark.gpu.transcribe.read_segments``).
    """
    todo = list(enumerate(Path(p) for p in paths))
    if not todo:
        return
    budget = ByteBudget(max_held_bytes)
    results: queue.Queue[tuple[int, str, Any, int]] = queue.Queue()
    jobs: queue.Queue[tuple[int, Path] | None] = queue.Queue()
    for job in todo:
        jobs.put(job)
    count = max(1, min(workers, len(todo)))
    ready = threading.Barrier(count + 1)

    def work() -> None:
        if init is not None:
            init()
        ready.wait()
        while (job := jobs.get()) is not None:
            index, path = job
            try:
                for item in produce(path):
                    size = size_of(item)
                    if not budget.acquire(size):
                        return
                    results.put((index, "item", item, size))
                results.put((index, "done", None, 0))
            except AudioDecodeError as exc:
                results.put((index, "error", exc, 0))
            except OSError as exc:
                error = AudioDecodeError(f"unreadable file ({type(exc).__name__})")
                results.put((index, "error", error, 0))
            except BaseException as exc:  # a bug: hand it to the consumer, not a dead thread
                results.put((index, "crash", exc, 0))
                return

    threads = [
        threading.Thread(target=work, name=f"earmark-decode-{k}", daemon=True) for k in range(count)
    ]
    for thread in threads:
        thread.start()
    for _ in threads:
        jobs.put(None)
    ready.wait()
    if started is not None:
        started()
    try:
        finished = 0
        while finished < len(todo):
            index, kind, payload, size = results.get()
            budget.release(size)
            if kind == "crash":
                raise payload
            finished += kind != "item"
            yield index, kind, payload
    finally:
        budget.close()
        for thread in threads:
            thread.join()


def load_many(
    paths: Iterable[Path], target_sr: int = SAMPLE_RATE, workers: int = 4
) -> Iterator[tuple[int, np.ndarray | AudioDecodeError]]:
    """Whole files decoded in threads, ``(index, audio or error)`` in input order (tools and
    tests; the GPU stage streams segments with ``stream_many`` instead)."""
    paths = list(paths)
    whole: dict[int, Any] = {}
    for index, kind, payload in stream_many(
        paths,
        lambda p: iter([load_audio(p, target_sr)]),
        workers=workers,
        max_held_bytes=1 << 62,
        size_of=lambda a: int(a.nbytes),
    ):
        if kind != "done":
            whole[index] = payload
    yield from sorted(whole.items())
