"""The GPU-stage benchmark's corpus: a day of espeak-ng speech from 5 s to 2 h, offline.

Sentences spoken by espeak-ng (or read from a folder of them, for machines without it) with
0.2-1.5 s pauses of room noise; the 2 h file holds three 10-minute silences, and one file has
no speech at all. Written as 16 kHz FLAC, in threads, each file from its own seed.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
# (seconds, silent stretches inside it): 5 s to 2 h; the 2 h file holds 3 x 10 min of silence.
CORPUS_LENGTHS = (
    (5, 0),
    (5, 0),
    (12, 0),
    (30, 0),
    (47, 0),
    (90, 0),
    (300, 0),
    (1200, 0),
    (7200, 3),
)
NO_SPEECH_FILE_S = 60
SENTENCES = (
    "The meeting starts at nine tomorrow morning in the small room on the second floor.",
    "Please bring the signed forms, your identity card and the letter from the bank.",
    "We will walk to the station together after lunch and then take the train home.",
    "Yes, that works for me.",
    "I am not sure that figure is right, let me check the numbers again before we send it.",
    "The delivery came late again, so we called the depot and asked them to phone us back.",
)


def _speech_track(seconds: float, rng: np.random.Generator, voices: list[np.ndarray]) -> np.ndarray:
    """Sentences with 0.2-1.5 s pauses of room noise, cut to ``seconds``."""
    from earmark_dev.speech import noise_floor

    parts: list[np.ndarray] = []
    total = 0
    target = int(seconds * SAMPLE_RATE)
    while total < target:
        voice = voices[int(rng.integers(len(voices)))]
        pause = noise_floor(float(rng.uniform(0.2, 1.5)), seed=int(rng.integers(1 << 30)))
        parts += [voice, pause]
        total += len(voice) + len(pause)
    return np.concatenate(parts)[:target]


def load_voices(voices_dir: Path | None) -> list[np.ndarray]:
    """The sentences spoken: by espeak-ng, or read from ``voices_dir`` (``*.flac`` at 16 kHz,
    written by ``save_voices`` on a machine that has espeak-ng)."""
    import soundfile as sf
    from earmark_dev.speech import say

    if voices_dir is not None and any(Path(voices_dir).glob("*.flac")):
        return [
            sf.read(str(path), dtype="float32")[0]
            for path in sorted(Path(voices_dir).glob("*.flac"))
        ]
    return [say(text) for text in SENTENCES]


def save_voices(voices_dir: Path) -> None:
    import soundfile as sf

    voices_dir.mkdir(parents=True, exist_ok=True)
    for k, voice in enumerate(load_voices(None)):
        sf.write(str(voices_dir / f"sentence-{k}.flac"), voice, SAMPLE_RATE)


def _write_file(path: Path, seconds: float, gaps: int, seed: int, voices: list) -> None:
    import soundfile as sf
    from earmark_dev.speech import noise_floor

    rng = np.random.default_rng(seed)
    if gaps:
        quiet = 600.0
        speech = (seconds - gaps * quiet) / (gaps + 1)
        pieces = []
        for k in range(gaps + 1):
            pieces.append(_speech_track(speech, rng, voices))
            if k < gaps:
                pieces.append(noise_floor(quiet, seed=k))
        audio = np.concatenate(pieces)
    else:
        audio = _speech_track(seconds, rng, voices)
    sf.write(str(path), audio, SAMPLE_RATE, subtype="PCM_16")


def make_corpus(
    dest: Path,
    scale: int = 1,
    seed: int = 0,
    voices_dir: Path | None = None,
    longest_s: float | None = None,
) -> list[tuple[Path, float]]:
    """FLAC files of the corpus under ``dest`` (reused when present): ``(path, seconds)``;
    ``scale`` copies of each length up to ``longest_s``, then the no-speech file. Written in
    threads (libsndfile's encoder releases the GIL), each file from its own seed."""
    import soundfile as sf
    from earmark_dev.speech import noise_floor

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    kept = [(s, g) for s, g in CORPUS_LENGTHS if longest_s is None or s <= longest_s]
    lengths = [(s, gaps) for s, gaps in kept for _ in range(scale)]
    files = [(dest / f"f{k:03d}-{s}s.flac", float(s)) for k, (s, _) in enumerate(lengths)]
    files.append((dest / f"f{len(files):03d}-no-speech.flac", float(NO_SPEECH_FILE_S)))
    if all(path.is_file() for path, _ in files):
        return files
    voices = load_voices(voices_dir)
    with ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool:
        jobs = [
            pool.submit(_write_file, path, seconds, gaps, seed * 1000 + k, voices)
            for k, ((path, seconds), (_, gaps)) in enumerate(zip(files, lengths, strict=False))
        ]
        for job in jobs:
            job.result()
    sf.write(str(files[-1][0]), noise_floor(NO_SPEECH_FILE_S, seed=99), SAMPLE_RATE)
    return files
