"""Host memory of the production audio read is bounded whatever the file: long 48 kHz stereo
FLAC and 192 kHz stereo WAV go through ``read_segments`` (what the transcription stage reads a
unit with) with the peak of numpy buffers measured by tracemalloc."""

from __future__ import annotations

import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from earmark.config import Settings
from earmark.gpu.transcribe import read_segments
from earmark.inference import SAMPLE_RATE
from earmark_dev.speech import say

MONO_16K = 4 * SAMPLE_RATE  # bytes of one second of 16 kHz mono float32
# The audio one file's read holds not yet cut, at most: one VAD block (16 pieces of 10 s), one
# 30 s window and the 2 s guard: 192 s of the 16 kHz mono result, whatever the source.
HELD_SECONDS = 192


def bound(result_bytes: int) -> int:
    """The host peak allowed for a file whose 16 kHz mono result is ``result_bytes``: 2.5
    times the audio held not yet cut (it is copied once while VAD steps over a block; segments
    are copied out), which is all of the result for a short file, plus 4 MiB of blocks in
    flight. Independent of the source rate and of the length beyond 192 s."""
    return int(2.5 * min(result_bytes, HELD_SECONDS * MONO_16K)) + (4 << 20)


def _long_file(path: Path, seconds: int, rate: int, subtype: str, fmt: str) -> int:
    """A stereo file of ``seconds`` written in 10 s blocks: a quiet tone (cheap to encode),
    with a spoken sentence every 5 minutes. Returns the number of sentences."""
    sentence = soxr.resample(say("The parcel was left at the front desk."), SAMPLE_RATE, rate)
    t = np.arange(10 * rate) / rate
    tone = (0.002 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    block = np.stack([tone, tone], axis=1)
    spoken = 0
    with sf.SoundFile(path, "w", rate, 2, subtype=subtype, format=fmt) as out:
        for start in range(0, seconds, 10):
            if start % 300 == 150:
                loud = block.copy()
                loud[rate : rate + len(sentence)] += sentence[: 9 * rate, None] * 0.5
                out.write(loud)
                spoken += 1
            else:
                out.write(block)
    return spoken


def _peak_of_read(path: Path) -> tuple[int, int, int, float]:
    """(peak traced bytes, 16 kHz samples, segments, seconds) of reading one file."""
    settings = replace(Settings.from_env(), asr_segmenter="vad")
    samples = segments = 0
    tracemalloc.start()
    started = time.perf_counter()
    try:
        for _, kind, item in read_segments(settings, [path]):
            assert kind != "error", item
            if kind == "segments":
                segments += 1
                assert item.dtype == np.float32 and len(item) <= 30 * SAMPLE_RATE
            else:
                samples = item
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, samples, segments, time.perf_counter() - started


def _check(path: Path, seconds: int, spoken: int) -> None:
    peak, samples, segments, wall = _peak_of_read(path)
    result_bytes = samples * 4
    print(
        f"{path.name}: {seconds / 3600:.2f} h, peak {peak / 2**20:.1f} MiB "
        f"(16 kHz result {result_bytes / 2**20:.0f} MiB), {segments} segments, {wall:.1f} s"
    )
    assert abs(samples - seconds * SAMPLE_RATE) <= 64
    assert spoken <= segments <= 2 * spoken  # each sentence found, the tone is not speech
    assert peak <= bound(result_bytes)
    if seconds >= 1200:
        assert peak <= result_bytes / 2  # a long file: far below one copy of its result


@pytest.fixture(scope="module", autouse=True)
def _imports_done():
    """torch and silero-vad imported and loaded once before any measurement (importing torch
    allocates ~55 MiB that tracemalloc would count against the first read)."""
    from earmark.inference.segments import SegmenterOptions, SpeechDetector

    SpeechDetector(SegmenterOptions())


LONG = {  # name: (seconds, source rate, subtype, format)
    "10min_48k_stereo.flac": (600, 48000, "PCM_16", "FLAC"),
    "3min_192k_stereo.wav": (180, 192000, "PCM_16", "WAV"),
    "4h_48k_stereo.flac": (4 * 3600, 48000, "PCM_16", "FLAC"),
    "20min_192k_stereo.wav": (1200, 192000, "PCM_16", "WAV"),
}


@pytest.fixture(scope="session")
def long_file(tmp_path_factory, request):
    seconds, rate, subtype, fmt = LONG[request.param]
    path = tmp_path_factory.mktemp("long") / request.param
    started = time.perf_counter()
    spoken = _long_file(path, seconds, rate, subtype, fmt)
    print(f"built {path.name} in {time.perf_counter() - started:.1f} s")
    yield path, seconds, spoken
    path.unlink()


@pytest.mark.parametrize(
    "long_file", ["10min_48k_stereo.flac", "3min_192k_stereo.wav"], indirect=True
)
def test_long_files_are_read_in_bounded_memory(long_file):
    _check(*long_file)


@pytest.mark.bench
@pytest.mark.parametrize("long_file", ["20min_192k_stereo.wav"], indirect=True)
def test_twenty_minutes_of_192k_stereo_wav_are_read_in_bounded_memory(long_file):
    _check(*long_file)


@pytest.mark.long  # about 6 min on 2 cores: `make test-long`, not in `make test`
@pytest.mark.parametrize("long_file", ["4h_48k_stereo.flac"], indirect=True)
def test_four_hours_of_48k_stereo_flac_are_read_in_bounded_memory(long_file):
    _check(*long_file)
