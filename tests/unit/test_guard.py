"""The loop guard: sentence-long loops (25 and 60 tokens) stopped in generate and cut to one
copy, varied text left alone, and drifting repetition caught by the compression ratio."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from earmark.inference.guard import (
    COMPRESSION_RATIO_LIMIT,
    LoopRule,
    RepetitionGuard,
    calm_prefix,
    compression_ratio,
    loop_start,
)
from earmark.inference.transcriber import Transcriber, TranscriberOptions

SR = 16000
LEAD = "Note:"  # ends unlike the loops, so a loop's first copy starts right after it
LOOP_25 = " We walk home after lunch"
LOOP_60 = " The meeting starts at nine tomorrow in the small room, Anna"
VARIED = (
    "The meeting starts at nine tomorrow morning in the small room on the second floor. "
    "Please bring the signed forms, your identity card and the letter from the bank. "
    "We will walk to the station together after lunch and then take the train home. "
    "I am not sure that figure is right, let me check the numbers again."
)
DRIFT = "".join(f"Call me at {k} pm. " for k in range(1, 10)) * 2  # never an exact repeat


def test_loop_lengths_are_what_the_tests_claim():
    assert (len(LOOP_25), len(LOOP_60)) == (25, 60)
    assert len(VARIED) >= 224


def test_sentence_loops_are_cut_to_one_copy():
    lead = [int(x) for x in np.arange(900, 907)]
    for period in (25, 60):
        block = list(range(100, 100 + period))
        ids = lead + block * 8
        assert loop_start(ids) == len(lead) + period
    # A 60-token block needs three copies (a 224-token window holds at most three).
    block = list(range(100, 160))
    assert loop_start(lead + block * 2 + block[:30]) is None
    assert loop_start(lead + block * 3) == len(lead) + 60


def test_varied_text_is_not_a_loop():
    ids = list(VARIED.encode())
    assert loop_start(ids) is None
    assert compression_ratio(VARIED) < COMPRESSION_RATIO_LIMIT


def test_the_compression_ratio_flags_constructed_repetition():
    assert compression_ratio("hello world " * 40) > 10
    assert compression_ratio(DRIFT) > COMPRESSION_RATIO_LIMIT
    assert compression_ratio(VARIED) < 2.0
    assert compression_ratio("") == 0.0
    # The drifting text has no exact period to find, only its compression gives it away.
    assert loop_start(list(DRIFT.encode())) is None
    keep = calm_prefix(list(DRIFT.encode()), lambda ids: bytes(ids).decode())
    assert 17 <= keep < len(DRIFT) // 2
    assert compression_ratio(DRIFT[:keep]) <= COMPRESSION_RATIO_LIMIT


def test_guard_on_the_device_agrees_with_loop_start_token_by_token():
    """The incremental guard fires at the first step where the batch rule sees a loop."""
    rng = np.random.default_rng(7)
    rule = LoopRule()
    rows = []
    for period in (1, 3, 25, 60, 64, 65):
        lead = rng.integers(1000, 2000, size=int(rng.integers(0, 20))).tolist()
        block = rng.integers(0, 50, size=period).tolist()
        rows.append((lead + block * (224 // period + 1))[:224])
    rows.append(rng.integers(0, 50, size=224).tolist())  # random text: no loop
    prompt = [5, 6, 7, 8]
    ids = torch.tensor([prompt + row for row in rows])
    guard = RepetitionGuard(rule)
    fired: list[int | None] = [None] * len(rows)
    for step in range(1, 225):
        done = guard(ids[:, : len(prompt) + step], None)
        for r in torch.nonzero(done).flatten().tolist():
            fired[r] = step if fired[r] is None else fired[r]
    expected = [
        next((k for k in range(1, 225) if loop_start(row[:k], rule) is not None), None)
        for row in rows
    ]
    assert fired == expected
    assert fired[-1] is None and fired[-2] is None  # a 65-token period is beyond the guard
    assert all(step is not None for step in fired[:4])


class ForcedScript:
    """A forward hook on Whisper's output layer that forces row r to emit ``scripts[r]``
    (then end of text): real generate, guard and text paths, with the tokens chosen."""

    def __init__(self, transcriber: Transcriber, scripts: list[str]) -> None:
        tokenizer = transcriber.processor.tokenizer
        self.scripts = [tokenizer.encode(s, add_special_tokens=False) for s in scripts]
        self.eos = transcriber.model.generation_config.eos_token_id
        self.steps = 0
        self.handle = transcriber.model.proj_out.register_forward_hook(self)

    def __call__(self, module, inputs, logits):
        forced = torch.full_like(logits[:, -1, :], -1e9)
        for row, script in enumerate(self.scripts):
            token = script[self.steps] if self.steps < len(script) else self.eos
            forced[row, token] = 1e9
        self.steps += 1
        logits = logits.clone()
        logits[:, -1, :] = forced
        return logits


@pytest.fixture(scope="module")
def transcriber(tiny_models):
    # One intra-op thread: 224 decode steps take ~2 s, against ~15 s on a busy 2-core host.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Transcriber(TranscriberOptions(tiny_models.asr, batch_size=2, max_new_tokens=224))
    torch.set_num_threads(threads)


def _run(transcriber: Transcriber, scripts: list[str]) -> tuple[list[str], int]:
    hook = ForcedScript(transcriber, scripts)
    try:
        silence = [np.zeros(SR * 2, dtype=np.float32)] * len(scripts)
        return transcriber.transcribe_segments(silence), hook.steps
    finally:
        hook.handle.remove()


def test_generate_stops_25_and_60_token_loops_and_keeps_one_copy(transcriber):
    before = transcriber.counters.loops_cut
    texts, steps = _run(transcriber, [LEAD + LOOP_25 * 9, LEAD + LOOP_60 * 4])
    assert texts == [(LEAD + LOOP_25).strip(), (LEAD + LOOP_60).strip()]
    # The 60-token loop ends the batch after its third copy, far short of 224 tokens.
    assert steps == len(LEAD) + 3 * 60
    assert transcriber.counters.loops_cut - before == 2
    texts, steps = _run(transcriber, [LEAD + LOOP_25 * 9])
    assert steps == len(LEAD) + 4 * 25 and texts == [(LEAD + LOOP_25).strip()]


def test_varied_text_runs_to_the_limit_uncut(transcriber):
    before = (transcriber.counters.loops_cut, transcriber.counters.repetitive_cut)
    texts, steps = _run(transcriber, [VARIED])
    assert steps == 224
    assert texts == [VARIED[:224].strip()]
    assert (transcriber.counters.loops_cut, transcriber.counters.repetitive_cut) == before


def test_drifting_repetition_is_cut_by_compression_ratio(transcriber):
    before = transcriber.counters.repetitive_cut
    texts, steps = _run(transcriber, [DRIFT])
    assert steps == min(len(DRIFT) + 1, 224)  # no exact loop: nothing stopped it early
    assert transcriber.counters.repetitive_cut - before == 1
    assert DRIFT.startswith(texts[0]) and "Call me at 1 pm." in texts[0]
    assert len(texts[0]) < len(DRIFT) // 2
