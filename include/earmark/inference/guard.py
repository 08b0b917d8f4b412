"""Stop a Whisper window that has started to loop, and cut the loop from its text.

Why: greedy decoding sometimes repeats a phrase until the token limit. In a batch, one such
row keeps every other finished row waiting; on its own it fills the transcript with noise.
A tail made of one block of up to ``max_period`` tokens (a whole sentence) repeated enough
times is taken as a loop: the row stops and the text keeps a single copy of the block.

Cost: per generated token and row, one comparison per period — the new token against the one
``period`` places back — extends or resets a run counter; a period whose run covers its copies
is a loop. No step ever rescans the text, and nothing leaves the device.

Looping that is not an exact repeat (a phrase with drifting words) is caught afterwards the
way Whisper's own decoder does: text whose gzip compression ratio exceeds 2.4 is repetitive.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from transformers import StoppingCriteria

# OpenAI Whisper's ``compression_ratio_threshold`` (transcribe.py), over the decoded text.
COMPRESSION_RATIO_LIMIT = 2.4


@dataclass(frozen=True)
class LoopRule:
    """A loop is a block of at most ``max_period`` tokens repeated ``min_repeats`` times or
    more, covering at least ``min_tokens`` tokens (so a short "no, no" is not a loop). A long
    block need only repeat as often as fits in ``max_span`` tokens (at least twice), so a
    60-token sentence looping within a 224-token window is caught after three copies.
    A window's text compressing more than ``compression_ratio_limit`` is cut too (None: off).
    """

    max_period: int = 64
    min_repeats: int = 4
    min_tokens: int = 16
    max_span: int = 192
    compression_ratio_limit: float | None = COMPRESSION_RATIO_LIMIT

    def repeats(self, period: int) -> int:
        wanted = max(self.min_repeats, -(-self.min_tokens // period))
        return max(2, min(wanted, self.max_span // period))

    def needed_runs(self) -> np.ndarray:
        """Per period 1..max_period, the matches (token equal to the one ``period`` back)
        in a row that make a loop: every copy after the first."""
        return np.array([p * (self.repeats(p) - 1) for p in range(1, self.max_period + 1)])


def loop_start(ids: Sequence[int], rule: LoopRule = LoopRule()) -> int | None:
    """Where the second copy of a looping tail begins (keep ``ids[:index]``), else None.

    The tail's periodic stretch is followed back as far as it goes, so earlier copies are
    dropped too; the shortest looping period wins.
    """
    n = len(ids)
    periods = min(rule.max_period, n - 1)
    if periods < 1:
        return None
    a = np.asarray(ids, dtype=np.int64)
    # runs[p-1]: how many tokens at the end equal the token p places before them.
    lag = np.arange(1, periods + 1)[:, None]
    t = np.arange(n)[None, :]
    back = np.where(t >= lag, a[np.maximum(t - lag, 0)], -1)
    equal = (back == a[None, :]) & (t >= lag)
    mismatch = ~equal[:, ::-1]
    runs = np.where(mismatch.any(axis=1), mismatch.argmax(axis=1), n)
    looping = np.nonzero(runs >= rule.needed_runs()[:periods])[0]
    if looping.size == 0:
        return None
    period = int(looping[0]) + 1
    return n - int(runs[period - 1])


def compression_ratio(text: str) -> float:
    """Bytes of ``text`` over bytes of its zlib compression (Whisper's repetitiveness
    measure); short texts come out below 1 because of the compressed stream's overhead."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def too_repetitive(text: str, limit: float = COMPRESSION_RATIO_LIMIT) -> bool:
    """Whether ``text`` compresses more than ``limit`` — a loop or hallucination."""
    return compression_ratio(text) > limit


def calm_prefix(
    ids: Sequence[int],
    decode: Callable[[list[int]], str],
    limit: float = COMPRESSION_RATIO_LIMIT,
    step: int = 8,
) -> int:
    """How many of ``ids`` to keep so their text is not too repetitive: the longest prefix,
    in steps of ``step`` tokens, whose compression ratio stays within ``limit``. Repetition
    raises the ratio as it accumulates, so the cut falls a few copies into the loop."""
    keep = 0
    ends = [*range(step, len(ids), step), len(ids)]
    for end in ends:
        if compression_ratio(decode(list(ids[:end]))) > limit:
            break
        keep = end
    return keep


class RepetitionGuard(StoppingCriteria):
    """Marks rows whose generated tail loops as finished, with no host sync.

    Keeps, per row and period, the run of generated tokens equal to the token ``period``
    places back, updated from the newest token at each step. ``every`` > 1 reports only every
    ``every`` steps (the runs are updated at every step). Rows already finished (padding) may
    match too; generate ignores them.
    """

    def __init__(self, rule: LoopRule = LoopRule(), every: int = 1) -> None:
        self.rule = rule
        self.every = max(1, every)
        self._step = 0
        self._seen: int | None = None
        self._runs: Any = None
        self._needed: Any = None

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        rows, length = input_ids.shape
        periods = self.rule.max_period
        if self._runs is None:  # the first call comes after one generated token
            self._seen = length - 1
            self._runs = torch.zeros(rows, periods, dtype=torch.int32, device=input_ids.device)
            self._needed = torch.as_tensor(self.rule.needed_runs(), device=input_ids.device)
        assert self._seen is not None
        for position in range(self._seen, length):  # one new token per step, as a rule
            newest = input_ids[:, position : position + 1]
            first = max(0, position - periods)
            earlier = input_ids[:, first:position].flip(1)  # earlier[:, p-1] is p places back
            equal = torch.zeros(rows, periods, dtype=torch.bool, device=input_ids.device)
            equal[:, : earlier.shape[1]] = earlier == newest
            self._runs = (self._runs + 1) * equal
        self._seen = length
        self._step += 1
        if self._step % self.every:
            return torch.zeros(rows, dtype=torch.bool, device=input_ids.device)
        return (self._runs >= self._needed).any(dim=1)
