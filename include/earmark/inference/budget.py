"""GPU memory budget -> batch sizes for the GPU stage (Whisper and CoPE-A).

Why: the classifier is a 9B model that almost fills a 22 GiB cap on its own, so its batch
size cannot be a fixed number; it has to follow from what is left after the weights. These
are pure functions over documented figures, no torch, so they are cheap to test and to call
from task code (the budget is the setting ``EARMARK_GPU_MEMORY_GIB``, default 22).

Figures (bf16; see the project's GPU notes):

- Gemma-2-9B weights: 17.21 GiB (9.24B parameters, the embedding tied to the LM head; a
  random init with an untied copy measured 18.9 GiB, which counted the embedding twice).
- KV cache per token: 2 (K, V) x 42 layers x 8 KV heads x 256 head_dim x 2 bytes =
  344,064 bytes (336 KiB). With the policy-prefix cache the prefix is held once, at batch 1,
  and read by every row (``Classifier._forward_suffixes``): a row adds only its own keys and
  values of one layer at a time (prefix + suffix, joined), nothing that outlives the layer.
  Without the cache (``use_cache=False``) one layer's K and V live at a time.
- Eager attention repeats each of the 8 KV heads for its 2 query heads: per row and key
  token another 2 x 16 heads x 256 x 2 bytes, one layer at a time.
- Eager attention scores, one layer at a time: rows x 16 heads x q_len x k_len x 9 bytes (the
  bf16 scores, their soft-capped copy and the fp32 softmax partly alive together: 8.6
  measured), plus the additive sliding and full causal masks, 2 x rows x q_len x k_len x 2
  bytes. flex_attention and flash_attention_2 do not materialise scores: counted as 0.
- Activations: rows x q_len x 2 bytes x (2 x hidden + 2 x intermediate) (residual stream and
  attention output; the gated MLP's gate and up).

The last three were fitted to host memory measured at real width on the CPU (Gemma-2-9B's
layer shapes, 2 layers, bf16, the production ``Classifier``): with them the estimate is within
10% of every measured peak, the prefix pass and batches of 1 and 6 typical rows
(``python -m earmark_dev.bench.classifier_memory``; ``tests/tools/test_classifier_memory.py``
holds it to 15%).
- Whisper large-v3-turbo: 4.5 GiB peak at batch 16 to 64 (flat), so batch 64 whenever
  4.5 GiB fit; no figures above 64 (throughput was already 79 windows/s there).
- ``overhead_gib`` (default 1.0) covers the CUDA context and allocator fragmentation.

Each stage is sized against the whole budget: transcribe and classify run as separate tasks,
never with both models resident.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

GIB = 1024**3
ATTENTION_IMPLEMENTATIONS = ("eager", "flex_attention", "flash_attention_2")
EAGER_SCORE_BYTES = 9  # per score element and head at peak: 8.6 measured at real width
MASK_BYTES = 2  # one bf16 additive mask element
DEFAULT_OVERHEAD_GIB = 1.0

# fits(rows, longest prompt tokens, cached prefix tokens) -> whether such a batch fits memory
BatchFits = Callable[[int, int, int], bool]


class BudgetError(ValueError):
    """The memory budget cannot hold a stage even at batch size 1."""


@dataclass(frozen=True)
class ClassifierFootprint:
    """Memory figures of a Gemma-2 style classifier (bf16 unless ``dtype_bytes`` says not)."""

    weights_gib: float
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int
    dtype_bytes: int = 2

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V of every layer for one token."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes

    @property
    def activation_bytes_per_token(self) -> int:
        """Peak live activations of one layer for one query token."""
        return self.dtype_bytes * (2 * self.hidden + 2 * self.intermediate)

    @property
    def repeated_kv_bytes_per_token(self) -> int:
        """One layer's K and V for one key token, repeated to every query head (eager)."""
        return 2 * self.heads * self.head_dim * self.dtype_bytes

    @classmethod
    def from_config(
        cls, config: Any, *, weights_gib: float, dtype_bytes: int = 2
    ) -> ClassifierFootprint:
        """Figures from a ``Gemma2Config`` (or anything with the same attribute names)."""
        return cls(
            weights_gib=weights_gib,
            layers=config.num_hidden_layers,
            heads=config.num_attention_heads,
            kv_heads=config.num_key_value_heads,
            head_dim=config.head_dim,
            hidden=config.hidden_size,
            intermediate=config.intermediate_size,
            dtype_bytes=dtype_bytes,
        )


@dataclass(frozen=True)
class AsrFootprint:
    """Whisper's measured peak, flat for batch sizes up to ``max_batch``."""

    peak_gib: float
    max_batch: int


GEMMA2_9B = ClassifierFootprint(
    weights_gib=17.21,
    layers=42,
    heads=16,
    kv_heads=8,
    head_dim=256,
    hidden=3584,
    intermediate=14336,
)
WHISPER_LARGE_V3_TURBO = AsrFootprint(peak_gib=4.5, max_batch=64)


@dataclass(frozen=True)
class BatchSizes:
    """What fits: pass to TranscriberOptions / ClassifierOptions.

    ``classify_max_context_tokens`` is the longest prompt one row may have; longer contents
    are split into pieces by the classifier. The ``*_estimate_gib`` figures are the model's
    worst case for batches formed under these limits.
    """

    memory_gib: float
    asr_batch: int
    classify_batch: int
    classify_max_batch_tokens: int
    classify_max_context_tokens: int
    asr_estimate_gib: float
    classify_estimate_gib: float


def classify_estimate_bytes(
    rows: int,
    prompt_tokens: int,
    *,
    prefix_tokens: int = 0,
    attn_implementation: str = "eager",
    classifier: ClassifierFootprint = GEMMA2_9B,
    overhead_gib: float = DEFAULT_OVERHEAD_GIB,
) -> float:
    """Peak bytes of one classifier forward over ``rows`` prompts of ``prompt_tokens``.

    ``prefix_tokens`` > 0 means the policy prefix is cached and only the rest is fed; the
    batch-1 pass that builds that cache is counted too (the larger of the two is the peak).
    """
    suffixes = suffix_pass_bytes(
        rows,
        prompt_tokens,
        prefix_tokens=prefix_tokens,
        attn_implementation=attn_implementation,
        classifier=classifier,
        overhead_gib=overhead_gib,
    )
    if prefix_tokens <= 0:
        return suffixes
    prefix = prefix_pass_bytes(
        prefix_tokens,
        attn_implementation=attn_implementation,
        classifier=classifier,
        overhead_gib=overhead_gib,
    )
    return max(suffixes, prefix)


def prefix_pass_bytes(
    prefix_tokens: int,
    *,
    attn_implementation: str = "eager",
    classifier: ClassifierFootprint = GEMMA2_9B,
    overhead_gib: float = DEFAULT_OVERHEAD_GIB,
) -> float:
    """Peak bytes of the batch-1 pass that builds a policy prefix's cache (every layer's K, V)."""
    full = suffix_pass_bytes(
        1,
        prefix_tokens,
        attn_implementation=attn_implementation,
        classifier=classifier,
        overhead_gib=overhead_gib,
    )
    one_layer = prefix_tokens * classifier.kv_bytes_per_token / classifier.layers
    return full - one_layer + prefix_tokens * classifier.kv_bytes_per_token


def suffix_pass_bytes(
    rows: int,
    prompt_tokens: int,
    *,
    prefix_tokens: int = 0,
    attn_implementation: str = "eager",
    classifier: ClassifierFootprint = GEMMA2_9B,
    overhead_gib: float = DEFAULT_OVERHEAD_GIB,
) -> float:
    """Peak bytes of a forward over ``rows`` prompts that reads a cached prefix (or none)."""
    if attn_implementation not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"unknown attn_implementation {attn_implementation!r}")
    fixed = (classifier.weights_gib + overhead_gib) * GIB
    q_len = max(1, prompt_tokens - prefix_tokens)
    kv = classifier.kv_bytes_per_token
    # One layer's K and V per row (prefix + suffix joined, or the whole prompt), plus the
    # batch-1 prefix cache held once.
    cache = rows * prompt_tokens * kv / classifier.layers + prefix_tokens * kv
    scores = 0.0
    if attn_implementation == "eager":
        elements = rows * q_len * prompt_tokens
        scores = elements * (classifier.heads * EAGER_SCORE_BYTES + 2 * MASK_BYTES)
        cache += rows * prompt_tokens * classifier.repeated_kv_bytes_per_token
    activations = rows * q_len * classifier.activation_bytes_per_token
    return fixed + cache + scores + activations


def batch_sizes(
    memory_gib: float,
    *,
    classifier_prompt_tokens: int,
    prefix_tokens: int = 0,
    attn_implementation: str = "eager",
    max_context_tokens: int = 8192,
    max_classify_batch: int = 64,
    classifier: ClassifierFootprint = GEMMA2_9B,
    asr: AsrFootprint = WHISPER_LARGE_V3_TURBO,
    overhead_gib: float = DEFAULT_OVERHEAD_GIB,
) -> BatchSizes:
    """Largest Whisper and classifier batches that fit ``memory_gib`` by the figures above.

    ``classifier_prompt_tokens`` is a typical whole prompt (policy + template + content);
    ``prefix_tokens`` the cached policy prefix (0 without the prefix cache). The classifier
    limits guarantee, by :func:`classify_estimate_bytes`, that every batch the classifier
    forms (rows <= ``classify_batch``, rows x longest prompt <= ``classify_max_batch_tokens``,
    or one row of up to ``classify_max_context_tokens``) stays within the budget.
    Raises :class:`BudgetError` when a stage does not fit even at batch size 1.
    """
    if memory_gib <= 0:
        raise BudgetError(f"GPU memory budget must be positive, got {memory_gib} GiB")
    if classifier_prompt_tokens < 1 or prefix_tokens < 0:
        raise ValueError("classifier_prompt_tokens must be >= 1 and prefix_tokens >= 0")
    if prefix_tokens >= classifier_prompt_tokens:
        raise ValueError("the prompt must be longer than its cached prefix")
    if max_classify_batch < 1:
        raise ValueError("max_classify_batch must be >= 1")
    budget = memory_gib * GIB

    asr_need = asr.peak_gib + overhead_gib
    if asr_need > memory_gib:
        raise BudgetError(
            f"GPU memory budget {memory_gib:g} GiB is too small for Whisper: it peaks at "
            f"{asr.peak_gib:g} GiB plus {overhead_gib:g} GiB overhead"
        )

    def estimate(rows: int, tokens: int) -> float:
        return classify_estimate_bytes(
            rows,
            tokens,
            prefix_tokens=prefix_tokens,
            attn_implementation=attn_implementation,
            classifier=classifier,
            overhead_gib=overhead_gib,
        )

    if estimate(1, classifier_prompt_tokens) > budget:
        need = estimate(1, classifier_prompt_tokens) / GIB
        raise BudgetError(
            f"GPU memory budget {memory_gib:g} GiB is too small for the classifier: one "
            f"{classifier_prompt_tokens}-token prompt needs {need:.1f} GiB (weights "
            f"{classifier.weights_gib:g} GiB + {overhead_gib:g} GiB overhead + cache and "
            f"activations)"
        )

    def full_pass(rows: int, tokens: int) -> float:
        return (
            classify_estimate_bytes(
                rows,
                tokens,
                attn_implementation=attn_implementation,
                classifier=classifier,
                overhead_gib=overhead_gib,
            )
            + prefix_tokens * classifier.kv_bytes_per_token
        )

    # Longest single row that fits, on the full-pass fallback too (a row whose tokenization
    # does not start with the prefix), beside the cached prefix.
    lo, hi = classifier_prompt_tokens, max(classifier_prompt_tokens, max_context_tokens)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if full_pass(1, mid) <= budget else (lo, mid - 1)
    max_context = lo

    # rows x longest <= M: the per-token cost f(T)/T of the suffix pass grows with T, so the
    # worst batch under M is bounded by M x f(Tm)/Tm with Tm = min(M, max_context). The pass
    # that builds the prefix cache does not depend on the rows: it only sets a floor.
    def suffixes(rows: int, tokens: int) -> float:
        return suffix_pass_bytes(
            rows,
            tokens,
            prefix_tokens=prefix_tokens,
            attn_implementation=attn_implementation,
            classifier=classifier,
            overhead_gib=overhead_gib,
        )

    fixed = suffixes(0, max_context)
    floor = estimate(0, max_context)

    def worst(limit: int) -> float:
        longest = min(limit, max_context)
        per_row = suffixes(1, longest) - fixed
        return max(floor, fixed + limit * per_row / longest)

    lo, hi = 1, max_classify_batch * max_context
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if worst(mid) <= budget else (lo, mid - 1)
    max_batch_tokens = lo
    # Rows of the typical prompt that fit (what a batch of typical transcripts reaches when
    # batches are closed by the estimate itself, see classifier_fits).
    classify_batch = 1
    while classify_batch < max_classify_batch and (
        estimate(classify_batch + 1, classifier_prompt_tokens) <= budget
    ):
        classify_batch += 1
    classify_worst = max(worst(max_batch_tokens), estimate(1, max_context))
    return BatchSizes(
        memory_gib=memory_gib,
        asr_batch=asr.max_batch,
        classify_batch=classify_batch,
        classify_max_batch_tokens=max_batch_tokens,
        classify_max_context_tokens=max_context,
        asr_estimate_gib=asr_need,
        classify_estimate_gib=classify_worst / GIB,
    )


def classifier_fits(
    memory_gib: float,
    *,
    attn_implementation: str = "eager",
    classifier: ClassifierFootprint = GEMMA2_9B,
    overhead_gib: float = DEFAULT_OVERHEAD_GIB,
) -> BatchFits:
    """``fits(rows, longest prompt tokens, cached prefix tokens)`` for ``ClassifierOptions``:
    whether such a batch stays within ``memory_gib`` by :func:`classify_estimate_bytes`."""
    budget = memory_gib * GIB

    def fits(rows: int, prompt_tokens: int, prefix_tokens: int) -> bool:
        return (
            classify_estimate_bytes(
                rows,
                prompt_tokens,
                prefix_tokens=prefix_tokens,
                attn_implementation=attn_implementation,
                classifier=classifier,
                overhead_gib=overhead_gib,
            )
            <= budget
        )

    return fits
