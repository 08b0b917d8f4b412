"""Stop a Whisper window that has started to loop, and cut the loop from its text.

Why: greedy decoding sometimes repeats a phrase until the token limit. In a batch, one such
row keeps every other finished row waiting; on its own it fills the transcript with noise.
A tail made of one short block repeated many times is taken as a loop: the row stops and the
text keeps a single copy of the block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from transformers import StoppingCriteria


@dataclass(frozen=True)
class LoopRule:
    """A loop is a block of at most ``max_period`` tokens repeated ``min_repeats`` times or
    more, covering at least ``min_tokens`` tokens (so a short "no, no" is not a loop)."""

    max_period: int = 16
    min_repeats: int = 4
    min_tokens: int = 16

    def repeats(self, period: int) -> int:
        return max(self.min_repeats, -(-self.min_tokens // period))


def loop_start(ids: Sequence[int], rule: LoopRule = LoopRule()) -> int | None:
    """Where the second copy of a looping tail begins (keep ``ids[:index]``), else None."""
    n = len(ids)
    for period in range(1, rule.max_period + 1):
        span = period * rule.repeats(period)
        if span > n:
            break
        tail = ids[n - span :]
        if all(tail[i] == tail[i + period] for i in range(span - period)):
            start = n - span  # extend back over earlier copies of the same block
            while start >= period and ids[start - period : start] == ids[start : start + period]:
                start -= period
            return start + period
    return None


class RepetitionGuard(StoppingCriteria):
    """Marks rows whose generated tail loops as finished; checks every ``every`` steps.

    Runs on the device with no host sync: a few comparisons over the last tokens per check.
    Rows already finished (padding) may match too; generate ignores them.
    """

    def __init__(self, rule: LoopRule = LoopRule(), every: int = 4) -> None:
        self.rule = rule
        self._prompt_length: int | None = None
        self.every = every
        self._step = 0

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        self._step += 1
        if self._prompt_length is None:  # the first call comes after one generated token
            self._prompt_length = input_ids.shape[1] - 1
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        generated = input_ids.shape[1] - self._prompt_length
        if self._step % self.every == 0:
            for period in range(1, self.rule.max_period + 1):
                span = period * self.rule.repeats(period)
                if span > generated:
                    break
                tail = input_ids[:, -span:]
                done |= (tail[:, period:] == tail[:, :-period]).all(dim=1)
        return done
