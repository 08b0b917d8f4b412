"""Whisper speech-to-text over segments of at most 30 s, batched across files.

Production decodes *segments* (``earmark.inference.segments``): every row of a batch is one
independent window in Whisper's short-form mode, so a batch stays full whatever the files'
lengths and a long file never decodes one window after another. A loop guard ends windows
that repeat themselves, and the token limit is near Whisper's own (224 per window).

Features never hold the GPU up (``earmark.inference.features``): segments are padded into a
reused pinned buffer in a producer thread one batch ahead, and the log-mel is computed on the
model's device. The counters say how long the main thread spent outside model calls.

``transcribe_longform`` keeps Whisper's sequential long-form algorithm (each window seeded by
the previous one's timestamps) as the reference the benchmark compares against.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor, StoppingCriteriaList

from earmark.inference import SAMPLE_RATE
from earmark.inference.features import FeatureMaker, PaddedBatch
from earmark.inference.guard import (
    LoopRule,
    RepetitionGuard,
    calm_prefix,
    compression_ratio,
    loop_start,
)

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
    """What the model was fed: forwards, rows, real and padded seconds, loops cut (exact
    repeats, and texts too repetitive by compression ratio); and per short-form batch, its wall
    time (``batch_s``) and the main thread's part of it outside model calls (``host_s``):
    ``host_s / batch_s`` is the share of time the GPU waited on the host."""

    forwards: int = 0
    rows: int = 0
    fed_s: float = 0.0
    padded_s: float = 0.0
    loops_cut: int = 0
    repetitive_cut: int = 0
    host_s: float = 0.0
    batch_s: float = 0.0


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
        self.features = FeatureMaker(extractor, self.device, options.batch_size)
        self.counters = AsrCounters()

    @property
    def window_samples(self) -> int:
        return self._window_samples

    def transcribe_segments(self, segments: list[np.ndarray]) -> list[str]:
        """Texts of ``segments`` (each at most 30 s), ``batch_size`` rows per forward, in order."""
        size = self.options.batch_size
        batches = [segments[k : k + size] for k in range(0, len(segments), size)]
        return [text for texts in self.transcribe_batches(batches) for text in texts]

    def transcribe_batches(self, batches: Iterable[list[np.ndarray]]) -> Iterator[list[str]]:
        """Texts of each batch (at most ``batch_size`` segments of <= 30 s), in order; while
        one batch decodes, the next is padded in a producer thread. The batch's time counts
        from when the main thread starts waiting for it to when its texts are ready."""
        clock = time.perf_counter
        many = not isinstance(batches, list) or len(batches) > 1
        padded = self.features.prefetch(batches) if many else map(self.features.pad, batches)
        started = clock()
        for batch in padded:
            texts, in_model = self._decode_batch(batch)
            ended = clock()
            self.counters.batch_s += ended - started
            self.counters.host_s += ended - started - in_model
            yield texts
            started = clock()  # the caller's time between batches is the host's too

    def _decode_batch(self, batch: PaddedBatch) -> tuple[list[str], float]:
        """Decode one padded batch and count it; returns its texts and the seconds spent in
        model calls (log-mel, generate, the tokens' copy back)."""
        seconds = sum(batch.lengths) / SAMPLE_RATE
        self.counters.forwards += 1
        self.counters.rows += batch.rows
        self.counters.fed_s += seconds
        self.counters.padded_s += batch.rows * self._window_samples / SAMPLE_RATE - seconds
        began = time.perf_counter()
        with torch.inference_mode():
            features = self.features.log_mel(batch).to(self.dtype)
            mask = self.features.frame_mask(batch)
            rows = self._generate(features, attention_mask=mask, longform=False)
        in_model = time.perf_counter() - began
        return [self._text(row) for row in rows], in_model

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
                texts = self._extract_and_generate([audios[i] for i in batch], longform=longform)
                for index, text in zip(batch, texts, strict=True):
                    results[index] = text
        return results

    @torch.inference_mode()
    def _extract_and_generate(self, batch: list[np.ndarray], *, longform: bool) -> list[str]:
        # The reference path keeps the feature extractor: long-form needs the full length plus
        # an attention mask telling generate where each clip ends.
        inputs = self.processor.feature_extractor(
            [np.asarray(a, dtype=np.float32) for a in batch],
            sampling_rate=SAMPLE_RATE,
            return_tensors="pt",
            truncation=not longform,
            padding="longest" if longform else "max_length",
            return_attention_mask=True,
            device=str(self.device),
        )
        rows = self._generate(
            inputs["input_features"].to(self.device, dtype=self.dtype),
            attention_mask=inputs["attention_mask"].to(self.device),
            longform=longform,
        )
        return [self._text(row) for row in rows]

    def _generate(
        self, features: torch.Tensor, *, attention_mask: torch.Tensor, longform: bool
    ) -> list[list[int]]:
        """Token ids per row (long-form reads the mask for each clip's end)."""
        kwargs: dict[str, Any] = {
            "input_features": features,
            "task": self.options.task,
            "num_beams": self.options.num_beams,
            "do_sample": False,
            "max_new_tokens": self.options.max_new_tokens,
            "attention_mask": attention_mask,
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
        return sequences.tolist()

    def _text(self, row: list[int]) -> str:
        ids = [t for t in row if t not in self._special_ids]
        rule = self.options.loop_rule
        if rule is None:
            return self._decode(ids)
        cut = loop_start(ids, rule)
        if cut is not None:
            self.counters.loops_cut += 1
            ids = ids[:cut]
        text = self._decode(ids)
        limit = rule.compression_ratio_limit
        if limit is not None and compression_ratio(text) > limit:
            # A loop that is not an exact repeat: keep the text up to where it turns repetitive.
            self.counters.repetitive_cut += 1
            text = self._decode(ids[: calm_prefix(ids, self._decode, limit)])
        return text

    def _decode(self, ids: list[int]) -> str:
        return str(self.processor.tokenizer.decode(ids, skip_special_tokens=True)).strip()
