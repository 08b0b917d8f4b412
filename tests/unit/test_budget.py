"""Batch sizes from the GPU memory budget: monotone, within budget, clear errors."""

from __future__ import annotations

import pytest
from earmark.inference.budget import (
    GEMMA2_9B,
    GIB,
    BatchSizes,
    BudgetError,
    batch_sizes,
    classify_estimate_bytes,
)

PROMPT, PREFIX = 1300, 1050


def sizes(memory: float, attn: str = "eager", **kwargs) -> BatchSizes:
    return batch_sizes(
        memory,
        classifier_prompt_tokens=PROMPT,
        prefix_tokens=PREFIX,
        attn_implementation=attn,
        **kwargs,
    )


def test_documented_figures():
    assert GEMMA2_9B.kv_bytes_per_token == 2 * 42 * 8 * 256 * 2 == 344_064
    assert GEMMA2_9B.weights_gib == 17.21


@pytest.mark.parametrize("attn", ["eager", "flex_attention", "flash_attention_2"])
def test_22_gib_gives_a_smaller_classify_batch_than_139(attn):
    small, large = sizes(22, attn), sizes(139, attn)
    assert small.classify_batch >= 1
    assert small.classify_batch <= large.classify_batch
    assert small.classify_max_batch_tokens < large.classify_max_batch_tokens
    assert small.classify_max_context_tokens <= large.classify_max_context_tokens
    assert small.asr_batch >= 1 and large.asr_batch >= small.asr_batch


def test_without_prefix_cache_sizes_are_no_larger():
    cached = sizes(48)
    full = batch_sizes(48, classifier_prompt_tokens=PROMPT, prefix_tokens=0)
    assert full.classify_batch >= 1
    assert full.classify_max_context_tokens <= cached.classify_max_context_tokens + PREFIX


@pytest.mark.parametrize("memory", [22, 24, 32, 48, 80, 139])
@pytest.mark.parametrize("attn", ["eager", "flex_attention"])
def test_every_batch_the_classifier_can_form_fits(memory, attn):
    result = sizes(memory, attn)
    budget = memory * GIB
    assert result.classify_estimate_gib <= memory
    assert result.asr_estimate_gib <= memory

    def est(rows: int, tokens: int) -> float:
        return classify_estimate_bytes(rows, tokens, prefix_tokens=PREFIX, attn_implementation=attn)

    # one row of the longest allowed prompt
    assert est(1, result.classify_max_context_tokens) <= budget
    # batches as Classifier._batches forms them: rows <= batch and rows x longest <= M
    for tokens in range(PREFIX + 1, result.classify_max_context_tokens + 1, 97):
        rows = max(1, min(result.classify_batch, result.classify_max_batch_tokens // tokens))
        assert est(rows, tokens) <= budget, (rows, tokens)


def test_too_small_budget_raises_a_clear_error():
    with pytest.raises(BudgetError, match=r"too small for the classifier.*17\.21"):
        sizes(18.0)
    with pytest.raises(BudgetError, match="too small for Whisper"):
        sizes(4)
    with pytest.raises(BudgetError, match="positive"):
        sizes(0)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="longer than its cached prefix"):
        batch_sizes(22, classifier_prompt_tokens=100, prefix_tokens=100)
    with pytest.raises(ValueError, match="attn_implementation"):
        sizes(22, "sdpa")


def test_22_gib_holds_six_typical_prefix_cached_rows():
    """A 1,050-token policy prefix (cached once) and 250 tokens of transcript per row."""
    from earmark.inference.budget import classifier_fits

    fits = classifier_fits(22, attn_implementation="eager")
    assert fits(6, 1300, 1050)
    sizes = batch_sizes(
        22, classifier_prompt_tokens=1300, prefix_tokens=1050, max_classify_batch=64
    )
    assert sizes.classify_batch >= 6
    assert not classifier_fits(18, attn_implementation="eager")(1, 1300, 1050)  # weights alone
