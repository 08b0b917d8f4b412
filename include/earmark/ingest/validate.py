"""Validate one audio file by decoding all of it, and report its facts.

Why a full decode: opening a file (libsndfile's `info`) proves little. A WAV cut short opens
and reads without error (libsndfile even reports the shortened frame count), and a damaged
FLAC opens fine and only fails part-way through decoding. So the WAV frame count is taken
from the RIFF header itself and compared with what actually decodes, and every file is
decoded to the end in bounded blocks (duration is checked from the header first, so huge
files are refused before any decoding). libsndfile also accepts things a screening pipeline
must not: 0 frames, absurd sample rates, many channels, NaN/Inf or out-of-range float
samples; those are checked here. Silence is not an error: it is reported (`silent=True`).
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, NamedTuple

import numpy as np
import soundfile as sf

from earmark.ingest.rejection import Rejected

__all__ = ["AudioInfo", "AudioLimits", "AudioRejected", "validate_audio"]

SILENCE_FLOOR_DBFS = -200.0  # peak_dbfs reported for digital silence (instead of -inf)
_BLOCK_FRAMES = 65_536
_UNKNOWN_LENGTH = 2**62  # libsndfile reports SF_COUNT_MAX frames when a FLAC has no total
_MAX_RIFF_CHUNKS = 1_000
_FLAC_MIN_FRAME_BYTES = 9  # frame header >= 6, a subframe header byte, CRC-16
_FLAC_MAX_BLOCK = 65_536  # samples per channel in one FLAC frame, at most
_FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})
_WAV_FORMATS = frozenset({"WAV", "WAVEX"})
_FORMATS_BY_EXTENSION = {".wav": _WAV_FORMATS, ".flac": frozenset({"FLAC"})}


@dataclass(frozen=True)
class AudioLimits:
    """What an acceptable recording looks like."""

    max_duration_s: float = 4 * 3600
    min_duration_s: float = 0.1
    min_sample_rate: int = 8000
    max_sample_rate: int = 192_000
    max_channels: int = 2
    silence_dbfs: float = -60.0
    allowed_extensions: tuple[str, ...] = (".wav", ".flac")


class AudioRejected(Rejected):
    """The file is not acceptable audio; `code` is a short snake_case reason."""


@dataclass(frozen=True)
class AudioInfo:
    """Facts about a fully decoded, accepted file.

    `format` is libsndfile's major format (WAV, WAVEX, FLAC); `peak_dbfs` is the sample peak
    (SILENCE_FLOOR_DBFS for all-zero audio); `silent` means peak below the silence limit;
    `sha256` is of the file bytes.
    """

    format: str
    sample_rate: int
    channels: int
    frames: int
    duration_s: float
    silent: bool
    peak_dbfs: float
    sha256: str


class _WavHeader(NamedTuple):
    frames: int  # data chunk size // block align: what the header declares
    data_bytes: int  # the data chunk's declared size
    trailing_bytes: int  # bytes in the file after the data chunk's header and declared body


def _wav_fmt(body: bytes, order: Literal["little", "big"]) -> int:
    """Check a fmt chunk's fields libsndfile would refuse obscurely or not at all; return its
    block align. Channels at 2:4, sample rate at 4:8, block align at 12:14."""
    channels = int.from_bytes(body[2:4], order)
    sample_rate = int.from_bytes(body[4:8], order)
    block_align = int.from_bytes(body[12:14], order)
    if sample_rate == 0:
        raise AudioRejected("bad_sample_rate", "the WAV header gives 0 Hz")
    if channels == 0:
        raise AudioRejected("bad_header", "the WAV fmt chunk gives 0 channels")
    if block_align == 0:
        raise AudioRejected("bad_header", "the WAV fmt chunk gives a block align of 0")
    return block_align


def _riff_header(f: BinaryIO) -> _WavHeader | None:
    """What a WAV header declares; None if not RIFF/WAVE.

    Read from the RIFF chunks directly because libsndfile reports the frames actually
    present, so a WAV cut short would otherwise look complete. The fmt chunk's fields are
    checked here, before libsndfile opens the file: it refuses a 0 Hz header as "SF_INFO
    struct incomplete" and computes its own block align when the header gives 0.
    """
    head = f.read(12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
        return None
    order: Literal["little", "big"] = "little" if head[:4] == b"RIFF" else "big"
    block_align = 0
    for _ in range(_MAX_RIFF_CHUNKS):
        chunk = f.read(8)
        if len(chunk) < 8:
            break
        chunk_id, size = chunk[:4], int.from_bytes(chunk[4:], order)
        if chunk_id == b"fmt ":
            body = f.read(min(size, 64))
            if len(body) < 14:
                break
            block_align = _wav_fmt(body, order)
            f.seek(size - len(body) + (size & 1), 1)
        elif chunk_id == b"data":
            if block_align <= 0:
                raise AudioRejected("unreadable", "data chunk before a fmt chunk")
            trailing = max(0, os.fstat(f.fileno()).st_size - f.tell() - size)
            return _WavHeader(size // block_align, size, trailing)
        else:
            f.seek(size + (size & 1), 1)
    raise AudioRejected("unreadable", "WAV has no readable fmt/data chunk")


def _check_wav_not_empty(header: _WavHeader) -> None:
    """A WAV whose data chunk holds no frame has no audio at all (libsndfile agrees: 0 frames,
    even when bytes follow an unfinished header's empty chunk)."""
    if header.frames > 0:
        return
    if header.data_bytes == 0:
        detail = "the WAV data chunk is empty (0 bytes)"
    else:
        detail = f"the WAV data chunk holds {_size(header.data_bytes)}, less than one frame"
    if header.trailing_bytes:
        detail += f"; {_size(header.trailing_bytes)} follow it, not read as audio"
    raise AudioRejected("empty", detail)


def _size(n: int) -> str:
    if n < 1000:
        return "1 byte" if n == 1 else f"{n} bytes"
    if n < 1_000_000:
        return f"{n // 1000} KB"
    return f"{n / 1_000_000:.1f} MB"


def _flac_frames_possible(file_bytes: int) -> int:
    """The most frames a FLAC of `file_bytes` bytes can hold, generously.

    A FLAC frame takes at least 9 bytes (a 6-byte header at the least, a subframe header of a
    byte per channel, a 2-byte CRC-16) and holds at most 65,536 samples per channel. Real
    encoders stay far below: libFLAC codes a 4,096-frame block of digital silence in about 11
    bytes, and 20 minutes of silent mono come to some 340 frames a byte, file overhead
    included, against the 7,281 allowed here.
    """
    return (file_bytes // _FLAC_MIN_FRAME_BYTES + 1) * _FLAC_MAX_BLOCK


def _check_format(sample_rate: int, channels: int, limits: AudioLimits) -> None:
    if not limits.min_sample_rate <= sample_rate <= limits.max_sample_rate:
        raise AudioRejected(
            "bad_sample_rate",
            f"{sample_rate} Hz outside {limits.min_sample_rate}..{limits.max_sample_rate}",
        )
    if channels > limits.max_channels:
        raise AudioRejected("too_many_channels", f"{channels} channels (max {limits.max_channels})")


def _check_duration(frames: int, sample_rate: int, limits: AudioLimits) -> None:
    if frames <= 0:
        raise AudioRejected("empty", "no audio frames")
    duration = frames / sample_rate
    if duration > limits.max_duration_s:
        raise AudioRejected("too_long", f"{duration:.1f} s (max {limits.max_duration_s} s)")
    if duration < limits.min_duration_s:
        raise AudioRejected("too_short", f"{duration:.3f} s (min {limits.min_duration_s} s)")


_INT_SCALE = {"int16": 32768.0, "int32": 2147483648.0}


def _decode(snd: sf.SoundFile, stop_after: int) -> tuple[int, float]:
    """Decode block by block to the end; return (frames decoded, absolute peak in [0, ...]).

    Integer PCM is decoded as integers (no NaN possible, a quarter of float64's memory
    traffic); float data as floats, checked for NaN/Inf. Stops early once more than
    `stop_after` frames came out (the verdict is known then). A decoder error part-way means
    a damaged or cut file.
    """
    is_float = snd.subtype in _FLOAT_SUBTYPES
    dtype = "float64" if is_float else ("int16" if snd.subtype == "PCM_16" else "int32")
    decoded = 0
    peak = 0.0
    buffer = np.empty((_BLOCK_FRAMES, snd.channels), dtype=dtype)
    try:
        while decoded <= stop_after:
            block = snd.read(out=buffer)
            if not len(block):
                break
            if is_float:
                if not np.isfinite(block).all():
                    raise AudioRejected("non_finite", f"NaN or Inf sample near frame {decoded}")
                peak = max(peak, float(np.abs(block).max()))
            else:
                # max/min, not abs: abs(-32768) overflows int16.
                extreme = max(int(block.max()), -int(block.min()))
                peak = max(peak, extreme / _INT_SCALE[dtype])
            decoded += len(block)
    except sf.LibsndfileError as exc:
        raise AudioRejected("truncated", f"decoding failed after {decoded} frames: {exc}") from exc
    return decoded, peak


def validate_audio(path: Path, limits: AudioLimits = AudioLimits()) -> AudioInfo:
    """Decode `path` completely and return its facts, or raise `AudioRejected`.

    Checks, in order: extension, a WAV's fmt chunk (sample rate, channels, block align: before
    libsndfile, which words these badly), readable by libsndfile, content format matches the
    extension, sample rate, channels, a FLAC's declared length against what its size can hold,
    header frames against the file's, audio present at all, header duration (before
    decoding), then a full streaming decode (frame count must equal the header's; samples
    finite; float samples within ±1.0). OSErrors (missing file, I/O errors) propagate: they
    are not verdicts.
    """
    path = Path(path)
    extension = path.suffix.lower()
    if extension not in limits.allowed_extensions:
        raise AudioRejected(
            "unsupported_extension",
            f"{path.name!r} is not one of {', '.join(limits.allowed_extensions)}",
        )
    # One unbuffered open file for header, decode and hash (unbuffered: libsndfile shares the
    # fd offset). OSError propagates.
    with path.open("rb", buffering=0) as fh:
        wav = _riff_header(fh)
        fh.seek(0)
        try:
            snd = sf.SoundFile(fh.fileno(), closefd=False)
        except sf.LibsndfileError as exc:
            raise AudioRejected("unreadable", f"{path.name}: {exc.error_string}") from exc
        with snd:
            fmt = snd.format
            expected = _FORMATS_BY_EXTENSION.get(extension)
            if expected is not None and fmt not in expected:
                raise AudioRejected("format_mismatch", f"{extension} file holds {fmt} data")
            sample_rate, channels, frames = snd.samplerate, snd.channels, snd.frames
            _check_format(sample_rate, channels, limits)
            if fmt in _WAV_FORMATS:
                if wav is None:
                    raise AudioRejected("unreadable", "WAV without a RIFF/WAVE header")
                declared = wav.frames
            elif frames >= _UNKNOWN_LENGTH:
                # Streamed FLAC without a total sample count: soundfile cannot read it (its
                # position bookkeeping seeks, which fails), and its duration is unknowable.
                raise AudioRejected("unreadable", f"{fmt} without a total frame count")
            else:
                # libsndfile's count is the STREAMINFO total: one the file's size cannot hold
                # is a lying header, not a long recording.
                file_bytes = os.fstat(fh.fileno()).st_size
                if frames > _flac_frames_possible(file_bytes):
                    raise AudioRejected(
                        "header_data_mismatch",
                        f"the FLAC header declares {frames / sample_rate:.0f} s, more than its"
                        f" {_size(file_bytes)} can hold",
                    )
                declared = frames
            # Before the duration check: a header that claims more data than the file holds
            # would otherwise read as too long.
            if frames != declared:
                raise AudioRejected(
                    "header_data_mismatch",
                    f"header declares {declared} frames, the file holds {frames}",
                )
            if wav is not None and fmt in _WAV_FORMATS:
                _check_wav_not_empty(wav)
            _check_duration(declared, sample_rate, limits)
            decoded, peak = _decode(snd, stop_after=declared)
            if decoded != declared:
                raise AudioRejected(
                    "truncated", f"header declares {declared} frames, decoded {decoded}"
                )
            if snd.subtype in _FLOAT_SUBTYPES and peak > 1.0:
                raise AudioRejected("out_of_range", f"float samples reach {peak:.3g} (beyond ±1.0)")
        fh.seek(0)
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    peak_dbfs = 20.0 * math.log10(peak) if peak > 0 else SILENCE_FLOOR_DBFS
    peak_dbfs = max(peak_dbfs, SILENCE_FLOOR_DBFS)
    return AudioInfo(
        format=fmt,
        sample_rate=sample_rate,
        channels=channels,
        frames=decoded,
        duration_s=decoded / sample_rate,
        silent=peak_dbfs < limits.silence_dbfs,
        peak_dbfs=peak_dbfs,
        sha256=digest,
    )
