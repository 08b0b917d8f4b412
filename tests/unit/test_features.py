"""Whisper features from a reused buffer and torch's log-mel: the extractor's numbers, the same
texts, the next batch padded while one decodes, and the host's share of each batch counted."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch
from earmark.inference.features import FeatureMaker
from earmark.inference.transcriber import Transcriber, TranscriberOptions

SR = 16000
# The largest difference allowed from WhisperFeatureExtractor.__call__ (log-mel units; the
# features span about -1.5..1.5). On the CPU both run the same torch ops: it measures 0.0.
MAX_ABS_DIFF = 1e-5


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a busy 2-core host runs tiny models far faster on one thread
    yield
    torch.set_num_threads(threads)


def _segments(seconds: list[float], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(s * SR))).astype(np.float32) for s in seconds]


def _extracted(extractor, segments: list[np.ndarray]) -> dict:
    return extractor(
        segments,
        sampling_rate=SR,
        return_tensors="pt",
        truncation=True,
        padding="max_length",
        return_attention_mask=True,
    )


def test_log_mel_matches_the_extractor_through_buffer_reuse(tiny_models, one_thread):
    from transformers import AutoProcessor

    extractor = AutoProcessor.from_pretrained(tiny_models.asr).feature_extractor
    maker = FeatureMaker(extractor, torch.device("cpu"), batch_size=4, slots=1)
    # Long rows first, then shorter ones in the same buffer: stale samples must not leak.
    for seconds, seed in (([30.0, 29.5, 12.0, 0.01], 1), ([0.5, 3.0, 30.0], 2), ([7.0], 3)):
        segments = _segments(seconds, seed)
        expected = _extracted(extractor, segments)
        batch = maker.pad(segments)
        mask = maker.frame_mask(batch)
        features = maker.log_mel(batch)
        assert features.shape == expected["input_features"].shape
        assert (features - expected["input_features"]).abs().max().item() <= MAX_ABS_DIFF
        assert torch.equal(mask, expected["attention_mask"].long())


def test_pad_refuses_what_does_not_fit(tiny_models):
    from transformers import AutoProcessor

    extractor = AutoProcessor.from_pretrained(tiny_models.asr).feature_extractor
    maker = FeatureMaker(extractor, torch.device("cpu"), batch_size=2, slots=1)
    with pytest.raises(ValueError, match="30 s"):
        maker.pad(_segments([31.0], 0))
    with pytest.raises(ValueError, match="3 segments"):
        maker.pad(_segments([1.0, 1.0, 1.0], 0))
    maker.log_mel(maker.pad(_segments([1.0], 0)))  # the refusals kept no buffer


def test_prefetch_raises_the_producers_error_and_frees_buffers_on_early_stop(tiny_models):
    from transformers import AutoProcessor

    extractor = AutoProcessor.from_pretrained(tiny_models.asr).feature_extractor
    maker = FeatureMaker(extractor, torch.device("cpu"), batch_size=1, slots=2)
    batches = [_segments([1.0], k) for k in range(6)]
    with pytest.raises(ValueError, match="30 s"):
        for batch in maker.prefetch([batches[0], _segments([40.0], 9)]):
            maker.log_mel(batch)
    for batch in maker.prefetch(batches):
        maker.log_mel(batch)
        break  # the producer had padded the next batch already: its buffer comes back
    padded = []
    worker = threading.Thread(
        target=lambda: padded.extend(maker.pad(b) for b in batches[:2]), daemon=True
    )
    worker.start()
    worker.join(timeout=10)
    assert len(padded) == 2, "a buffer was never given back"


@pytest.fixture(scope="module")
def sensitive(tiny_models, one_thread):
    """The tiny Whisper with larger random weights, so its text depends on its input."""
    options = TranscriberOptions(tiny_models.asr, batch_size=2, max_new_tokens=12, loop_rule=None)
    transcriber = Transcriber(options)
    generator = torch.Generator().manual_seed(0)
    named = transcriber.model.named_parameters()
    matrices = [w for n, w in named if w.dim() == 2 and "embed_positions" not in n]
    for weight in matrices:
        torch.nn.init.normal_(weight, std=0.3, generator=generator)
    return transcriber


def test_texts_equal_the_extractor_path_and_the_host_share_is_counted(sensitive):
    segments = _segments([4.0, 30.0, 9.0, 1.5, 20.0], seed=5)
    before = sensitive.counters.forwards
    texts = sensitive.transcribe_segments(segments)  # three batches: two padded ahead
    expected = []
    for k in range(0, len(segments), 2):
        inputs = _extracted(sensitive.processor.feature_extractor, segments[k : k + 2])
        rows = sensitive.model.generate(
            input_features=inputs["input_features"],
            attention_mask=inputs["attention_mask"],
            language="en",
            task="transcribe",
            do_sample=False,
            max_new_tokens=12,
        )
        expected += [sensitive._decode(row) for row in rows.tolist()]
    assert texts == expected
    assert len(set(texts)) >= 3  # the texts depend on the audio (random weights: mostly)
    counters = sensitive.counters
    assert counters.forwards - before == 3
    assert 0 < counters.host_s < counters.batch_s


@pytest.mark.bench
def test_the_feature_benchmark_runs_small(capsys):
    from earmark_dev.bench.features import main

    main(["--segments", "4", "--seconds", "6", "--repeat", "1", "--json"])
    figures = json.loads(capsys.readouterr().out)
    assert figures["features"]["segments"] == 4
    assert set(figures["feed_per_core"]) >= {"vad_x", "16k_mono_feed_x", "48k_stereo_feed_x"}
