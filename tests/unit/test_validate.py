"""validate_audio against good, broken and merely odd audio files.

libsndfile accepts much of what is tested here (short WAV data, 0 frames, 7 Hz, 6 channels,
NaN floats); validate_audio must turn each into a clear verdict without crashing.
"""

import hashlib
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from earmark.ingest.validate import (
    SILENCE_FLOOR_DBFS,
    AudioInfo,
    AudioLimits,
    AudioRejected,
    validate_audio,
)

SR = 16_000


def tone(seconds: float = 1.0, sr: int = SR, level: float = 0.5, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    mono = level * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    return np.repeat(mono[:, None], channels, axis=1) if channels > 1 else mono


def write(path: Path, data: np.ndarray, sr: int = SR, subtype: str = "PCM_16", **kw: str) -> Path:
    sf.write(path, data, sr, subtype=subtype, **kw)
    return path


DEFAULT = AudioLimits()


def code_of(path: Path, limits: AudioLimits = DEFAULT) -> str:
    return rejection(path, limits).code


def rejection(path: Path, limits: AudioLimits = DEFAULT) -> AudioRejected:
    with pytest.raises(AudioRejected) as info:
        validate_audio(path, limits)
    return info.value


# --- accepted -----------------------------------------------------------------------------------


def test_good_wav(tmp_path: Path) -> None:
    path = write(tmp_path / "a.wav", tone(2.0, level=0.5))
    info = validate_audio(path)
    assert info == AudioInfo(
        format="WAV",
        sample_rate=SR,
        channels=1,
        frames=2 * SR,
        duration_s=2.0,
        silent=False,
        peak_dbfs=pytest.approx(-6.02, abs=0.05),
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
    )


@pytest.mark.parametrize(
    ("name", "subtype", "fmt", "channels", "sr"),
    [
        ("a.flac", "PCM_16", "FLAC", 2, 44_100),
        ("b.flac", "PCM_24", "FLAC", 1, 48_000),
        ("c.WAV", "PCM_24", "WAV", 2, 22_050),
        ("d.wav", "FLOAT", "WAV", 1, 8_000),
    ],
)
def test_other_good_files(
    tmp_path: Path, name: str, subtype: str, fmt: str, channels: int, sr: int
) -> None:
    path = write(tmp_path / name, tone(0.5, sr=sr, channels=channels), sr=sr, subtype=subtype)
    info = validate_audio(path)
    assert (info.format, info.channels, info.sample_rate) == (fmt, channels, sr)
    assert info.frames == int(0.5 * sr)
    assert not info.silent


def test_wavex_is_a_wav(tmp_path: Path) -> None:
    path = write(tmp_path / "x.wav", tone(0.5, channels=2), format="WAVEX")
    assert validate_audio(path).format == "WAVEX"


def test_long_file_is_streamed(tmp_path: Path) -> None:
    """Ten minutes at 8 kHz decodes block by block (many blocks) with the right count."""
    frames = 10 * 60 * 8000
    data = np.tile(tone(1.0, sr=8000), frames // 8000)
    info = validate_audio(write(tmp_path / "long.flac", data, sr=8000))
    assert info.frames == frames
    assert info.duration_s == 600.0


# --- 9. odd but decodable -------------------------------------------------------------------------


def test_silence_is_flagged_not_rejected(tmp_path: Path) -> None:
    info = validate_audio(write(tmp_path / "s.wav", np.zeros(SR)))
    assert info.silent
    assert info.peak_dbfs == SILENCE_FLOOR_DBFS


def test_near_silence_below_threshold_is_silent(tmp_path: Path) -> None:
    quiet = write(tmp_path / "q.wav", tone(1.0, level=10 ** (-70 / 20)))
    loud = write(tmp_path / "l.wav", tone(1.0, level=10 ** (-50 / 20)))
    assert validate_audio(quiet).silent
    assert not validate_audio(loud).silent
    assert validate_audio(quiet, AudioLimits(silence_dbfs=-80.0)).silent is False


def test_zero_frames_empty(tmp_path: Path) -> None:
    assert code_of(write(tmp_path / "z.wav", np.zeros(0))) == "empty"
    # libsndfile cannot even open a FLAC without frames
    assert code_of(write(tmp_path / "z.flac", np.zeros(0))) in {"empty", "unreadable"}


def test_below_min_duration_too_short(tmp_path: Path) -> None:
    assert code_of(write(tmp_path / "s.wav", tone(0.05))) == "too_short"


def test_over_max_duration_too_long(tmp_path: Path) -> None:
    path = write(tmp_path / "l.wav", tone(2.0))
    assert code_of(path, AudioLimits(max_duration_s=1.5)) == "too_long"


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_float(tmp_path: Path, value: float) -> None:
    data = tone(1.0).astype(np.float32)
    data[SR // 2] = value
    assert code_of(write(tmp_path / "n.wav", data, subtype="FLOAT")) == "non_finite"


def test_float_beyond_full_scale_out_of_range(tmp_path: Path) -> None:
    data = tone(1.0).astype(np.float32)
    data[100] = 2.0
    assert code_of(write(tmp_path / "o.wav", data, subtype="FLOAT")) == "out_of_range"


def test_seven_hz_bad_sample_rate(tmp_path: Path) -> None:
    path = write(tmp_path / "7.wav", tone(10.0, sr=7), sr=7)
    assert code_of(path) == "bad_sample_rate"


def test_high_sample_rate_bad(tmp_path: Path) -> None:
    path = write(tmp_path / "h.wav", tone(0.2, sr=384_000), sr=384_000)
    assert code_of(path) == "bad_sample_rate"


def test_six_channels(tmp_path: Path) -> None:
    path = write(tmp_path / "6.wav", tone(0.5, channels=6))
    assert code_of(path) == "too_many_channels"


@pytest.mark.parametrize("name", ["a.mp3", "a.txt", "a", "a.wav.gz"])
def test_unsupported_extension(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    write(tmp_path / "src.wav", tone(0.5))
    shutil.copy(tmp_path / "src.wav", path)
    assert code_of(path) == "unsupported_extension"


# --- 7. unreadable and mismatched -----------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x00" * 1000,
        bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8)),
        b"this is a text file pretending to be audio\n" * 20,
        b"RIFF\x24\x00\x00\x00WAVE",  # header, nothing else
    ],
)
def test_unreadable(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.wav"
    path.write_bytes(content)
    assert code_of(path) == "unreadable"


def test_flac_named_wav_is_format_mismatch(tmp_path: Path) -> None:
    write(tmp_path / "real.flac", tone(0.5))
    shutil.copy(tmp_path / "real.flac", tmp_path / "fake.wav")
    assert code_of(tmp_path / "fake.wav") == "format_mismatch"


def test_wav_named_flac_is_format_mismatch(tmp_path: Path) -> None:
    write(tmp_path / "real.wav", tone(0.5))
    shutil.copy(tmp_path / "real.wav", tmp_path / "fake.flac")
    assert code_of(tmp_path / "fake.flac") == "format_mismatch"


def test_aiff_named_wav_is_format_mismatch(tmp_path: Path) -> None:
    write(tmp_path / "x.wav", tone(0.5), format="AIFF")
    assert code_of(tmp_path / "x.wav") == "format_mismatch"


# --- 8. truncated and corrupt ----------------------------------------------------------------


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_wav_with_short_data_is_a_header_data_mismatch(tmp_path: Path, keep: float) -> None:
    """libsndfile reads such a file without error (and reports the short count)."""
    path = write(tmp_path / "t.wav", tone(1.0))
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    assert sf.info(path).frames < SR  # the trap: info looks fine, just shorter
    assert code_of(path) == "header_data_mismatch"


def test_wav_cut_right_after_header_is_a_header_data_mismatch(tmp_path: Path) -> None:
    path = write(tmp_path / "t.wav", tone(1.0))
    path.write_bytes(path.read_bytes()[:44])  # canonical header, no samples
    assert code_of(path) == "header_data_mismatch"


@pytest.mark.parametrize("claimed_s", [3 * 3600.0, 30.0, 1.5])
def test_wav_header_claiming_more_than_the_file_holds_is_not_called_too_long(
    tmp_path: Path, claimed_s: float
) -> None:
    """A header claiming hours while the file holds 1 s says so, whatever the duration limit."""
    path = write(tmp_path / "t.wav", tone(1.0))
    raw = bytearray(path.read_bytes())
    assert raw[36:40] == b"data"
    raw[40:44] = int(claimed_s * SR * 2).to_bytes(4, "little")  # PCM_16 mono: 2 bytes a frame
    path.write_bytes(bytes(raw))
    assert code_of(path, AudioLimits(max_duration_s=20)) == "header_data_mismatch"


def test_wav_cut_inside_header_is_unreadable(tmp_path: Path) -> None:
    path = write(tmp_path / "t.wav", tone(1.0))
    path.write_bytes(path.read_bytes()[:30])
    assert code_of(path) == "unreadable"


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_truncated_flac(tmp_path: Path, keep: float) -> None:
    path = write(tmp_path / "t.flac", tone(3.0))
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    assert code_of(path) in {"truncated", "unreadable"}


@pytest.mark.parametrize("where", [0.3, 0.5, 0.8])
def test_corrupt_flac(tmp_path: Path, where: float) -> None:
    path = write(
        tmp_path / "c.flac", tone(3.0) + 0.01 * np.random.default_rng(2).standard_normal(3 * SR)
    )
    raw = bytearray(path.read_bytes())
    start = int(len(raw) * where)
    raw[start : start + 200] = bytes(b ^ 0x5A for b in raw[start : start + 200])
    path.write_bytes(bytes(raw))
    assert code_of(path) in {"truncated", "unreadable"}


def test_flac_without_total_frame_count_is_unreadable(tmp_path: Path) -> None:
    """A streamed FLAC (STREAMINFO total samples = 0): libsndfile reports an endless file."""
    path = write(tmp_path / "s.flac", tone(1.0))
    raw = bytearray(path.read_bytes())
    field = int.from_bytes(raw[18:26], "big") & ~((1 << 36) - 1)  # low 36 bits: total samples
    raw[18:26] = field.to_bytes(8, "big")
    path.write_bytes(bytes(raw))
    assert code_of(path) == "unreadable"


def test_missing_file_is_an_os_error(tmp_path: Path) -> None:
    """A vanished file is an infrastructure problem, not a verdict on the audio."""
    with pytest.raises(OSError):
        validate_audio(tmp_path / "gone.wav")


# --- reasons that say what happened (issue 27, item 6) -------------------------------------------
# A canonical 44-byte header as soundfile writes it: "fmt " at 12, its body at 20 (channels at
# 22, sample rate at 24, block align at 32), "data" at 36, its size at 40.


def patched_wav(tmp_path: Path, offset: int, value: bytes, seconds: float = 1.0) -> Path:
    path = write(tmp_path / "p.wav", tone(seconds))
    raw = bytearray(path.read_bytes())
    assert (raw[12:16], raw[36:40]) == (b"fmt ", b"data")
    raw[offset : offset + len(value)] = value
    path.write_bytes(bytes(raw))
    return path


def test_wav_with_sample_rate_0_is_a_bad_sample_rate(tmp_path: Path) -> None:
    """libsndfile says "SF_INFO struct incomplete"; the header is checked before it opens."""
    rejected = rejection(patched_wav(tmp_path, 24, struct.pack("<I", 0)))
    assert rejected.code == "bad_sample_rate"
    assert "the WAV header gives 0 Hz" in rejected.detail


def test_wav_with_0_channels_is_a_bad_header(tmp_path: Path) -> None:
    rejected = rejection(patched_wav(tmp_path, 22, struct.pack("<H", 0)))
    assert rejected.code == "bad_header"
    assert "fmt chunk gives 0 channels" in rejected.detail


def test_wav_with_block_align_0_is_a_bad_header(tmp_path: Path) -> None:
    """libsndfile opens it (it computes its own block align); the header is still wrong."""
    path = patched_wav(tmp_path, 32, struct.pack("<H", 0))
    assert sf.info(path).frames == SR
    rejected = rejection(path)
    assert rejected.code == "bad_header"
    assert "fmt chunk gives a block align of 0" in rejected.detail


def test_wav_with_data_before_fmt_says_so(tmp_path: Path) -> None:
    fmt = struct.pack("<HHIIHH", 1, 1, SR, SR * 2, 2, 16)
    data = np.zeros(SR, dtype="<i2").tobytes()
    body = b"WAVE" + b"data" + struct.pack("<I", len(data)) + data
    body += b"fmt " + struct.pack("<I", len(fmt)) + fmt
    path = tmp_path / "d.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    rejected = rejection(path)
    assert rejected.code == "unreadable"
    assert rejected.detail == "data chunk before a fmt chunk"


def test_wav_with_an_empty_data_chunk_is_empty(tmp_path: Path) -> None:
    path = write(tmp_path / "e.wav", np.zeros(0))
    assert path.read_bytes()[36:44] == b"data" + struct.pack("<I", 0)
    rejected = rejection(path)
    assert rejected.code == "empty"
    assert rejected.detail == "the WAV data chunk is empty (0 bytes)"


def test_wav_whose_header_says_0_bytes_before_audio_is_empty_and_says_what_follows(
    tmp_path: Path,
) -> None:
    """A recorder that never finished its header: libsndfile reads 0 frames, and the detail
    tells the bytes after the empty chunk are there, unread."""
    path = patched_wav(tmp_path, 40, struct.pack("<I", 0))
    assert sf.info(path).frames == 0
    rejected = rejection(path)
    assert rejected.code == "empty"
    assert "empty (0 bytes); 32 KB follow it, not read as audio" in rejected.detail


def test_too_short_is_only_shorter_than_the_minimum(tmp_path: Path) -> None:
    rejected = rejection(write(tmp_path / "s.wav", tone(0.05)))
    assert rejected.code == "too_short"
    assert "0.050 s (min 0.1 s)" in rejected.detail


def _declare_flac_samples(path: Path, total: int) -> None:
    """Set STREAMINFO's total samples (the low 36 bits of bytes 18..26)."""
    raw = bytearray(path.read_bytes())
    assert raw[:4] == b"fLaC" and raw[4] & 0x7F == 0  # STREAMINFO first
    field = int.from_bytes(raw[18:26], "big") & ~((1 << 36) - 1)
    raw[18:26] = (field | total).to_bytes(8, "big")
    path.write_bytes(bytes(raw))


def test_flac_declaring_more_than_its_size_can_hold_is_a_header_data_mismatch(
    tmp_path: Path,
) -> None:
    """2 s of FLAC whose header declares 2^36 - 1 samples (some 50 days at 16 kHz)."""
    path = write(tmp_path / "big.flac", tone(2.0))
    _declare_flac_samples(path, (1 << 36) - 1)
    assert sf.info(path).frames == (1 << 36) - 1  # libsndfile believes it
    rejected = rejection(path)
    assert rejected.code == "header_data_mismatch"
    size_kb = path.stat().st_size // 1000
    assert f"the FLAC header declares 4294967 s, more than its {size_kb} KB can hold" == (
        rejected.detail
    )


def test_long_silent_flac_is_too_long_not_a_mismatch(tmp_path: Path) -> None:
    """Digital silence compresses as far as FLAC goes (hundreds of frames a byte): a file
    legitimately this long is judged on its length, the size bound leaves it alone."""
    frames = 20 * 60 * 8000
    path = write(tmp_path / "quiet.flac", np.zeros(frames, dtype=np.int16), sr=8000)
    assert frames / path.stat().st_size > 100  # highly compressed
    rejected = rejection(path, AudioLimits(max_duration_s=600))
    assert rejected.code == "too_long"
    assert rejected.detail.startswith("1200.0 s")
    info = validate_audio(path)  # and within the default limits, a silent 20 minutes
    assert (info.frames, info.silent) == (frames, True)
