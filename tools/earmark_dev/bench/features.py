"""Feature and feed microbenchmark: what the CPU must do per batch and per second of audio.

1. Whisper features for one batch of 64 segments (10-30 s), at large-v3 / turbo width
   (128 mels): before — ``WhisperFeatureExtractor.__call__`` (its host part, and with its CPU
   log-mel) — and after — padding into ``FeatureMaker``'s reused buffer (the main thread's
   part; the producer thread does it while the GPU decodes) and the torch log-mel (run here on
   the CPU; on the GPU it is the device's work).
2. The CPU feed rate per core, in times real time, single-threaded: decoding FLAC with
   soundfile (read, downmix, soxr HQ resample to 16 kHz) for 16 kHz mono and 48 kHz stereo
   sources, and silero VAD (``earmark.inference.segments``) on the 16 kHz result.

Prints figures (best of ``--repeat``); asserts nothing about speed.

    python -m earmark_dev.bench.features            # add --json for one JSON object
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 16000


def best_of(repeat: int, run: Callable[[], Any]) -> float:
    """The shortest wall time of ``repeat`` runs of ``run``."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def feature_figures(batch: int, repeat: int, mels: int = 128) -> dict[str, float]:
    """Seconds to make one batch's features, the extractor's way and the buffer's way."""
    import torch
    from earmark.inference.features import FeatureMaker
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor(feature_size=mels)
    rng = np.random.default_rng(0)
    lengths = rng.integers(10 * SAMPLE_RATE, 30 * SAMPLE_RATE + 1, size=batch)
    segments = [(0.1 * rng.standard_normal(int(n))).astype(np.float32) for n in lengths]

    def extract() -> Any:
        return extractor(
            segments,
            sampling_rate=SAMPLE_RATE,
            return_tensors="pt",
            truncation=True,
            padding="max_length",
            return_attention_mask=True,
        )

    full = best_of(repeat, extract)
    # The extractor's host part alone: the same call with its log-mel reduced to a slice.
    name = "_torch_extract_fbank_features"
    setattr(extractor, name, lambda waveform, device="cpu": waveform[:, :1])
    try:
        host = best_of(repeat, extract)
    finally:
        delattr(extractor, name)  # back to the class's method

    maker = FeatureMaker(extractor, torch.device("cpu"), batch)
    pad = best_of(repeat, lambda: maker.release(maker.pad(segments)))
    with torch.inference_mode():
        torch_mel = best_of(repeat, lambda: maker.log_mel(maker.pad(segments))) - pad
    # With the producer thread: the main thread's wait for each padded batch while the device
    # is busy with the previous one (a 100 ms sleep stands for a generate that holds no GIL).
    batches = [segments] * 8
    waited = 0.0
    started = time.perf_counter()
    for padded in maker.prefetch(batches):
        waited += time.perf_counter() - started
        maker.release(padded)
        time.sleep(0.1)
        started = time.perf_counter()
    return {
        "segments": float(batch),
        "prefetched_wait_s": waited / len(batches),
        "extractor_call_s": full,
        "extractor_host_s": host,
        "buffer_pad_s": pad,
        "torch_log_mel_cpu_s": torch_mel,
        "host_speedup_x": host / pad,
    }


def _speech(seconds: float) -> np.ndarray:
    """About ``seconds`` of espeak-ng speech with pauses (tone bursts if espeak is missing)."""
    from earmark_dev.speech import noise_floor, say

    try:
        pieces = [
            say("The delivery came late again, so we called the depot and asked them."),
            say("Please bring the signed forms, your identity card and the letter."),
        ]
    except RuntimeError:
        t = np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE
        pieces = [(0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)]
    parts: list[np.ndarray] = []
    total, k = 0, 0
    while total < seconds * SAMPLE_RATE:
        piece = pieces[k % len(pieces)]
        pause = noise_floor(0.3 + 0.2 * (k % 3), seed=k)
        parts += [piece, pause]
        total += len(piece) + len(pause)
        k += 1
    return np.concatenate(parts)[: int(seconds * SAMPLE_RATE)].astype(np.float32)


def _write_flac(path: Path, audio16k: np.ndarray, rate: int, channels: int) -> None:
    import soundfile as sf
    import soxr

    audio = audio16k if rate == SAMPLE_RATE else soxr.resample(audio16k, SAMPLE_RATE, rate)
    rng = np.random.default_rng(rate + channels)
    columns = [audio + 0.001 * rng.standard_normal(len(audio)) for _ in range(channels)]
    data = np.stack(columns, axis=1).astype(np.float32)
    sf.write(str(path), np.clip(data, -1, 1), rate, format="FLAC", subtype="PCM_16")


def feed_figures(seconds: float, repeat: int) -> dict[str, float]:
    """Times real time, one core: decode steps per source, and VAD on the 16 kHz result."""
    import soundfile as sf
    import soxr
    import torch
    from earmark.inference.segments import SegmenterOptions, SpeechDetector, segment

    audio = _speech(seconds)
    figures: dict[str, float] = {"audio_s": seconds}
    with tempfile.TemporaryDirectory() as tmp:
        for name, rate, channels in (("16k_mono", 16000, 1), ("48k_stereo", 48000, 2)):
            path = Path(tmp) / f"{name}.flac"
            _write_flac(path, audio, rate, channels)
            data, _ = sf.read(str(path), dtype="float32", always_2d=True)
            mono = data.mean(axis=1, dtype=np.float32) if channels > 1 else data[:, 0]
            read = best_of(repeat, partial(sf.read, str(path), dtype="float32", always_2d=True))
            downmix = best_of(repeat, partial(data.mean, axis=1, dtype=np.float32))
            resample = (
                best_of(repeat, partial(soxr.resample, mono, rate, SAMPLE_RATE, "HQ"))
                if rate != SAMPLE_RATE
                else 0.0
            )
            decode = read + (downmix if channels > 1 else 0.0) + resample
            figures[f"{name}_read_x"] = seconds / read
            if channels > 1:
                figures[f"{name}_downmix_x"] = seconds / downmix
            if resample:
                figures[f"{name}_resample_x"] = seconds / resample
            figures[f"{name}_decode_x"] = seconds / decode
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        options = SegmenterOptions()
        detector = SpeechDetector(options)
        torch.set_num_threads(1)  # the detector keeps the caller's count: one core
        vad = best_of(repeat, lambda: segment(audio, options, detector))
    finally:
        torch.set_num_threads(threads)
    figures["vad_x"] = seconds / vad
    for name in ("16k_mono", "48k_stereo"):
        # A source's feed per core: decode then VAD, one after the other on the same core.
        figures[f"{name}_feed_x"] = 1 / (1 / figures[f"{name}_decode_x"] + 1 / figures["vad_x"])
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", type=int, default=64, help="segments in the batch")
    parser.add_argument("--seconds", type=float, default=120.0, help="audio for the feed rate")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best counts")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    figures = {
        "features": feature_figures(args.segments, args.repeat),
        "feed_per_core": feed_figures(args.seconds, args.repeat),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    f, c = figures["features"], figures["feed_per_core"]
    n = int(f["segments"])
    print(f"Whisper features, {n} segments of 10-30 s, 128 mels (best of {args.repeat}):")
    print(f"  before: extractor __call__            {f['extractor_call_s'] * 1000:8.1f} ms")
    print(f"          its host part (no log-mel)    {f['extractor_host_s'] * 1000:8.1f} ms")
    print(f"  after:  pad into the reused buffer    {f['buffer_pad_s'] * 1000:8.1f} ms")
    print(f"          torch log-mel (CPU here)      {f['torch_log_mel_cpu_s'] * 1000:8.1f} ms")
    print(f"          main thread's wait, padded    {f['prefetched_wait_s'] * 1000:8.1f} ms")
    print("          ahead while the device works (the first batch's pad included)")
    print(f"  host work per batch: {f['host_speedup_x']:.0f}x less")
    print(f"CPU feed per core, x real time ({c['audio_s']:.0f} s of speech, one thread):")
    for key, value in c.items():
        if key.endswith("_x"):
            print(f"  {key[:-2]:<24} {value:8.0f}x")


if __name__ == "__main__":
    main()
