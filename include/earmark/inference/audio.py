"""Audio decoding for ASR: any soundfile-readable file to 16 kHz mono float32.

Decoding is CPU work; ``load_many`` runs it in a thread pool (libsndfile and soxr
release the GIL) so it overlaps with GPU inference in the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from earmark.inference import SAMPLE_RATE


class AudioDecodeError(Exception):
    """A file could not be turned into usable audio; the message is a short reason."""


class AudioMissingError(AudioDecodeError):
    """The file is not where intake put it (deleted or moved since): nothing was decoded."""

    def __init__(self, message: str = "the file is no longer where intake put it") -> None:
        super().__init__(message)


def load_audio(path: Path, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Decode ``path``, downmix to mono and resample to ``target_sr``; returns float32 1-D."""
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioDecodeError(f"undecodable audio ({type(exc).__name__})") from exc
    if data.shape[0] == 0:
        raise AudioDecodeError("no audio frames")
    if not np.isfinite(data).all():
        raise AudioDecodeError("audio contains NaN or Inf samples")
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if sr != target_sr:
        mono = soxr.resample(mono, sr, target_sr, quality="HQ")
    out = np.ascontiguousarray(mono, dtype=np.float32)
    if out.size == 0:
        raise AudioDecodeError("no audio frames after resampling")
    return out


def _safe_load(path: Path, target_sr: int, then: Callable[[np.ndarray], Any] | None = None) -> Any:
    if not path.is_file():
        return AudioMissingError()
    try:
        audio = load_audio(path, target_sr)
        return then(audio) if then is not None else audio
    except AudioDecodeError as exc:
        return exc
    except OSError as exc:
        return AudioDecodeError(f"unreadable file ({type(exc).__name__})")


def load_many(
    paths: Iterable[Path],
    target_sr: int = SAMPLE_RATE,
    workers: int = 4,
    prefetch: int | None = None,
    then: Callable[[np.ndarray], Any] | None = None,
) -> Iterator[tuple[int, Any]]:
    """Decode ``paths`` in a thread pool; yield ``(index, audio or error)`` in input order.

    ``then`` runs on each decoded waveform in the same worker thread (segmenting, say), and
    its result is yielded instead of the waveform.

    At most ``prefetch`` (default ``2 * workers``) decodes are in flight, so memory stays
    bounded while the consumer is busy; a prefetch of one GPU batch lets the next batch decode
    while the GPU works on the current one.
    """
    workers = max(1, workers)
    window = max(prefetch or 2 * workers, 1)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="earmark-decode") as pool:
        pending: list[tuple[int, Future[np.ndarray | AudioDecodeError]]] = []
        for index, path in enumerate(paths):
            pending.append((index, pool.submit(_safe_load, Path(path), target_sr, then)))
            if len(pending) >= window:
                first, future = pending.pop(0)
                yield first, future.result()
        for index, future in pending:
            yield index, future.result()
