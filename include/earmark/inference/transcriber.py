"""Whisper speech-to-text over segments of at most 30 s, batched across files.

Production decodes *segments* (``earmark.inference.segments``): every row of a batch is one
independent window in Whisper's short-form mode, so a batch stays full whatever the files'
lengths and a long file never decodes one window after another. A loop guard ends windows
that repeat themselves, and the token limit is near Whisper's own (224 per window).

``transcribe_longform`` keeps Whisper's sequential long-form algorithm (each window seeded by
the previous one's timestamps) as the reference the benchmark compares against.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor, StoppingCriteriaList

from earmark.inference import SAMPLE_RATE
from earmark.inference.guard import LoopRule, RepetitionGuard, loop_start

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class TranscriberOptions:
    """How to load and run the Whisper model."""

    model_dir: Path
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = 16
    language: str | None = "en"
    task: str = "transcribe"
    max_new_tokens: int = 224
    attn_implementation: str = "sdpa"
    num_beams: int = 1
    loop_rule: LoopRule | None = field(default_factory=LoopRule)


@dataclass
class AsrCounters:
    """What the model was fed: forwards, rows, real and padded seconds, loops cut."""

    forwards: int = 0
    rows: int = 0
    fed_s: float = 0.0
    padded_s: float = 0.0
    loops_cut: int = 0


class Transcriber:
    """Loads Whisper once; turns waveforms (16 kHz mono float32) into texts."""

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
            device_map=str(self.device),
        )
        self.model.eval()
        extractor = self.processor.feature_extractor
        self._window_samples = int(extractor.n_samples)
        self._special_ids = set(self.processor.tokenizer.all_special_ids)
        self.counters = AsrCounters()

    @property
    def window_samples(self) -> int:
        return self._window_samples

    def transcribe_segments(self, segments: list[np.ndarray]) -> list[str]:
        """Texts of ``segments`` (each at most 30 s), ``batch_size`` rows per forward, in order."""
        texts: list[str] = []
        size = self.options.batch_size
        for k in range(0, len(segments), size):
            texts.extend(self._run_short(segments[k : k + size]))
        return texts

    def transcribe_longform(self, audios: list[np.ndarray]) -> list[str]:
        """Whisper's sequential long-form decode, per file (the reference path)."""
        results: list[str] = [""] * len(audios)
        order = sorted(range(len(audios)), key=lambda i: len(audios[i]))
        short = [i for i in order if len(audios[i]) <= self._window_samples]
        long = [i for i in order if len(audios[i]) > self._window_samples]
        size = self.options.batch_size
        for group, longform in ((short, False), (long, True)):
            for k in range(0, len(group), size):
                batch = group[k : k + size]
                texts = self._generate([audios[i] for i in batch], longform=longform)
                for index, text in zip(batch, texts, strict=True):
                    results[index] = text
        return results

    def _run_short(self, batch: list[np.ndarray]) -> list[str]:
        if any(len(a) > self._window_samples for a in batch):
            raise ValueError("a segment is longer than Whisper's 30 s window")
        seconds = sum(len(a) for a in batch) / SAMPLE_RATE
        self.counters.forwards += 1
        self.counters.rows += len(batch)
        self.counters.fed_s += seconds
        self.counters.padded_s += len(batch) * self._window_samples / SAMPLE_RATE - seconds
        return self._generate(batch, longform=False)

    @torch.inference_mode()
    def _generate(self, batch: list[np.ndarray], *, longform: bool) -> list[str]:
        # Short-form needs exactly 30 s of (silence-padded) features; long-form needs the full
        # length plus an attention mask telling generate where each clip ends. Log-mel runs on
        # the model's device: on a GPU it costs milliseconds instead of the CPU's seconds.
        inputs = self.processor.feature_extractor(
            [np.asarray(a, dtype=np.float32) for a in batch],
            sampling_rate=SAMPLE_RATE,
            return_tensors="pt",
            truncation=not longform,
            padding="longest" if longform else "max_length",
            return_attention_mask=True,
            device=str(self.device),
        )
        kwargs: dict = {
            "input_features": inputs["input_features"].to(self.device, dtype=self.dtype),
            "attention_mask": inputs["attention_mask"].to(self.device),
            "task": self.options.task,
            "num_beams": self.options.num_beams,
            "do_sample": False,
            "max_new_tokens": self.options.max_new_tokens,
        }
        if self.options.language:
            kwargs["language"] = self.options.language
        if longform:
            kwargs["return_timestamps"] = True
        elif self.options.loop_rule is not None:
            guard = RepetitionGuard(self.options.loop_rule)
            kwargs["stopping_criteria"] = StoppingCriteriaList([guard])
        out = self.model.generate(**kwargs)
        sequences = out["sequences"] if isinstance(out, dict) else out
        return [self._text(row) for row in sequences.tolist()]

    def _text(self, row: list[int]) -> str:
        ids = [t for t in row if t not in self._special_ids]
        if self.options.loop_rule is not None:
            cut = loop_start(ids, self.options.loop_rule)
            if cut is not None:
                self.counters.loops_cut += 1
                ids = ids[:cut]
        return self.processor.tokenizer.decode(ids, skip_special_tokens=True).strip()
