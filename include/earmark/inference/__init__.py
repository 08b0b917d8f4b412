"""Pure model code (audio decoding, segmenting, Whisper, the CoPE classifier), loaded inside the
GPU tasks. This package file imports nothing, so any module can name ``SAMPLE_RATE`` cheaply."""

SAMPLE_RATE = 16000  # Whisper's and silero-vad's input rate: every recording is resampled to it
