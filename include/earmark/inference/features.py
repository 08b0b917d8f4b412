"""Whisper's input features for short-form batches, made without stalling the GPU.

Why: ``WhisperFeatureExtractor.__call__`` pads and stacks each batch into fresh arrays, builds a
480,000-sample mask per row and brings the log-mel back to the host as numpy — most of a second
of CPU per batch of 64 on the main thread, as long as the GPU's own work. Here segments are
padded into a reused float32 buffer (pinned on CUDA, so the copy to the card is asynchronous),
and the log-mel is computed with torch on the model's device exactly as transformers' torch
path does (STFT n_fft 400 / hop 160 / Hann, the extractor's mel filters, log10, 8 decades of
dynamic range per row, ``(x + 4) / 4``). ``prefetch`` pads the next batch in a producer thread
while the current one decodes (numpy's copies release the GIL).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class PaddedBatch:
    """One batch padded into a reused host buffer: ``host`` is a view of ``rows`` rows. Each
    one goes to ``FeatureMaker.log_mel`` or ``release``, which give the buffer back."""

    slot: int
    host: torch.Tensor
    lengths: list[int]

    @property
    def rows(self) -> int:
        return len(self.lengths)


class FeatureMaker:
    """Pads batches of <= 30 s segments into ``slots`` reused host buffers and turns them into
    log-mel features on ``device``. A buffer is handed out again only once the copy that read
    it has finished (a CUDA event), so two slots let one batch fill while the other is read."""

    def __init__(
        self,
        extractor: Any,
        device: torch.device,
        batch_size: int,
        *,
        slots: int = 2,
    ) -> None:
        self.device = device
        self.n_samples = int(extractor.n_samples)
        self.n_fft = int(extractor.n_fft)
        self.hop_length = int(extractor.hop_length)
        self.dither = float(getattr(extractor, "dither", 0.0))
        self.padding_value = float(getattr(extractor, "padding_value", 0.0))
        self.batch_size = batch_size
        self._cuda = device.type == "cuda"
        self._window = torch.hann_window(self.n_fft, device=device)
        filters = np.asarray(extractor.mel_filters, dtype=np.float32)  # (freq bins, mels)
        self._filters_t = torch.from_numpy(filters.T.copy()).to(device)  # (mels, freq bins)
        self._buffers = [
            torch.empty(
                (batch_size, self.n_samples), dtype=torch.float32, pin_memory=self._cuda
            ).fill_(self.padding_value)
            for _ in range(slots)
        ]
        # Per slot and row, the samples last written there: only they need clearing on reuse.
        self._written = [np.zeros(batch_size, dtype=np.int64) for _ in range(slots)]
        self._events: list[Any] = [None] * slots
        self._free: queue.Queue[int] = queue.Queue()
        for slot in range(slots):
            self._free.put(slot)

    def pad(self, segments: list[np.ndarray]) -> PaddedBatch:
        """Copy ``segments`` into a free buffer; the rest of each row is padding (silence)."""
        if len(segments) > self.batch_size:
            raise ValueError(f"{len(segments)} segments for a buffer of {self.batch_size} rows")
        if any(len(segment) > self.n_samples for segment in segments):
            raise ValueError("a segment is longer than Whisper's 30 s window")
        slot = self._free.get()
        event = self._events[slot]
        if event is not None:
            event.synchronize()  # the previous copy out of this buffer has finished
        array, written = self._buffers[slot].numpy(), self._written[slot]
        lengths = [len(segment) for segment in segments]
        for row, (segment, n) in enumerate(zip(segments, lengths, strict=True)):
            array[row, :n] = segment
            if written[row] > n:
                array[row, n : written[row]] = self.padding_value
            written[row] = n
        return PaddedBatch(slot, self._buffers[slot][: len(segments)], lengths)

    def log_mel(self, batch: PaddedBatch) -> torch.Tensor:
        """Log-mel features ``(rows, mels, 3000)`` float32 on the device; frees the buffer once
        the (asynchronous) copy has been issued."""
        try:
            if self._cuda:
                waveform = batch.host.to(self.device, non_blocking=True)
                event = torch.cuda.Event()
                event.record()
                self._events[batch.slot] = event
            else:  # computed from the buffer itself, before it is handed out again
                waveform = batch.host
            return whisper_log_mel(
                waveform, self._window, self._filters_t, self.n_fft, self.hop_length, self.dither
            )
        finally:
            self._free.put(batch.slot)

    def frame_mask(self, batch: PaddedBatch) -> torch.Tensor:
        """The extractor's attention mask at frame rate: 1 for frames that start inside the
        segment. Whisper's encoder ignores it in short-form; generate expects one."""
        frames = self.n_samples // self.hop_length
        ends = torch.tensor([-(-n // self.hop_length) for n in batch.lengths])
        mask = torch.arange(frames)[None, :] < ends[:, None]
        return mask.to(self.device, dtype=torch.long, non_blocking=True)

    def release(self, batch: PaddedBatch) -> None:
        """Give back a buffer that will not be read (a batch abandoned on an error)."""
        self._free.put(batch.slot)

    def prefetch(self, batches: Iterable[list[np.ndarray]]) -> Iterator[PaddedBatch]:
        """``pad`` each batch in a producer thread, one batch ahead of the consumer."""
        return _prefetched(batches, self.pad, self.release)


def whisper_log_mel(
    waveform: torch.Tensor,
    window: torch.Tensor,
    filters_t: torch.Tensor,
    n_fft: int,
    hop_length: int,
    dither: float = 0.0,
) -> torch.Tensor:
    """transformers' ``WhisperFeatureExtractor._torch_extract_fbank_features`` for a batch
    ``(rows, samples)``, left on the waveform's device (no host round trip)."""
    if dither:
        waveform = waveform + dither * torch.randn_like(waveform)
    stft = torch.stft(waveform, n_fft, hop_length, window=window, return_complex=True)
    magnitudes = (stft[..., :-1].abs() ** 2).contiguous()
    del stft
    log_spec = torch.clamp(filters_t @ magnitudes, min=1e-10).log10()
    del magnitudes
    peak = log_spec.amax(dim=(1, 2), keepdim=True)
    log_spec = torch.maximum(log_spec, peak - 8.0)
    return (log_spec + 4.0) / 4.0


_DONE = object()


def _prefetched(
    batches: Iterable[list[np.ndarray]],
    pad: Callable[[list[np.ndarray]], PaddedBatch],
    release: Callable[[PaddedBatch], None],
) -> Iterator[PaddedBatch]:
    """Yield ``pad(batch)`` for each batch, the next one padded in a thread meanwhile."""
    ready: queue.Queue[Any] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in batches:
                if stop.is_set():
                    return
                padded = pad(batch)
                while not stop.is_set():
                    try:
                        ready.put(padded, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                else:
                    release(padded)
                    return
            ready.put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            ready.put(exc)

    thread = threading.Thread(target=produce, name="earmark-features", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # a consumer that stops early: free what was padded ahead
            try:
                item = ready.get(timeout=0.1)
            except queue.Empty:
                continue
            if isinstance(item, PaddedBatch):
                release(item)
        thread.join()
