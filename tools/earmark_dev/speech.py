"""Real speech for tests and benchmarks, offline: espeak-ng (Debian) reads text aloud.

Random-weight models do not care what is said, but a voice activity detector does: synthetic
tones are not speech to it, espeak-ng's voice is.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000


def say(text: str) -> np.ndarray:
    """``text`` spoken by espeak-ng as 16 kHz mono float32."""
    import soundfile as sf
    import soxr

    binary = shutil.which("espeak-ng")
    if binary is None:
        raise RuntimeError("espeak-ng is not installed: apt-get install espeak-ng (make system)")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run([binary, "-w", str(wav), text], check=True, capture_output=True)
        data, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    mono = data.mean(axis=1).astype(np.float32)
    return soxr.resample(mono, rate, SAMPLE_RATE).astype(np.float32)


def noise_floor(seconds: float, seed: int, level: float = 0.001) -> np.ndarray:
    """Quiet room noise (about -60 dBFS): silence to a listener and to the VAD."""
    rng = np.random.default_rng(seed)
    return (level * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)
