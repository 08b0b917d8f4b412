"""Whisper by segments: VAD and windows, batching across files, silence, the loop guard."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from earmark.inference.guard import LoopRule, RepetitionGuard, loop_start
from earmark.inference.segments import (
    VAD_FRAME,
    FileCutter,
    SegmenterOptions,
    SegmentStream,
    Span,
    SpeechDetector,
    VadState,
    fixed_windows,
    merge_spans,
    segment,
)
from earmark.inference.transcriber import Transcriber, TranscriberOptions
from earmark_dev.speech import noise_floor, say

SR = 16000
SENTENCES = (
    "The meeting starts at nine tomorrow morning in the small room.",
    "Please bring the signed forms and your identity card.",
    "We will walk to the station together after lunch.",
)


@pytest.fixture(scope="module")
def speech():
    return [say(text) for text in SENTENCES]


@pytest.fixture(scope="module")
def detector():
    return SpeechDetector(SegmenterOptions())


@pytest.fixture(scope="module")
def sensitive_transcriber(tiny_models):
    """The tiny Whisper with larger random weights, so its text depends on its input (the
    stock tiny model loops on one letter whatever it hears); no loop guard, to compare raw."""
    transcriber = Transcriber(
        TranscriberOptions(tiny_models.asr, batch_size=4, max_new_tokens=24, loop_rule=None)
    )
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, weight in transcriber.model.named_parameters():
            if weight.dim() == 2 and "embed_positions" not in name:
                weight.copy_(torch.randn(weight.shape, generator=generator) * 0.3)
    return transcriber


def test_fixed_windows_cover_every_sample():
    assert fixed_windows(70, 30) == [Span(0, 30), Span(30, 60), Span(60, 70)]
    assert fixed_windows(0, 30) == []


def test_merge_spans_fills_windows_and_cuts_long_speech():
    spans = [Span(0, 10), Span(15, 25), Span(40, 45), Span(50, 130)]
    merged = merge_spans(spans, 30)
    assert merged == [Span(0, 25), Span(40, 45), Span(50, 80), Span(80, 110), Span(110, 130)]
    assert all(s.length <= 30 for s in merged)


def test_merge_spans_cuts_the_next_span_at_a_pause_between_words():
    frame = VAD_FRAME
    window = 30 * frame
    speech = [Span(0, 20 * frame), Span(22 * frame, 40 * frame)]
    probs = np.full(40, 0.9)
    probs[27] = 0.1  # a pause between two words inside the second span
    merged = merge_spans(speech, window, probs, min_fill=2 * frame)
    assert merged == [Span(0, 27 * frame), Span(27 * frame, 40 * frame)]
    probs[27] = 0.6  # no real pause: the span is not cut, it starts a new segment
    assert merge_spans(speech, window, probs, min_fill=2 * frame) == speech


def test_vad_finds_speech_and_not_the_room(speech, detector):
    gap = noise_floor(4.0, seed=1)
    audio = np.concatenate([gap, speech[0], gap, speech[1], gap])
    spans = detector.speech(audio)
    assert spans, "espeak-ng speech was not detected"
    found = sum(s.length for s in spans) / SR
    spoken = (len(speech[0]) + len(speech[1])) / SR
    assert 0.7 * spoken <= found <= 1.5 * spoken
    assert spans[0].start >= len(gap) - 0.5 * SR  # nothing found in the leading noise
    assert detector.speech(noise_floor(20.0, seed=2)) == []


def test_segments_batched_across_files_equal_each_file_alone(sensitive_transcriber):
    rng = np.random.default_rng(3)
    files = [rng.normal(0, 0.2, int(s * SR)).astype(np.float32) for s in (75.0, 5.0, 47.0, 31.0)]
    options = SegmenterOptions(mode="windows")
    spans = [segment(audio, options) for audio in files]

    def run(order: list[int], batch_size: int) -> dict[int, str]:
        stream = SegmentStream(sensitive_transcriber.transcribe_segments, batch_size)
        texts: dict[int, str] = {}
        for i in order:
            texts.update(stream.add(i, files[i], spans[i]))
        texts.update(stream.finish())
        return texts

    together = run([0, 1, 2, 3], batch_size=4)
    alone = {i: run([i], batch_size=1)[i] for i in range(4)}
    assert together == alone
    assert len(set(together.values())) == 4  # the texts really differ file to file


def test_silence_costs_no_decoding_and_yields_no_text(tiny_models, speech, detector):
    transcriber = Transcriber(TranscriberOptions(tiny_models.asr, batch_size=2, max_new_tokens=8))
    options = SegmenterOptions()
    quiet = noise_floor(45.0, seed=4)
    spoken = np.concatenate([noise_floor(1.0, seed=5), speech[2], noise_floor(1.0, seed=6)])
    stream = SegmentStream(transcriber.transcribe_segments, 2)
    assert stream.add("quiet", quiet, segment(quiet, options, detector)) == [("quiet", "")]
    assert transcriber.counters.rows == 0 and transcriber.counters.forwards == 0
    finished = stream.add("spoken", spoken, segment(spoken, options, detector))
    finished += stream.finish()
    assert [key for key, _ in finished] == ["spoken"]
    assert finished[0][1]
    assert transcriber.counters.rows == 1
    assert transcriber.counters.padded_s == pytest.approx(30.0 - len(speech[2]) / SR, abs=1.0)


def test_loop_start_keeps_one_copy():
    rule = LoopRule(max_period=4, min_repeats=4, min_tokens=8)
    assert loop_start([1, 2, 3] + [7, 8] * 6, rule) == 5
    assert loop_start([5] * 20, rule) == 1
    assert loop_start([1, 2, 3, 4, 5, 6, 7, 8, 9], rule) is None
    assert loop_start([1, 2, 1, 2], rule) is None  # too short to call a loop


def test_guard_stops_a_looping_window(tiny_models, speech):
    """A window forced to repeat one token (every other token suppressed, end of text too):
    without the guard it runs to the token limit, with it it stops and keeps one copy."""

    def looping(loop_rule):
        transcriber = Transcriber(
            TranscriberOptions(
                tiny_models.asr, batch_size=1, max_new_tokens=120, loop_rule=loop_rule
            )
        )
        keep = transcriber.processor.tokenizer.convert_tokens_to_ids("u")
        vocab = transcriber.model.config.vocab_size
        transcriber.model.generation_config.suppress_tokens = [i for i in range(vocab) if i != keep]
        return transcriber

    unguarded, guarded = looping(None), looping(LoopRule())
    features = unguarded.processor.feature_extractor(
        [speech[0]], sampling_rate=SR, return_tensors="pt"
    )["input_features"]
    common = {"input_features": features, "max_new_tokens": 120, "language": "en"}
    free = unguarded.model.generate(**common)
    stopped = guarded.model.generate(
        **common, stopping_criteria=[RepetitionGuard(LoopRule(), every=4)]
    )
    assert free.shape[1] - stopped.shape[1] >= 80
    assert unguarded.transcribe_segments([speech[0]])[0] == "u" * 120
    assert guarded.transcribe_segments([speech[0]])[0] == "u"
    assert guarded.counters.loops_cut == 1


def test_vad_state_runs_on_across_blocks(speech):
    """One stream stepped block by block gives the probabilities of the whole file in one go."""
    detector = SpeechDetector(SegmenterOptions(vad_streams=1, vad_max_stream_s=3600.0))
    audio = np.concatenate([noise_floor(2.0, seed=7), speech[0], noise_floor(2.0, seed=8)])
    audio = audio[: len(audio) // VAD_FRAME * VAD_FRAME]
    whole = detector.step(VadState(), audio)
    state, cut = VadState(), 37 * VAD_FRAME
    parts = [detector.step(state, audio[:cut]), detector.step(state, audio[cut:])]
    np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-5)
    assert whole.max() > 0.5  # the sentence is heard


def test_segments_found_block_by_block_cover_the_speech_of_the_whole_file(speech, detector):
    """Six minutes with a sentence every 40 s, fed to ``FileCutter`` in small blocks: segments
    come out while the file is still arriving, each <= 30 s, and they hold the speech that
    cutting the whole file at once finds."""
    options = SegmenterOptions()
    pieces = []
    for k in range(9):
        pieces += [noise_floor(40.0 - len(speech[k % 3]) / SR, seed=20 + k), speech[k % 3]]
    audio = np.concatenate(pieces)
    cutter = FileCutter(options, detector)
    found, early = [], 0
    for start in range(0, len(audio), 20_000):
        new = cutter.feed(audio[start : start + 20_000])
        early += len(new) if start + 20_000 < len(audio) else 0
        found += new
    found += cutter.finish()
    whole = [audio[s.start : s.end] for s in segment(audio, options, detector)]
    assert early >= 5  # segments flowed before the end of the file
    assert all(len(f) <= options.max_samples for f in found)
    assert cutter.samples == len(audio) and cutter.segments == len(found)
    assert sum(map(len, found)) == pytest.approx(sum(map(len, whole)), rel=0.1)
    assert len(found) >= 9


def test_a_stream_takes_segments_as_they_come_and_forgets_a_discarded_file():
    seen: list[list[float]] = []

    def transcribe(batch):
        seen.append([float(x[0]) for x in batch])
        return [f"t{x[0]:g}" for x in batch]

    stream = SegmentStream(transcribe, 2)
    one = [np.full(3, v, dtype=np.float32) for v in (1, 2, 3)]
    assert stream.put("a", one[:1]) == []
    assert stream.put("b", [np.full(3, 9, dtype=np.float32)]) == []  # a full batch ran
    assert stream.put("a", one[1:]) == []
    assert stream.close("b") == [("b", "t9")]
    assert stream.put("c", [np.full(3, 7, dtype=np.float32)]) == []
    stream.discard("c")
    assert stream.close("a") == [("a", "t1 t2 t3")]  # its segments were all decoded already
    assert stream.finish() == []
    assert stream.close("quiet") == [("quiet", "")]
    assert seen == [[1.0, 9.0], [2.0, 3.0]]
