"""Whisper speech-to-text over batches of 16 kHz mono audio.

Uses batched *sequential* long-form generation (not the chunking pipeline): audio
longer than 30 s is decoded window by window, each window seeded by the previous
timestamps, which is Whisper's native long-form algorithm. Inputs are sorted by
length and short (<= 30 s) and long clips never share a batch, so every clip is
decoded exactly as it would be on its own (short clips in short-form mode, long
clips in long-form mode) and padding waste stays small.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class TranscriberOptions:
    """How to load and run the Whisper model."""

    model_dir: Path
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = 8
    language: str | None = "en"
    task: str = "transcribe"
    max_new_tokens: int | None = None
    attn_implementation: str = "sdpa"
    num_beams: int = 1


class Transcriber:
    """Loads Whisper once; ``transcribe`` turns a list of waveforms into a list of texts."""

    def __init__(self, options: TranscriberOptions) -> None:
        if options.dtype not in _DTYPES:
            raise ValueError(f"unsupported dtype {options.dtype!r}; use one of {sorted(_DTYPES)}")
        if options.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.options = options
        self.dtype = _DTYPES[options.dtype]
        self.device = torch.device(options.device)
        self.processor = AutoProcessor.from_pretrained(options.model_dir)
        self.model = AutoModelForSpeechSeq2Seq.from_pretrained(
            options.model_dir,
            dtype=self.dtype,
            attn_implementation=options.attn_implementation,
        ).to(self.device)
        self.model.eval()
        extractor = self.processor.feature_extractor
        self._window_samples = int(extractor.n_samples)

    def transcribe(self, audios: list[np.ndarray]) -> list[str]:
        """Transcribe each 16 kHz mono float32 waveform; results keep input order."""
        results: list[str] = [""] * len(audios)
        for batch in self._batches(audios):
            texts = self._run_batch([audios[i] for i in batch])
            for index, text in zip(batch, texts, strict=True):
                results[index] = text
        return results

    def _batches(self, audios: list[np.ndarray]) -> list[list[int]]:
        """Index batches, sorted by length, with short and long clips kept apart."""
        order = sorted(range(len(audios)), key=lambda i: len(audios[i]))
        short = [i for i in order if len(audios[i]) <= self._window_samples]
        long = [i for i in order if len(audios[i]) > self._window_samples]
        size = self.options.batch_size
        return [group[k : k + size] for group in (short, long) for k in range(0, len(group), size)]

    @torch.inference_mode()
    def _run_batch(self, batch: list[np.ndarray]) -> list[str]:
        longform = max(len(a) for a in batch) > self._window_samples
        # Short-form needs exactly 30 s of (silence-padded) features; long-form needs
        # the full length plus an attention mask telling generate where each clip ends.
        # Log-mel on the model's device: the STFT of a batch of long clips is the costliest CPU
        # step of the stage, and a GPU does it in milliseconds.
        inputs = self.processor.feature_extractor(
            [np.asarray(a, dtype=np.float32) for a in batch],
            sampling_rate=SAMPLE_RATE,
            return_tensors="pt",
            truncation=not longform,
            padding="longest" if longform else "max_length",
            return_attention_mask=True,
            device=str(self.device),
        )
        features = inputs["input_features"].to(self.device, dtype=self.dtype)
        kwargs: dict = {
            "input_features": features,
            "attention_mask": inputs["attention_mask"].to(self.device),
            "task": self.options.task,
            "num_beams": self.options.num_beams,
            "do_sample": False,
        }
        if self.options.language:
            kwargs["language"] = self.options.language
        if self.options.max_new_tokens is not None:
            kwargs["max_new_tokens"] = self.options.max_new_tokens
        if longform:
            kwargs["return_timestamps"] = True
        out = self.model.generate(**kwargs)
        sequences = out["sequences"] if isinstance(out, dict) else out
        texts = self.processor.batch_decode(sequences, skip_special_tokens=True)
        return [t.strip() for t in texts]
