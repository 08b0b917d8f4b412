"""CoPE-A policy classifier: Gemma-2 base + LoRA adapter, merged once at load.

For each content the score is P("1") from a softmax over the logits of the "1" and
"0" tokens at the prompt's last token, from a single forward pass (no generate).
Only those two logits are computed: the last real token's hidden state is gathered
and multiplied with the two lm_head rows, then Gemma-2's final soft-capping applies.

Contents whose prompt exceeds ``max_context_tokens`` are split on token boundaries
into pieces that fit, each overlapping the next by a quarter of a piece, so any sentence
shorter than that overlap lies whole in some piece; the content's score is the max over
its pieces.

No silent scores: the model runs in bfloat16 or float32, never float16 (Gemma-2 overflows to
inf/NaN there; float16 is replaced by float32 and the log says why), and a score that is not
finite raises :class:`NonFiniteScoreError` instead of being kept or max-ed away
(``max(0.0, nan)`` is 0.0).

Speed: pieces are sorted by length and batched with right padding (real tokens keep
positions 0..n-1 and never see padding). With ``use_prefix_cache`` the policy part
of the prompt is run once and only the per-content suffixes are fed. Every row reads the
one batch-1 prefix cache (a broadcast view joined to the row's own keys and values one
layer at a time), so the prefix costs its 0.34 GiB once, not once per row, and nothing the
suffixes add is kept. Each item's suffix is cut from the tokenization of its whole prompt,
so the ids the model sees are identical to a full pass; an item whose prompt tokenization
does not start with the prefix ids falls back to a full pass.

Memory: with ``fits`` (from ``earmark.inference.budget``) a batch closes before its
estimated peak would exceed the GPU budget, for the actual prefix and prompt lengths.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from earmark.inference.budget import BatchFits
from earmark.inference.policies import Policy
from earmark.inference.prompt import build_prompt, split_prompt

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# Asked for float16 (a card without bfloat16): float32 instead, never float16.
_FP16 = "float16"
# Eager is the only attention shipped: Gemma-2 soft-caps its attention logits, sdpa cannot (and
# transformers 5.x refuses it), flash_attention_2 needs the flash-attn package, and
# flex_attention does not compile on the CPU with torch 2.13 (an inductor codegen error), so
# neither fast path could be tested here; see the README's GPU stage section.
_ATTN_IMPLEMENTATIONS = ("eager",)
_SPLIT_MARGIN_TOKENS = 8
# Consecutive pieces of a long content share 1/_OVERLAP_DIVISOR of a piece's tokens.
_OVERLAP_DIVISOR = 4


class NonFiniteScoreError(RuntimeError):
    """A score came out NaN or infinite: the batch is not recorded (ids and policy only).

    ``positions`` are indexes into the contents passed to :meth:`Classifier.score`; a caller
    that knows their files re-raises with :meth:`for_files` so the message names them.
    """

    def __init__(
        self, policy: str, positions: list[int], file_ids: list[int] | None = None
    ) -> None:
        self.policy = policy
        self.positions = positions
        self.file_ids = file_ids
        what = (
            f"file {_id_list(file_ids)}"
            if file_ids is not None
            else f"content #{_id_list(positions)}"
        )
        super().__init__(
            f"non-finite score (NaN or inf) for {what} under policy {policy!r}: "
            f"{len(positions)} score(s) not computed, nothing recorded for the batch"
        )

    def for_files(self, file_ids: list[int]) -> NonFiniteScoreError:
        """The same failure naming the files at ``positions`` (``file_ids`` per content)."""
        return NonFiniteScoreError(
            self.policy, self.positions, [file_ids[k] for k in self.positions]
        )


def _id_list(ids: list[int], shown: int = 10) -> str:
    """Ids for a message: the first ``shown``, then how many more."""
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    return ", ".join(map(str, ids[:shown])) + more


def classifier_dtype(requested: str) -> str:
    """The dtype the classifier runs in: float16 becomes float32 (logged with the reason)."""
    if requested == _FP16:
        log.warning(
            "classifier dtype float16 (set, or chosen for a card without bfloat16): using "
            "float32 instead, as Gemma-2 overflows to inf/NaN in float16"
        )
        return "float32"
    return requested


@dataclass
class ClassifierOptions:
    """How to load and run the CoPE-A classifier."""

    base_dir: Path
    adapter_dir: Path | None
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = 8
    max_context_tokens: int = 8192
    attn_implementation: str = "eager"
    use_prefix_cache: bool = True
    max_batch_tokens: int | None = None  # cap on rows x longest prompt per batch (memory)
    # fits(rows, longest prompt tokens, cached prefix tokens) -> whether the batch fits memory
    fits: BatchFits | None = None
    # Policy prefix caches kept between calls (oldest dropped first). On a GPU one is enough:
    # a unit is scored a policy at a time and a prefix costs ~50 ms to recompute there.
    max_cached_prefixes: int = 8


@dataclass
class _Item:
    """One prompt piece to score: ``owner`` is the index of its content."""

    owner: int
    ids: list[int]


@dataclass
class _Prefix:
    """Policy prefix token ids and their batch-1 KV cache (computed lazily)."""

    text: str
    ids: list[int]
    cache: DynamicCache | None = None


class Classifier:
    """Loads the merged model once; ``score`` returns P(match) per content."""

    def __init__(self, options: ClassifierOptions) -> None:
        self.dtype = classifier_dtype(options.dtype)
        if self.dtype not in _DTYPES:
            raise ValueError(f"unsupported dtype {options.dtype!r}; use one of {sorted(_DTYPES)}")
        if options.attn_implementation not in _ATTN_IMPLEMENTATIONS:
            raise ValueError(
                f"unsupported attn_implementation {options.attn_implementation!r}; "
                f"use one of {_ATTN_IMPLEMENTATIONS}"
            )
        if options.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.options = options
        self.device = torch.device(options.device)
        self.tokenizer = AutoTokenizer.from_pretrained(options.base_dir)
        # Straight onto the device: no full copy in host memory first.
        model = AutoModelForCausalLM.from_pretrained(
            options.base_dir,
            dtype=_DTYPES[self.dtype],
            attn_implementation=options.attn_implementation,
            device_map=str(self.device),
        )
        if options.adapter_dir is not None:
            model = PeftModel.from_pretrained(model, options.adapter_dir).merge_and_unload()
        self.model = model.eval()
        self.decoder = self.model.get_decoder()
        one, zero = (self._single_token_id(t) for t in ("1", "0"))
        head = self.model.get_output_embeddings().weight
        self._answer_rows = head[[one, zero]].detach()  # [2, hidden]: row 0 is "1"
        self._softcap = getattr(self.model.config, "final_logit_softcapping", None)
        self._pad_id = self.tokenizer.pad_token_id
        if self._pad_id is None:
            self._pad_id = self.tokenizer.eos_token_id or 0
        # Recent policies' prefixes and their caches, oldest first.
        self._prefixes: dict[str, _Prefix] = {}

    def _single_token_id(self, text: str) -> int:
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"answer token {text!r} is not a single token in this tokenizer")
        return ids[0]

    # ---- public -------------------------------------------------------------------

    def score(self, policy: Policy | str, contents: list[str]) -> list[float]:
        """P("1") for each content under ``policy``; each value is in [0, 1].

        Raises :class:`NonFiniteScoreError` (naming the contents' positions) when any piece
        scores NaN or inf: nothing is returned for the batch rather than a made-up value.
        """
        policy_text = policy.text if isinstance(policy, Policy) else policy
        if not contents:
            return []
        items = [
            _Item(owner=i, ids=ids)
            for i, content in enumerate(contents)
            for ids in self._piece_ids(policy_text, content)
        ]
        piece_scores = self._score_items(policy_text, items)
        bad = sorted(
            {it.owner for it, v in zip(items, piece_scores, strict=True) if not math.isfinite(v)}
        )
        if bad:
            raise NonFiniteScoreError(_policy_name(policy), bad)
        best = [0.0] * len(contents)
        for item, value in zip(items, piece_scores, strict=True):
            best[item.owner] = max(best[item.owner], value)
        return best

    def split_content(self, policy: Policy | str, content: str) -> list[str]:
        """The pieces ``content`` is cut into so each prompt fits ``max_context_tokens``."""
        return [content[a:b] for a, b in self.split_spans(policy, content)]

    def split_spans(self, policy: Policy | str, content: str) -> list[tuple[int, int]]:
        """``(start, end)`` character spans of the pieces, in order; consecutive ones overlap."""
        policy_text = policy.text if isinstance(policy, Policy) else policy
        return [span for span, _ in self._pieces(policy_text, content)]

    # ---- internals ----------------------------------------------------------------

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=True)["input_ids"]

    def _piece_ids(self, policy_text: str, content: str) -> list[list[int]]:
        return [ids for _, ids in self._pieces(policy_text, content)]

    def _pieces(self, policy_text: str, content: str) -> list[tuple[tuple[int, int], list[int]]]:
        """``((start, end), prompt ids)`` per piece; a single piece when the whole content fits.

        Pieces hold ``budget`` content tokens and start every ``budget - overlap`` tokens, with
        ``overlap`` a quarter of ``budget``: a run of at most ``overlap`` tokens (a sentence cut
        by one piece's end) lies whole in the next piece.
        """
        limit = self.options.max_context_tokens
        whole = self._encode(build_prompt(policy_text, content))
        if len(whole) <= limit:
            return [((0, len(content)), whole)]
        overhead = len(self._encode(build_prompt(policy_text, "")))
        budget = limit - overhead - _SPLIT_MARGIN_TOKENS
        if budget < 1:
            raise ValueError(
                f"policy prompt alone needs {overhead} tokens; "
                f"max_context_tokens={limit} is too small"
            )
        enc = self.tokenizer(content, add_special_tokens=False, return_offsets_mapping=True)
        starts = [start for start, _ in enc["offset_mapping"]]
        while True:
            spans = _overlapping_spans(starts, len(content), budget)
            pieces = [
                ((a, b), self._encode(build_prompt(policy_text, content[a:b]))) for a, b in spans
            ]
            longest = max(len(ids) for _, ids in pieces)
            if longest <= limit:
                return pieces
            if budget == 1:
                raise ValueError("content could not be split to fit max_context_tokens")
            budget = max(1, budget - (longest - limit))

    def _score_items(self, policy_text: str, items: list[_Item]) -> list[float]:
        scores = [0.0] * len(items)
        prefix = self._get_prefix(policy_text) if self.options.use_prefix_cache else None
        cached: list[int] = []
        full: list[int] = []
        for k, item in enumerate(items):
            if prefix is not None and self._starts_with_prefix(item.ids, prefix.ids):
                cached.append(k)
            else:
                full.append(k)
        if prefix is not None and full:
            log.debug("prefix tokenization mismatch for %d item(s); using full pass", len(full))
        if prefix is not None:  # else nothing is cached
            for batch in self._batches(items, cached, len(prefix.ids)):
                suffixes = [items[k].ids[len(prefix.ids) :] for k in batch]
                for k, value in zip(batch, self._forward_suffixes(prefix, suffixes), strict=True):
                    scores[k] = value
        for batch in self._batches(items, full):
            rows = [items[k].ids for k in batch]
            for k, value in zip(batch, self._forward_full(rows), strict=True):
                scores[k] = value
        return scores

    @staticmethod
    def _starts_with_prefix(ids: list[int], prefix_ids: list[int]) -> bool:
        return len(ids) > len(prefix_ids) and ids[: len(prefix_ids)] == prefix_ids

    def _batches(
        self, items: list[_Item], indices: list[int], prefix_tokens: int = 0
    ) -> list[list[int]]:
        """Indices sorted by token length, cut into batches of ``batch_size``.

        With ``max_batch_tokens`` a batch also closes once rows x its longest prompt would
        exceed that budget, and with ``fits`` once the memory estimate would not fit (a
        single over-long row still gets its own batch).
        """
        order = sorted(indices, key=lambda k: len(items[k].ids))
        size, budget, fits = (
            self.options.batch_size,
            self.options.max_batch_tokens,
            self.options.fits,
        )
        batches: list[list[int]] = []
        current: list[int] = []
        for k in order:
            rows, longest = len(current) + 1, len(items[k].ids)
            too_many = len(current) >= size
            too_big = budget is not None and rows * longest > budget
            too_much = fits is not None and not fits(rows, longest, prefix_tokens)
            if current and (too_many or too_big or too_much):
                batches.append(current)
                current = []
            current.append(k)
        if current:
            batches.append(current)
        return batches

    def _get_prefix(self, policy_text: str) -> _Prefix:
        prefix_text, _ = split_prompt(policy_text)
        if prefix_text not in self._prefixes:
            while self._prefixes and len(self._prefixes) >= self.options.max_cached_prefixes:
                self._prefixes.pop(next(iter(self._prefixes)))
            self._prefixes[prefix_text] = _Prefix(text=prefix_text, ids=self._encode(prefix_text))
        return self._prefixes[prefix_text]

    def _right_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Right-padded ids, 0/1 mask and each row's last real index, on the device."""
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        last = torch.tensor([len(r) - 1 for r in rows], dtype=torch.long)
        return ids.to(self.device), mask.to(self.device), last.to(self.device)

    def _answer_probability(self, hidden: torch.Tensor, last: torch.Tensor) -> list[float]:
        """P("1") from the hidden states at each row's last real token; NaN for a row whose
        logits are not finite (the soft-cap would turn an inf into a plausible number)."""
        h = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        logits = (h @ self._answer_rows.T).float()
        broken = ~torch.isfinite(logits).all(dim=-1)
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        probability = torch.softmax(logits, dim=-1)[:, 0].clamp(0.0, 1.0)
        return probability.masked_fill(broken, float("nan")).cpu().tolist()

    @torch.inference_mode()
    def _forward_full(self, rows: list[list[int]]) -> list[float]:
        ids, mask, last = self._right_pad(rows)
        out = self.decoder(input_ids=ids, attention_mask=mask, use_cache=False)
        return self._answer_probability(out.last_hidden_state, last)

    @torch.inference_mode()
    def _prefix_cache(self, prefix: _Prefix) -> DynamicCache:
        if prefix.cache is None:
            cache = DynamicCache(config=self.model.config)
            ids = torch.tensor([prefix.ids], dtype=torch.long, device=self.device)
            self.decoder(input_ids=ids, cache=cache, use_cache=True)
            prefix.cache = cache
        return prefix.cache

    @torch.inference_mode()
    def _forward_suffixes(self, prefix: _Prefix, suffixes: list[list[int]]) -> list[float]:
        n = len(prefix.ids)
        cache = _shared_prefix_view(self._prefix_cache(prefix), len(suffixes))
        ids, suffix_mask, last = self._right_pad(suffixes)
        prefix_mask = torch.ones((len(suffixes), n), dtype=suffix_mask.dtype, device=self.device)
        mask = torch.cat([prefix_mask, suffix_mask], dim=1)
        positions = torch.arange(n, n + ids.shape[1], device=self.device).unsqueeze(0)
        positions = positions.expand(len(suffixes), -1)
        out = self.decoder(
            input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True
        )
        return self._answer_probability(out.last_hidden_state, last)


def _policy_name(policy: Policy | str) -> str:
    """A policy's name for an error message (never its text: a bare text is "(unnamed)")."""
    return policy.name if isinstance(policy, Policy) else "(unnamed)"


def _overlapping_spans(starts: list[int], end: int, budget: int) -> list[tuple[int, int]]:
    """Character spans of ``budget`` tokens each, every ``budget - budget // 4`` tokens.

    ``starts`` are the tokens' character offsets; tokens sharing an offset (the bytes of one
    character) never separate, and the last span ends at ``end``.
    """
    stride = max(1, budget - budget // _OVERLAP_DIVISOR)
    spans: list[tuple[int, int]] = []
    for first in range(0, len(starts), stride):
        last = first + budget
        span = (starts[first], starts[last] if last < len(starts) else end)
        if span[1] > span[0] and (not spans or span[1] > spans[-1][1]):
            spans.append(span)
        if last >= len(starts):
            break
    return spans


def _shared_prefix_view(cache: DynamicCache, rows: int) -> DynamicCache:
    """The batch-1 prefix cache as every row of a batch reads it, never written.

    Each layer's ``update`` returns the prefix's keys and values broadcast over the rows (a
    view, no copy), joined to the rows' own; the cache keeps only the prefix, so its lengths
    (and the masks built from them) stay those of the prefix for every layer of the forward.
    """
    view = copy.copy(cache)
    view.layers = [_shared_layer(layer, rows) for layer in cache.layers]
    return view


def _shared_layer(layer: Any, rows: int) -> Any:
    shared = copy.copy(layer)

    def update(
        key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keys = layer.keys.expand(rows, -1, -1, -1)
        values = layer.values.expand(rows, -1, -1, -1)
        return torch.cat([keys, key_states], dim=-2), torch.cat([values, value_states], dim=-2)

    shared.update = update
    return shared
