"""Generate a day of synthetic, speech-like recordings as incoming tar archives.

Why: the pipeline needs realistic input for demos, tests and benchmarks without real
recordings. The audio imitates speech closely enough to exercise the whole path: a
glottal-pulse source (90-250 Hz, slowly varying pitch) through three formant resonances,
syllables of 160-330 ms (3-6 Hz syllable rate) grouped into words with pauses, a low noise
floor. It is 16-bit PCM in WAV and FLAC at 16/22.05/44.1/48 kHz, mono and stereo, with mixed
file lengths (a third short, 3-10 s; the rest share the remaining time, one clearly longest).

Speed: a small bank of words is synthesised once per (speaker, sample rate) with numpy FFTs;
files are assembled from bank words with varied gain and pauses, so output is I/O bound.

Output protocol, as the real feed: `incoming/<YYYY-MM-DD>-batch-<NN>.tar` (or `.tar.gz`)
written to a hidden `.partial` name and renamed, then the ready marker
`<archive name>.sha256` ("<hex>  <archive name>") written the same way, last.
Everything is deterministic for a given (day, seed): fixed tar metadata and gzip mtime 0, so
regenerating a day reproduces the same bytes and checksums.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gzip
import hashlib
import io
import os
import sys
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
from earmark.ingest.incoming import marker_path, marker_text

__all__ = ["generate_day", "main", "marker_path"]

SAMPLE_RATES = (16_000, 22_050, 44_100, 48_000)
FORMATS = ("WAV", "FLAC")
_EXTENSIONS = {"WAV": ".wav", "FLAC": ".flac"}
_VOWEL_FORMANTS = (  # F1, F2, F3 in Hz
    (730, 1090, 2440),
    (270, 2290, 3010),
    (300, 870, 2240),
    (530, 1840, 2480),
    (570, 840, 2410),
    (660, 1720, 2410),
)
_FORMANT_BANDWIDTHS = (90.0, 120.0, 180.0)
_FORMANT_GAINS = (1.0, 0.55, 0.3)
_WORDS_PER_BANK = 16
_NOISE_FLOOR = 10 ** (-66 / 20)
_BLOCK_SECONDS = 10
_MIN_FILE_SECONDS = 0.5
_COPY_BUFSIZE = 1024 * 1024


@dataclass(frozen=True)
class _FilePlan:
    """One recording to produce."""

    name: str
    fmt: str
    sample_rate: int
    channels: int
    frames: int
    speaker: int


def _glottal(frac: np.ndarray) -> np.ndarray:
    """Rosenberg-style glottal pulse over one period (frac in [0, 1))."""
    rise = 0.5 * (1 - np.cos(np.pi * frac / 0.4))
    fall = np.cos(0.5 * np.pi * (frac - 0.4) / 0.2)
    return np.where(frac < 0.4, rise, np.where(frac < 0.6, fall, 0.0))


def _resonate(signal: np.ndarray, sr: int, formants: Sequence[float]) -> np.ndarray:
    """Pass `signal` through formant resonances (magnitude shaping in the frequency domain)."""
    n = len(signal)
    nfft = 1 << int(2 * n - 1).bit_length()
    freqs = np.fft.rfftfreq(nfft, 1 / sr)
    response = np.zeros_like(freqs)
    for centre, bandwidth, gain in zip(formants, _FORMANT_BANDWIDTHS, _FORMANT_GAINS, strict=True):
        if centre < 0.45 * sr:
            response += gain / (1 + ((freqs - centre) / (bandwidth / 2)) ** 2)
    return np.fft.irfft(np.fft.rfft(signal, nfft) * response, nfft)[:n]


def _syllable(rng: np.random.Generator, sr: int, f0: float) -> np.ndarray:
    """One voiced syllable, optionally led by a short fricative burst."""
    n = int(rng.uniform(0.16, 0.33) * sr)
    t = np.arange(n) / sr
    vibrato = 0.05 * np.sin(2 * np.pi * rng.uniform(2, 5) * t + rng.uniform(0, 2 * np.pi))
    pitch = f0 * (1 + vibrato + rng.uniform(-0.4, 0.2) * t)
    phase = np.cumsum(pitch) / sr
    source = np.diff(_glottal(phase % 1.0), prepend=0.0)
    source += 0.01 * rng.standard_normal(n) * np.abs(source).max()
    formants = np.array(_VOWEL_FORMANTS[rng.integers(len(_VOWEL_FORMANTS))], dtype=float)
    voiced = _resonate(source, sr, formants * rng.uniform(0.92, 1.08))
    voiced *= np.clip(np.sin(np.pi * t / t[-1]), 0.0, 1.0) ** 0.6
    voiced /= np.abs(voiced).max() + 1e-12
    if rng.random() < 0.5:
        return voiced
    m = int(rng.uniform(0.03, 0.09) * sr)
    hiss = _resonate(rng.standard_normal(m), sr, (min(4200.0, 0.4 * sr), 6000.0, 7000.0))
    hiss *= np.linspace(1, 0, m) ** 2 * 0.25 / (np.abs(hiss).max() + 1e-12)
    return np.concatenate([hiss, voiced])


def _word_bank(seed: int, sr: int, f0: float) -> list[np.ndarray]:
    """A few words (1-4 syllables each) of one speaker at one sample rate."""
    rng = np.random.default_rng(seed)
    words = []
    for _ in range(_WORDS_PER_BANK):
        pitch = f0 * rng.uniform(0.85, 1.15)
        pieces = []
        for _ in range(int(rng.integers(1, 5))):
            pieces.append(_syllable(rng, sr, pitch))
            pieces.append(np.zeros(int(rng.uniform(0.01, 0.04) * sr)))
        word = np.concatenate(pieces)
        words.append((0.7 * word / np.abs(word).max()).astype(np.float32))
    return words


def _speech(
    rng: np.random.Generator, words: list[np.ndarray], frames: int, sr: int
) -> Iterator[np.ndarray]:
    """Yield float32 blocks, `frames` samples in all: words with varied gain and pauses."""
    noise = (rng.standard_normal(sr) * _NOISE_FLOOR).astype(np.float32)
    block = _BLOCK_SECONDS * sr
    pending = [np.zeros(int(rng.uniform(0.05, 0.3) * sr), np.float32)]
    pending_len = len(pending[0])
    remaining = frames
    while remaining > 0:
        take = min(block, remaining)
        while pending_len < take:
            word = words[rng.integers(len(words))] * np.float32(rng.uniform(0.45, 1.0))
            long_pause = rng.random() < 0.3
            pause = int(sr * (rng.uniform(0.4, 1.2) if long_pause else rng.uniform(0.06, 0.25)))
            pending += [word, np.zeros(pause, np.float32)]
            pending_len += len(word) + pause
        audio = np.concatenate(pending)
        start = int(rng.integers(sr))
        chunk = audio[:take] + np.resize(np.roll(noise, -start), take)
        pending, pending_len = [audio[take:]], len(audio) - take
        remaining -= take
        yield chunk


def _durations(rng: np.random.Generator, total_s: float, count: int) -> np.ndarray:
    """Split `total_s` into `count` mixed lengths: ~1/3 short (3-10 s), one clearly longest."""
    if count == 1:
        return np.array([total_s])
    n_short = max(1, count // 3)
    short = rng.uniform(3, 10, n_short)
    weights = rng.uniform(0.5, 1.5, count - n_short)
    if len(weights) > 1:  # one long-form file: ~3/8 of the non-short time
        weights[0] = 0.6 * weights[1:].sum()
    rest = total_s - short.sum()
    if rest >= 3.0 * (count - n_short):
        durations = np.concatenate([short, weights / weights.sum() * rest])
    else:  # not enough time for the pattern: keep the proportions, shrink everything
        durations = np.concatenate([short, weights * short.mean()])
        durations *= total_s / durations.sum()
    rng.shuffle(durations)
    return durations


def _spread(rng: np.random.Generator, choices: Sequence, count: int) -> list:
    """`count` values covering every choice as evenly as possible, in random order."""
    repeated = [choices[i % len(choices)] for i in range(count)]
    return [repeated[i] for i in rng.permutation(count)]


def _plan(
    rng: np.random.Generator, count: int, total_s: float, formats: Sequence[str] = FORMATS
) -> list[_FilePlan]:
    durations = _durations(rng, total_s, count)
    rates = _spread(rng, SAMPLE_RATES, count)
    formats = _spread(rng, formats, count)
    channels = _spread(rng, (1, 2), count)
    return [
        _FilePlan(
            name=f"rec-{i + 1:03d}{_EXTENSIONS[formats[i]]}",
            fmt=formats[i],
            sample_rate=rates[i],
            channels=channels[i],
            frames=max(1, round(durations[i] * rates[i])),
            speaker=int(rng.integers(3)),
        )
        for i in range(count)
    ]


def _encode(plan: _FilePlan, words: list[np.ndarray], seed: int) -> bytes:
    """Render one recording as WAV/FLAC bytes (16-bit PCM), block by block."""
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    with sf.SoundFile(
        buffer, "w", plan.sample_rate, plan.channels, "PCM_16", format=plan.fmt
    ) as out:
        for chunk in _speech(rng, words, plan.frames, plan.sample_rate):
            pcm = np.clip(chunk * 32767.0, -32768, 32767).astype(
                np.int16
            )  # cheaper than libsndfile's
            out.write(np.stack([pcm, pcm - (pcm >> 2)], axis=1) if plan.channels == 2 else pcm)
    return buffer.getvalue()


def _write_replacing(final: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write through `.NAME.partial` + fsync, then rename onto `final` atomically."""
    partial = final.with_name(f".{final.name}.partial")
    try:
        with partial.open("wb") as raw:
            write(raw)
            raw.flush()
            os.fsync(raw.fileno())
        partial.replace(final)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _tarinfo(name: str, size: int, mtime: int, is_dir: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    info.size = 0 if is_dir else size
    info.mode = 0o755 if is_dir else 0o644
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _write_archive(
    raw: BinaryIO,
    stem: str,
    plans: list[_FilePlan],
    banks: dict[tuple[int, int], list[np.ndarray]],
    seeds: list[int],
    mtime: int,
    compress: bool,
) -> None:
    with contextlib.ExitStack() as stack:
        target: BinaryIO = raw
        if compress:  # gzip level 1: audio barely compresses, speed matters; mtime 0, no name
            target = stack.enter_context(
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=1, mtime=0)
            )
        tf = stack.enter_context(tarfile.open(fileobj=target, mode="w"))
        tf.copybufsize = _COPY_BUFSIZE
        tf.addfile(_tarinfo(stem, 0, mtime, is_dir=True))
        for plan, seed in zip(plans, seeds, strict=True):
            data = _encode(plan, banks[(plan.speaker, plan.sample_rate)], seed)
            tf.addfile(_tarinfo(f"{stem}/{plan.name}", len(data), mtime), io.BytesIO(data))


def generate_day(
    incoming: Path,
    day: dt.date,
    archives: int = 3,
    files_per_archive: int = 4,
    minutes: float = 2.0,
    seed: int | None = None,
    compress: bool = False,
    formats: Sequence[str] = FORMATS,
) -> list[Path]:
    """Write a day's archives and ready markers into `incoming`; return the archive paths.

    `formats` picks the audio containers used (WAV and FLAC by default; WAV alone for the
    ingest benchmark).

    `minutes` is the total audio of the day, split over archives * files_per_archive files.
    Regenerating the same (day, seed) rewrites identical bytes; an existing marker is
    removed before its archive is replaced and rewritten after it, and the other variant
    (.tar vs .tar.gz) of the same batch is removed (marker first) so a day never holds both.
    """
    count = archives * files_per_archive
    if archives < 1 or files_per_archive < 1:
        raise ValueError("need at least one archive and one file per archive")
    if minutes * 60 < _MIN_FILE_SECONDS * count:
        raise ValueError(f"{minutes} minutes is too little audio for {count} files")
    incoming = Path(incoming)
    incoming.mkdir(parents=True, exist_ok=True)
    root = np.random.SeedSequence([day.toordinal(), 0 if seed is None else seed + 1])
    rng = np.random.default_rng(root)
    mtime = int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp())
    pitches = rng.uniform(90, 250, 3)
    if unknown := set(formats) - set(FORMATS):
        raise ValueError(f"unknown formats {sorted(unknown)}; choose from {FORMATS}")
    plans = _plan(rng, count, minutes * 60, formats)
    seeds = [int(s) for s in rng.integers(2**63, size=count)]
    bank_seeds = [int(s) for s in rng.integers(2**63, size=3)]
    banks: dict[tuple[int, int], list[np.ndarray]] = {}
    for plan in plans:
        key = (plan.speaker, plan.sample_rate)
        if key not in banks:
            banks[key] = _word_bank(
                bank_seeds[plan.speaker] + plan.sample_rate,
                plan.sample_rate,
                float(pitches[plan.speaker]),
            )
    written = []
    for index in range(archives):
        stem = f"{day.isoformat()}-batch-{index + 1:02d}"
        archive = incoming / (f"{stem}.tar.gz" if compress else f"{stem}.tar")
        other = incoming / (f"{stem}.tar" if compress else f"{stem}.tar.gz")
        marker = marker_path(archive)
        for stale in (marker_path(other), other, marker):
            stale.unlink(missing_ok=True)
        part = slice(index * files_per_archive, (index + 1) * files_per_archive)

        def write_tar(raw: BinaryIO, stem: str = stem, part: slice = part) -> None:
            _write_archive(raw, stem, plans[part], banks, seeds[part], mtime, compress)

        _write_replacing(archive, write_tar)
        with archive.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        line = marker_text(digest, archive.name).encode()
        _write_replacing(marker, lambda raw, line=line: raw.write(line))
        written.append(archive)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: python -m earmark_dev.sampledata INCOMING --date 2026-11-29 --archives 3 ..."""
    parser = argparse.ArgumentParser(
        prog="python -m earmark_dev.sampledata", description=__doc__.splitlines()[0]
    )
    parser.add_argument("incoming", type=Path, help="folder the archives are written to")
    parser.add_argument(
        "--date",
        type=dt.date.fromisoformat,
        default=dt.date.today(),
        help="day to generate, YYYY-MM-DD (default: today)",
    )
    parser.add_argument("--archives", type=int, default=3)
    parser.add_argument("--files", type=int, default=4, help="files per archive")
    parser.add_argument("--minutes", type=float, default=2.0, help="total minutes of audio")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--gz", action="store_true", help="write .tar.gz instead of .tar")
    args = parser.parse_args(argv)
    paths = generate_day(
        args.incoming,
        args.date,
        archives=args.archives,
        files_per_archive=args.files,
        minutes=args.minutes,
        seed=args.seed,
        compress=args.gz,
    )
    for path in paths:
        marker = marker_path(path)
        digest = marker.read_text().split()[0]
        print(f"{path}  {path.stat().st_size} bytes  sha256 {digest}  marker {marker.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
